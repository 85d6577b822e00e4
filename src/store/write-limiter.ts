import type { Result } from 'ioredis';
import { z } from 'zod';
import type { Redis } from '../redis.js';

/**
 * Counts chat writes across every worker process: at most `perSecond` in any one second, shared
 * through Redis, so a burst of runs does not earn 429s from Slack (SPEC §10). Only real writes take
 * a slot; skipped card refreshes and jobs that wait their turn cost nothing, which is why this
 * counts and BullMQ's limiter only holds: BullMQ's `limiter` counts every job start, and the
 * outbox's jobs that wait for an earlier reply (or the card's update slot) start many times for one
 * write. Over budget, the chat processor asks BullMQ to hold the whole chat queue until a slot frees
 * (`Queue.rateLimit`) and hands its job back, instead of sleeping in a worker slot.
 *
 * The window slides: a fixed window per clock second lets `perSecond` writes through at the end of
 * one second and as many again at the start of the next, twice the limit within a few milliseconds,
 * which is what a chat's own limiter sees. Redis' clock decides, so workers whose clocks disagree
 * still share one window.
 */
export interface WriteLimiter {
  /** Takes a slot if fewer than `perSecond` were taken in the last second; `retryInMs` says when one frees otherwise. */
  take(): Promise<{ taken: boolean; retryInMs: number }>;
}

/**
 * KEYS: the window (a sorted set of the slots taken, scored by Redis time in ms), a counter that
 * names the slots. ARGV: perSecond. Answers {1, 0} when taken, else {0, ms until the oldest slot
 * leaves the window} (1 to 1000: a slot never holds writes back longer than the window).
 */
const TAKE_SCRIPT = `
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 1000)
-- Slots "from the future" (Redis' clock stepped back, a failover to a server whose clock lags) would
-- otherwise never leave the window and hold every chat write for as long as the step was.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  local slot = redis.call('INCR', KEYS[2])
  redis.call('ZADD', KEYS[1], now, tostring(slot))
  redis.call('PEXPIRE', KEYS[1], 2000)
  redis.call('PEXPIRE', KEYS[2], 2000)
  return {1, 0}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, math.max(1, math.min(1000, tonumber(oldest[2]) + 1000 - now + 1))}
`;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    /** TAKE_SCRIPT, defined by createWriteLimiter. */
    shipgateTakeWriteSlot(windowKey: string, slotKey: string, perSecond: number): Result<unknown, Context>;
  }
}

const answerSchema = z.tuple([z.union([z.literal(0), z.literal(1)]), z.number().int().nonnegative()]);

export function createWriteLimiter({
  redis,
  prefix,
  perSecond,
}: {
  redis: Redis;
  prefix: string;
  perSecond: number;
}): WriteLimiter {
  if (!Number.isInteger(perSecond) || perSecond < 1)
    throw new Error(`chat writes per second must be a whole number from 1, not ${perSecond}`);
  redis.defineCommand('shipgateTakeWriteSlot', { numberOfKeys: 2, lua: TAKE_SCRIPT });
  const windowKey = `${prefix}:chat-writes:window`;
  const slotKey = `${prefix}:chat-writes:slot`;
  return {
    async take() {
      const [taken, retryInMs] = answerSchema.parse(await redis.shipgateTakeWriteSlot(windowKey, slotKey, perSecond));
      return { taken: taken === 1, retryInMs };
    },
  };
}
