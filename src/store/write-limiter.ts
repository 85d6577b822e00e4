import type { Redis } from '../redis.js';

/**
 * Counts chat writes across every worker process: at most `perSecond` per one-second window,
 * shared through Redis, so a burst of runs does not earn 429s from Slack (SPEC §10). Only real
 * writes take a slot; skipped card refreshes and jobs that wait their turn cost nothing, which is
 * why this counts and BullMQ's limiter only holds: BullMQ's `limiter` counts every job start, and
 * the outbox's jobs that wait for an earlier reply (or the card's update slot) start many times
 * for one write. Over budget, the chat processor asks BullMQ to hold the whole chat queue until
 * the next window (`Queue.rateLimit`) and hands its job back, instead of sleeping in a worker slot.
 */
export interface WriteLimiter {
  /** Takes a slot in this second's window; `retryInMs` says when the next window opens when none is left. */
  take(): Promise<{ taken: boolean; retryInMs: number }>;
}

export function createWriteLimiter({ redis, prefix, perSecond }: { redis: Redis; prefix: string; perSecond: number }): WriteLimiter {
  return {
    async take() {
      const now = Date.now();
      const second = Math.floor(now / 1000);
      const key = `${prefix}:chat-writes:${second}`;
      const count = await redis.incr(key);
      if (count === 1) await redis.expire(key, 5);
      if (count <= perSecond) return { taken: true, retryInMs: 0 };
      return { taken: false, retryInMs: (second + 1) * 1000 - now + 5 };
    },
  };
}
