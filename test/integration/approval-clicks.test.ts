import { afterEach, describe, expect, inject, it } from 'vitest';
import type { AuditEvent } from '../../src/audit/audit-log.js';
import type { ApprovalSettings } from '../../src/domain/approval.js';
import type { CommandReply } from '../../src/ports/chat.js';
import { plainText } from '../../src/render/view.js';
import { createApprovalWorld, REQUESTER, RUN_ID, type ApprovalWorld } from '../helpers/approval-world.js';
import { expectNoTrustViolations } from '../helpers/trust-chains.js';

/**
 * The Approve/Reject click handler (commands/approval-actions.ts) end to end over real Redis: the
 * real approval store decides, the real audit log records, group membership comes through the
 * Redis-shared resolver the handler takes (SPEC §6). Every refused click is answered only to the
 * clicker and audited once per delivery; accepted ones count once per person; a Reject asks for a
 * reason first.
 */

const redisUrl = inject('redisUrl');
const HOUR = 3_600_000;
const GROUPS = { SREL: ['UCAT', 'UDAN', REQUESTER] };

const worlds: ApprovalWorld[] = [];
afterEach(async () => {
  for (const world of worlds.splice(0)) await world.close();
});

async function waitingWorld(name: string, settings: Partial<ApprovalSettings> = {}): Promise<ApprovalWorld> {
  const world = await createApprovalWorld({
    redisUrl,
    name,
    settings: { approvers: ['UANN', 'SREL'], minApprovals: 1, allowSelfApproval: false, expiresAfter: HOUR, ...settings },
    groups: GROUPS,
  });
  worlds.push(world);
  await world.prelude();
  expect((await world.openAndPost()).kind).toBe('pending');
  return world;
}

const said = (reply: CommandReply): string => (reply.ephemeral === undefined ? '' : plainText(reply.ephemeral));

async function eventsOf(world: ApprovalWorld, type: AuditEvent['type']): Promise<AuditEvent[]> {
  return (await world.events()).filter((event) => event.type === type);
}

describe('approval clicks', () => {
  it('refuses the requester’s own Approve, saying who can approve; audited once per delivery', async () => {
    const world = await waitingWorld('clicks-self');
    const reply = await world.click({ user: REQUESTER, userName: 'Req', action: 'approve', deliveryId: 'd1' });
    expect(said(reply)).toContain('You requested this run, so you cannot approve it');
    expect(said(reply)).toContain('approvers: @UANN, @SREL');
    // Slack delivering the same click again: the same answer, no second event.
    expect(said(await world.click({ user: REQUESTER, userName: 'Req', action: 'approve', deliveryId: 'd1' }))).toBe(said(reply));

    const refused = await eventsOf(world, 'approval.refused');
    expect(refused).toHaveLength(1);
    expect(refused[0]).toMatchObject({ actor: REQUESTER, runId: RUN_ID, data: { action: 'approve', reason: 'self-approval', freight: 'f-1', userName: 'Req' } });
    expect(await world.current()).toMatchObject({ status: 'pending', approvals: [] });

    // Another click is another delivery: its own event.
    await world.click({ user: REQUESTER, action: 'approve', deliveryId: 'd2' });
    expect(await eventsOf(world, 'approval.refused')).toHaveLength(2);
    expect(await eventsOf(world, 'approval.approved')).toEqual([]);
  });

  it('with allowSelfApproval, the requester who is an approver (through a group) may approve', async () => {
    const world = await waitingWorld('clicks-self-allowed', { allowSelfApproval: true });
    expect(said(await world.click({ user: REQUESTER, action: 'approve', deliveryId: 'd1' }))).toContain('Approved: run sg-appr0042 has its 1 approval(s)');
    expect(await world.current()).toMatchObject({ status: 'approved', approvals: [{ userId: REQUESTER }] });
    const [approved] = await eventsOf(world, 'approval.approved');
    expect(approved?.data).toMatchObject({ userId: REQUESTER, via: 'SREL', complete: true });
    expect(await world.promote()).toBe(true);
    expectNoTrustViolations(await world.events(), world.policy, { membership: world.membership });
  });

  it('refuses an outsider, Approve or Reject, naming who can approve', async () => {
    const world = await waitingWorld('clicks-outsider');
    const approve = await world.click({ user: 'UEVE', action: 'approve', deliveryId: 'd1' });
    expect(said(approve)).toBe('You are not an approver of this run. Approvers: @UANN, @SREL.');
    const reject = await world.click({ user: 'UEVE', action: 'reject', reason: 'nope', deliveryId: 'd2' });
    expect(said(reject)).toContain('You are not an approver of this run (nor its requester), so you cannot reject it. Approvers: @UANN, @SREL.');
    const refused = await eventsOf(world, 'approval.refused');
    expect(refused.map((event) => [event.actor, event.data.action, event.data.reason])).toEqual([
      ['UEVE', 'approve', 'not-approver'],
      ['UEVE', 'reject', 'not-approver'],
    ]);
    expect(refused[0]?.data.message).toBe(said(approve));
    expect((await world.current()).status).toBe('pending');
  });

  it('refuses a click at or after the deadline (from the post), and wakes the run so it ends expired', async () => {
    const world = await waitingWorld('clicks-expired');
    const { request } = await world.current();
    world.setNow(Date.parse(request.expiresAt));
    const reply = await world.click({ user: 'UANN', action: 'approve', deliveryId: 'd1' });
    expect(said(reply)).toBe(`This approval expired at ${request.expiresAt}: nothing can be approved or rejected on it any more.`);
    expect(world.wakes).toEqual([{ runId: RUN_ID, jobSeq: 3 }]);
    expect((await eventsOf(world, 'approval.refused')).map((event) => event.data.reason)).toEqual(['expired']);
    expect(await eventsOf(world, 'approval.approved')).toEqual([]);

    // The gate's look that the wake-up brings ends it; the next click is still refused.
    expect(await world.look()).toMatchObject({ kind: 'failed', end: 'expired' });
    expect(said(await world.click({ user: 'UCAT', action: 'reject', reason: 'late', deliveryId: 'd2' }))).toContain('This approval expired at');
    expect(await world.current()).toMatchObject({ status: 'expired', approvals: [] });
    expect(await eventsOf(world, 'approval.expired')).toHaveLength(1);
    expect(await world.promote()).toBe(false);
    expectNoTrustViolations(await world.events(), world.policy, { membership: world.membership });
  });

  it('refuses a button of another Freight, of an earlier request, an unreadable one and one of an unknown run', async () => {
    const world = await waitingWorld('clicks-stale', { minApprovals: 2 });
    const first = await world.current();
    expect(said(await world.click({ user: 'UANN', action: 'approve', deliveryId: 'd0' }))).toContain('Your approval counts (1 of 2)');

    // A newer Freight replaces the request: the old buttons (and UANN's approval) are for the old one.
    await world.newFreight('f-2');
    await world.openAndPost();
    const second = await world.current();
    expect(second.request.nonce).not.toBe(first.request.nonce);
    expect(world.messages).toContainEqual({ runId: RUN_ID, nonce: first.request.nonce, stamp: 'superseded' });

    const oldButton = await world.click({ user: 'UCAT', action: 'approve', freight: 'f-1', nonce: first.request.nonce, deliveryId: 'd1' });
    expect(said(oldButton)).toContain('This approval is for another Freight: the run now waits on f-2');
    const staleNonce = await world.click({ user: 'UCAT', action: 'approve', freight: 'f-2', nonce: first.request.nonce, deliveryId: 'd2' });
    expect(said(staleNonce)).toContain('This button belongs to an earlier approval request of this run');
    const unreadable = await world.click({ user: 'UCAT', action: 'approve', value: 'not-a-button', deliveryId: 'd3' });
    expect(said(unreadable)).toContain('This button could not be read');
    const unknown = await world.click({ user: 'UCAT', action: 'approve', value: `sg-other|f-2|${second.request.nonce}`, deliveryId: 'd4' });
    expect(said(unknown)).toContain('There is no approval request for run sg-other');

    const refused = await world.audit.allEvents();
    expect(refused.filter((event) => event.type === 'approval.refused').map((event) => [event.runId, event.data.reason])).toEqual([
      [RUN_ID, 'wrong-freight'],
      [RUN_ID, 'stale-request'],
      [null, 'unreadable'],
      [null, 'missing'],
    ]);
    expect(await world.current()).toMatchObject({ status: 'pending', approvals: [], request: { freight: 'f-2' } });

    // The new request needs its own two approvals: UANN's for f-1 does not carry over.
    expect(said(await world.click({ user: 'UCAT', action: 'approve', deliveryId: 'd5' }))).toContain('Your approval counts (1 of 2)');
    expect(await world.promote()).toBe(false);
  });

  it('accepts a member of a listed group, recorded as approving via the group', async () => {
    const world = await waitingWorld('clicks-group');
    const reply = await world.click({ user: 'UDAN', userName: 'Dan', action: 'approve', deliveryId: 'd1' });
    expect(said(reply)).toBe('Approved: run sg-appr0042 has its 1 approval(s) and goes on to prod.');
    const approved = await eventsOf(world, 'approval.approved');
    expect(approved).toHaveLength(1);
    expect(approved[0]).toMatchObject({ actor: 'UDAN', data: { userId: 'UDAN', userName: 'Dan', via: 'SREL', count: 1, of: 1, complete: true, freight: 'f-1' } });
    expect(world.wakes).toEqual([{ runId: RUN_ID, jobSeq: 3 }]);
    expect(world.messages.at(-1)).toMatchObject({ stamp: 'approved-1' });
    expect(await world.look()).toEqual({ kind: 'passed', summary: 'approved by Dan (UDAN) for Freight f-1 (1 needed)' });
    expect(await world.promote()).toBe(true);
    expectNoTrustViolations(await world.events(), world.policy, { membership: world.membership });
  });

  it('minApprovals 2 needs two distinct people: the same person twice counts once, without a refusal', async () => {
    const world = await waitingWorld('clicks-two', { minApprovals: 2 });
    expect(said(await world.click({ user: 'UANN', action: 'approve', deliveryId: 'd1' }))).toBe('Your approval counts (1 of 2). Run sg-appr0042 waits for 1 more.');
    // A double click (another delivery) and a redelivery of the first: nothing more is counted or recorded.
    expect(said(await world.click({ user: 'UANN', action: 'approve', deliveryId: 'd2' }))).toContain('You already approved this run; it needs 2 distinct approvers (1 so far)');
    await world.click({ user: 'UANN', action: 'approve', deliveryId: 'd1' });
    expect(await world.current()).toMatchObject({ status: 'pending', approvals: [{ userId: 'UANN' }] });
    expect(await world.promote()).toBe(false);
    expect(world.wakes).toEqual([]);

    expect(said(await world.click({ user: 'UCAT', action: 'approve', deliveryId: 'd3' }))).toBe('Approved: run sg-appr0042 has its 2 approval(s) and goes on to prod.');
    expect(await world.current()).toMatchObject({ status: 'approved', approvals: [{ userId: 'UANN' }, { userId: 'UCAT' }] });
    const approved = await eventsOf(world, 'approval.approved');
    expect(approved.map((event) => [event.data.userId, event.data.count, event.data.complete])).toEqual([
      ['UANN', 1, false],
      ['UCAT', 2, true],
    ]);
    expect(await eventsOf(world, 'approval.refused')).toEqual([]);
    expect(world.wakes).toEqual([{ runId: RUN_ID, jobSeq: 3 }]);

    // After the decision, the deciding approver's double click is not a refusal either; someone else's is.
    expect(said(await world.click({ user: 'UCAT', action: 'approve', deliveryId: 'd3' }))).toMatch(/^Your approval was already counted; run sg-appr0042's approval is approved since /);
    expect(said(await world.click({ user: 'UANN', action: 'approve', deliveryId: 'd4' }))).toContain('Your approval was already counted');
    expect(said(await world.click({ user: 'UDAN', action: 'approve', deliveryId: 'd5' }))).toContain('This approval was already decided (approved at');
    expect((await eventsOf(world, 'approval.refused')).map((event) => [event.actor, event.data.reason])).toEqual([['UDAN', 'already-decided']]);

    expect(await world.promote()).toBe(true);
    expectNoTrustViolations(await world.events(), world.policy, { membership: world.membership });
  });

  it('Reject without a reason asks for one; with the reason it ends the run rejected, whatever approvals came before', async () => {
    const world = await waitingWorld('clicks-reject', { minApprovals: 2 });
    await world.click({ user: 'UANN', action: 'approve', deliveryId: 'd1' });
    const ask = await world.click({ user: 'UCAT', userName: 'Cat', action: 'reject', deliveryId: 'd2' });
    expect(ask.askReason).toEqual({ title: 'Reject the run', label: 'Why reject run sg-appr0042? (optional; goes into the thread and the audit trail)', submit: 'Reject' });
    expect(ask.ephemeral).toBeUndefined();
    expect(await world.current()).toMatchObject({ status: 'pending' });
    expect(await eventsOf(world, 'approval.rejected')).toEqual([]);

    // The dialog's answer comes back as the same action with the reason (Slack: `<delivery>.reason`).
    const reply = await world.click({ user: 'UCAT', userName: 'Cat', action: 'reject', reason: '  not during the freeze  ', deliveryId: 'd2.reason' });
    expect(said(reply)).toBe('You rejected run sg-appr0042; it ends rejected.');
    expect(await world.current()).toMatchObject({ status: 'rejected', rejection: { userId: 'UCAT', userName: 'Cat', by: 'approver', reason: 'not during the freeze' } });
    const rejected = await eventsOf(world, 'approval.rejected');
    expect(rejected).toHaveLength(1);
    expect(rejected[0]).toMatchObject({ actor: 'UCAT', data: { userId: 'UCAT', by: 'approver', reason: 'not during the freeze', wasApprover: true, freight: 'f-1' } });
    expect(world.wakes).toEqual([{ runId: RUN_ID, jobSeq: 3 }]);
    expect(await world.look()).toEqual({ kind: 'failed', end: 'rejected', summary: 'rejected by Cat (UCAT) (reason: not during the freeze)' });

    // Nothing counts after the decision, and the redelivered rejection is not a second one.
    await world.click({ user: 'UCAT', userName: 'Cat', action: 'reject', reason: 'not during the freeze', deliveryId: 'd2.reason' });
    expect(said(await world.click({ user: 'UDAN', action: 'approve', deliveryId: 'd3' }))).toContain('already decided (rejected');
    expect(await eventsOf(world, 'approval.rejected')).toHaveLength(1);
    // UANN's counted click delivered again: it had its effect, so it is not refused either.
    expect(said(await world.click({ user: 'UANN', action: 'approve', deliveryId: 'd1' }))).toMatch(/^Your approval was already counted; run sg-appr0042's approval is rejected since /);
    expect((await eventsOf(world, 'approval.refused')).map((event) => [event.actor, event.data.reason])).toEqual([['UDAN', 'already-decided']]);
    expect(await world.promote()).toBe(false);
    expectNoTrustViolations(await world.events(), world.policy, { membership: world.membership });
  });

  it('the requester withdraws with an empty reason: rejected by the requester, no reason recorded', async () => {
    const world = await waitingWorld('clicks-withdraw');
    expect((await world.click({ user: REQUESTER, action: 'reject', deliveryId: 'd1' })).askReason).toBeDefined();
    const reply = await world.click({ user: REQUESTER, action: 'reject', reason: ' ', deliveryId: 'd1.reason' });
    expect(said(reply)).toBe('You withdrew run sg-appr0042; it ends rejected.');
    const record = await world.current();
    expect(record).toMatchObject({ status: 'rejected', rejection: { userId: REQUESTER, by: 'requester' } });
    expect(record.rejection?.reason).toBeUndefined();
    const [rejected] = await eventsOf(world, 'approval.rejected');
    expect(rejected?.data).toMatchObject({ by: 'requester', wasApprover: true });
    expect(rejected?.data).not.toHaveProperty('reason');
    expect(await world.look()).toEqual({ kind: 'failed', end: 'rejected', summary: 'withdrawn by the requester, UREQ (no reason given)' });
    expectNoTrustViolations(await world.events(), world.policy, { membership: world.membership });
  });
});
