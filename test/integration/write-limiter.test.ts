import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { createWriteLimiter } from '../../src/store/write-limiter.js';
import { testPrefix } from '../helpers/ids.js';

/**
 * The chat write budget over real Redis: at most `perSecond` writes in ANY one second, across
 * every process that shares the prefix. A window per clock second would let the budget through
 * twice within a few milliseconds around each second's turn.
 */

const redis = new Redis(inject('redisUrl'));
afterAll(() => redis.disconnect());

/** Redis' clock in ms, the one the limiter reads. */
async function redisNow(): Promise<number> {
  const [seconds, micros] = await redis.time();
  return Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
}

describe('chat write limiter', () => {
  it('refuses a write the next clock second would allow while the last second is full, and says when a slot frees', async () => {
    const prefix = testPrefix('write-limiter');
    // Two processes' limiters: one budget.
    const a = createWriteLimiter({ redis, prefix, perSecond: 3 });
    const b = createWriteLimiter({ redis: redis.duplicate(), prefix, perSecond: 3 });
    // Start in a second's second half, so its turn comes well inside the window.
    for (let ms = (await redisNow()) % 1000; ms < 500 || ms > 700; ms = (await redisNow()) % 1000) await sleep(20);
    const started = await redisNow();
    expect([await a.take(), await b.take(), await a.take()].map((slot) => slot.taken)).toEqual([true, true, true]);
    const full = await b.take();
    expect(full.taken).toBe(false);
    expect(full.retryInMs).toBeGreaterThan(0);
    expect(full.retryInMs).toBeLessThanOrEqual(1001);

    // Past the clock second's turn, still within a second of the first writes: still full.
    const turn = Math.ceil((started + 1) / 1000) * 1000;
    await sleep(turn - (await redisNow()) + 50);
    const afterTurn = await a.take();
    expect(afterTurn.taken).toBe(false);
    expect(afterTurn.retryInMs).toBeGreaterThan(0);

    // When it said, the first writes have left the window.
    await sleep(afterTurn.retryInMs);
    expect((await b.take()).taken).toBe(true);
  });

  it('never lets more than perSecond through in any sliding second under steady demand', async () => {
    const limiter = createWriteLimiter({ redis, prefix: testPrefix('write-limiter-steady'), perSecond: 5 });
    const taken: number[] = [];
    const until = (await redisNow()) + 2_500;
    for (;;) {
      const before = await redisNow();
      if (before > until) break;
      const slot = await limiter.take();
      if (slot.taken) taken.push(await redisNow());
      else await sleep(Math.min(slot.retryInMs, 50));
    }
    // About 5 per second over 2.5 s; in any 990 ms span (the margin covers reading the time after the take), at most 5.
    expect(taken.length).toBeGreaterThanOrEqual(10);
    for (const start of taken) expect(taken.filter((t) => t >= start && t < start + 990).length).toBeLessThanOrEqual(5);
  });

  it('is not held by slots from the future: a clock that stepped back frees the window, and no hold is longer than a second', async () => {
    const prefix = testPrefix('write-limiter-clock');
    const limiter = createWriteLimiter({ redis, prefix, perSecond: 2 });
    // What a clock an hour ahead (before a step back, or another server before a failover) left behind.
    const later = (await redisNow()) + 3_600_000;
    await redis.zadd(`${prefix}:chat-writes:window`, later, 'a', later, 'b');
    expect(await limiter.take()).toEqual({ taken: true, retryInMs: 0 });
    expect((await limiter.take()).taken).toBe(true);
    const full = await limiter.take();
    expect(full.taken).toBe(false);
    expect(full.retryInMs).toBeGreaterThanOrEqual(1);
    expect(full.retryInMs).toBeLessThanOrEqual(1000);
  });

  it('refuses a budget that could never let a write through', () => {
    expect(() => createWriteLimiter({ redis, prefix: testPrefix('write-limiter-zero'), perSecond: 0 })).toThrow(
      /from 1, not 0/,
    );
  });
});
