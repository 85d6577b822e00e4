import type { AuditVerifyResult } from '../audit/audit-log.js';
import type { RunEvidence, StageEvidence } from '../audit/run-evidence.js';
import { truncate } from './card.js';
import { bold, code, joinRich, link, plainText, principal, quote, rich, type BlockView, type MessageView, type RichText } from './view.js';

/**
 * The `/ship audit` reply in a run's thread (SPEC §2, §6, §7): the chain of custody read from the
 * audit log — requester → commit → pull request → CI → merge commit → Freight → each stage's
 * verification → approvers → Promotion — with every missing link named, and whether the hash chain
 * the events come from verifies. Pure, and chat-neutral like every renderer: the adapters turn it
 * into Block Kit or console text. The JSON Lines export travels next to it as a file.
 */

export interface AuditSummaryInput {
  evidence: RunEvidence;
  verification: AuditVerifyResult;
  /** The name of the JSON Lines file posted with the summary; undefined when there was nothing to export. */
  filename?: string | undefined;
  /** The slash command's name, for the CLI hint. */
  command?: string | undefined;
}

const TASK_MAX = 200;
const SHA = 12;

const short = (sha: string): RichText => [code(sha.slice(0, SHA))];

function who(userId: string, userName: string | undefined): RichText {
  return userName === undefined || userName === '' ? [principal(userId)] : rich`${principal(userId)} (${userName})`;
}

const missingText = rich`${bold('missing')}`;

/** "Verifies" is said only of a chain that verify() walked end to end. */
export function verificationText(result: AuditVerifyResult): RichText {
  // No checkpoint is at hand in chat, and only a checkpoint kept outside Redis shows a cut-off tail: say so.
  if (result.ok) return rich`✅ The audit chain verifies: ${result.count} events, each keyed with SHIPGATE_AUDIT_KEY and linked to the one before (events cut off the end show only against a checkpoint: ${code('npm run audit-log -- verify --checkpoint <seq:hash>')}).`;
  const { seq, type, reason, problem } = result.broken;
  if (problem === 'wrong-key') return rich`⚠️ The audit chain ${bold('cannot be verified')} at event #${seq} (${type}): ${truncate(reason, 400)}`;
  return rich`❌ The audit chain ${bold('does not verify')}: broken at event #${seq} (${type}): ${truncate(reason, 400)}. Treat this evidence as untrustworthy.`;
}

function stageLine(stage: StageEvidence): RichText {
  const name = bold(stage.stage);
  if (stage.verdict === 'missing') return rich`Stage ${name}: ${missingText}`;
  const freight = stage.freight === undefined ? '' : rich` for Freight ${code(stage.freight)}`;
  const promotion = stage.promotion === undefined ? '' : rich` (Promotion ${code(stage.promotion)})`;
  if (stage.verdict === 'passed') return rich`Stage ${name}: verified${freight}${promotion}${stage.kind === 'superseded' ? ' (superseded by newer Freight)' : ''}`;
  return rich`Stage ${name}: ${bold('failed')}${stage.kind === undefined ? '' : ` (${stage.kind})`}${freight}${promotion}`;
}

function chainLines(evidence: RunEvidence): RichText[] {
  const lines: RichText[] = [];
  const { requester, commits, pullRequests, ci, merge, freight } = evidence;
  lines.push(
    requester === undefined
      ? rich`Requested by: ${missingText}`
      : rich`Requested by ${principal(requester.userId)} on ${bold(requester.repo)} at ${requester.at}: ${quote(truncate(requester.task, TASK_MAX))}`,
  );
  const latest = commits.at(-1);
  lines.push(
    latest === undefined
      ? rich`Commit: ${missingText}`
      : rich`Commit: ${short(latest.sha)} on ${code(latest.branch)}${commits.length > 1 ? ` (the last of ${commits.length})` : ''}`,
  );
  const pr = pullRequests.at(-1);
  lines.push(
    pr === undefined
      ? rich`Pull request: ${missingText}`
      : rich`Pull request: ${pr.url === undefined ? [code(`#${pr.number}`)] : [link(pr.url, `#${pr.number}`)]}${pullRequests.length > 1 ? ` (the last of ${pullRequests.length})` : ''}`,
  );
  lines.push(
    ci === undefined
      ? rich`CI: ${missingText}`
      : rich`CI: ${bold(ci.verdict)} on ${short(ci.commit)}${evidence.ciVerdicts > 1 ? ` (verdict ${evidence.ciVerdicts} of the run)` : ''}`,
  );
  lines.push(merge === undefined ? rich`Merge commit: ${missingText}` : rich`Merge commit: ${short(merge.mergeCommit)} (PR #${merge.pr})`);
  if (evidence.expects.freight || freight !== undefined) {
    lines.push(
      freight === undefined
        ? rich`Freight: ${missingText}`
        : rich`Freight: ${code(freight.alias === undefined ? freight.name : `${freight.alias} (${freight.name})`)} carrying ${short(freight.commit)}`,
    );
  }
  for (const stage of evidence.stages) lines.push(stageLine(stage));
  lines.push(...approvalLines(evidence));
  for (const promotion of evidence.promotions) {
    const carried = promotion.approvers === undefined || promotion.approvers.length === 0 ? '' : rich`, approved by ${joinRich(promotion.approvers.map((id) => [principal(id)]), ', ')}`;
    lines.push(rich`Promotion: ${code(promotion.promotion)} into ${bold(promotion.stage)} (Freight ${code(promotion.freight)})${carried}`);
  }
  return lines;
}

function approvalLines(evidence: RunEvidence): RichText[] {
  const { approvalRequest: request, approvals, rejection, expired } = evidence;
  if (!evidence.expects.approval && request === undefined && approvals.length === 0) return [];
  if (request === undefined) return [rich`Approval: ${missingText}`];
  const lines: RichText[] = [];
  const needed = rich`Approval for ${bold(request.stage)}: ${request.minApprovals} needed from ${joinRich(request.approvers.map((id) => [principal(id)]), ', ')}, for Freight ${code(request.freight)}, before ${request.expiresAt}`;
  lines.push(needed);
  const approvers = approvals.filter((a) => a.freight === request.freight);
  lines.push(
    approvers.length === 0
      ? rich`Approvers: none`
      : rich`Approvers: ${joinRich(approvers.map((a) => rich`${who(a.userId, a.userName)} at ${a.at}`), ', ')}`,
  );
  if (rejection !== undefined) {
    const reason = rejection.reason === undefined || rejection.reason.trim() === '' ? '' : rich`: ${quote(truncate(rejection.reason, 300))}`;
    lines.push(rich`${rejection.by === 'requester' ? 'Withdrawn' : 'Rejected'} by ${who(rejection.userId, rejection.userName)} at ${rejection.at}${reason}`);
  }
  if (expired !== undefined) lines.push(rich`Expired at ${expired.expiresAt}`);
  if (evidence.refusals > 0) lines.push(rich`Refused clicks: ${evidence.refusals} (recorded, not counted)`);
  return lines;
}

function endLine(evidence: RunEvidence): RichText {
  const { end } = evidence;
  if (end === undefined) return rich`Run: not ended (last event #${evidence.lastSeq ?? 0})`;
  const by = end.state === 'cancelled' ? rich` by ${principal(end.by)}` : '';
  return rich`Run: ${bold(end.state)}${by} at ${end.at}${end.outcome === undefined ? '' : rich`: ${truncate(end.outcome, 300)}`}`;
}

function gapsLine(evidence: RunEvidence): RichText {
  const unreadable =
    evidence.unreadable.length === 0
      ? ''
      : rich` Unreadable, so counted as missing: ${evidence.unreadable.map((u) => `#${u.seq} (${u.type})`).join(', ')}.`;
  if (evidence.missing.length === 0) return rich`Chain of custody: every link present.${unreadable}`;
  return rich`Chain of custody: ${bold(`missing: ${evidence.missing.join(', ')}`)}.${unreadable}`;
}

export function renderAuditSummary(input: AuditSummaryInput): MessageView {
  const { evidence, verification } = input;
  const command = input.command ?? '/ship';
  const verdict = verificationText(verification);
  if (evidence.events === 0) {
    const text = rich`No audit events are recorded for run ${code(evidence.runId)} yet.`;
    return {
      text: `Evidence of ${evidence.runId}: no audit events yet · ${plainText(verdict)}`,
      blocks: [
        { type: 'header', text: `Evidence of ${evidence.runId}` },
        { type: 'section', text },
        { type: 'section', text: verdict },
      ],
    };
  }
  const blocks: BlockView[] = [
    { type: 'header', text: `Evidence of ${evidence.runId}` },
    { type: 'section', text: joinRich(chainLines(evidence), '\n') },
    { type: 'section', text: joinRich([endLine(evidence), gapsLine(evidence)], '\n') },
    { type: 'section', text: verdict },
    {
      type: 'context',
      text:
        input.filename === undefined
          ? rich`${evidence.events} events · the same export: ${code(`npm run audit-log -- export ${evidence.runId}`)}`
          : rich`${evidence.events} events in ${code(input.filename)}, attached here · the same export: ${code(`npm run audit-log -- export ${evidence.runId}`)} · asked with ${code(`${command} audit ${evidence.runId}`)}`,
    },
  ];
  const gaps = evidence.missing.length === 0 ? 'every link present' : `missing: ${evidence.missing.join(', ')}`;
  return { text: truncate(`Evidence of ${evidence.runId}: ${gaps} · ${plainText(verdict)}`, 300), blocks };
}

/** The run's events could not be read back as the log claims them: the evidence itself is in doubt. */
export function renderUnreadableEvidence(runId: string, reason: string): MessageView {
  const text = rich`❌ The audit chain ${bold('does not verify')}: the events of run ${code(runId)} cannot be read back as the log indexes them (${truncate(reason, 400)}). Nothing is exported; check the log with ${code('npm run audit-log -- verify')}.`;
  return { text: truncate(plainText(text), 300), blocks: [{ type: 'header', text: `Evidence of ${runId}` }, { type: 'section', text }] };
}
