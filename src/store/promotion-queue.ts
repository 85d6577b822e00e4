import type { Result } from 'ioredis';
import { z } from 'zod';
import type { Redis } from '../redis.js';

/**
 * Per-stage promotion queues in Redis (issue 10): promotions into one Kargo Stage are serialised
 * across runs. A run that needs the bot to promote into a Stage joins that Stage's queue (idempotent:
 * the first arrival fixes its place) and only the head may create its Promotion; the others wait,
 * showing their position. The head leaves when its Promotion reached a terminal phase or the run
 * ended, and leaving wakes the next run, which re-reads the queue and sees it is the head
 * (level-triggered: the wake decides nothing).
 *
 * Nothing may block a queue forever: the head check drops a head whose run is terminal or gone
 * (asked of the run store through `isActive`), and every entry carries a lease (refreshed on each
 * join, tied by the caller to the run's deadline) after which any operation drops it. Being the head
 * is re-entrant: a run that joins again (a retried look, a worker killed between creating and
 * recording its Promotion) keeps its place.
 *
 * Keys, for the queue `<namespace>/<kargoStage>`: `<prefix>:promotion-queue:<queue>:entries` (sorted
 * set, run id → arrival number), `…:leases` (sorted set, run id → lease end in ms), `…:seq` (the
 * arrival counter); and `<prefix>:promotion-queue-runs:<run id>` (set of the queues a run is in, so
 * that the end of a run leaves all of them).
 */

export interface PromotionQueueKey {
  /** The Kargo project's namespace. */
  namespace: string;
  kargoStage: string;
}

export interface QueuePlace {
  /** 1-based; 1 is the head, the one run that may create its Promotion now. */
  position: number;
  /** How many runs are in the queue, this one included. */
  size: number;
  /** The head's run id (this run's own when `position` is 1). */
  head: string;
}

export interface PromotionQueue {
  /**
   * Joins the queue of `key` (or keeps the place already held) and extends the entry's lease to
   * `leaseUntilMs`; answers the place. A head whose run is no longer active is dropped first.
   */
  join(key: PromotionQueueKey, runId: string, leaseUntilMs: number): Promise<QueuePlace>;
  /** Leaves the queue of `key` (a no-op when not in it); when the run was the head, wakes the next active run. */
  leave(key: PromotionQueueKey, runId: string): Promise<void>;
  /** Leaves every queue the run is in: the run ended. */
  leaveAll(runId: string): Promise<void>;
  /** The run ids in the queue of `key`, head first (lapsed leases dropped; inactive runs not checked). */
  entries(key: PromotionQueueKey): Promise<string[]>;
}

export interface PromotionQueueDeps {
  redis: Redis;
  prefix: string;
  clock: () => Date;
  /** Whether the run still exists and has not ended: an entry of any other run no longer holds its place. */
  isActive: (runId: string) => Promise<boolean>;
  /** Makes the run look at its gate now (it became the head). Failures should be handled by the caller's function: a missed wake costs only a poll. */
  wake: (runId: string) => Promise<void>;
}

declare module 'ioredis' {
  interface RedisCommander<Context> {
    /** JOIN_SCRIPT, defined by createPromotionQueue. */
    shipgatePromotionQueueJoin(entries: string, leases: string, seq: string, runQueues: string, runId: string, leaseUntilMs: string, nowMs: string, queue: string): Result<unknown, Context>;
    /** HEAD_SCRIPT, defined by createPromotionQueue. */
    shipgatePromotionQueueHead(entries: string, leases: string, nowMs: string): Result<unknown, Context>;
    /** DROP_SCRIPT, defined by createPromotionQueue. */
    shipgatePromotionQueueDrop(entries: string, leases: string, runId: string, arrival: string): Result<unknown, Context>;
    /** LEAVE_SCRIPT, defined by createPromotionQueue. */
    shipgatePromotionQueueLeave(entries: string, leases: string, runQueues: string, runId: string, queue: string): Result<unknown, Context>;
  }
}

// Every script first drops the entries whose lease lapsed (KEYS[1] entries, KEYS[2] leases, now in
// ms as its argument): a run that stopped looking (and whose end was never recorded) gives way.
const DROP_LAPSED = `
local function drop_lapsed(now)
  local lapsed = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. now)
  for _, id in ipairs(lapsed) do
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
  end
end
`;

// Joins once (the arrival number is taken only for a run not in the queue yet), extends the lease,
// remembers the queue under the run (expiring no earlier than the lease).
// Replies {rank (0 = head), size, head run id, head arrival}.
const JOIN_SCRIPT = `${DROP_LAPSED}
drop_lapsed(ARGV[3])
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], redis.call('INCR', KEYS[3]), ARGV[1])
end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[4])
local ttl = tonumber(ARGV[2]) - tonumber(ARGV[3])
if ttl < 1 then ttl = 1 end
local pttl = redis.call('PTTL', KEYS[4])
if pttl < ttl then redis.call('PEXPIRE', KEYS[4], ttl) end
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {redis.call('ZRANK', KEYS[1], ARGV[1]), redis.call('ZCARD', KEYS[1]), head[1], head[2]}
`;

// Replies {} (empty queue) or {head run id, head arrival}.
const HEAD_SCRIPT = `${DROP_LAPSED}
drop_lapsed(ARGV[1])
return redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
`;

// Drops an entry only if it is still the one that was judged (same arrival): a run that was dropped
// and joined again meanwhile holds a new place that this drop must not take. Replies 1 dropped, 0 not.
const DROP_SCRIPT = `
if redis.call('ZSCORE', KEYS[1], ARGV[1]) ~= ARGV[2] then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
`;

// Replies 1 when the run was the head (the next one is to be woken), else 0.
const LEAVE_SCRIPT = `
local head = redis.call('ZRANGE', KEYS[1], 0, 0)[1]
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[2])
if removed == 1 and head == ARGV[1] then
  return 1
end
return 0
`;

const joinReply = z.tuple([z.number().int(), z.number().int(), z.string(), z.string()]);
const headReply = z.union([z.tuple([]), z.tuple([z.string(), z.string()])]);
const countReply = z.number().int();

/** How many inactive heads one call drops before it answers with what it has (the next call goes on). */
const MAX_DROPS = 32;

/** The queue's name: a Kubernetes namespace and object name, neither of which can hold a `/`. */
export function queueName(key: PromotionQueueKey): string {
  return `${key.namespace}/${key.kargoStage}`;
}

export function createPromotionQueue(deps: PromotionQueueDeps): PromotionQueue {
  const { redis, prefix, clock } = deps;
  redis.defineCommand('shipgatePromotionQueueJoin', { numberOfKeys: 4, lua: JOIN_SCRIPT });
  redis.defineCommand('shipgatePromotionQueueHead', { numberOfKeys: 2, lua: HEAD_SCRIPT });
  redis.defineCommand('shipgatePromotionQueueDrop', { numberOfKeys: 2, lua: DROP_SCRIPT });
  redis.defineCommand('shipgatePromotionQueueLeave', { numberOfKeys: 3, lua: LEAVE_SCRIPT });

  const keysOf = (name: string) => {
    const base = `${prefix}:promotion-queue:${name}`;
    return { entries: `${base}:entries`, leases: `${base}:leases`, seq: `${base}:seq` };
  };
  const runQueuesKey = (runId: string) => `${prefix}:promotion-queue-runs:${runId}`;
  const now = () => String(clock().getTime());

  async function drop(name: string, runId: string, arrival: string): Promise<void> {
    const keys = keysOf(name);
    countReply.parse(await redis.shipgatePromotionQueueDrop(keys.entries, keys.leases, runId, arrival));
  }

  /** The queue's head once every inactive head before it was dropped; undefined for an empty queue. */
  async function activeHead(name: string): Promise<string | undefined> {
    const keys = keysOf(name);
    for (let drops = 0; drops <= MAX_DROPS; drops++) {
      const head = headReply.parse(await redis.shipgatePromotionQueueHead(keys.entries, keys.leases, now()));
      if (head.length === 0) return undefined;
      const [runId, arrival] = head;
      if (drops === MAX_DROPS || (await deps.isActive(runId))) return runId;
      await drop(name, runId, arrival);
    }
    return undefined;
  }

  async function leave(name: string, runId: string): Promise<void> {
    const keys = keysOf(name);
    const wasHead = countReply.parse(await redis.shipgatePromotionQueueLeave(keys.entries, keys.leases, runQueuesKey(runId), runId, name));
    if (wasHead !== 1) return;
    const next = await activeHead(name);
    if (next !== undefined) await deps.wake(next);
  }

  return {
    async join(key, runId, leaseUntilMs) {
      const name = queueName(key);
      const keys = keysOf(name);
      let dropped = false;
      for (let drops = 0; ; drops++) {
        const [rank, size, head, arrival] = joinReply.parse(
          await redis.shipgatePromotionQueueJoin(keys.entries, keys.leases, keys.seq, runQueuesKey(runId), runId, String(Math.round(leaseUntilMs)), now(), name),
        );
        const place: QueuePlace = { position: rank + 1, size, head };
        if (rank === 0) return place;
        if (drops < MAX_DROPS && !(await deps.isActive(head))) {
          // The run at the head ended without leaving (a worker died before its clean-up): it gives way.
          await drop(name, head, arrival);
          dropped = true;
          continue;
        }
        // Whoever heads the queue now may not know yet that it does.
        if (dropped) await deps.wake(head);
        return place;
      }
    },

    async leave(key, runId) {
      await leave(queueName(key), runId);
    },

    async leaveAll(runId) {
      const names = z.array(z.string()).parse(await redis.smembers(runQueuesKey(runId)));
      for (const name of names) await leave(name, runId);
    },

    async entries(key) {
      const name = queueName(key);
      const keys = keysOf(name);
      await redis.shipgatePromotionQueueHead(keys.entries, keys.leases, now());
      return z.array(z.string()).parse(await redis.zrange(keys.entries, 0, -1));
    },
  };
}
