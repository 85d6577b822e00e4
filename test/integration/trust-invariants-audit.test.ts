import { Redis } from 'ioredis';
import { afterEach, beforeEach, describe, expect, inject, it } from 'vitest';
import { createAuditLog, type AuditLog } from '../../src/audit/audit-log.js';
import { checkTrustInvariants } from '../../src/audit/trust-invariants.js';
import { TEST_AUDIT_KEY_BYTES } from '../helpers/audit-key.js';
import { testPrefix } from '../helpers/ids.js';
import {
  chainPolicy,
  expectNoTrustViolations,
  interleave,
  planEvents,
  rulesOf,
  type RunPlan,
} from '../helpers/trust-chains.js';

/**
 * The trust-boundary checker over a real audit log (issue 10): events appended through
 * `createAuditLog` and read back with `allEvents()` and `eventsForRun()` are exactly what the
 * checker takes, as later end-to-end tests will use it.
 */

const redisUrl = inject('redisUrl');
const HOUR = 3_600_000;

const POLICY = chainPolicy({
  preStages: ['dev'],
  prodStage: 'prod',
  approvers: ['U-ann', 'S-release'],
  minApprovals: 2,
  allowSelfApproval: false,
  expiresAfterMs: HOUR,
});
const membership = (id: string) => (id === 'S-release' ? ['U-gil'] : undefined);

const plan = (runId: string): RunPlan => ({
  runId,
  repo: 'acme/shop',
  task: 'add a healthz endpoint',
  requester: 'U-req',
  preStages: ['dev'],
  prodStage: 'prod',
  ciRedRounds: 0,
  botPromotes: true,
  approvals: [
    { userId: 'U-ann', via: 'U-ann', afterMs: 5_000 },
    { userId: 'U-gil', via: 'S-release', afterMs: 9_000 },
  ],
  duplicateApprovals: 0,
  refusals: ['U-eve'],
  outcome: 'promoted',
  minApprovals: 2,
  approvers: ['U-ann', 'S-release'],
  allowSelfApproval: false,
  expiresAfterMs: HOUR,
  startMs: Date.now(),
});

describe('trust invariants over a real audit log', () => {
  let redis: Redis;
  let audit: AuditLog;

  beforeEach(() => {
    redis = new Redis(redisUrl);
    audit = createAuditLog({ redis, prefix: testPrefix('trust'), clock: () => new Date(), key: TEST_AUDIT_KEY_BYTES });
  });

  afterEach(async () => {
    await audit.close();
    await redis.quit();
  });

  async function write(drafts: ReturnType<typeof interleave>): Promise<void> {
    for (const { runId, type, actor, data } of drafts)
      await audit.append({ runId: runId ?? undefined, type, actor, data });
  }

  it('two interleaved runs and an event of no run: allEvents() and eventsForRun() read clean, and the log verifies', async () => {
    const drafts = interleave([planEvents(plan('sg-a1')), planEvents(plan('sg-b2'))], [0, 1, 1, 0, 0, 1]);
    await audit.append({ type: 'command.refused', actor: 'U-eve', data: { reason: 'not a requester' } });
    await write(drafts);

    const all = await audit.allEvents();
    expect(all.map((e) => e.seq)).toEqual(Array.from({ length: drafts.length + 1 }, (_, i) => i + 1));
    expect(all[0]).toMatchObject({ runId: null, type: 'command.refused' });
    expectNoTrustViolations(all, POLICY, { membership });
    expectNoTrustViolations(await audit.eventsForRun('sg-a1'), POLICY, { membership });
    expect(
      (await audit.eventsForRun('sg-b2')).filter((e) => e.type === 'promotion.created' && e.data.stage === 'prod'),
    ).toHaveLength(1);
    await expect(audit.verify()).resolves.toMatchObject({ ok: true, count: drafts.length + 1 });
  });

  it('finds a self-approval and a push to another branch written through the real log', async () => {
    const drafts = planEvents(plan('sg-c3')).map((d) => {
      if (d.type === 'approval.approved' && d.data.userId === 'U-gil')
        return { ...d, actor: 'U-req', data: { ...d.data, userId: 'U-req', via: 'U-req' } };
      if (d.type === 'commit.created')
        return { ...d, data: { ...d.data, branch: 'shipgate/sg-other-add-a-healthz-endpoint' } };
      return d;
    });
    await write(interleave([drafts]));
    const violations = checkTrustInvariants(await audit.allEvents(), { policy: POLICY, membership });
    expect(violations.every((v) => v.runId === 'sg-c3')).toBe(true);
    // The commit off the run's branch is also no longer the merged branch's head, so CI covers nothing merged.
    expect(new Set(rulesOf(violations).map(([rule]) => rule))).toEqual(
      new Set(['own-branch', 'self-approval', 'approver-authorised', 'approvals-count', 'ci-green']),
    );
  });

  it('allEvents() of an empty log is empty, and pages through a log longer than a page', async () => {
    await expect(audit.allEvents()).resolves.toEqual([]);
    const paged = createAuditLog({
      redis,
      prefix: testPrefix('trust-paged'),
      clock: () => new Date(),
      key: TEST_AUDIT_KEY_BYTES,
      pageSize: 3,
    });
    for (let i = 0; i < 7; i += 1)
      await paged.append({ type: 'message.posted', actor: 'shipgate', runId: `sg-p${i % 2}`, data: { i } });
    expect((await paged.allEvents()).map((e) => e.data.i)).toEqual([0, 1, 2, 3, 4, 5, 6]);
  });
});
