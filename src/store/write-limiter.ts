import type { Redis } from '../redis.js';

/**
 * Spaces chat writes across every worker process: at most `perSecond` per
 * one-second window, shared through Redis, so a burst of runs does not earn
 * 429s from Slack (SPEC §10). Only real writes take a slot; skipped card
 * refreshes cost nothing.
 */
export interface WriteLimiter {
  take(): Promise<void>;
}

export function createWriteLimiter({ redis, prefix, perSecond }: { redis: Redis; prefix: string; perSecond: number }): WriteLimiter {
  return {
    async take() {
      for (;;) {
        const second = Math.floor(Date.now() / 1000);
        const key = `${prefix}:chat-writes:${second}`;
        const count = await redis.incr(key);
        if (count === 1) await redis.expire(key, 5);
        if (count <= perSecond) return;
        await new Promise((resolve) => setTimeout(resolve, (second + 1) * 1000 - Date.now() + 5));
      }
    },
  };
}
