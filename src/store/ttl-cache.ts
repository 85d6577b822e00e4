import type { Redis } from '../redis.js';

/** A string cache with expiry in Redis, shared by all workers. */
export interface TtlCache {
  get(key: string): Promise<string | undefined>;
  set(key: string, value: string): Promise<void>;
}

export function createTtlCache({ redis, prefix, ttlSeconds }: { redis: Redis; prefix: string; ttlSeconds: number }): TtlCache {
  return {
    async get(key) {
      return (await redis.get(`${prefix}:cache:${key}`)) ?? undefined;
    },
    async set(key, value) {
      await redis.set(`${prefix}:cache:${key}`, value, 'EX', ttlSeconds);
    },
  };
}
