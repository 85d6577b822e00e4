import { describe, expect, it } from 'vitest';
import { checkTrustInvariants, isAuthorised, type TrustContext } from '../../src/audit/trust-invariants.js';
import {
  chainPolicy,
  expectNoTrustViolations,
  freightOf,
  interleave,
  nonceOf,
  planEvents,
  rulesOf,
  type DraftEvent,
  type RunPlan,
} from '../helpers/trust-chains.js';

/**
 * The trust-boundary invariant checker (issue 10), rule by rule: a complete valid chain has no
 * violation, and each log below breaks exactly one rule.
 */

const RUN = 'sg-run1';
const HOUR = 3_600_000;
const START = Date.parse('2025-06-01T09:00:00Z');

const POLICY = chainPolicy({
  preStages: ['dev', 'qa'],
  prodStage: 'prod',
  approvers: ['U-ann', 'U-bob', 'S-release', 'S-oncall'],
  minApprovals: 2,
  allowSelfApproval: false,
  expiresAfterMs: HOUR,
});

/** S-release resolves; S-oncall is a listed group this checker cannot resolve. */
const membership = (id: string): readonly string[] | undefined => (id === 'S-release' ? ['U-gil', 'U-gus'] : undefined);
const CONTEXT: TrustContext = { policy: POLICY, membership };

const PLAN: RunPlan = {
  runId: RUN,
  repo: 'acme/shop',
  task: 'add a healthz endpoint',
  requester: 'U-req',
  preStages: ['dev', 'qa'],
  prodStage: 'prod',
  ciRedRounds: 1,
  botPromotes: false,
  approvals: [
    { userId: 'U-ann', via: 'U-ann', afterMs: 60_000 },
    { userId: 'U-gil', via: 'S-release', afterMs: 120_000 },
  ],
  duplicateApprovals: 0,
  refusals: ['U-eve'],
  outcome: 'promoted',
  minApprovals: 2,
  approvers: ['U-ann', 'U-bob', 'S-release', 'S-oncall'],
  allowSelfApproval: false,
  expiresAfterMs: HOUR,
  startMs: START,
};

const check = (drafts: readonly DraftEvent[], context: TrustContext = CONTEXT) =>
  checkTrustInvariants(interleave([drafts]), context);
const rules = (drafts: readonly DraftEvent[], context: TrustContext = CONTEXT) => rulesOf(check(drafts, context));

const indexOf = (drafts: readonly DraftEvent[], match: (d: DraftEvent) => boolean): number => {
  const index = drafts.findIndex(match);
  if (index < 0) throw new Error('no such event in the chain');
  return index;
};
const is =
  (type: DraftEvent['type'], data: Record<string, unknown> = {}) =>
  (d: DraftEvent) =>
    d.type === type && Object.entries(data).every(([k, v]) => d.data[k] === v);

function without(drafts: readonly DraftEvent[], match: (d: DraftEvent) => boolean): DraftEvent[] {
  const index = indexOf(drafts, match);
  return [...drafts.slice(0, index), ...drafts.slice(index + 1)];
}
function change(
  drafts: readonly DraftEvent[],
  match: (d: DraftEvent) => boolean,
  data: Record<string, unknown>,
): DraftEvent[] {
  const index = indexOf(drafts, match);
  return drafts.map((d, i) => (i === index ? { ...d, data: { ...d.data, ...data } } : d));
}
function insertBefore(
  drafts: readonly DraftEvent[],
  match: (d: DraftEvent) => boolean,
  ...events: DraftEvent[]
): DraftEvent[] {
  const index = indexOf(drafts, match);
  return [...drafts.slice(0, index), ...events, ...drafts.slice(index)];
}
const PROMOTION = is('promotion.created', { stage: 'prod' });
const F0 = freightOf(RUN, 0);
const N0 = nonceOf(RUN, 0);
const approvalData = (userId: string, via: string, at: string) => ({
  stage: 'prod',
  freight: F0,
  nonce: N0,
  userId,
  via,
  at,
  count: 3,
  of: 2,
  complete: true,
});
const during = new Date(START + 30 * 60_000).toISOString();

describe('trust invariants: a valid chain', () => {
  it('a complete chain (red CI round, two pre-production stages, a direct and a group approver, a refused click) has no violation', () => {
    const drafts = planEvents(PLAN);
    expect(drafts.map((d) => d.type)).toContain('promotion.created');
    expectNoTrustViolations(interleave([drafts]), POLICY, { membership });
  });

  it('takes full audit events and any mix of runs: two valid runs interleaved, one of them ending at merge, stay clean', () => {
    const other = planEvents({ ...PLAN, runId: 'sg-run2', repo: 'acme/lib', prodStage: undefined });
    const events = interleave([planEvents(PLAN), other], [0, 1, 1, 0, 1, 0, 0, 1, 1, 1, 0]);
    expect(new Set(events.slice(0, 6).map((e) => e.runId))).toEqual(new Set([RUN, 'sg-run2']));
    expectNoTrustViolations(events, POLICY, { membership });
  });

  it('counts people, not events: a duplicated approval event is one approver', () => {
    expect(check(planEvents({ ...PLAN, duplicateApprovals: 2 }))).toEqual([]);
  });

  it('a fix forward after a red pre-production stage is judged on the new Freight only', () => {
    const drafts = planEvents({ ...PLAN, fixForwardAt: 1, botPromotes: true });
    expect(
      drafts.filter(is('stage.verdict', { stage: 'qa', verdict: 'failed', freight: freightOf(RUN, 0) })),
    ).toHaveLength(1);
    expect(check(drafts)).toEqual([]);
  });

  it('a fix forward after a red production gate may promote again: a new Freight, a new request, new approvals', () => {
    expect(check(withProductionFixForward(planEvents(PLAN)))).toEqual([]);
  });

  it('an approver through a listed group the checker cannot resolve counts (the gate resolved it)', () => {
    const drafts = change(planEvents(PLAN), is('approval.approved', { userId: 'U-gil' }), {
      userId: 'U-olga',
      via: 'S-oncall',
    });
    expect(check(drafts)).toEqual([]);
  });

  it('a run that is rejected, expired or still pending has no Promotion and no violation', () => {
    for (const outcome of ['rejected', 'expired', 'pending'] as const)
      expect(check(planEvents({ ...PLAN, outcome }))).toEqual([]);
  });
});

describe('trust invariants: each rule', () => {
  const valid = planEvents(PLAN);

  it('own-branch: a commit pushed to another run’s branch, the default branch, or not saying where', () => {
    const pushed = (branch: string) =>
      insertBefore(valid, is('pr.merged'), {
        runId: RUN,
        type: 'commit.created',
        actor: 'shipgate',
        data: { commit: 'e'.repeat(40), branch },
      });
    expect(rules(pushed('shipgate/sg-run2-add-a-healthz-endpoint'))).toEqual([['own-branch', RUN]]);
    expect(rules(pushed('main'), { ...CONTEXT, defaultBranch: () => 'main' })).toEqual([['own-branch', RUN]]);
    expect(
      rules(
        insertBefore(valid, is('pr.merged'), {
          runId: RUN,
          type: 'commit.created',
          actor: 'shipgate',
          data: { commit: 'e'.repeat(40) },
        }),
      ),
    ).toEqual([['own-branch', RUN]]);
    expect(rules(change(valid, is('pr.opened'), { head: 'feature/x' }))).toEqual([['own-branch', RUN]]);
  });

  it('run-requested: a Promotion of a run with no readable request', () => {
    expect(rules(without(valid, is('run.requested')))).toEqual([['run-requested', RUN]]);
  });

  it('unknown-stage: a Promotion into a stage the pipeline does not have', () => {
    const drafts = insertBefore(valid, PROMOTION, {
      runId: RUN,
      type: 'promotion.created',
      actor: 'shipgate',
      data: { stage: 'canary', freight: F0, promotion: 'canary.1' },
    });
    expect(rules(drafts)).toEqual([['unknown-stage', RUN]]);
  });

  it('promotion-evidence: a promotion.created that names no stage or Freight', () => {
    expect(rules(change(valid, PROMOTION, { freight: 42 }))).toEqual([['promotion-evidence', RUN]]);
  });

  it('freight-found: the promoted Freight was never found (or only after the Promotion)', () => {
    expect(rules(without(valid, is('freight.found')))).toEqual([['freight-found', RUN]]);
    // A pre-production Promotion of the bot before the Freight was found.
    const early = planEvents({ ...PLAN, botPromotes: true });
    const devPromotion = early[indexOf(early, is('promotion.created', { stage: 'dev' }))]!;
    const moved = insertBefore(
      without(early, is('promotion.created', { stage: 'dev' })),
      is('freight.found'),
      devPromotion,
    );
    expect(rules(moved)).toEqual([['freight-found', RUN]]);
  });

  it('merged: the Freight carries a commit this run never merged', () => {
    expect(rules(change(valid, is('pr.merged'), { mergeCommit: 'f'.repeat(40) }))).toEqual([['merged', RUN]]);
    // A pre-production Promotion too.
    expect(
      rules(change(planEvents({ ...PLAN, botPromotes: true }), is('pr.merged'), { mergeCommit: 'f'.repeat(40) })),
    ).toEqual([
      ['merged', RUN],
      ['merged', RUN],
      ['merged', RUN],
    ]);
  });

  it('ci-green: the merged commit had red CI, no CI, or a commit came after CI went green', () => {
    const lastVerdict = valid.filter(is('ci.verdict')).at(-1)!;
    const red = valid.map((d) => (d === lastVerdict ? { ...d, data: { ...d.data, verdict: 'failed' } } : d));
    expect(rules(red)).toEqual([['ci-green', RUN]]);
    expect(rules(valid.filter((d) => d !== lastVerdict))).toEqual([['ci-green', RUN]]);
    const branch = String(valid[indexOf(valid, is('pr.merged'))]!.data.head);
    const late = insertBefore(valid, is('pr.merged'), {
      runId: RUN,
      type: 'commit.created',
      actor: 'shipgate',
      data: { commit: 'a'.repeat(40), branch },
    });
    expect(rules(late)).toEqual([['ci-green', RUN]]);
  });

  it('stages-verified: a pre-production stage not verified (or failed last) for that Freight', () => {
    expect(rules(without(valid, is('stage.verdict', { stage: 'qa' })))).toEqual([['stages-verified', RUN]]);
    const failedAfter = insertBefore(valid, is('approval.requested'), {
      runId: RUN,
      type: 'stage.verdict',
      actor: 'shipgate',
      data: { stage: 'dev', freight: F0, verdict: 'failed' },
    });
    expect(rules(failedAfter)).toEqual([['stages-verified', RUN]]);
    const otherFreight = change(valid, is('stage.verdict', { stage: 'dev' }), { freight: 'f-other' });
    expect(rules(otherFreight)).toEqual([['stages-verified', RUN]]);
  });

  it('approval-requested: approvals and a Promotion with no request for that stage and Freight', () => {
    expect(rules(without(valid, is('approval.requested')))).toEqual([
      ['approval-requested', RUN],
      ['approval-requested', RUN],
      ['approval-requested', RUN],
    ]);
  });

  it('request-policy: a request weaker than the policy', () => {
    expect(rules(change(valid, is('approval.requested'), { minApprovals: 1 }))).toEqual([['request-policy', RUN]]);
    expect(rules(change(valid, is('approval.requested'), { allowSelfApproval: true }))).toEqual([
      ['request-policy', RUN],
    ]);
    expect(rules(change(valid, is('approval.requested'), { approvers: ['U-ann', 'U-eve'] }))).toEqual([
      ['request-policy', RUN],
    ]);
    expect(rules(change(valid, is('approval.requested'), { requester: 'U-someone' }))).toEqual([
      ['request-policy', RUN],
    ]);
    expect(rules(change(valid, is('approval.requested'), { expiresAt: '2030-01-01T00:00:00.000Z' }))).toEqual([
      ['request-policy', RUN],
    ]);
  });

  it('self-approval: the requester’s approval never counts without allowSelfApproval', () => {
    // U-bob is a listed approver and the requester here: his own approval is the violation.
    const drafts = planEvents({ ...PLAN, requester: 'U-bob' });
    const extra = insertBefore(drafts, PROMOTION, {
      runId: RUN,
      type: 'approval.approved',
      actor: 'U-bob',
      data: approvalData('U-bob', 'U-bob', during),
    });
    expect(rules(extra)).toEqual([['self-approval', RUN]]);
    // … and allowed by a policy that says so.
    const lenient = chainPolicy({
      preStages: ['dev', 'qa'],
      prodStage: 'prod',
      approvers: PLAN.approvers,
      minApprovals: 2,
      allowSelfApproval: true,
      expiresAfterMs: HOUR,
    });
    const allowed = planEvents({
      ...PLAN,
      requester: 'U-bob',
      allowSelfApproval: true,
      approvals: [PLAN.approvals[0]!, { userId: 'U-bob', via: 'U-bob', afterMs: 90_000 }],
    });
    expect(rules(allowed, { policy: lenient, membership })).toEqual([]);
  });

  it('approver-authorised: someone not listed, not in a listed group, or via a group that is not listed', () => {
    const extra = (userId: string, via: string) =>
      insertBefore(valid, PROMOTION, {
        runId: RUN,
        type: 'approval.approved',
        actor: userId,
        data: approvalData(userId, via, during),
      });
    expect(rules(extra('U-eve', 'U-eve'))).toEqual([['approver-authorised', RUN]]);
    expect(rules(extra('U-eve', 'S-release'))).toEqual([['approver-authorised', RUN]]);
    expect(rules(extra('U-eve', 'S-unlisted'))).toEqual([['approver-authorised', RUN]]);
    expect(rules(extra('U-olga', 'S-oncall'))).toEqual([]);
  });

  it('approval-expired: an approval at or after the deadline', () => {
    const deadline = new Date(
      Date.parse(String(valid[indexOf(valid, is('approval.requested'))]!.data.expiresAt)),
    ).toISOString();
    const extra = insertBefore(valid, PROMOTION, {
      runId: RUN,
      type: 'approval.approved',
      actor: 'U-bob',
      data: approvalData('U-bob', 'U-bob', deadline),
    });
    expect(rules(extra)).toEqual([['approval-expired', RUN]]);
  });

  it('approvals-count: fewer than minApprovals valid approvals before the Promotion', () => {
    expect(rules(without(valid, is('approval.approved', { userId: 'U-gil' })))).toEqual([['approvals-count', RUN]]);
    // The Promotion before the approvals.
    const promotion = valid[indexOf(valid, PROMOTION)]!;
    const early = insertBefore(without(valid, PROMOTION), is('approval.approved'), promotion);
    expect(rules(early)).toEqual([['approvals-count', RUN]]);
    // Approvals of another Freight never count for this one.
    const otherFreight = change(valid, is('approval.approved', { userId: 'U-gil' }), { freight: 'f-other' });
    expect(rules(otherFreight)).toEqual([
      ['approval-requested', RUN],
      ['approvals-count', RUN],
    ]);
  });

  it('not-rejected: a Promotion after the request was rejected or expired', () => {
    const ended = (type: 'approval.rejected' | 'approval.expired') =>
      insertBefore(valid, PROMOTION, {
        runId: RUN,
        type,
        actor: 'U-bob',
        data: {
          stage: 'prod',
          freight: F0,
          nonce: N0,
          userId: 'U-bob',
          by: 'approver',
          at: during,
          expiresAt: during,
          approvers: [],
        },
      });
    expect(rules(ended('approval.rejected'))).toEqual([['not-rejected', RUN]]);
    expect(rules(ended('approval.expired'))).toEqual([['not-rejected', RUN]]);
  });

  it('one-promotion: a second production Promotion of the run; the same one recorded twice is one', () => {
    const promotion = valid[indexOf(valid, PROMOTION)]!;
    const second = { ...promotion, data: { ...promotion.data, promotion: 'prod.second' } };
    expect(rules([...valid, second])).toEqual([['one-promotion', RUN]]);
    expect(rules([...valid, { ...promotion }])).toEqual([]);
  });

  it('one-promotion: the same Freight promoted again after a second request for it', () => {
    const drafts = withProductionFixForward(valid, { sameFreight: true });
    expect(rules(drafts)).toEqual([['one-promotion', RUN]]);
  });

  it('evidence of another run never counts for this one', () => {
    const mine = planEvents(PLAN);
    const theirs = planEvents({ ...PLAN, runId: 'sg-run2' });
    // Run 2's Promotion carries run 1's Freight.
    const stolen = change(theirs, PROMOTION, { freight: F0 });
    const violations = checkTrustInvariants(interleave([mine, stolen], [0, 1]), CONTEXT);
    expect(violations.every((v) => v.runId === 'sg-run2')).toBe(true);
    expect(rulesOf(violations)).toContainEqual(['freight-found', 'sg-run2']);
  });
});

describe('isAuthorised', () => {
  it('listed users, members of listed groups, and unresolvable listed groups named as via', () => {
    const approvers = ['U-ann', 'S-release', 'S-oncall'];
    expect(isAuthorised('U-ann', 'U-ann', approvers, membership)).toBe(true);
    expect(isAuthorised('U-gus', 'S-release', approvers, membership)).toBe(true);
    expect(isAuthorised('U-gus', 'U-gus', approvers, membership)).toBe(true);
    expect(isAuthorised('U-olga', 'S-oncall', approvers, membership)).toBe(true);
    expect(isAuthorised('U-olga', 'S-oncall', approvers, undefined)).toBe(true);
    expect(isAuthorised('U-eve', 'S-release', approvers, membership)).toBe(false);
    expect(isAuthorised('U-eve', 'U-eve', approvers, membership)).toBe(false);
    expect(isAuthorised('U-eve', 'S-other', approvers, membership)).toBe(false);
  });
});

/**
 * The valid chain followed by a red production gate and a fix forward through every gate again,
 * with a new request and two approvals; `sameFreight` makes the second cycle promote the first
 * Freight again (after a second request for it), which is never right.
 */
function withProductionFixForward(
  drafts: readonly DraftEvent[],
  options: { sameFreight?: boolean } = {},
): DraftEvent[] {
  const bot = (type: DraftEvent['type'], data: Record<string, unknown>): DraftEvent => ({
    runId: RUN,
    type,
    actor: 'shipgate',
    data,
  });
  const branch = `shipgate/${RUN}-fix-1-add-a-healthz-endpoint`;
  const commit = 'c'.repeat(40);
  const merge = 'd'.repeat(40);
  const freight = options.sameFreight === true ? F0 : freightOf(RUN, 1);
  const nonce = nonceOf(RUN, 1);
  const requestedMs = START + 2 * HOUR;
  const at = (ms: number) => new Date(requestedMs + ms).toISOString();
  const approve = (userId: string, via: string, ms: number): DraftEvent => ({
    runId: RUN,
    type: 'approval.approved',
    actor: userId,
    data: { stage: 'prod', freight, nonce, userId, via, at: at(ms), count: 1, of: 2, complete: false },
  });
  const last = drafts.filter(is('stage.verdict', { stage: 'prod' })).at(-1)!;
  return [
    ...drafts.filter((d) => d !== last && d.type !== 'run.done'),
    { ...last, data: { ...last.data, verdict: 'failed', kind: 'verification' } },
    bot('commit.created', { commit, branch }),
    bot('pr.opened', { number: 202, head: branch, commit }),
    bot('ci.verdict', { commit, pr: 202, verdict: 'passed' }),
    bot('pr.merged', { pr: 202, mergeCommit: merge, head: branch }),
    ...(options.sameFreight === true ? [] : [bot('freight.found', { freight, commit: merge })]),
    bot('stage.verdict', { stage: 'dev', freight, verdict: 'passed' }),
    bot('stage.verdict', { stage: 'qa', freight, verdict: 'passed' }),
    bot('approval.requested', {
      stage: 'prod',
      freight,
      nonce,
      requester: 'U-req',
      approvers: PLAN.approvers,
      minApprovals: 2,
      allowSelfApproval: false,
      requestedAt: at(0),
      expiresAt: at(HOUR),
    }),
    approve('U-bob', 'U-bob', 1_000),
    approve('U-gus', 'S-release', 2_000),
    bot('promotion.created', { stage: 'prod', freight, promotion: 'prod.fix-1', approvers: ['U-bob', 'U-gus'] }),
  ];
}
