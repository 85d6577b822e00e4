import { randomBytes } from 'node:crypto';
import type { AuditAppendInput } from '../../../src/audit/audit-log.js';
import type { Policy, StagePolicy } from '../../../src/config/policy.js';
import { approvalRequestFor, countedApprovers, isExpired, type ApprovalRecord } from '../../../src/domain/approval.js';
import type { GateOutcome, Run } from '../../../src/domain/run.js';
import { RefusedError } from '../../../src/errors.js';
import type { Queues } from '../../../src/queue/queues.js';
import type { ApprovalStore } from '../../../src/store/approval-store.js';
import type { GateContext, GateStep } from '../gate-step.js';

export interface ApprovalStepDeps {
  policy: Policy;
  approvals: Pick<ApprovalStore, 'open' | 'get' | 'expire'>;
  /** For the decision's evidence, under the click handler's own keys (commands/approval-actions.ts). */
  audit: { append(input: AuditAppendInput): Promise<unknown> };
  queues: Pick<Queues, 'approvalMessage'>;
  clock: () => Date;
  /** A fresh request nonce (default: 16 random bytes, hex): buttons of an older request never match a newer one. */
  newNonce?: () => string;
}

/** The longest the gate sleeps between looks: a decision wakes it at once; this only bounds a lost wake-up. */
const MAX_RECHECK_MS = 10 * 60_000;

/** The stage the approval gate stands before: the gate right after it in the run (gatesFor puts it there). */
export function approvedStageOf(policy: Policy, run: Run, gateName: string): StagePolicy | undefined {
  const index = run.gates.findIndex((gate) => gate.name === gateName);
  const next = run.gates[index + 1];
  if (index < 0 || next?.kind !== 'stage') return undefined;
  const pipelineName = policy.repos[run.repo]?.pipeline;
  const pipeline = pipelineName === undefined ? undefined : policy.pipelines[pipelineName];
  return pipeline?.stages.find((stage) => `stage:${stage.name}` === next.name);
}

/** The state the approval message must show: a new stamp is a new chat job (queues.approvalMessage). */
export function approvalStamp(record: ApprovalRecord): string {
  return `${record.status}-${record.approvals.length}`;
}

function people(record: ApprovalRecord): string {
  const counted = countedApprovers(record.request, record.approvals);
  return record.approvals
    .filter((approval) => counted.includes(approval.userId))
    .map((approval) => (approval.userName === undefined ? approval.userId : `${approval.userName} (${approval.userId})`))
    .join(', ');
}

/**
 * The decision's audit events as the click handler writes them, from what the store holds: a
 * handler that died between the store's decision and its audit append left the store decided and
 * the log without the evidence, and nothing would ever write it. Under the handler's keys, so
 * whichever of the two writes first, each event is in the log once, before the gate passes and so
 * before any Promotion.
 */
async function recordDecisionEvidence(audit: ApprovalStepDeps['audit'], record: ApprovalRecord): Promise<void> {
  const { request } = record;
  const base = { stage: request.stage, freight: request.freight, nonce: request.nonce };
  const prefix = `${request.runId}.approval.${request.nonce}`;
  if (record.status === 'approved') {
    const counted = record.approvals.filter((approval) => countedApprovers(request, record.approvals).includes(approval.userId));
    for (const [index, approval] of counted.entries()) {
      await audit.append({
        type: 'approval.approved',
        actor: approval.userId,
        runId: request.runId,
        data: {
          ...base,
          userId: approval.userId,
          ...(approval.userName === undefined ? {} : { userName: approval.userName }),
          via: approval.via ?? approval.userId,
          at: approval.at,
          count: index + 1,
          of: request.minApprovals,
          complete: index + 1 === counted.length,
        },
        key: `${prefix}.approved.${approval.userId}`,
      });
    }
  }
  const rejection = record.rejection;
  if (record.status === 'rejected' && rejection !== undefined) {
    await audit.append({
      type: 'approval.rejected',
      actor: rejection.userId,
      runId: request.runId,
      data: {
        ...base,
        userId: rejection.userId,
        ...(rejection.userName === undefined ? {} : { userName: rejection.userName }),
        by: rejection.by,
        ...(rejection.reason === undefined ? {} : { reason: rejection.reason }),
        at: rejection.at,
      },
      key: `${prefix}.rejected`,
    });
  }
}

/**
 * The `approval` gate (SPEC §1 gate 7, §6): opens the run's approval request for its Freight (once;
 * another Freight replaces it and every approval given for the old one), has the chat outbox post it
 * with its buttons, and then only reads the decision the clicks made (commands/approval-actions.ts
 * decides them atomically in the approval store and wakes the run). The deadline is a delayed job:
 * the gate's next look is due when the request expires, and that look flips it to `expired`.
 * Approved passes; a Reject ends the run `rejected`, the deadline `expired`.
 */
export function createApprovalStep(deps: ApprovalStepDeps): GateStep {
  const newNonce = deps.newNonce ?? (() => randomBytes(16).toString('hex'));

  async function currentRecord(context: GateContext, stage: StagePolicy, freight: string): Promise<ApprovalRecord> {
    const { run } = context;
    const existing = await deps.approvals.get(run.id);
    if (existing !== undefined && existing.request.freight === freight) return existing;
    const approval = stage.approval;
    if (approval === undefined) throw new RefusedError(`stage ${stage.name} has no approval settings`);
    const opened = await deps.approvals.open(
      approvalRequestFor({
        runId: run.id,
        freight,
        nonce: newNonce(),
        stage: stage.name,
        requester: run.requester.userId,
        settings: approval,
        requestedAt: deps.clock().toISOString(),
      }),
    );
    // The old request's message loses its buttons: its approvals were for another Freight.
    if (opened.superseded !== undefined) await deps.queues.approvalMessage(run.id, opened.superseded.request.nonce, 'superseded');
    context.log.info({ freight, outcome: opened.outcome }, 'approval request opened');
    return opened.record;
  }

  return {
    async run(context): Promise<GateOutcome> {
      const { run, gate, audit, record } = context;
      const stage = approvedStageOf(deps.policy, run, gate.name);
      if (stage?.approval === undefined) throw new RefusedError('the approval gate stands before no stage with an approval in the policy');
      const freight = run.artifacts.freight?.name;
      if (freight === undefined) throw new RefusedError('no Freight to approve: the freight gate recorded none');

      let current = await currentRecord(context, stage, freight);
      const now = deps.clock();
      if (current.status === 'pending' && isExpired(current.request, now.toISOString())) {
        const expired = await deps.approvals.expire(run.id, now.toISOString());
        current = expired.record ?? current;
      }
      // Posted once (keyed by the nonce), then updated in place whenever the state it shows changes.
      await deps.queues.approvalMessage(run.id, current.request.nonce, approvalStamp(current));
      await recordDecisionEvidence(deps.audit, current);
      const { request } = current;

      switch (current.status) {
        case 'approved':
          await record(() => ({ activity: undefined }));
          return { kind: 'passed', summary: `approved by ${people(current)} for Freight ${request.freight} (${request.minApprovals} needed)` };
        case 'rejected': {
          const rejection = current.rejection;
          const byWhom = rejection === undefined ? 'someone' : rejection.userName === undefined ? rejection.userId : `${rejection.userName} (${rejection.userId})`;
          const reason = rejection?.reason === undefined || rejection.reason.trim() === '' ? 'no reason given' : `reason: ${rejection.reason.trim()}`;
          const verb = rejection?.by === 'requester' ? 'withdrawn by the requester' : 'rejected by';
          return { kind: 'failed', end: 'rejected', summary: rejection?.by === 'requester' ? `${verb}, ${byWhom} (${reason})` : `${verb} ${byWhom} (${reason})` };
        }
        case 'expired': {
          const counted = countedApprovers(request, current.approvals);
          await audit('approval.expired', { stage: request.stage, freight: request.freight, nonce: request.nonce, expiresAt: request.expiresAt, approvers: counted }, request.nonce, { once: true });
          return { kind: 'failed', end: 'expired', summary: `expired at ${request.expiresAt} with ${counted.length} of ${request.minApprovals} approvals` };
        }
        case 'pending': {
          const counted = countedApprovers(request, current.approvals);
          const waiting = `waiting for ${request.minApprovals - counted.length} more approval(s) of Freight ${request.freight} for ${request.stage} (${counted.length} of ${request.minApprovals}), until ${request.expiresAt}`;
          await record(() => ({ activity: `waiting for approval (${counted.length} of ${request.minApprovals})` }));
          const untilDeadline = Date.parse(request.expiresAt) - now.getTime();
          return { kind: 'pending', summary: waiting, recheckAfterMs: Math.max(250, Math.min(untilDeadline + 250, MAX_RECHECK_MS)) };
        }
      }
    },
  };
}
