import type { AuditLog } from '../src/audit/audit-log.js';
import { isApprover, judgeClick, type AcceptedClick, type ApprovalRecord, type ApprovalRequest, type Membership } from '../src/domain/approval.js';
import { withVouchedGroups, type Groups } from '../src/domain/principals.js';
import type { Logger } from '../src/log.js';
import type { ActionEvent, CommandReply } from '../src/ports/chat.js';
import type { Queues } from '../src/queue/queues.js';
import { APPROVE_ACTION_ID, parseApprovalButtonValue } from '../src/render/approval.js';
import { plainText, rich, type RichText } from '../src/render/view.js';
import type { ApprovalStore, DecideOutcome } from '../src/store/approval-store.js';
import type { Pokes } from '../src/store/pokes.js';
import type { RunStore } from '../src/store/run-store.js';

/**
 * The clicker's name as the chat gave it, left out when it gave none: the evidence schemas
 * (src/audit/evidence.ts) read an absent name, and an event whose data does not parse counts as
 * missing evidence.
 */
function named(event: ActionEvent): { userName?: string } {
  return event.userName === undefined ? {} : { userName: event.userName };
}

export interface ApprovalActionDeps {
  store: Pick<RunStore, 'get'>;
  approvals: Pick<ApprovalStore, 'get' | 'decide'>;
  audit: Pick<AuditLog, 'append'>;
  queues: Pick<Queues, 'wakeRun' | 'approvalMessage'>;
  pokes: Pick<Pokes, 'poke'>;
  /** Group membership, shared by every web replica (src/store/shared-groups.ts). */
  groups: Groups;
  clock: () => Date;
  log: Logger;
}

/**
 * The Approve and Reject buttons of an approval request (SPEC §6). A click is judged against the
 * stored request (`judgeClick`: right Freight and request, not decided, not expired, an approver,
 * not the requester approving their own run) and then decided in one atomic step in the approval
 * store, which re-checks what can change in between; so any number of clicks, on any replicas,
 * make one decision. Every refused click is answered only to the clicker, saying why and who can
 * approve, and audited; every counted approval and the rejection are audited with who and when. A
 * decision wakes the run, whose approval gate reads it; the click itself never promotes anything.
 */
export function createApprovalActions(deps: ApprovalActionDeps): (event: ActionEvent) => Promise<CommandReply> {
  const { approvals, audit, clock, log } = deps;

  async function membershipFor(record: ApprovalRecord, event: ActionEvent): Promise<Membership> {
    const groups = new Map<string, readonly string[]>();
    // The roles the chat vouched for on this click count too (Discord's member roles).
    const source = withVouchedGroups(deps.groups, event.userId, event.groups);
    for (const id of record.request.approvers) {
      if (source.isGroup(id)) groups.set(id, await source.members(id));
    }
    return (groupId) => groups.get(groupId);
  }

  async function refuse(event: ActionEvent, click: { action: 'approve' | 'reject'; freight: string; nonce: string; at: string }, runId: string | undefined, reason: string, message: RichText): Promise<CommandReply> {
    await audit.append({
      type: 'approval.refused',
      actor: event.userId,
      runId,
      data: { action: click.action, freight: click.freight, nonce: click.nonce, reason, message: plainText(message), ...named(event), at: click.at },
      // A Slack retry of the same click is the same delivery: one event.
      key: `approval.refused.${event.deliveryId}`,
    });
    log.info({ runId, userId: event.userId, reason }, 'approval click refused');
    return { ephemeral: message };
  }

  /**
   * One decision event on `request` (a counted approval, the rejection): who, on which request and
   * Freight, when, plus what the type adds; keyed so every delivery of the click records it once.
   */
  async function auditDecision(type: 'approval.approved' | 'approval.rejected', event: ActionEvent, request: ApprovalRequest, at: string, extra: Record<string, unknown>, key: string): Promise<void> {
    await audit.append({
      type,
      actor: event.userId,
      runId: request.runId,
      data: { stage: request.stage, freight: request.freight, nonce: request.nonce, userId: event.userId, ...named(event), at, ...extra },
      key: `${request.runId}.approval.${request.nonce}.${key}`,
    });
  }

  /**
   * The clicker's own click again (a double click, or the chat delivering it twice) on a request
   * decided since: an Approve by someone whose approval counted on it (whatever was decided after),
   * a Reject by whoever rejected it. Nothing to refuse or record: the click already had its one
   * effect. (While the request is pending, judgeClick says `already-approved`.)
   */
  function ownDecision(record: ApprovalRecord | undefined, event: ActionEvent, action: 'approve' | 'reject'): RichText | undefined {
    if (record === undefined || record.status === 'pending') return undefined;
    const { runId } = record.request;
    if (action === 'approve' && record.approvals.some((approval) => approval.userId === event.userId))
      return rich`Your approval was already counted; run ${runId}'s approval is ${record.status}${record.decidedAt === undefined ? '' : ` since ${record.decidedAt}`}.`;
    if (action === 'reject' && record.status === 'rejected' && record.rejection?.userId === event.userId) return rich`You already rejected run ${runId}; it ends rejected.`;
    return undefined;
  }

  /** Poke first, then read, as for webhooks: a gate finishing a look right now takes the poke. */
  async function wake(runId: string): Promise<void> {
    await deps.pokes.poke(runId);
    const run = await deps.store.get(runId);
    if (run?.state === 'waiting') await deps.queues.wakeRun(runId, run.jobSeq);
  }

  async function refreshMessage(record: ApprovalRecord | undefined): Promise<void> {
    if (record === undefined) return;
    await deps.queues.approvalMessage(record.request.runId, record.request.nonce, `${record.status}-${record.approvals.length}`);
  }

  const OUTCOME_REFUSALS: Partial<Record<DecideOutcome, { reason: string; message: RichText }>> = {
    stale: { reason: 'stale-request', message: rich`This approval request was replaced meanwhile (another Freight); approvals never carry over. Use the latest approval request in the thread.` },
    'already-decided': { reason: 'already-decided', message: rich`This approval was decided meanwhile; your click did not count.` },
    missing: { reason: 'missing', message: rich`This run has no approval request any more.` },
    expired: { reason: 'expired', message: rich`This approval has expired: nothing can be approved or rejected on it any more.` },
  };

  return async function handleApprovalClick(event) {
    const action: 'approve' | 'reject' = event.actionId === APPROVE_ACTION_ID ? 'approve' : 'reject';
    const at = clock().toISOString();
    const bound = parseApprovalButtonValue(event.value);
    if (bound === undefined) return refuse(event, { action, freight: '', nonce: '', at }, undefined, 'unreadable', rich`This button could not be read; use the latest approval request in the run's thread.`);
    const click = { action, freight: bound.freight, nonce: bound.nonce, at };
    const run = await deps.store.get(bound.runId);
    const record = await approvals.get(bound.runId);
    if (run === undefined || record === undefined) return refuse(event, click, run?.id, 'missing', rich`There is no approval request for run ${bound.runId}.`);

    const membership = await membershipFor(record, event);
    const judgement = judgeClick(record, { ...click, userId: event.userId, userName: event.userName, reason: event.reason }, membership);
    // The same person again (a double click, or Slack delivering the click twice): nothing to refuse or record.
    if (!judgement.accepted && judgement.reason === 'already-approved') return { ephemeral: judgement.message };
    if (!judgement.accepted) {
      // A click on an expired request also makes the run look now, so it ends `expired` without waiting for its timer.
      if (judgement.reason === 'expired') await wake(run.id);
      const again = judgement.reason === 'already-decided' || judgement.reason === 'expired' ? ownDecision(record, event, action) : undefined;
      if (again !== undefined) return { ephemeral: again };
      return refuse(event, click, run.id, judgement.reason, judgement.message);
    }
    // A Reject may carry a reason (SPEC §6): the chat asks for it first, then delivers the click again with it.
    if (judgement.click.action === 'reject' && event.reason === undefined)
      return { askReason: { title: 'Reject the run', label: `Why reject run ${run.id}? (optional; goes into the thread and the audit trail)`, submit: 'Reject' } };

    const accepted: AcceptedClick =
      judgement.click.action === 'reject' ? { ...judgement.click, reason: event.reason === undefined || event.reason.trim() === '' ? undefined : event.reason.trim().slice(0, 2000) } : judgement.click;
    const decided = await approvals.decide(run.id, accepted);
    const { request } = record;
    const refusal = OUTCOME_REFUSALS[decided.outcome];
    // The same click decided meanwhile by its other delivery (judged while still pending).
    if (refusal !== undefined) {
      if (decided.outcome === 'expired') await wake(run.id);
      const again = decided.outcome === 'already-decided' || decided.outcome === 'expired' ? ownDecision(decided.record, event, action) : undefined;
      if (again !== undefined) return { ephemeral: again };
      return refuse(event, click, run.id, refusal.reason, refusal.message);
    }
    switch (decided.outcome) {
      case 'duplicate':
        return { ephemeral: rich`Your approval was already counted (${decided.approvals.length} of ${request.minApprovals}).` };
      case 'counted':
      case 'approved-now': {
        const count = decided.approvals.length;
        const complete = decided.outcome === 'approved-now';
        // One per person and request, whichever delivery of the click got here.
        await auditDecision('approval.approved', event, request, at, { via: accepted.action === 'approve' ? accepted.via : event.userId, count, of: request.minApprovals, complete }, `approved.${event.userId}`);
        await refreshMessage(decided.record);
        if (complete) await wake(run.id);
        log.info({ runId: run.id, userId: event.userId, count, of: request.minApprovals }, complete ? 'approval complete' : 'approval counted');
        return {
          ephemeral: complete
            ? rich`Approved: run ${run.id} has its ${request.minApprovals} approval(s) and goes on to ${request.stage}.`
            : rich`Your approval counts (${count} of ${request.minApprovals}). Run ${run.id} waits for ${request.minApprovals - count} more.`,
        };
      }
      case 'rejected-now': {
        const by = accepted.action === 'reject' ? accepted.by : 'approver';
        const reason = accepted.action === 'reject' ? accepted.reason : undefined;
        await auditDecision('approval.rejected', event, request, at, { by, ...(reason === undefined ? {} : { reason }), wasApprover: isApprover(event.userId, request.approvers, membership) }, 'rejected');
        await refreshMessage(decided.record);
        await wake(run.id);
        log.info({ runId: run.id, userId: event.userId, by }, 'approval rejected');
        return { ephemeral: by === 'requester' ? rich`You withdrew run ${run.id}; it ends rejected.` : rich`You rejected run ${run.id}; it ends rejected.` };
      }
      default:
        return { ephemeral: rich`Your click was not decided; try again from the latest approval request.` };
    }
  };
}
