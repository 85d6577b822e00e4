import type { Redis } from '../redis.js';

/**
 * Instructions given in a run's thread (SPEC §2), queued for the agent's next
 * iteration. They are read without being removed and acknowledged only once
 * the agent's commit that addressed them exists, so a crash in between does
 * not lose them.
 */
export interface FollowUps {
  /** False when this delivery was already queued (a redelivered Slack event). */
  add(runId: string, entry: { text: string; by: string; deliveryId: string }): Promise<boolean>;
  pending(runId: string): Promise<string[]>;
  acknowledge(runId: string, count: number): Promise<void>;
}

export function createFollowUps({ redis, prefix }: { redis: Redis; prefix: string }): FollowUps {
  const list = (runId: string) => `${prefix}:followups:${runId}`;
  return {
    async add(runId, entry) {
      const fresh = await redis.set(`${prefix}:followup-delivery:${entry.deliveryId}`, runId, 'EX', 86_400, 'NX');
      if (fresh === null) return false;
      await redis.rpush(list(runId), entry.text);
      return true;
    },
    async pending(runId) {
      return redis.lrange(list(runId), 0, -1);
    },
    async acknowledge(runId, count) {
      if (count > 0) await redis.ltrim(list(runId), count, -1);
    },
  };
}
