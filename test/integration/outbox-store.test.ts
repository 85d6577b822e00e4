import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createOutboxStore, POST_RECORD_TTL_SECONDS, type OutboxStore } from '../../src/store/outbox-store.js';
import { testPrefix } from '../helpers/ids.js';
import { createMemoryOutboxStore } from '../helpers/memory-outbox.js';

/**
 * The chat outbox's records (src/store/outbox-store.ts): one contract run against the Redis store
 * and the in-memory one the chat processor's unit tests use, then what only Redis can show — the
 * key names a deployed bot already has records under and their expiries. Its script surviving a
 * flushed script cache: redis-scripts.test.ts.
 */

let redis: Redis;
beforeAll(() => {
  redis = new Redis(inject('redisUrl'));
});
afterAll(() => {
  redis.disconnect();
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const implementations: Array<[string, () => OutboxStore]> = [
  ['redis', () => createOutboxStore({ redis, prefix: testPrefix('outbox') })],
  ['memory', () => createMemoryOutboxStore()],
];

describe.each(implementations)('outbox store contract (%s)', (_name, make) => {
  it('a post record goes from none to pending to posted, per key', async () => {
    const outbox = make();
    expect(await outbox.postRecord('sg-a.root')).toBeUndefined();
    await outbox.recordPending('sg-a.root');
    expect(await outbox.postRecord('sg-a.root')).toEqual({ state: 'pending' });
    await outbox.recordPosted('sg-a.root', '1700000000.000100');
    expect(await outbox.postRecord('sg-a.root')).toEqual({ state: 'posted', ref: '1700000000.000100' });
    expect(await outbox.postRecord('sg-a.gate-agent')).toBeUndefined();
  });

  it('an upload record goes from none to pending to uploaded, per key, apart from post records', async () => {
    const outbox = make();
    expect(await outbox.uploadRecord('sg-a.evidence.1')).toBeUndefined();
    await outbox.recordUploadPending('sg-a.evidence.1');
    expect(await outbox.uploadRecord('sg-a.evidence.1')).toEqual({ state: 'pending' });
    await outbox.recordUploaded('sg-a.evidence.1', 'F0123');
    expect(await outbox.uploadRecord('sg-a.evidence.1')).toEqual({ state: 'uploaded', ref: 'F0123' });
    expect(await outbox.postRecord('sg-a.evidence.1')).toBeUndefined();
    expect(await outbox.uploadRecord('sg-a.evidence.2')).toBeUndefined();
  });

  it('replies keep their enqueue order, a re-enqueue keeps its place, and the head is timed from when it became the head', async () => {
    const outbox = make();
    expect(await outbox.firstPendingReply('sg-a', 1_000)).toBeUndefined();
    for (const key of ['agent.1.passed', 'pr.1.passed', 'agent.1.passed', 'ci.1.passed']) await outbox.enqueueReply('sg-a', key);
    expect(await outbox.firstPendingReply('sg-a', 1_000)).toEqual({ key: 'agent.1.passed', headSince: 1_000 });
    expect(await outbox.firstPendingReply('sg-a', 5_000)).toEqual({ key: 'agent.1.passed', headSince: 1_000 });
    await outbox.replyPosted('sg-a', 'agent.1.passed');
    expect(await outbox.firstPendingReply('sg-a', 9_000)).toEqual({ key: 'pr.1.passed', headSince: 9_000 });
    await outbox.replyPosted('sg-a', 'pr.1.passed');
    await outbox.replyPosted('sg-a', 'ci.1.passed');
    expect(await outbox.firstPendingReply('sg-a', 9_500)).toBeUndefined();
    expect(await outbox.firstPendingReply('sg-b', 9_500)).toBeUndefined();
  });

  it('the root lease is held by one caller at a time, per run', async () => {
    const outbox = make();
    expect(await outbox.takeRootLease('sg-a')).toBe(true);
    expect(await outbox.takeRootLease('sg-a')).toBe(false);
    expect(await outbox.takeRootLease('sg-b')).toBe(true);
  });

  it('the rendered marker only moves forward', async () => {
    const outbox = make();
    expect(await outbox.renderedVersion('sg-a')).toBeUndefined();
    await outbox.advanceRendered('sg-a', 3);
    await outbox.advanceRendered('sg-a', 2);
    expect(await outbox.renderedVersion('sg-a')).toBe(3);
    await outbox.advanceRendered('sg-a', 5);
    expect(await outbox.renderedVersion('sg-a')).toBe(5);
    expect(await outbox.renderedVersion('sg-b')).toBeUndefined();
  });

  it('keeps the digest of the card last written', async () => {
    const outbox = make();
    expect(await outbox.cardDigest('sg-a')).toBeUndefined();
    await outbox.recordCardDigest('sg-a', 'f'.repeat(64));
    expect(await outbox.cardDigest('sg-a')).toBe('f'.repeat(64));
  });

  it('the card slot spaces writes: taken once per interval, with the time left for the others', async () => {
    const outbox = make();
    expect(await outbox.takeCardSlot('sg-a', 200)).toEqual({ taken: true });
    const busy = await outbox.takeCardSlot('sg-a', 200);
    expect(busy.taken).toBe(false);
    if (!busy.taken) {
      expect(busy.retryInMs).toBeGreaterThan(0);
      expect(busy.retryInMs).toBeLessThanOrEqual(200);
    }
    expect(await outbox.takeCardSlot('sg-b', 200)).toEqual({ taken: true });
    await sleep(250);
    expect(await outbox.takeCardSlot('sg-a', 200)).toEqual({ taken: true });
  });

  it('a posted root card sets the marker outright, its digest and a fresh slot', async () => {
    const outbox = make();
    await outbox.advanceRendered('sg-a', 9);
    await outbox.recordRootCard('sg-a', { version: 4, digest: 'a'.repeat(64), intervalMs: 5_000 });
    expect(await outbox.renderedVersion('sg-a')).toBe(4);
    expect(await outbox.cardDigest('sg-a')).toBe('a'.repeat(64));
    expect((await outbox.takeCardSlot('sg-a', 5_000)).taken).toBe(false);
  });
});

describe('the Redis outbox store', () => {
  it('writes the key names and values earlier versions wrote, with their expiries', async () => {
    const prefix = testPrefix('outbox-keys');
    const outbox = createOutboxStore({ redis, prefix });
    await outbox.recordPending('sg-k.root');
    expect(await redis.get(`${prefix}:posted:sg-k.root`)).toBe('pending');
    await outbox.recordPosted('sg-k.root', '1700000000.000200');
    expect(await redis.get(`${prefix}:posted:sg-k.root`)).toBe('ts:1700000000.000200');
    expect(await redis.ttl(`${prefix}:posted:sg-k.root`)).toBeGreaterThan(POST_RECORD_TTL_SECONDS - 60);

    await outbox.takeRootLease('sg-k');
    expect(await redis.get(`${prefix}:root-lease:sg-k`)).toBe('1');
    expect(await redis.pttl(`${prefix}:root-lease:sg-k`)).toBeLessThanOrEqual(30_000);

    await outbox.recordRootCard('sg-k', { version: 2, digest: 'b'.repeat(64), intervalMs: 3_000 });
    expect(await redis.get(`${prefix}:card:rendered:sg-k`)).toBe('2');
    expect(await redis.ttl(`${prefix}:card:rendered:sg-k`)).toBe(-1);
    expect(await redis.get(`${prefix}:card:hash:sg-k`)).toBe('b'.repeat(64));
    expect(await redis.ttl(`${prefix}:card:hash:sg-k`)).toBeGreaterThan(POST_RECORD_TTL_SECONDS - 60);
    expect(await redis.get(`${prefix}:card:slot:sg-k`)).toBe('1');
    expect(await redis.pttl(`${prefix}:card:slot:sg-k`)).toBeLessThanOrEqual(3_000);

    await outbox.advanceRendered('sg-k', 7);
    expect(await redis.get(`${prefix}:card:rendered:sg-k`)).toBe('7');
    expect((await redis.keys(`${prefix}:*`)).sort()).toEqual(
      ['posted:sg-k.root', 'root-lease:sg-k', 'card:rendered:sg-k', 'card:hash:sg-k', 'card:slot:sg-k']
        .map((k) => `${prefix}:${k}`)
        .sort(),
    );
  });

  it('reads records a running bot already has, and treats anything else as no record', async () => {
    const prefix = testPrefix('outbox-old');
    await redis.set(`${prefix}:posted:sg-o.root`, 'ts:1690000000.000300');
    await redis.set(`${prefix}:posted:sg-o.reply`, 'something else');
    await redis.set(`${prefix}:card:rendered:sg-o`, '12');
    const outbox = createOutboxStore({ redis, prefix });
    expect(await outbox.postRecord('sg-o.root')).toEqual({ state: 'posted', ref: '1690000000.000300' });
    expect(await outbox.postRecord('sg-o.reply')).toBeUndefined();
    expect(await outbox.renderedVersion('sg-o')).toBe(12);
  });
});
