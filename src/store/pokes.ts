import type { Redis } from '../redis.js';

/**
 * "Look again now" marks left by webhooks. A webhook that arrives while the
 * gate is being evaluated cannot wake a job that is already running; the mark
 * makes that evaluation, if it ends pending, re-check at once instead of at
 * its next poll.
 */
export interface Pokes {
  poke(runId: string): Promise<void>;
  /** True (and cleared) when the run was poked since the last take. */
  take(runId: string): Promise<boolean>;
}

export function createPokes({ redis, prefix }: { redis: Redis; prefix: string }): Pokes {
  const key = (runId: string) => `${prefix}:poke:${runId}`;
  return {
    async poke(runId) {
      await redis.set(key(runId), '1', 'EX', 600);
    },
    async take(runId) {
      return (await redis.getdel(key(runId))) !== null;
    },
  };
}
