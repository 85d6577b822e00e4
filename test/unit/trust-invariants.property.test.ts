import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { checkTrustInvariants, formatTrustViolations } from '../../src/audit/trust-invariants.js';
import {
  chainPolicy,
  interleave,
  planEvents,
  type DraftEvent,
  type PlannedApproval,
  type RunPlan,
} from '../helpers/trust-chains.js';

/**
 * Property-based runs of the trust-boundary invariant checker (issue 10): random valid logs (any
 * number of pre-production stages, approvers listed directly and through groups, 1–3 approvals,
 * red CI rounds, fix forwards, refused clicks, duplicated approval events, several runs
 * interleaved, runs that end rejected, expired or pending) have zero violations and exactly one
 * production Promotion per approved run; any one of the mutations below makes at least one
 * violation, and only in the mutated run.
 */

const RUNS = 200;
const HOUR = 3_600_000;
const PROD = 'prod';
const STAGE_NAMES = ['dev', 'test', 'qa', 'staging'];

/** People: U-ann and U-bob are listed directly, U-gil… are in S-release, U-olga… in S-oncall (not resolvable here). */
const GROUPS: Record<string, readonly string[]> = {
  'S-release': ['U-gil', 'U-gus', 'U-gwen'],
  'S-oncall': ['U-olga', 'U-otto'],
};
const membership = (id: string): readonly string[] | undefined =>
  id === 'S-release' ? GROUPS['S-release'] : undefined;
const REQUESTERS = ['U-req', 'U-rita', 'U-ann', 'U-gil'];

interface Scenario {
  policy: ReturnType<typeof chainPolicy>;
  plans: RunPlan[];
  picks: number[];
}

/** Who may approve under `approvers`, each with the id through which (the requester excluded unless allowed). */
function eligible(
  approvers: readonly string[],
  requester: string,
  allowSelfApproval: boolean,
): { userId: string; via: string }[] {
  const people: { userId: string; via: string }[] = [];
  for (const id of approvers) {
    const members = GROUPS[id];
    if (members === undefined) people.push({ userId: id, via: id });
    else for (const userId of members) if (!people.some((p) => p.userId === userId)) people.push({ userId, via: id });
  }
  return people.filter((p) => allowSelfApproval || p.userId !== requester);
}

const settingsArb = fc.record({
  preStageCount: fc.integer({ min: 0, max: 3 }),
  // Always enough people for 3 approvals whoever requests: U-bob and S-release are never left out.
  approvers: fc.subarray(['U-ann', 'S-oncall'], { minLength: 0 }).map((ids) => [...ids, 'U-bob', 'S-release']),
  minApprovals: fc.integer({ min: 1, max: 3 }),
  allowSelfApproval: fc.boolean(),
  expiresAfterMs: fc.constantFrom(HOUR, 4 * HOUR, 24 * HOUR),
  botPromotes: fc.boolean(),
});
type Settings = typeof settingsArb extends fc.Arbitrary<infer T> ? T : never;

function runArb(settings: Settings, index: number, forceOutcome?: RunPlan['outcome']): fc.Arbitrary<RunPlan> {
  const preStages = STAGE_NAMES.slice(0, settings.preStageCount);
  return fc
    .record({
      requester: fc.constantFrom(...REQUESTERS),
      shippedToProd: fc.constantFrom(true, true, true, false),
      ciRedRounds: fc.integer({ min: 0, max: 2 }),
      fixForward: fc.boolean(),
      fixForwardAt: fc.nat(),
      outcome:
        forceOutcome === undefined
          ? fc.constantFrom<RunPlan['outcome']>('promoted', 'promoted', 'rejected', 'expired', 'pending')
          : fc.constant(forceOutcome),
      shuffle: fc.array(fc.nat(), { minLength: 8, maxLength: 8 }),
      offsets: fc.uniqueArray(fc.integer({ min: 1, max: 3_599 }), { minLength: 3, maxLength: 3 }),
      duplicateApprovals: fc.integer({ min: 0, max: 2 }),
      refusals: fc.array(fc.constantFrom('U-eve', 'U-mallory', 'U-req'), { maxLength: 3 }),
      start: fc.integer({ min: 0, max: 10 * 24 }),
    })
    .map((r) => {
      const pool = eligible([...settings.approvers], r.requester, settings.allowSelfApproval);
      // A deterministic shuffle of who approves, then the first minApprovals of them.
      const order = pool
        .map((p, i) => ({ p, key: r.shuffle[i % r.shuffle.length]! * 31 + i }))
        .sort((a, b) => a.key - b.key);
      const times = [...r.offsets].sort((a, b) => a - b);
      const approvals: PlannedApproval[] = order.slice(0, settings.minApprovals).map(({ p }, i) => ({
        ...p,
        // Within the shortest window: seconds after the request, well before it expires.
        afterMs: times[i]! * 1_000,
      }));
      const toProd = forceOutcome !== undefined || r.shippedToProd;
      return {
        runId: `sg-r${index}`,
        repo: toProd ? 'acme/shop' : 'acme/lib',
        task: `change number ${index}`,
        requester: r.requester,
        preStages,
        prodStage: toProd ? PROD : undefined,
        ciRedRounds: r.ciRedRounds,
        fixForwardAt: r.fixForward && preStages.length > 0 ? r.fixForwardAt % preStages.length : undefined,
        botPromotes: settings.botPromotes,
        approvals,
        duplicateApprovals: r.duplicateApprovals,
        refusals: r.refusals,
        outcome: r.outcome,
        minApprovals: settings.minApprovals,
        approvers: settings.approvers,
        allowSelfApproval: settings.allowSelfApproval,
        expiresAfterMs: settings.expiresAfterMs,
        startMs: Date.parse('2025-06-01T00:00:00Z') + r.start * HOUR,
      } satisfies RunPlan;
    });
}

/**
 * A random valid log: 1–4 runs under one random policy, interleaved at random. With `target`, run
 * 0 is a promoted run under `override` (what a mutation needs to apply).
 */
function scenarioArb(override: Partial<Settings> = {}, target = false): fc.Arbitrary<Scenario> {
  return settingsArb
    .map((settings) => ({ ...settings, ...override }))
    .chain((settings) =>
      fc.integer({ min: 1, max: 4 }).chain((count) =>
        fc
          .tuple(
            ...Array.from({ length: count }, (_, i) => runArb(settings, i, target && i === 0 ? 'promoted' : undefined)),
          )
          .chain((plans) => {
            const total = plans.reduce((sum, plan) => sum + planEvents(plan).length, 0);
            return fc.array(fc.nat({ max: 1_000 }), { minLength: total, maxLength: total }).map((picks) => ({
              policy: chainPolicy({
                preStages: STAGE_NAMES.slice(0, settings.preStageCount),
                prodStage: PROD,
                ...settings,
              }),
              plans,
              picks,
            }));
          }),
      ),
    );
}

describe('trust invariants, property-based', () => {
  it('random valid logs have zero violations and exactly one production Promotion per approved run', () => {
    fc.assert(
      fc.property(scenarioArb(), ({ policy, plans, picks }) => {
        const events = interleave(plans.map(planEvents), picks);
        const violations = checkTrustInvariants(events, { policy, membership });
        expect(violations, formatTrustViolations(violations)).toEqual([]);
        for (const plan of plans) {
          const promotions = events.filter(
            (e) => e.runId === plan.runId && e.type === 'promotion.created' && e.data.stage === PROD,
          );
          const approved = plan.prodStage !== undefined && plan.outcome === 'promoted';
          expect(promotions).toHaveLength(approved ? 1 : 0);
        }
      }),
      { numRuns: RUNS },
    );
  });

  type Mutation = {
    name: string;
    /** What the policy must allow for the mutation to apply (e.g. a pre-production stage to drop). */
    needs?: Partial<Settings>;
    apply: (events: DraftEvent[], plan: RunPlan, pick: number) => DraftEvent[];
  };

  const at = (events: readonly DraftEvent[], match: (d: DraftEvent) => boolean, pick: number): number => {
    const indexes = events.flatMap((d, i) => (match(d) ? [i] : []));
    if (indexes.length === 0) throw new Error('the mutation found nothing to change');
    return indexes[pick % indexes.length]!;
  };
  const replace = (events: readonly DraftEvent[], index: number, next: DraftEvent[]): DraftEvent[] => [
    ...events.slice(0, index),
    ...next,
    ...events.slice(index + 1),
  ];
  const isProdPromotion = (d: DraftEvent) => d.type === 'promotion.created' && d.data.stage === PROD;
  const isApproval = (d: DraftEvent) => d.type === 'approval.approved';

  const MUTATIONS: Mutation[] = [
    {
      name: 'drop an approver’s approvals',
      apply: (events, _plan, pick) => {
        const userId = events[at(events, isApproval, pick)]!.data.userId;
        return events.filter((d) => !(isApproval(d) && d.data.userId === userId));
      },
    },
    {
      name: 'make the requester the approver',
      needs: { allowSelfApproval: false },
      apply: (events, plan, pick) => {
        const index = at(events, isApproval, pick);
        const d = events[index]!;
        return replace(events, index, [
          { ...d, actor: plan.requester, data: { ...d.data, userId: plan.requester, via: plan.requester } },
        ]);
      },
    },
    {
      name: 'approve after expiry',
      apply: (events, _plan, pick) => {
        const index = at(events, isApproval, pick);
        const d = events[index]!;
        const request = events.find((e) => e.type === 'approval.requested')!;
        const late = new Date(Date.parse(String(request.data.expiresAt)) + (pick % 3) * 60_000).toISOString();
        return replace(events, index, [{ ...d, data: { ...d.data, at: late } }]);
      },
    },
    {
      name: 'change the promoted Freight',
      apply: (events, plan) => {
        const index = at(events, isProdPromotion, 0);
        const d = events[index]!;
        return replace(events, index, [{ ...d, data: { ...d.data, freight: `f-${plan.runId}-forged` } }]);
      },
    },
    {
      name: 'drop a pre-production stage verdict of the promoted Freight',
      needs: { preStageCount: 2 },
      apply: (events, _plan, pick) => {
        const freight = events[at(events, isProdPromotion, 0)]!.data.freight;
        const index = at(
          events,
          (d) => d.type === 'stage.verdict' && d.data.stage !== PROD && d.data.freight === freight,
          pick,
        );
        return replace(events, index, []);
      },
    },
    {
      name: 'push to another branch',
      apply: (events, plan, pick) => {
        const index = at(events, (d) => d.type === 'commit.created', pick);
        const d = events[index]!;
        const branch = ['main', 'shipgate/sg-r9-someone-else', `release/${plan.runId}`, `shipgate/${plan.runId}`][
          pick % 4
        ]!;
        return replace(events, index, [{ ...d, data: { ...d.data, branch } }]);
      },
    },
    {
      name: 'duplicate the production Promotion',
      apply: (events, _plan, pick) => {
        const index = at(events, isProdPromotion, 0);
        const d = events[index]!;
        const copy = { ...d, data: { ...d.data, promotion: `${String(d.data.promotion)}-again-${pick % 5}` } };
        const where = index + 1 + (pick % (events.length - index));
        return [...events.slice(0, where), copy, ...events.slice(where)];
      },
    },
    {
      name: 'promote before the approval completed',
      apply: (events, _plan, pick) => {
        const index = at(events, isProdPromotion, 0);
        const promotion = events[index]!;
        const rest = replace(events, index, []);
        // Before the last approval (before the first, half of the time).
        const approvals = rest.flatMap((d, i) => (isApproval(d) ? [i] : []));
        const where = pick % 2 === 0 ? approvals[0]! : approvals.at(-1)!;
        // With duplicates, the last counted person's first approval event.
        const lastUser = rest[approvals.at(-1)!]!.data.userId;
        const first = rest.findIndex((d) => isApproval(d) && d.data.userId === lastUser);
        const target = Math.min(where, first);
        return [...rest.slice(0, target), promotion, ...rest.slice(target)];
      },
    },
    {
      name: 'reject before the Promotion',
      apply: (events, plan) => {
        const index = at(events, isProdPromotion, 0);
        const request = events.find((e) => e.type === 'approval.requested')!;
        const reject: DraftEvent = {
          runId: plan.runId,
          type: 'approval.rejected',
          actor: plan.requester,
          data: {
            stage: PROD,
            freight: request.data.freight,
            nonce: request.data.nonce,
            userId: plan.requester,
            by: 'requester',
            at: String(request.data.requestedAt),
          },
        };
        return [...events.slice(0, index), reject, ...events.slice(index)];
      },
    },
    {
      name: 'merge a commit CI did not pass',
      apply: (events, plan) => {
        // The merge of the promoted Freight's commit (the last one, after a fix forward).
        const merge = events.map((d) => d.type).lastIndexOf('pr.merged');
        const branch = events[merge]!.data.head;
        const commit: DraftEvent = {
          runId: plan.runId,
          type: 'commit.created',
          actor: 'shipgate',
          data: { commit: '9'.repeat(40), branch },
        };
        return [...events.slice(0, merge), commit, ...events.slice(merge)];
      },
    },
    {
      name: 'weaken the approval request',
      needs: { minApprovals: 2, allowSelfApproval: false },
      apply: (events, _plan, pick) => {
        const index = at(events, (d) => d.type === 'approval.requested', 0);
        const d = events[index]!;
        const weaker = [{ minApprovals: 1 }, { allowSelfApproval: true, minApprovals: 2 }, { approvers: ['U-eve'] }][
          pick % 3
        ]!;
        return replace(events, index, [{ ...d, data: { ...d.data, ...weaker } }]);
      },
    },
  ];

  for (const mutation of MUTATIONS) {
    it(`a valid log with one mutation has a violation in that run: ${mutation.name}`, () => {
      fc.assert(
        fc.property(scenarioArb(mutation.needs, true), fc.nat({ max: 10_000 }), ({ policy, plans, picks }, pick) => {
          const [target, ...others] = plans;
          const mutated = mutation.apply(planEvents(target!), target!, pick);
          const events = interleave([mutated, ...others.map(planEvents)], picks);
          const violations = checkTrustInvariants(events, { policy, membership });
          expect(violations.length, `no violation after: ${mutation.name}`).toBeGreaterThan(0);
          expect(
            violations.filter((v) => v.runId !== target!.runId),
            formatTrustViolations(violations),
          ).toEqual([]);
        }),
        { numRuns: RUNS },
      );
    });
  }
});
