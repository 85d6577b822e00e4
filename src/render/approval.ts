import { countedApprovers, type ApprovalRecord } from '../domain/approval.js';
import type { Run } from '../domain/run.js';
import { truncate } from './card.js';
import { bold, code, concat, joinRich, link, plainText, principal, quote, rich, type BlockView, type MessageView, type RichText } from './view.js';

/**
 * The approval request in the run's thread (SPEC §2, §6), rendered from the run and its approval
 * record only: what an approver needs to decide (the change, its PR, diffstat, CI, merge commit, the
 * Freight, each pre-production stage's verification), who asked, how many approvals are needed and
 * until when; Approve and Reject bound to this run, Freight and request. Once decided the same
 * message (same ts) shows who decided and when, and no buttons.
 */

export const APPROVE_ACTION_ID = 'shipgate.approve';
export const REJECT_ACTION_ID = 'shipgate.reject';

/** What a button carries: `<run id>|<freight>|<nonce>` (none of the three contains `|`). */
export function approvalButtonValue(record: ApprovalRecord): string {
  const { runId, freight, nonce } = record.request;
  return `${runId}|${freight}|${nonce}`;
}

export function parseApprovalButtonValue(value: string): { runId: string; freight: string; nonce: string } | undefined {
  const parts = value.split('|');
  if (parts.length !== 3 || parts.some((part) => part === '')) return undefined;
  const [runId = '', freight = '', nonce = ''] = parts;
  return { runId, freight, nonce };
}

const TASK_MAX = 300;

function who(userId: string, userName: string | undefined): RichText {
  return userName === undefined ? [principal(userId)] : rich`${principal(userId)} (${userName})`;
}

function approverList(record: ApprovalRecord): RichText {
  return joinRich(
    record.request.approvers.map((id) => [principal(id)]),
    ', ',
  );
}

/** Each gate before the approval that the approver relies on, with its verdict. */
function evidenceLines(run: Run): RichText[] {
  const lines: RichText[] = [];
  const { agent, merge, freight } = run.artifacts;
  const prUrl = run.links.pr;
  const number = run.artifacts.pr?.number;
  const pr = prUrl === undefined ? (number === undefined ? undefined : [code(`#${number}`)]) : [link(prUrl, number === undefined ? 'pull request' : `#${number}`)];
  if (pr !== undefined) lines.push(rich`Pull request: ${pr}${agent?.diffStat === undefined ? '' : ` (${agent.diffStat})`}`);
  const ci = run.gates.find((gate) => gate.name === 'ci');
  if (ci !== undefined) lines.push(rich`CI: ${ci.state}${agent?.commitSha === undefined ? '' : rich` on ${code(agent.commitSha.slice(0, 12))}`}`);
  if (merge?.commitSha !== undefined) lines.push(rich`Merge commit: ${code(merge.commitSha)}`);
  for (const gate of run.gates) {
    if (gate.kind !== 'stage' || gate.state !== 'passed') continue;
    lines.push(rich`${bold(gate.name.slice('stage:'.length))} verified: ${truncate(gate.summary ?? 'passed', 200)}`);
  }
  if (freight?.name !== undefined) {
    lines.push(rich`Freight: ${code(freight.alias === undefined ? freight.name : `${freight.alias} (${freight.name})`)}`);
  }
  return lines;
}

function decisionText(record: ApprovalRecord): RichText {
  const { request } = record;
  switch (record.status) {
    case 'pending': {
      const counted = countedApprovers(request, record.approvals);
      const so = record.approvals.filter((a) => counted.includes(a.userId));
      const given = so.length === 0 ? rich`none yet` : joinRich(so.map((a) => who(a.userId, a.userName)), ', ');
      return rich`Needs ${bold(`${request.minApprovals}`)} approval${request.minApprovals === 1 ? '' : 's'} from ${approverList(record)}${request.allowSelfApproval ? '' : ', not the requester'}, before ${request.expiresAt}. Approved so far (${counted.length} of ${request.minApprovals}): ${given}.`;
    }
    case 'approved': {
      const counted = countedApprovers(request, record.approvals);
      const by = joinRich(record.approvals.filter((a) => counted.includes(a.userId)).map((a) => rich`${who(a.userId, a.userName)} at ${a.at}`), ', ');
      return rich`✅ ${bold('Approved')} by ${by}. The production Promotion follows.`;
    }
    case 'rejected': {
      const rejection = record.rejection;
      if (rejection === undefined) return rich`🚫 ${bold('Rejected')} at ${record.decidedAt ?? 'an unknown time'}.`;
      const verb = rejection.by === 'requester' ? rich`${bold('Withdrawn')} by the requester` : rich`${bold('Rejected')} by`;
      const reason = rejection.reason === undefined || rejection.reason.trim() === '' ? rich` No reason given.` : concat('\n', quote(truncate(rejection.reason, 1000)));
      return rich`🚫 ${verb} ${who(rejection.userId, rejection.userName)} at ${rejection.at}.${reason}`;
    }
    case 'expired': {
      const counted = countedApprovers(request, record.approvals);
      return rich`⌛ ${bold('Expired')} at ${request.expiresAt} with ${counted.length} of ${request.minApprovals} approvals; nothing can be approved on it any more.`;
    }
  }
}

export function renderApprovalRequest(run: Run, record: ApprovalRecord): MessageView {
  const { request } = record;
  const blocks: BlockView[] = [
    { type: 'header', text: `Approval needed: ${request.stage}` },
    { type: 'section', text: rich`${bold(run.repo)}: ${quote(truncate(run.task, TASK_MAX))}` },
    { type: 'section', text: joinRich(evidenceLines(run), '\n') },
    { type: 'section', text: rich`Requested by ${principal(request.requester)}. ${decisionText(record)}` },
  ];
  if (record.status === 'pending') {
    const value = approvalButtonValue(record);
    blocks.push({
      type: 'actions',
      buttons: [
        { actionId: APPROVE_ACTION_ID, label: 'Approve', value, style: 'primary' },
        { actionId: REJECT_ACTION_ID, label: 'Reject', value, style: 'danger' },
      ],
    });
  }
  blocks.push({ type: 'context', text: rich`Run ${code(run.id)} · approvals count for Freight ${code(request.freight)} only` });
  const fallback = `Approval ${record.status === 'pending' ? 'needed' : record.status}: ${request.stage} of ${run.repo} (${run.id}) · ${plainText(decisionText(record))}`;
  return { text: truncate(fallback, 300), blocks };
}

/** An approval message whose request was replaced (the run now waits on another Freight): no buttons, and where to look. */
export function renderSupersededApproval(run: Run): MessageView {
  const text = rich`This approval request of run ${code(run.id)} was replaced by a newer one for another Freight; approvals never carry over. Use the latest approval request in this thread.`;
  return { text: plainText(text), blocks: [{ type: 'header', text: 'Approval replaced' }, { type: 'section', text }] };
}
