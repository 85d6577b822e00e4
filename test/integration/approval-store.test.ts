import { Redis } from 'ioredis';
import { afterEach, expect, inject, it } from 'vitest';
import { approvalRequestFor, type AcceptedClick, type ApprovalRequest } from '../../src/domain/approval.js';
import { ApprovalStoreError, createApprovalStore, type ApprovalStore } from '../../src/store/approval-store.js';
import { testPrefix } from '../helpers/ids.js';

/**
 * The approval store on real Redis (SPEC §6, §10): one atomic decision per request whatever the
 * clicks — concurrent approvers on two connections (two web replicas), duplicates, a Reject after
 * the decision, the expiry racing a late Approve — and a request bound to its Freight.
 */

const clients: Redis[] = [];
afterEach(() => {
  for (const client of clients.splice(0)) client.disconnect();
});

/** A store on its own connection: each call is another process's view of the same Redis. */
function storeOn(prefix: string): { redis: Redis; store: ApprovalStore } {
  const redis = new Redis(inject('redisUrl'));
  clients.push(redis);
  return { redis, store: createApprovalStore({ redis, prefix }) };
}

const HOUR = 3_600_000;
const now = Date.now();
const iso = (ms: number) => new Date(ms).toISOString();

function request(runId: string, overrides: { minApprovals?: number; freight?: string; nonce?: string; requestedAt?: number } = {}): ApprovalRequest {
  return approvalRequestFor({
    runId,
    freight: overrides.freight ?? 'f-abc',
    nonce: overrides.nonce ?? 'n1',
    stage: 'prod',
    requester: 'UREQ',
    settings: { approvers: ['UALICE', 'UBOB', 'SRELEASE'], minApprovals: overrides.minApprovals ?? 1, allowSelfApproval: false, expiresAfter: HOUR },
    requestedAt: iso(overrides.requestedAt ?? now),
  });
}

const approve = (userId: string, at = now + 1_000, freight = 'f-abc', nonce = 'n1'): AcceptedClick => ({ action: 'approve', userId, freight, nonce, at: iso(at), via: userId });
const reject = (userId: string, by: 'approver' | 'requester', reason?: string): AcceptedClick => ({
  action: 'reject',
  userId,
  freight: 'f-abc',
  nonce: 'n1',
  at: iso(now + 2_000),
  by,
  reason,
});

it('open is idempotent for the run and its Freight: nonce, deadline and approvals kept; kept past the deadline', async () => {
  const prefix = testPrefix('approval-open');
  const { redis, store } = storeOn(prefix);
  const first = await store.open(request('r1'));
  expect(first.outcome).toBe('created');
  expect(first.record).toMatchObject({ status: 'pending', approvals: [], request: { nonce: 'n1', minApprovals: 1 } });
  await store.decide('r1', approve('UALICE'));

  // A retried gate step opens again with a new nonce and a later time: the posted buttons stay valid and the deadline does not move.
  const again = await storeOn(prefix).store.open(request('r1', { nonce: 'n2', requestedAt: now + 60_000 }));
  expect(again.outcome).toBe('existing');
  expect(again.record.request.nonce).toBe('n1');
  expect(again.record.request.expiresAt).toBe(iso(now + HOUR));
  expect(again.record.status).toBe('approved');
  expect(await store.get('r1')).toEqual(again.record);

  const ttl = await redis.pttl(`${prefix}:approval:r1`);
  expect(ttl).toBeGreaterThan(HOUR + 29 * 24 * HOUR);
  expect(ttl).toBeLessThanOrEqual(HOUR + 30 * 24 * HOUR);
  expect(await store.get('nope')).toBeUndefined();
});

it('another Freight replaces the request: its approvals never count, and the old buttons are stale', async () => {
  const { store } = storeOn(testPrefix('approval-freight'));
  await store.open(request('r1', { minApprovals: 2 }));
  expect((await store.decide('r1', approve('UALICE'))).outcome).toBe('counted');

  const replaced = await store.open(request('r1', { minApprovals: 2, freight: 'f-new', nonce: 'n9' }));
  expect(replaced.outcome).toBe('replaced');
  expect(replaced.superseded).toMatchObject({ request: { freight: 'f-abc' }, approvals: [{ userId: 'UALICE' }] });
  expect(replaced.record).toMatchObject({ status: 'pending', approvals: [], request: { freight: 'f-new', nonce: 'n9' } });

  expect((await store.decide('r1', approve('UBOB'))).outcome).toBe('stale');
  expect((await store.decide('r1', approve('UBOB', undefined, 'f-new', 'n1'))).outcome).toBe('stale');
  const counted = await store.decide('r1', approve('UBOB', undefined, 'f-new', 'n9'));
  expect(counted.outcome).toBe('counted');
  expect(counted.approvals).toEqual([{ userId: 'UBOB', freight: 'f-new', at: iso(now + 1_000), via: 'UBOB' }]);
  expect((await store.decide('r-none', approve('UBOB'))).outcome).toBe('missing');
});

it('30 concurrent Approve clicks from two approvers on two connections, minApprovals 1: exactly one approved-now', async () => {
  const prefix = testPrefix('approval-race');
  const a = storeOn(prefix).store;
  const b = storeOn(prefix).store;
  await a.open(request('r1'));
  const results = await Promise.all(
    Array.from({ length: 30 }, (_, index) => (index % 2 === 0 ? a.decide('r1', approve('UALICE', now + index)) : b.decide('r1', approve('UBOB', now + index)))),
  );
  const outcomes = results.map((result) => result.outcome);
  expect(outcomes.filter((outcome) => outcome === 'approved-now')).toHaveLength(1);
  const record = await a.get('r1');
  // The winner's other 14 clicks are their own duplicates; the other approver's 15 came too late.
  const winner = record?.approvals[0]?.userId;
  results.forEach((result, index) => {
    const clicker = index % 2 === 0 ? 'UALICE' : 'UBOB';
    if (result.outcome !== 'approved-now') expect(result.outcome).toBe(clicker === winner ? 'duplicate' : 'already-decided');
  });
  expect(outcomes.filter((outcome) => outcome === 'already-decided')).toHaveLength(15);
  expect(record?.status).toBe('approved');
  expect(record?.approvals).toHaveLength(1);
  expect(record?.decidedAt).toBe(record?.approvals[0]?.at);
});

it('minApprovals 2: counted, a duplicate of the same person, then approved-now by a second; later clicks already decided, or duplicates of an approver', async () => {
  const { store } = storeOn(testPrefix('approval-two'));
  await store.open(request('r1', { minApprovals: 2 }));
  expect((await store.decide('r1', approve('UCAROL'))).outcome).toBe('counted');
  expect((await store.decide('r1', approve('UCAROL', now + 5))).outcome).toBe('duplicate');
  const approved = await store.decide('r1', approve('UDAVE', now + 9));
  expect(approved.outcome).toBe('approved-now');
  expect(approved.approvals.map((approval) => approval.userId)).toEqual(['UCAROL', 'UDAVE']);
  expect(approved.record?.decidedAt).toBe(iso(now + 9));
  expect((await store.decide('r1', approve('UALICE'))).outcome).toBe('already-decided');
  expect((await store.decide('r1', approve('UCAROL'))).outcome).toBe('duplicate');
});

it('one Reject ends a pending request whatever came before; a Reject after the approval is already decided', async () => {
  const { store } = storeOn(testPrefix('approval-reject'));
  await store.open(request('r1', { minApprovals: 2 }));
  await store.decide('r1', approve('UALICE'));
  const rejected = await store.decide('r1', reject('UREQ', 'requester', 'wrong change'));
  expect(rejected.outcome).toBe('rejected-now');
  expect(rejected.record).toMatchObject({
    status: 'rejected',
    rejection: { userId: 'UREQ', by: 'requester', reason: 'wrong change', freight: 'f-abc' },
    decidedAt: iso(now + 2_000),
  });
  expect((await store.decide('r1', approve('UBOB'))).outcome).toBe('already-decided');

  await store.open(request('r2'));
  expect((await store.decide('r2', approve('UALICE'))).outcome).toBe('approved-now');
  expect((await store.decide('r2', reject('UBOB', 'approver'))).outcome).toBe('already-decided');
  expect((await store.get('r2'))?.status).toBe('approved');
});

it('expiry: not before the deadline, once at it; a click at the deadline is refused and expires the request', async () => {
  const { store } = storeOn(testPrefix('approval-expiry'));
  await store.open(request('r1'));
  expect((await store.expire('r1', iso(now + HOUR - 1))).outcome).toBe('not-due');
  const expired = await store.expire('r1', iso(now + HOUR));
  expect(expired.outcome).toBe('expired-now');
  expect(expired.record).toMatchObject({ status: 'expired', decidedAt: iso(now + HOUR) });
  expect((await store.expire('r1', iso(now + HOUR + 5))).outcome).toBe('already-decided');
  expect((await store.decide('r1', approve('UALICE', now + 10))).outcome).toBe('already-decided');

  await store.open(request('r2'));
  expect((await store.decide('r2', approve('UALICE', now + HOUR))).outcome).toBe('expired');
  expect(await store.get('r2')).toMatchObject({ status: 'expired', approvals: [] });
  expect((await store.expire('r2', iso(now + HOUR))).outcome).toBe('already-decided');
  expect((await store.expire('r-none', iso(now))).outcome).toBe('missing');
});

it('the expiry job racing a last-moment Approve on another connection: exactly one winner, every time', async () => {
  const prefix = testPrefix('approval-expiry-race');
  const worker = storeOn(prefix).store;
  const web = storeOn(prefix).store;
  const winners = { approved: 0, expired: 0 };
  for (let round = 0; round < 25; round++) {
    const runId = `r${round}`;
    await worker.open(request(runId));
    const [expiry, click] = await Promise.all([worker.expire(runId, iso(now + HOUR)), web.decide(runId, approve('UALICE', now + HOUR - 1))]);
    const won = [expiry.outcome === 'expired-now', click.outcome === 'approved-now'].filter(Boolean);
    expect(won).toHaveLength(1);
    if (click.outcome === 'approved-now') {
      expect(expiry.outcome).toBe('already-decided');
      winners.approved++;
    } else {
      expect(click.outcome).toBe('already-decided');
      winners.expired++;
    }
    expect((await web.get(runId))?.status).toBe(click.outcome === 'approved-now' ? 'approved' : 'expired');
  }
  expect(winners.approved + winners.expired).toBe(25);
});

it('refuses, as an error, what judgeClick never accepts: the requester’s own Approve, a withdrawal by someone else', async () => {
  const { store } = storeOn(testPrefix('approval-forged'));
  await store.open(request('r1'));
  await expect(store.decide('r1', approve('UREQ'))).rejects.toThrow(/requester cannot approve/);
  await expect(store.decide('r1', reject('UALICE', 'requester'))).rejects.toThrow(/must come from the requester/);
  expect(await store.get('r1')).toMatchObject({ status: 'pending', approvals: [] });
});

it('data read back is parsed: a tampered record is an ApprovalStoreError, not a wrong decision', async () => {
  const prefix = testPrefix('approval-parse');
  const { redis, store } = storeOn(prefix);
  await store.open(request('r1'));
  await redis.hset(`${prefix}:approval:r1`, 'status', 'approved-ish');
  await expect(store.get('r1')).rejects.toBeInstanceOf(ApprovalStoreError);
  await redis.hset(`${prefix}:approval:r1`, 'status', 'pending', 'request', '{"runId":1}');
  await expect(store.get('r1')).rejects.toThrow(/request does not match/);
});

it('markPosted starts the deadline at the post, once: postedAt + expiresAfter, and a second post does not move it', async () => {
  const prefix = testPrefix('approval-posted');
  const { store } = storeOn(prefix);
  await store.open(request('r1'));
  expect((await store.get('r1'))?.postedAt).toBeUndefined();

  // Another request's nonce never moves this one's deadline.
  expect(await store.markPosted('r1', 'n-other', iso(now + 5 * 60_000))).toBe(false);
  expect((await store.get('r1'))?.request.expiresAt).toBe(iso(now + HOUR));

  expect(await storeOn(prefix).store.markPosted('r1', 'n1', iso(now + 5 * 60_000))).toBe(true);
  const posted = await store.get('r1');
  expect(posted?.postedAt).toBe(iso(now + 5 * 60_000));
  expect(posted?.request.expiresAt).toBe(iso(now + 5 * 60_000 + HOUR));
  expect(posted?.request.requestedAt).toBe(iso(now));

  // A re-post after a crash, later still: the deadline stays where the first post put it.
  expect(await store.markPosted('r1', 'n1', iso(now + 20 * 60_000))).toBe(false);
  expect(await store.get('r1')).toMatchObject({ postedAt: iso(now + 5 * 60_000), request: { expiresAt: iso(now + 5 * 60_000 + HOUR) } });
  // open again for the same Freight (a retried gate step) keeps the posted deadline too.
  expect((await store.open(request('r1', { nonce: 'n2', requestedAt: now + 30 * 60_000 }))).record.request.expiresAt).toBe(iso(now + 5 * 60_000 + HOUR));

  // The scripts compare against the moved deadline: a click between the opened and the posted deadline counts, and the expiry is not due yet.
  expect((await store.expire('r1', iso(now + HOUR + 60_000))).outcome).toBe('not-due');
  expect((await store.decide('r1', approve('UALICE', now + HOUR + 60_000))).outcome).toBe('approved-now');
  expect(await store.markPosted('nope', 'n1', iso(now))).toBe(false);
});

it('markPosted on a request already decided leaves its deadline as it was decided under', async () => {
  const { store } = storeOn(testPrefix('approval-posted-decided'));
  await store.open(request('r1'));
  await store.decide('r1', approve('UALICE', now + 1_000));
  expect(await store.markPosted('r1', 'n1', iso(now + 5 * 60_000))).toBe(false);
  expect(await store.get('r1')).toMatchObject({ status: 'approved', request: { expiresAt: iso(now + HOUR) } });
  expect((await store.get('r1'))?.postedAt).toBeUndefined();
});

it('decide after the (posted) deadline is refused as expired, for an Approve and a Reject alike, and counts nothing', async () => {
  const { store } = storeOn(testPrefix('approval-late'));
  await store.open(request('r1', { minApprovals: 2 }));
  await store.markPosted('r1', 'n1', iso(now + 60_000));
  expect((await store.decide('r1', approve('UALICE', now + 2_000))).outcome).toBe('counted');
  const deadline = now + 60_000 + HOUR;
  const late = await store.decide('r1', approve('UBOB', deadline));
  expect(late.outcome).toBe('expired');
  expect(late.record).toMatchObject({ status: 'expired', decidedAt: iso(deadline) });
  expect(late.approvals.map((a) => a.userId)).toEqual(['UALICE']);
  // Once expired, nothing moves it: neither another click nor a Reject.
  expect((await store.decide('r1', approve('UCAROL', deadline + 1))).outcome).toBe('already-decided');
  expect((await store.decide('r1', { ...reject('UREQ', 'requester'), at: iso(deadline + 2) })).outcome).toBe('already-decided');
  expect(await store.get('r1')).toMatchObject({ status: 'expired', approvals: [{ userId: 'UALICE' }] });
  expect((await store.get('r1'))?.rejection).toBeUndefined();

  await store.open(request('r2'));
  await store.markPosted('r2', 'n1', iso(now));
  expect((await store.decide('r2', { ...reject('UBOB', 'approver'), at: iso(now + HOUR) })).outcome).toBe('expired');
  expect((await store.get('r2'))?.status).toBe('expired');
});
