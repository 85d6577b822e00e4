import type { EtagCache } from '../ports/github.js';
import type { Redis } from '../redis.js';

/**
 * ETag cache in Redis, so every worker's conditional requests hit the same
 * entries (SPEC §10: rate-limited requests per watched commit ≤ changes + 3).
 * Entries expire: a commit's checks stop changing within hours.
 */
export function createEtagCache({ redis, prefix, ttlSeconds = 6 * 3600 }: { redis: Redis; prefix: string; ttlSeconds?: number }): EtagCache {
  const key = (url: string) => `${prefix}:etag:${url}`;
  return {
    async get(url) {
      const [etag, body] = await redis.hmget(key(url), 'etag', 'body');
      return etag === null || etag === undefined || body === null || body === undefined ? undefined : { etag, body };
    },
    async set(url, entry) {
      await redis.multi().hset(key(url), 'etag', entry.etag, 'body', entry.body).expire(key(url), ttlSeconds).exec();
    },
  };
}
