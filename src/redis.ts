import { Redis } from 'ioredis';

export type { Redis } from 'ioredis';

/**
 * One factory for every Redis connection. BullMQ workers need
 * `maxRetriesPerRequest: null` (blocking commands must wait through
 * reconnects); plain clients fail fast instead so HTTP handlers never hang.
 */
export function createRedis(url: string, purpose: 'blocking' | 'command'): Redis {
  return new Redis(url, {
    maxRetriesPerRequest: purpose === 'blocking' ? null : 3,
    enableReadyCheck: true,
    connectionName: `shipgate-${purpose}`,
    // Reconnect forever with a capped backoff: Redis restarts must not kill the bot.
    retryStrategy: (attempt) => Math.min(attempt * 200, 5_000),
  });
}
