import { randomBytes } from 'node:crypto';
import type { Result } from 'ioredis';
import type { Redis } from '../redis.js';

/**
 * Short-lived exclusive claims across every worker: "I am doing this now". BullMQ is at-least-once:
 * a job whose lock lapsed (a long GC pause, a stalled event loop) can be handed to a second worker
 * while the first is still running, and a look-then-create done by both would create twice. The
 * claim covers that critical section: taken before, released after; it also expires by itself, so a
 * worker that died holding one only delays the next attempt, which then looks again before it creates.
 */
export interface Claims {
  /** Runs `work` holding `key` (for at most `ttlMs`); `busy` instead, without running it, while someone else holds it. */
  withClaim<T>(key: string, ttlMs: number, work: () => Promise<T>, busy: () => T): Promise<T>;
}

// Deletes the claim only if it is still this holder's: one that expired and was taken by another
// worker must not be released by the first.
const RELEASE_SCRIPT = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    shipgateClaimRelease(key: string, token: string): Result<unknown, Context>;
  }
}

export function createClaims({ redis, prefix }: { redis: Redis; prefix: string }): Claims {
  redis.defineCommand('shipgateClaimRelease', { numberOfKeys: 1, lua: RELEASE_SCRIPT });
  return {
    async withClaim(key, ttlMs, work, busy) {
      const redisKey = `${prefix}:claim:${key}`;
      const token = randomBytes(12).toString('hex');
      if ((await redis.set(redisKey, token, 'PX', ttlMs, 'NX')) !== 'OK') return busy();
      try {
        return await work();
      } finally {
        await redis.shipgateClaimRelease(redisKey, token);
      }
    },
  };
}
