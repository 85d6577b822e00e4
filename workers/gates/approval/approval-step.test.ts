import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import type { AuditAppendInput } from '../../../src/audit/audit-log.js';
import { parsePolicy } from '../../../src/config/config.js';
import { isExpired, pendingRecord, type Approval, type ApprovalRecord, type ApprovalRequest, type Rejection } from '../../../src/domain/approval.js';
import { newRun, type GateOutcome, type Run } from '../../../src/domain/run.js';
import { RefusedError } from '../../../src/errors.js';
import { createLogger } from '../../../src/log.js';
import type { ApprovalStore } from '../../../src/store/approval-store.js';
import type { GateAuditType, GateContext } from '../gate-step.js';
import { createApprovalStep } from './approval-step.js';

/**
 * The `approval` gate step (SPEC §1 gate 7, §6) against an in-memory approval store and a
 * hand-built context. The step opens the request once per Freight, has the chat post and update
 * its message, and otherwise only reads the decision the clicks made (the click handler decides
 * them in the store): pending waits until the deadline, approved passes with who approved, a Reject
 * ends the run `rejected`, the deadline `expired`.
 */

const policy = parsePolicy(
  `
repos:
  acme/shop: { pipeline: shop }
pipelines:
  shop:
    kargo: { project: shop, warehouse: shop }
    stages:
      - { name: dev, kargoStage: dev }
      - name: prod
        kargoStage: prod
        approval: { approvers: [UANN, UBOB, SREL], minApprovals: 2, expiresAfter: 1h }
`,
  'test',
);

const T0 = Date.parse('2026-12-01T10:00:00.000Z');
const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const iso = (ms: number) => new Date(ms).toISOString();

/** The approval store's open/get/expire with the same outcomes, for one run, in memory. */
function memoryApprovals() {
  let stored: ApprovalRecord | undefined;
  const opened: ApprovalRequest[] = [];
  const expireCalls: string[] = [];
  const approvals: Pick<ApprovalStore, 'open' | 'get' | 'expire'> = {
    async open(request) {
      opened.push(request);
      if (stored !== undefined && stored.request.freight === request.freight) return { outcome: 'existing', record: stored };
      const previous = stored;
      stored = pendingRecord(request);
      return previous === undefined ? { outcome: 'created', record: stored } : { outcome: 'replaced', record: stored, superseded: previous };
    },
    async get() {
      return stored;
    },
    async expire(_runId, at) {
      expireCalls.push(at);
      if (stored === undefined) return { outcome: 'missing' };
      if (stored.status !== 'pending') return { outcome: 'already-decided', record: stored };
      if (!isExpired(stored.request, at)) return { outcome: 'not-due', record: stored };
      stored = { ...stored, status: 'expired', decidedAt: stored.request.expiresAt };
      return { outcome: 'expired-now', record: stored };
    },
  };
  return {
    approvals,
    opened,
    expireCalls,
    current: (): ApprovalRecord => {
      if (stored === undefined) throw new Error('no request opened');
      return stored;
    },
    /** What the click handler would have stored. */
    set: (change: (record: ApprovalRecord) => ApprovalRecord) => {
      if (stored === undefined) throw new Error('no request opened');
      stored = change(stored);
    },
  };
}

interface AuditCall {
  type: GateAuditType;
  data: Record<string, unknown>;
  discriminator: string;
  once: boolean;
}

function world() {
  let now = T0;
  const memory = memoryApprovals();
  const messages: { runId: string; nonce: string; stamp: string }[] = [];
  let nonces = 0;
  const appended: AuditAppendInput[] = [];
  const step = createApprovalStep({
    policy,
    approvals: memory.approvals,
    audit: {
      append: async (event) => {
        // Keyed like the real log: a second append under the same key is a no-op.
        if (!appended.some((e) => e.key === event.key)) appended.push(event);
        return event;
      },
    },
    queues: {
      approvalMessage: async (runId, nonce, stamp) => {
        messages.push({ runId, nonce, stamp });
      },
    },
    clock: () => new Date(now),
    newNonce: () => `n${++nonces}`,
  });
  const base = newRun(policy, { id: 'sg-appr0001', repo: 'acme/shop', task: 'add a healthz endpoint', requester: { userId: 'UREQ' }, channel: 'CSHOP', now: new Date(T0) });
  let run: Run = { ...base, state: 'waiting', artifacts: { merge: { commitSha: 'c'.repeat(40) }, freight: { name: 'f-one' } } };
  let stored = run;
  const audits: AuditCall[] = [];
  const found = run.gates.find((g) => g.name === 'approval');
  if (found === undefined) throw new Error('the policy has no approval gate');
  const gate = found;

  function context(): GateContext {
    return {
      run,
      gate: { ...gate, state: 'running', startedAt: iso(T0) },
      signal: new AbortController().signal,
      log: createLogger({ level: 'silent', destination: new PassThrough() }),
      record: async (change) => (stored = { ...stored, ...change(stored) }),
      reply: async () => undefined,
      audit: async (type, data, discriminator, options) => {
        audits.push({ type, data, discriminator, once: options?.once === true });
      },
    };
  }

  return {
    step,
    memory,
    messages,
    audits,
    appended,
    look: (): Promise<GateOutcome> => step.run(context()),
    at: (ms: number) => {
      now = ms;
    },
    withFreight: (name: string) => {
      run = { ...run, artifacts: { ...run.artifacts, freight: { name } } };
    },
    withRun: (change: (r: Run) => Run) => {
      run = change(run);
    },
    stored: () => stored,
  };
}

const approval = (userId: string, at: number, userName?: string, freight = 'f-one'): Approval => ({ userId, userName, freight, at: iso(at) });

async function refusal(outcome: Promise<unknown>): Promise<string> {
  const error = await outcome.then(
    () => undefined,
    (reason: unknown) => reason,
  );
  expect(error).toBeInstanceOf(RefusedError);
  return error instanceof Error ? error.message : '';
}

describe('approval gate step', () => {
  it('opens the request once per Freight, from the stage settings, and has the message posted under its nonce', async () => {
    const w = world();
    const first = await w.look();
    expect(first.kind).toBe('pending');
    expect(w.memory.opened).toHaveLength(1);
    expect(w.memory.opened[0]).toEqual({
      runId: 'sg-appr0001',
      freight: 'f-one',
      nonce: 'n1',
      stage: 'prod',
      requester: 'UREQ',
      approvers: ['UANN', 'UBOB', 'SREL'],
      minApprovals: 2,
      allowSelfApproval: false,
      requestedAt: iso(T0),
      expiresAt: iso(T0 + HOUR),
    });

    // Later looks (a wake-up, a retry after a crash) read the request; they never open another one.
    w.at(T0 + 5 * MINUTE);
    await w.look();
    w.memory.set((record) => ({ ...record, approvals: [approval('UANN', T0 + 6 * MINUTE)] }));
    w.at(T0 + 7 * MINUTE);
    const third = await w.look();
    expect(w.memory.opened).toHaveLength(1);
    expect(w.memory.current().request.nonce).toBe('n1');
    expect(third).toMatchObject({ kind: 'pending', summary: expect.stringContaining('(1 of 2)') as unknown });
    expect(w.messages).toEqual([
      { runId: 'sg-appr0001', nonce: 'n1', stamp: 'pending-0' },
      { runId: 'sg-appr0001', nonce: 'n1', stamp: 'pending-0' },
      { runId: 'sg-appr0001', nonce: 'n1', stamp: 'pending-1' },
    ]);
    expect(w.stored().activity).toBe('waiting for approval (1 of 2)');
  });

  it('a new Freight supersedes the request: the old message becomes superseded, and its approvals never count', async () => {
    const w = world();
    await w.look();
    // The old request had everything it needed, for the old Freight.
    w.memory.set((record) => ({ ...record, status: 'approved', decidedAt: iso(T0 + 2 * MINUTE), approvals: [approval('UANN', T0 + MINUTE), approval('UBOB', T0 + 2 * MINUTE)] }));

    w.withFreight('f-two');
    w.at(T0 + 10 * MINUTE);
    const outcome = await w.look();
    expect(outcome).toMatchObject({ kind: 'pending', summary: expect.stringContaining('waiting for 2 more approval(s) of Freight f-two for prod (0 of 2)') as unknown });
    expect(w.memory.opened.map((request) => [request.freight, request.nonce, request.requestedAt])).toEqual([
      ['f-one', 'n1', iso(T0)],
      ['f-two', 'n2', iso(T0 + 10 * MINUTE)],
    ]);
    expect(w.memory.current()).toMatchObject({ status: 'pending', approvals: [], request: { freight: 'f-two', nonce: 'n2', expiresAt: iso(T0 + 70 * MINUTE) } });
    expect(w.messages.slice(1)).toEqual([
      { runId: 'sg-appr0001', nonce: 'n1', stamp: 'superseded' },
      { runId: 'sg-appr0001', nonce: 'n2', stamp: 'pending-0' },
    ]);
  });

  it('an approved record of another Freight does not pass the gate', async () => {
    const w = world();
    await w.look();
    w.memory.set((record) => ({ ...record, status: 'approved', approvals: [approval('UANN', T0 + MINUTE), approval('UBOB', T0 + MINUTE)] }));
    w.withFreight('f-two');
    expect((await w.look()).kind).toBe('pending');
  });

  it('pending: looks again at the deadline (a decision wakes it earlier), never sleeping longer than ten minutes', async () => {
    const w = world();
    const first = await w.look();
    // An hour to go: the longest sleep, since a lost wake-up must not leave it waiting longer.
    expect(first).toMatchObject({ kind: 'pending', recheckAfterMs: 10 * MINUTE });
    expect(first.kind === 'pending' ? first.summary : '').toBe(`waiting for 2 more approval(s) of Freight f-one for prod (0 of 2), until ${iso(T0 + HOUR)}`);

    w.at(T0 + HOUR - 3 * MINUTE);
    // Three minutes to go: due right after the deadline, so that look finds it expired.
    expect(await w.look()).toMatchObject({ kind: 'pending', recheckAfterMs: 3 * MINUTE + 250 });
    expect(w.memory.expireCalls).toEqual([]);
  });

  it('expired: fails the run with end expired, flips the store and audits approval.expired once per request', async () => {
    const w = world();
    await w.look();
    w.memory.set((record) => ({ ...record, approvals: [approval('UANN', T0 + MINUTE, 'Ann')] }));
    w.at(T0 + HOUR);
    const outcome = await w.look();
    expect(outcome).toEqual({ kind: 'failed', end: 'expired', summary: `expired at ${iso(T0 + HOUR)} with 1 of 2 approvals` });
    expect(w.memory.expireCalls).toEqual([iso(T0 + HOUR)]);
    expect(w.memory.current().status).toBe('expired');
    expect(w.messages.at(-1)).toEqual({ runId: 'sg-appr0001', nonce: 'n1', stamp: 'expired-1' });

    // A retried look of the same gate records the same fact, under the same once-key.
    w.at(T0 + HOUR + MINUTE);
    expect(await w.look()).toMatchObject({ kind: 'failed', end: 'expired' });
    const expiries = w.audits.filter((call) => call.type === 'approval.expired');
    expect(expiries.length).toBeGreaterThan(0);
    expect(new Set(expiries.map((call) => `${call.discriminator}|${String(call.once)}`))).toEqual(new Set(['n1|true']));
    expect(expiries[0]?.data).toEqual({ stage: 'prod', freight: 'f-one', nonce: 'n1', expiresAt: iso(T0 + HOUR), approvers: ['UANN'] });
    expect(w.audits.filter((call) => call.type !== 'approval.expired')).toEqual([]);
  });

  it('a look a millisecond before the deadline still waits', async () => {
    const w = world();
    await w.look();
    w.at(T0 + HOUR - 1);
    expect((await w.look()).kind).toBe('pending');
    expect(w.memory.current().status).toBe('pending');
  });

  it('approved: passes, naming the people whose approvals counted', async () => {
    const w = world();
    await w.look();
    w.memory.set((record) => ({
      ...record,
      status: 'approved',
      decidedAt: iso(T0 + 9 * MINUTE),
      approvals: [approval('UANN', T0 + 5 * MINUTE, 'Ann'), approval('UCAT', T0 + 9 * MINUTE)],
    }));
    w.at(T0 + 10 * MINUTE);
    expect(await w.look()).toEqual({ kind: 'passed', summary: 'approved by Ann (UANN), UCAT for Freight f-one (2 needed)' });
    expect(w.messages.at(-1)?.stamp).toBe('approved-2');
    expect(w.stored().activity).toBeUndefined();
    // Approved is final: even past the deadline it is not expired.
    w.at(T0 + 2 * HOUR);
    expect((await w.look()).kind).toBe('passed');
    expect(w.memory.expireCalls).toEqual([]);
    expect(w.audits).toEqual([]);
  });

  it('approved: writes the decision evidence the click handler would have, under its keys, before passing (a handler that died after deciding)', async () => {
    const w = world();
    await w.look();
    const nonce = w.memory.current().request.nonce;
    w.memory.set((record) => ({
      ...record,
      status: 'approved',
      decidedAt: iso(T0 + 9 * MINUTE),
      approvals: [{ ...approval('UANN', T0 + 5 * MINUTE, 'Ann'), via: 'SRELEASE' }, approval('UCAT', T0 + 9 * MINUTE)],
    }));
    expect((await w.look()).kind).toBe('passed');
    expect(w.appended.map((e) => [e.type, e.actor, e.key, e.data])).toEqual([
      ['approval.approved', 'UANN', `sg-appr0001.approval.${nonce}.approved.UANN`, { stage: 'prod', freight: 'f-one', nonce, userId: 'UANN', userName: 'Ann', via: 'SRELEASE', at: iso(T0 + 5 * MINUTE), count: 1, of: 2, complete: false }],
      ['approval.approved', 'UCAT', `sg-appr0001.approval.${nonce}.approved.UCAT`, { stage: 'prod', freight: 'f-one', nonce, userId: 'UCAT', via: 'UCAT', at: iso(T0 + 9 * MINUTE), count: 2, of: 2, complete: true }],
    ]);
    // Every look writes under the same keys: nothing twice.
    await w.look();
    expect(w.appended).toHaveLength(2);
  });

  it('rejected by an approver: ends the run rejected, with who and the reason', async () => {
    const w = world();
    await w.look();
    const rejection: Rejection = { userId: 'UBOB', userName: 'Bob', freight: 'f-one', at: iso(T0 + 3 * MINUTE), by: 'approver', reason: '  not during the freeze ' };
    w.memory.set((record) => ({ ...record, status: 'rejected', decidedAt: rejection.at, rejection, approvals: [approval('UANN', T0 + MINUTE)] }));
    expect(await w.look()).toEqual({ kind: 'failed', end: 'rejected', summary: 'rejected by Bob (UBOB) (reason: not during the freeze)' });
    expect(w.messages.at(-1)?.stamp).toBe('rejected-1');
  });

  it('withdrawn by the requester: says so, and "no reason given" without one', async () => {
    const w = world();
    await w.look();
    const rejection: Rejection = { userId: 'UREQ', freight: 'f-one', at: iso(T0 + 3 * MINUTE), by: 'requester' };
    w.memory.set((record) => ({ ...record, status: 'rejected', decidedAt: rejection.at, rejection }));
    expect(await w.look()).toEqual({ kind: 'failed', end: 'rejected', summary: 'withdrawn by the requester, UREQ (no reason given)' });
  });

  it('refuses for good without a Freight, or when no stage with an approval follows the gate', async () => {
    const w = world();
    w.withRun((r) => ({ ...r, artifacts: { merge: r.artifacts.merge } }));
    expect(await refusal(w.look())).toContain('no Freight to approve');
    expect(w.memory.opened).toEqual([]);

    const v = world();
    v.withRun((r) => ({ ...r, gates: r.gates.filter((g) => g.name !== 'stage:prod') }));
    expect(await refusal(v.look())).toContain('stands before no stage with an approval');
  });
});
