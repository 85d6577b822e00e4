import fc from 'fast-check';
import { describe, expect, inject, it } from 'vitest';
import { checkTrustInvariants, formatTrustViolations } from '../../src/audit/trust-invariants.js';
import { countedApprovers, isApprover, type ApprovalSettings } from '../../src/domain/approval.js';
import type { CommandReply } from '../../src/ports/chat.js';
import { plainText } from '../../src/render/view.js';
import { createApprovalWorld, REQUESTER, type ApprovalWorld, type ClickInput } from '../helpers/approval-world.js';

/**
 * SPEC §6 and §10 as a property over the REAL click handler, the real approval store and the real
 * audit log in Redis: random interleavings of clicks by random people (listed approvers, members
 * of listed groups, the requester, outsiders), bursts of concurrent clicks, Slack delivering a
 * click again (same deliveryId), buttons of another Freight or an earlier request, a newer Freight
 * replacing the request, the deadline passing at random points, Rejects with and without a reason,
 * the approval gate's looks, and a production stage step trying to promote at random moments with
 * the stage step's rule (only with the store's approved request for its Freight and stage).
 *
 * Whatever happens: the trust-invariant checker finds nothing in the audit log; there is at most
 * one decision and at most one production Promotion per run; approved means at least minApprovals
 * distinct authorised people who are not the requester (unless allowed); and a delivery that
 * counted on the current request is never also recorded as refused.
 */

const redisUrl = inject('redisUrl');
const RUNS = 40;

/** SREL holds the requester too, so a group can make the requester an approver. */
const GROUPS: Record<string, readonly string[]> = { SREL: ['UCAT', 'UDAN', REQUESTER], SOPS: ['UBOB', 'UMAL'] };
const PEOPLE = ['UANN', 'UBOB', 'UCAT', 'UDAN', 'UMAL', REQUESTER, 'UEVE', 'UOSC'] as const;

type Button = 'current' | 'other-freight' | 'stale-nonce' | 'old-request';

interface PlannedClick {
  user: string;
  named: boolean;
  action: 'approve' | 'reject';
  button: Button;
  /** What the Reject dialog gets: closed without submitting, submitted empty, or with a reason. */
  dialog: 'cancel' | 'empty' | 'reason';
}

type Step =
  | { kind: 'click'; click: PlannedClick }
  | { kind: 'burst'; clicks: PlannedClick[] }
  | { kind: 'redeliver'; pick: number }
  | { kind: 'advance'; fraction: number }
  | { kind: 'look' }
  | { kind: 'supersede' }
  | { kind: 'promote' };

const clickArb: fc.Arbitrary<PlannedClick> = fc.record({
  user: fc.constantFrom(...PEOPLE),
  named: fc.boolean(),
  action: fc.constantFrom<PlannedClick['action']>('approve', 'approve', 'approve', 'reject'),
  button: fc.constantFrom<Button>('current', 'current', 'current', 'current', 'other-freight', 'stale-nonce', 'old-request'),
  dialog: fc.constantFrom<PlannedClick['dialog']>('cancel', 'empty', 'reason', 'reason'),
});

const stepArb: fc.Arbitrary<Step> = fc.oneof(
  { weight: 8, arbitrary: clickArb.map((click): Step => ({ kind: 'click', click })) },
  { weight: 2, arbitrary: fc.array(clickArb, { minLength: 2, maxLength: 4 }).map((clicks): Step => ({ kind: 'burst', clicks })) },
  { weight: 3, arbitrary: fc.nat().map((pick): Step => ({ kind: 'redeliver', pick })) },
  // Fractions of expiresAfter: a few of these pass the deadline at a random point, or never.
  { weight: 2, arbitrary: fc.double({ min: 0, max: 0.6, noNaN: true }).map((fraction): Step => ({ kind: 'advance', fraction })) },
  { weight: 2, arbitrary: fc.constant<Step>({ kind: 'look' }) },
  { weight: 1, arbitrary: fc.constant<Step>({ kind: 'supersede' }) },
  { weight: 2, arbitrary: fc.constant<Step>({ kind: 'promote' }) },
);

const settingsArb: fc.Arbitrary<ApprovalSettings> = fc.record({
  approvers: fc.subarray(['UANN', 'UBOB', REQUESTER, 'SREL', 'SOPS'], { minLength: 1 }),
  minApprovals: fc.integer({ min: 1, max: 3 }),
  allowSelfApproval: fc.boolean(),
  expiresAfter: fc.constantFrom(60_000, 600_000, 3_600_000),
});

const scenarioArb = fc.record({ settings: settingsArb, steps: fc.array(stepArb, { minLength: 1, maxLength: 24 }) });

/** A reply that says the click had its effect (counted, approved, rejected, withdrawn). */
function counted(reply: CommandReply): boolean {
  const text = reply.ephemeral === undefined ? '' : plainText(reply.ephemeral);
  return /^(Your approval counts|Approved: run|You rejected run|You withdrew run)/.test(text);
}

async function play(world: ApprovalWorld, settings: ApprovalSettings, steps: readonly Step[]): Promise<{ countedDeliveries: Map<string, string>; deliveries: Set<string> }> {
  const delivered: ClickInput[] = [];
  /** Deliveries that had their effect, with the request (nonce) they had it on. */
  const countedDeliveries = new Map<string, string>();
  const deliveries = new Set<string>();
  let previous: { freight: string; nonce: string } | undefined;
  let freights = 1;
  let ended = false;
  let next = 0;

  async function deliver(input: ClickInput): Promise<CommandReply> {
    delivered.push(input);
    deliveries.add(input.deliveryId);
    const reply = await world.click(input);
    if (counted(reply)) countedDeliveries.set(input.deliveryId, input.nonce ?? '');
    return reply;
  }

  async function click(planned: PlannedClick): Promise<void> {
    const { request } = await world.current();
    const bound =
      planned.button === 'current'
        ? { freight: request.freight, nonce: request.nonce }
        : planned.button === 'other-freight'
          ? { freight: 'f-forged', nonce: request.nonce }
          : planned.button === 'stale-nonce'
            ? { freight: request.freight, nonce: 'n-forged' }
            : (previous ?? { freight: 'f-0', nonce: 'n-0' });
    const input: ClickInput = { user: planned.user, userName: planned.named ? `Name ${planned.user}` : undefined, action: planned.action, ...bound, deliveryId: `d${++next}` };
    const reply = await deliver(input);
    // The Reject dialog: the chat delivers the click again with what was typed (or nothing, when closed).
    if (reply.askReason !== undefined && planned.dialog !== 'cancel')
      await deliver({ ...input, reason: planned.dialog === 'empty' ? '' : `reason of ${planned.user}`, deliveryId: `${input.deliveryId}.reason` });
  }

  /** A look of the approval gate; once it passes, the run goes on to the production stage step. */
  async function look(): Promise<void> {
    if (ended) return;
    const outcome = await world.look();
    if (outcome.kind === 'passed') await world.promote();
    if (outcome.kind !== 'pending') ended = true;
  }

  for (const step of steps) {
    switch (step.kind) {
      case 'click':
        await click(step.click);
        break;
      case 'burst':
        await Promise.all(step.clicks.map((planned) => click(planned)));
        break;
      case 'redeliver': {
        const again = delivered[step.pick % Math.max(1, delivered.length)];
        if (again !== undefined) await deliver(again);
        break;
      }
      case 'advance':
        world.advance(Math.round(step.fraction * settings.expiresAfter));
        break;
      case 'look':
        await look();
        break;
      case 'supersede': {
        const record = await world.current();
        if (ended || record.status !== 'pending') break;
        previous = { freight: record.request.freight, nonce: record.request.nonce };
        await world.newFreight(`f-${++freights}`);
        await world.openAndPost();
        break;
      }
      case 'promote':
        // The stage step's own guard, whether or not the gate passed: it must hold by itself.
        await world.promote();
        break;
    }
  }
  // The run goes on: the deadline comes, the gate looks (and the stage step follows a pass).
  world.setNow(Date.parse((await world.current()).request.expiresAt));
  await look();
  return { countedDeliveries, deliveries };
}

describe('approval clicks, property-based, over the real handler, store and audit log', () => {
  it('any interleaving of clicks, retries, stale buttons, expiry and rejects keeps the trust invariants', async () => {
    await fc.assert(
      fc.asyncProperty(scenarioArb, async ({ settings, steps }) => {
        const world = await createApprovalWorld({ redisUrl, name: 'approval-prop', settings, groups: GROUPS });
        try {
          await world.prelude();
          await world.openAndPost();
          const { countedDeliveries, deliveries } = await play(world, settings, steps);

          const events = await world.events();
          const violations = checkTrustInvariants(events, { policy: world.policy, membership: world.membership });
          expect(violations, formatTrustViolations(violations)).toEqual([]);

          const of = (type: string) => events.filter((event) => event.type === type);
          const promotions = of('promotion.created');
          const decisions = [...of('approval.approved').filter((event) => event.data.complete === true), ...of('approval.rejected'), ...of('approval.expired')];
          expect(promotions.length).toBeLessThanOrEqual(1);
          expect(decisions.length).toBeLessThanOrEqual(1);

          const record = await world.current();
          const { request } = record;
          // The gate's last look came at the deadline: nothing is still pending.
          expect(record.status).not.toBe('pending');
          expect(decisions).toHaveLength(1);

          const people = countedApprovers(request, record.approvals);
          const authorised = (userId: string) => isApprover(userId, settings.approvers, world.membership) && (settings.allowSelfApproval || userId !== REQUESTER);
          expect(record.approvals.every((approval) => authorised(approval.userId) && approval.freight === request.freight)).toBe(true);
          expect(new Set(record.approvals.map((approval) => approval.userId)).size).toBe(record.approvals.length);
          // The audit trail names exactly the people the store counted for this request.
          const audited = of('approval.approved').filter((event) => event.data.nonce === request.nonce);
          expect(new Set(audited.map((event) => event.actor))).toEqual(new Set(record.approvals.map((approval) => approval.userId)));
          expect(audited.every((event) => authorised(event.actor))).toBe(true);

          if (record.status === 'approved') {
            expect(people.length).toBeGreaterThanOrEqual(settings.minApprovals);
            expect(promotions).toHaveLength(1);
            expect(promotions[0]?.data).toMatchObject({ freight: request.freight, approvers: people });
          } else {
            expect(people.length).toBeLessThan(settings.minApprovals);
            expect(promotions).toEqual([]);
          }
          if (record.status === 'rejected') expect(of('approval.rejected')[0]?.data).toMatchObject({ nonce: request.nonce, userId: record.rejection?.userId });

          // Refusals: one per delivery at most, only for deliveries made, never for one that counted.
          const refusedKeys = of('approval.refused').map((event) => event.key ?? '');
          expect(new Set(refusedKeys).size).toBe(refusedKeys.length);
          for (const key of refusedKeys) {
            const deliveryId = key.replace(/^approval\.refused\./, '');
            expect(deliveries.has(deliveryId)).toBe(true);
            // (A retry of a click that counted on a request replaced since is refused as stale: that request is gone.)
            expect(countedDeliveries.get(deliveryId), `delivery ${deliveryId} counted and was refused`).not.toBe(request.nonce);
          }
        } finally {
          await world.close();
        }
      }),
      { numRuns: RUNS },
    );
  });
});
