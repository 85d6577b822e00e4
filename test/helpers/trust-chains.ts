import { expect } from 'vitest';
import type { AuditEventType } from '../../src/audit/audit-log.js';
import {
  checkTrustInvariants,
  formatTrustViolations,
  type TrustContext,
  type TrustEvent,
  type TrustViolation,
} from '../../src/audit/trust-invariants.js';
import type { Policy } from '../../src/config/policy.js';
import { branchName } from '../../src/git/branch-names.js';

/**
 * Audit chains for the trust-boundary invariant checker (`src/audit/trust-invariants.ts`): a run
 * described as a plan becomes the events the gates would write, in order; several runs are
 * interleaved into one log with global seqs. And the assertion later end-to-end tests use over a
 * real audit log.
 */

/** Asserts the checker finds nothing in `events` (as `auditLog.allEvents()` or `eventsForRun()` return them). */
export function expectNoTrustViolations(
  events: readonly TrustEvent[],
  policy: TrustContext['policy'],
  options: Omit<TrustContext, 'policy'> = {},
): void {
  const violations = checkTrustInvariants(events, { ...options, policy });
  expect(violations, formatTrustViolations(violations)).toEqual([]);
}

/** The violations as `[rule, runId]` pairs: what most assertions compare. */
export function rulesOf(violations: readonly TrustViolation[]): [string, string][] {
  return violations.map((v) => [v.rule, v.runId]);
}

/** One event before it has a place in the log. */
export interface DraftEvent {
  runId: string;
  type: AuditEventType;
  actor: string;
  data: Record<string, unknown>;
}

export interface PlannedApproval {
  userId: string;
  /** The listed id through which the approver was authorised (the user id itself, or a group). */
  via: string;
  /** Milliseconds after the request; below its `expiresAfter` for a valid chain. */
  afterMs: number;
}

export interface RunPlan {
  runId: string;
  repo: string;
  task: string;
  requester: string;
  /** The pipeline's stages before the approved one, in order. */
  preStages: readonly string[];
  /** The stage behind the approval; undefined for a repository whose runs end at merge. */
  prodStage?: string | undefined;
  /** Red CI rounds (each a new commit on the same branch) before the green one. */
  ciRedRounds: number;
  /** Index of a pre-production stage that goes red for the first Freight, followed by a fix forward (new branch, PR, Freight). */
  fixForwardAt?: number | undefined;
  /** Whether the bot records pre-production Promotions (`promote: bot`) rather than following Kargo's. */
  botPromotes: boolean;
  /** The counted approvals, in order: distinct people, enough for the policy on a promoted run. */
  approvals: readonly PlannedApproval[];
  /** How many counted approvals are written a second time (a reader must count people, not events). */
  duplicateApprovals: number;
  /** Clicks that did not count (`approval.refused`), with who clicked. */
  refusals: readonly string[];
  outcome: 'promoted' | 'rejected' | 'expired' | 'pending';
  minApprovals: number;
  approvers: readonly string[];
  allowSelfApproval: boolean;
  expiresAfterMs: number;
  /** The run's own clock: every data time of the run is counted from here. */
  startMs: number;
}

const sha = (runId: string, label: string): string => {
  // A deterministic 40-hex SHA-like id per run and label.
  let h = 2166136261;
  for (const ch of `${runId}:${label}`) h = Math.imul(h ^ ch.charCodeAt(0), 16777619) >>> 0;
  return Array.from({ length: 5 }, (_, i) => ((h * (i + 7)) >>> 0).toString(16).padStart(8, '0')).join('');
};

export const freightOf = (runId: string, cycle: number): string => `f-${runId}-${cycle}`;
export const nonceOf = (runId: string, cycle: number): string => `n-${runId}-${cycle}`;
export const promotionOf = (runId: string, stage: string, cycle: number): string => `${stage}.${runId}.${cycle}`;

/** The events a run's gates write for `plan`, in the run's order. */
export function planEvents(plan: RunPlan): DraftEvent[] {
  const { runId } = plan;
  const out: DraftEvent[] = [];
  let clock = plan.startMs;
  const now = (): string => new Date((clock += 1_000)).toISOString();
  const bot = (type: AuditEventType, data: Record<string, unknown>, gate: string): void => {
    out.push({ runId, type, actor: 'shipgate', data: { gate, ...data } });
  };

  out.push({
    runId,
    type: 'run.requested',
    actor: plan.requester,
    data: { repo: plan.repo, task: plan.task, at: now() },
  });
  out.push({ runId, type: 'run.queued', actor: 'shipgate', data: {} });

  const cycles = plan.fixForwardAt === undefined ? 1 : 2;
  let prNumber = 100;
  for (let cycle = 0; cycle < cycles; cycle += 1) {
    const branch = branchName(runId, cycle === 0 ? plan.task : `fix ${cycle} ${plan.task}`);
    prNumber += 1;
    const rounds = cycle === 0 ? plan.ciRedRounds : 0;
    for (let round = 0; round <= rounds; round += 1) {
      const commit = sha(runId, `c${cycle}.${round}`);
      bot('agent.iteration', { iteration: round + 1 }, 'agent');
      bot('commit.created', { commit, branch, files: 1 }, 'agent');
      if (round === 0) bot('pr.opened', { number: prNumber, head: branch, commit }, 'pr');
      bot('ci.verdict', { commit, pr: prNumber, verdict: round === rounds ? 'passed' : 'failed' }, 'ci');
    }
    const mergeCommit = sha(runId, `m${cycle}`);
    bot('pr.merged', { pr: prNumber, mergeCommit, head: branch }, 'merge');
    if (plan.prodStage === undefined) return out;

    const freight = freightOf(runId, cycle);
    bot('freight.found', { freight, commit: mergeCommit, alias: null }, 'freight');
    for (const [index, stage] of plan.preStages.entries()) {
      const promotion = promotionOf(runId, stage, cycle);
      if (plan.botPromotes)
        bot('promotion.created', { stage, kargoStage: stage, freight, promotion, found: false }, `stage:${stage}`);
      const red = cycle === 0 && plan.fixForwardAt === index;
      bot(
        'stage.verdict',
        { stage, freight, promotion, verdict: red ? 'failed' : 'passed', ...(red ? { kind: 'verification' } : {}) },
        `stage:${stage}`,
      );
      if (red) break;
    }
    if (cycle + 1 < cycles) {
      bot('gate.sent_back', { to: 'agent' }, `stage:${plan.preStages[plan.fixForwardAt ?? 0] ?? ''}`);
      continue;
    }

    const stage = plan.prodStage;
    const nonce = nonceOf(runId, cycle);
    const requestedMs = (clock += 1_000);
    const requestedAt = new Date(requestedMs).toISOString();
    const expiresAt = new Date(requestedMs + plan.expiresAfterMs).toISOString();
    bot(
      'approval.requested',
      {
        stage,
        freight,
        nonce,
        mergeCommit,
        requester: plan.requester,
        approvers: [...plan.approvers],
        minApprovals: plan.minApprovals,
        allowSelfApproval: plan.allowSelfApproval,
        requestedAt,
        expiresAt,
      },
      'approval',
    );
    const refusals = [...plan.refusals];
    const refuse = (): void => {
      const who = refusals.shift();
      if (who === undefined) return;
      out.push({
        runId,
        type: 'approval.refused',
        actor: who,
        data: {
          action: 'approve',
          freight,
          nonce,
          reason: 'not-approver',
          message: 'You are not an approver of this run.',
          at: new Date(requestedMs + 10).toISOString(),
        },
      });
    };
    refuse();
    const approved =
      plan.outcome === 'promoted' ? plan.approvals : plan.approvals.slice(0, Math.max(0, plan.minApprovals - 1));
    let duplicates = plan.duplicateApprovals;
    approved.forEach((approval, index) => {
      const data = {
        stage,
        freight,
        nonce,
        userId: approval.userId,
        via: approval.via,
        at: new Date(requestedMs + approval.afterMs).toISOString(),
        count: index + 1,
        of: plan.minApprovals,
        complete: index + 1 >= plan.minApprovals,
      };
      out.push({ runId, type: 'approval.approved', actor: approval.userId, data });
      if (duplicates > 0) {
        duplicates -= 1;
        out.push({ runId, type: 'approval.approved', actor: approval.userId, data: { ...data } });
      }
      refuse();
    });
    while (refusals.length > 0) refuse();
    clock = Math.max(clock, requestedMs + (approved.at(-1)?.afterMs ?? 0));

    if (plan.outcome === 'rejected') {
      const by = plan.approvers.includes(plan.requester) ? 'approver' : 'requester';
      out.push({
        runId,
        type: 'approval.rejected',
        actor: plan.requester,
        data: { stage, freight, nonce, userId: plan.requester, by, at: now() },
      });
      out.push({ runId, type: 'run.rejected', actor: plan.requester, data: {} });
    } else if (plan.outcome === 'expired') {
      bot(
        'approval.expired',
        { stage, freight, nonce, expiresAt, approvers: approved.map((a) => a.userId) },
        'approval',
      );
      bot('run.expired', {}, 'approval');
    } else if (plan.outcome === 'promoted') {
      const promotion = promotionOf(runId, stage, cycle);
      bot(
        'promotion.created',
        { stage, kargoStage: stage, freight, promotion, approvers: approved.map((a) => a.userId), found: false },
        `stage:${stage}`,
      );
      bot('stage.verdict', { stage, freight, promotion, verdict: 'passed' }, `stage:${stage}`);
      bot('run.done', {}, 'run');
    }
  }
  return out;
}

/**
 * Interleaves runs' events into one log, keeping each run's order: `picks[i]` chooses (modulo the
 * runs with events left) whose next event is #i+1. Without picks, runs follow one another.
 */
export function interleave(runs: readonly (readonly DraftEvent[])[], picks: readonly number[] = []): TrustEvent[] {
  const queues = runs.map((events) => [...events]);
  const out: TrustEvent[] = [];
  const base = Date.parse('2025-06-01T00:00:00Z');
  for (let i = 0; ; i += 1) {
    const open = queues.filter((q) => q.length > 0);
    if (open.length === 0) return out;
    const queue = open[(picks[i] ?? 0) % open.length]!;
    const draft = queue.shift()!;
    out.push({ ...draft, seq: out.length + 1, at: new Date(base + out.length * 1_000).toISOString() });
  }
}

/** The policy the plans are written against. */
export function chainPolicy(input: {
  preStages: readonly string[];
  prodStage: string;
  approvers: readonly string[];
  minApprovals: number;
  allowSelfApproval: boolean;
  expiresAfterMs: number;
  botPromotes?: boolean;
}): Pick<Policy, 'repos' | 'pipelines'> {
  return {
    repos: {
      'acme/shop': { checks: {}, protectedPaths: [], pipeline: 'shop' },
      'acme/lib': { checks: {}, protectedPaths: [] },
    },
    pipelines: {
      shop: {
        kargo: { project: 'shop', warehouse: 'shop', match: 'commit' },
        argocdNamespace: 'argocd',
        stages: [
          ...input.preStages.map((name) => ({
            name,
            kargoStage: name,
            argocdApps: [],
            promote: input.botPromotes === true ? ('bot' as const) : ('auto' as const),
          })),
          {
            name: input.prodStage,
            kargoStage: input.prodStage,
            argocdApps: [],
            promote: 'bot' as const,
            approval: {
              approvers: [...input.approvers],
              minApprovals: input.minApprovals,
              allowSelfApproval: input.allowSelfApproval,
              expiresAfter: input.expiresAfterMs,
            },
          },
        ],
      },
    },
  };
}
