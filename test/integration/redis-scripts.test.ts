import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAuditLog } from '../../src/audit/audit-log.js';
import { parsePolicy } from '../../src/config/config.js';
import { newRun } from '../../src/domain/run.js';
import { approvalRequestFor } from '../../src/domain/approval.js';
import { createApprovalStore } from '../../src/store/approval-store.js';
import { createClaims } from '../../src/store/claims.js';
import { createOutboxStore } from '../../src/store/outbox-store.js';
import { createPromotionQueue } from '../../src/store/promotion-queue.js';
import { createRunStore } from '../../src/store/run-store.js';
import { createWriteLimiter } from '../../src/store/write-limiter.js';
import { TEST_AUDIT_KEY_BYTES } from '../helpers/audit-key.js';
import { spawnRedis, type SpawnedRedis } from '../helpers/global-redis.js';
import { testPrefix } from '../helpers/ids.js';

/**
 * Every Lua script goes through ioredis `defineCommand` (EVALSHA, and EVAL again when the server
 * answers NOSCRIPT). A Redis that restarted or failed over has an empty script cache: each store's
 * scripts must still run afterwards. A Redis of its own, since SCRIPT FLUSH is server-wide.
 */

let own: SpawnedRedis;
let redis: Redis;
beforeAll(async () => {
  own = await spawnRedis();
  redis = new Redis(own.url);
});
afterAll(async () => {
  redis.disconnect();
  await own.stop();
});

const policy = parsePolicy('repos:\n  acme/shop: {}\n', 'test');

describe('store scripts after Redis lost its script cache', () => {
  it('the run store creates and updates runs', async () => {
    const store = createRunStore({ redis, prefix: testPrefix('scripts-runs'), clock: () => new Date() });
    const first = newRun(policy, {
      id: 'sg-script01',
      repo: 'acme/shop',
      task: 'x',
      requester: { userId: 'UALICE' },
      channel: 'CSHOP',
      now: new Date(),
    });
    expect((await store.create(first, 'delivery-1')).created).toBe(true);
    await redis.script('FLUSH');
    expect((await store.update(first.id, (run) => ({ ...run, state: 'running' })))?.after.state).toBe('running');
    await redis.script('FLUSH');
    const second = { ...first, id: 'sg-script02' };
    expect((await store.create(second, 'delivery-2')).created).toBe(true);
    expect((await store.listActive()).map((run) => run.id).sort()).toEqual(['sg-script01', 'sg-script02']);
  });

  it('the audit log appends, with and without a run, and its chain verifies', async () => {
    const audit = createAuditLog({
      redis,
      prefix: testPrefix('scripts-audit'),
      clock: () => new Date(),
      key: TEST_AUDIT_KEY_BYTES,
    });
    await audit.append({ type: 'run.requested', actor: 'UALICE', runId: 'sg-script01' });
    await redis.script('FLUSH');
    await audit.append({ type: 'run.requested', actor: 'UALICE', runId: 'sg-script01', key: 'k-1' });
    await redis.script('FLUSH');
    await audit.append({ type: 'message.posted', actor: 'shipgate' });
    expect((await audit.eventsForRun('sg-script01')).map((event) => event.seq)).toEqual([1, 2]);
    expect((await audit.verify()).ok).toBe(true);
  });

  it('the outbox store advances the rendered marker', async () => {
    const outbox = createOutboxStore({ redis, prefix: testPrefix('scripts-outbox') });
    await outbox.advanceRendered('sg-f', 1);
    await redis.script('FLUSH');
    await outbox.advanceRendered('sg-f', 2);
    expect(await outbox.renderedVersion('sg-f')).toBe(2);
  });

  it('the approval store opens, decides and expires', async () => {
    const store = createApprovalStore({ redis, prefix: testPrefix('scripts-approval') });
    const open = (runId: string) =>
      approvalRequestFor({
        runId,
        freight: 'f'.repeat(40),
        nonce: 'n1',
        stage: 'prod',
        requester: 'UALICE',
        settings: { approvers: ['UBOB'], minApprovals: 1, allowSelfApproval: false, expiresAfter: 3_600_000 },
        requestedAt: new Date().toISOString(),
      });
    await store.open(open('sg-appr01'));
    await redis.script('FLUSH');
    const decided = await store.decide('sg-appr01', { action: 'approve', userId: 'UBOB', freight: 'f'.repeat(40), nonce: 'n1', at: new Date().toISOString(), via: 'UBOB' });
    expect(decided.outcome).toBe('approved-now');
    await store.open(open('sg-appr02'));
    await redis.script('FLUSH');
    expect((await store.expire('sg-appr02', new Date(Date.now() + 7_200_000).toISOString())).outcome).toBe('expired-now');
  });

  it('claims are released by their holder', async () => {
    const claims = createClaims({ redis, prefix: testPrefix('scripts-claims') });
    await redis.script('FLUSH');
    expect(await claims.withClaim('k', 10_000, async () => 'ran', () => 'busy')).toBe('ran');
    expect(await claims.withClaim('k', 10_000, async () => 'ran again', () => 'busy')).toBe('ran again');
  });

  it('the promotion queue joins, drops an ended head and leaves', async () => {
    const woken: string[] = [];
    const queue = createPromotionQueue({ redis, prefix: testPrefix('scripts-promotion-queue'), clock: () => new Date(), isActive: async (runId) => runId !== 'sg-ended', wake: async (runId) => void woken.push(runId) });
    const key = { namespace: 'shop', kargoStage: 'prod' };
    const lease = Date.now() + 60_000;
    await redis.script('FLUSH');
    await queue.join(key, 'sg-ended', lease);
    await redis.script('FLUSH');
    await queue.join(key, 'sg-a', lease);
    await queue.join(key, 'sg-b', lease);
    await redis.script('FLUSH');
    expect(await queue.join(key, 'sg-b', lease)).toEqual({ position: 2, size: 2, head: 'sg-a' });
    await redis.script('FLUSH');
    await queue.leave(key, 'sg-a');
    expect(woken).toEqual(['sg-b']);
  });

  it('the chat write limiter takes slots', async () => {
    const limiter = createWriteLimiter({ redis, prefix: testPrefix('scripts-writes'), perSecond: 2 });
    await redis.script('FLUSH');
    expect((await limiter.take()).taken).toBe(true);
    await redis.script('FLUSH');
    expect((await limiter.take()).taken).toBe(true);
    expect((await limiter.take()).taken).toBe(false);
  });
});
