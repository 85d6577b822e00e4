import type { z } from 'zod';
import type { AuditEvent } from './audit-log.js';
import {
  approvalApprovedData,
  approvalExpiredData,
  approvalRefusedData,
  approvalRejectedData,
  approvalRequestedData,
  ciVerdictData,
  commitCreatedData,
  freightFoundData,
  prMergedData,
  prOpenedData,
  promotionCreatedData,
  runEndedData,
  runRequestedData,
  stageVerdictData,
} from './evidence.js';

/**
 * One run's chain of custody read from its audit events (SPEC §6, §7): the requester, the agent's
 * commits, the pull request, CI, the merge commit, the Freight, each stage's verification, the
 * approvers and the Promotion, and how the run ended. This is what `/ship audit` summarises.
 *
 * Pure, and as strict as the trust checker: every event's data goes through its evidence schema,
 * and an event that does not parse counts as missing (listed in `unreadable`), never as present.
 * What the chain should have but the log does not show is named in `missing` ("merge"), so a gap
 * reads as a gap and is never skipped silently. Which links are expected comes from the gates the
 * run was created with (`run.requested`), so a repository without Kargo is not blamed for having
 * no Freight.
 */

/** Where a link is in the log. */
export interface EvidenceAt {
  seq: number;
  at: string;
}

export type RunEndState = 'done' | 'failed' | 'cancelled' | 'rejected' | 'expired';

export interface StageEvidence {
  stage: string;
  /** The stage's latest verdict; `missing` when the run was to pass it but the log shows none. */
  verdict: 'passed' | 'failed' | 'missing';
  freight?: string | undefined;
  promotion?: string | undefined;
  /** What kind of failure (or `superseded`), as the stage gate recorded it. */
  kind?: string | undefined;
  at?: EvidenceAt | undefined;
}

export interface RunEvidence {
  runId: string;
  /** How many events of the run were read. */
  events: number;
  /** Seq of the newest event read; undefined for a run without events. */
  lastSeq: number | undefined;
  requester: ({ userId: string; repo: string; task: string; channel?: string | undefined } & EvidenceAt) | undefined;
  /** The gates the run was created with, in order; undefined when `run.requested` is missing or does not name them. */
  gates: string[] | undefined;
  /** Which deploy links the chain must have (from `gates`; without them, those the log shows the run reached). */
  expects: { freight: boolean; approval: boolean };
  commits: Array<{ sha: string; branch: string } & EvidenceAt>;
  pullRequests: Array<{ number: number; url?: string | undefined; commit?: string | undefined } & EvidenceAt>;
  /** The latest CI verdict (a red CI sends the run back, so earlier ones are history). */
  ci: ({ commit: string; pr?: number | undefined; verdict: string } & EvidenceAt) | undefined;
  ciVerdicts: number;
  merge: ({ pr: number; mergeCommit: string } & EvidenceAt) | undefined;
  freight: ({ name: string; alias?: string | undefined; commit: string } & EvidenceAt) | undefined;
  /** One entry per stage the run was to pass (in gate order), then any other stage the log names. */
  stages: StageEvidence[];
  /** The latest approval request: the stage behind it, its Freight, who may approve, how many must. */
  approvalRequest:
    | ({ stage: string; freight: string; approvers: string[]; minApprovals: number; expiresAt: string } & EvidenceAt)
    | undefined;
  approvals: Array<{ userId: string; userName?: string | undefined; stage: string; freight: string; via: string; complete: boolean } & EvidenceAt>;
  rejection: ({ userId: string; userName?: string | undefined; by: 'approver' | 'requester'; reason?: string | undefined } & EvidenceAt) | undefined;
  expired: ({ expiresAt: string } & EvidenceAt) | undefined;
  /** Approve/Reject clicks that did not count (unauthorised, the requester's own, too late …). */
  refusals: number;
  promotions: Array<{ stage: string; freight: string; promotion: string; approvers?: string[] | undefined } & EvidenceAt>;
  /** `by`: who ended it (the bot, or whoever cancelled). */
  end: ({ state: RunEndState; by: string; outcome?: string | undefined } & EvidenceAt) | undefined;
  /** Chain events whose data did not match the evidence vocabulary; each counts as missing. */
  unreadable: Array<{ seq: number; type: string }>;
  /** The links the run's chain should have and the log does not show, in chain order. */
  missing: string[];
}

/** The production stage: the stage gate right after the approval gate. */
function approvalStage(gates: readonly string[]): string | undefined {
  const index = gates.indexOf('approval');
  const next = index < 0 ? undefined : gates[index + 1];
  return next?.startsWith('stage:') === true ? next.slice('stage:'.length) : undefined;
}

const END_TYPES: Partial<Record<AuditEvent['type'], RunEndState>> = {
  'run.done': 'done',
  'run.failed': 'failed',
  'run.cancelled': 'cancelled',
  'run.rejected': 'rejected',
  'run.expired': 'expired',
};

/** The run's chain of custody from its events (as `eventsForRun` returns them, in any order). */
export function readRunEvidence(runId: string, input: readonly AuditEvent[]): RunEvidence {
  const events = input.filter((event) => event.runId === runId).sort((a, b) => a.seq - b.seq);
  const unreadable: RunEvidence['unreadable'] = [];
  /** The event's data through its schema; an event of that type that does not parse is noted, not used. */
  function read<T>(event: AuditEvent, type: AuditEvent['type'], schema: z.ZodType<T>): T | undefined {
    if (event.type !== type) return undefined;
    const parsed = schema.safeParse(event.data);
    if (parsed.success) return parsed.data;
    unreadable.push({ seq: event.seq, type: event.type });
    return undefined;
  }

  const evidence: RunEvidence = {
    runId,
    events: events.length,
    lastSeq: events.at(-1)?.seq,
    requester: undefined,
    gates: undefined,
    expects: { freight: false, approval: false },
    commits: [],
    pullRequests: [],
    ci: undefined,
    ciVerdicts: 0,
    merge: undefined,
    freight: undefined,
    stages: [],
    approvalRequest: undefined,
    approvals: [],
    rejection: undefined,
    expired: undefined,
    refusals: 0,
    promotions: [],
    end: undefined,
    unreadable,
    missing: [],
  };
  const verdicts = new Map<string, StageEvidence>();

  for (const event of events) {
    const at = { seq: event.seq, at: event.at };
    const requested = read(event, 'run.requested', runRequestedData);
    if (requested !== undefined && evidence.requester === undefined) {
      evidence.requester = { userId: event.actor, repo: requested.repo, task: requested.task, channel: requested.channel, ...at };
      evidence.gates = requested.gates;
    }
    const commit = read(event, 'commit.created', commitCreatedData);
    if (commit !== undefined) evidence.commits.push({ sha: commit.commit, branch: commit.branch, ...at });
    const pr = read(event, 'pr.opened', prOpenedData);
    if (pr !== undefined) evidence.pullRequests.push({ number: pr.number, url: pr.url, commit: pr.commit, ...at });
    const ci = read(event, 'ci.verdict', ciVerdictData);
    if (ci !== undefined) {
      evidence.ci = { commit: ci.commit, pr: ci.pr, verdict: ci.verdict, ...at };
      evidence.ciVerdicts += 1;
    }
    const merged = read(event, 'pr.merged', prMergedData);
    if (merged !== undefined) evidence.merge = { pr: merged.pr, mergeCommit: merged.mergeCommit, ...at };
    const freight = read(event, 'freight.found', freightFoundData);
    if (freight !== undefined) evidence.freight = { name: freight.freight, alias: freight.alias ?? undefined, commit: freight.commit, ...at };
    const stage = read(event, 'stage.verdict', stageVerdictData);
    if (stage !== undefined) {
      verdicts.set(stage.stage, { stage: stage.stage, verdict: stage.verdict, freight: stage.freight, promotion: stage.promotion, kind: stage.kind, at });
    }
    const request = read(event, 'approval.requested', approvalRequestedData);
    if (request !== undefined) {
      evidence.approvalRequest = { stage: request.stage, freight: request.freight, approvers: request.approvers, minApprovals: request.minApprovals, expiresAt: request.expiresAt, ...at };
    }
    const approved = read(event, 'approval.approved', approvalApprovedData);
    if (approved !== undefined) {
      // The click's own time (the data's `at`) is when the person approved; the event's is when it was recorded.
      evidence.approvals.push({ userId: approved.userId, userName: approved.userName, stage: approved.stage, freight: approved.freight, via: approved.via, complete: approved.complete, seq: event.seq, at: approved.at });
    }
    const rejected = read(event, 'approval.rejected', approvalRejectedData);
    if (rejected !== undefined) {
      evidence.rejection = { userId: rejected.userId, userName: rejected.userName, by: rejected.by, reason: rejected.reason, seq: event.seq, at: rejected.at };
    }
    const expired = read(event, 'approval.expired', approvalExpiredData);
    if (expired !== undefined) evidence.expired = { expiresAt: expired.expiresAt, ...at };
    if (read(event, 'approval.refused', approvalRefusedData) !== undefined) evidence.refusals += 1;
    const promotion = read(event, 'promotion.created', promotionCreatedData);
    if (promotion !== undefined) evidence.promotions.push({ stage: promotion.stage, freight: promotion.freight, promotion: promotion.promotion, approvers: promotion.approvers, ...at });
    const endState = END_TYPES[event.type];
    if (endState !== undefined) {
      const ended = read(event, event.type, runEndedData);
      const atGate = ended?.atGate ?? undefined;
      if (ended !== undefined) evidence.end = { state: endState, by: event.actor, outcome: ended.outcome ?? ended.reason ?? (atGate === undefined ? undefined : `at gate ${atGate}`), ...at };
    }
  }

  const gates = evidence.gates;
  // Without the gate list (no readable run.requested) only the Git gates are surely expected; later
  // links are expected once the log shows the run reached them.
  const expectsFreight = gates?.includes('freight') ?? evidence.freight !== undefined;
  const expectsApproval = gates?.includes('approval') ?? evidence.approvalRequest !== undefined;
  evidence.expects = { freight: expectsFreight, approval: expectsApproval };
  const expectedStages = (gates ?? []).flatMap((gate) => (gate.startsWith('stage:') ? [gate.slice('stage:'.length)] : gate === 'argocd' ? ['argocd'] : []));
  for (const name of expectedStages) evidence.stages.push(verdicts.get(name) ?? { stage: name, verdict: 'missing' });
  for (const [name, verdict] of verdicts) if (!expectedStages.includes(name)) evidence.stages.push(verdict);

  const missing = evidence.missing;
  if (evidence.requester === undefined) missing.push('requester');
  if (evidence.commits.length === 0) missing.push('commit');
  if (evidence.pullRequests.length === 0) missing.push('pull request');
  if (evidence.ci === undefined) missing.push('CI');
  if (evidence.merge === undefined) missing.push('merge');
  if (expectsFreight && evidence.freight === undefined) missing.push('Freight');
  const prodStage = gates === undefined ? evidence.approvalRequest?.stage : approvalStage(gates);
  for (const stage of evidence.stages) {
    if (stage.stage === prodStage) continue;
    if (stage.verdict === 'missing') missing.push(`${stage.stage} verified`);
  }
  // A rejection or an expiry is the chain's recorded end, not a gap: nothing after it may exist.
  const decidedAgainst = evidence.rejection !== undefined || evidence.expired !== undefined;
  if (expectsApproval && !decidedAgainst) {
    if (evidence.approvalRequest === undefined) missing.push('approval request');
    else if (!evidence.approvals.some((a) => a.complete && a.freight === evidence.approvalRequest?.freight)) missing.push('approvals');
    if (prodStage !== undefined) {
      if (!evidence.promotions.some((p) => p.stage === prodStage)) missing.push(`Promotion to ${prodStage}`);
      const prod = evidence.stages.find((s) => s.stage === prodStage);
      if (prod?.verdict === 'missing') missing.push(`${prodStage} verified`);
    }
  }
  return evidence;
}
