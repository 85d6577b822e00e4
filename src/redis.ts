import { Redis, type RedisOptions } from 'ioredis';

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
    // Commands issued in one event-loop turn go out in one socket write: 200 concurrent /ship
    // commands otherwise cost a write system call each, the largest part of the ack's own CPU.
    enableAutoPipelining: purpose === 'command',
    // Reconnect forever with a capped backoff: Redis restarts must not kill the bot.
    retryStrategy: (attempt) => Math.min(attempt * 200, 5_000),
  });
}

/**
 * Connection options for BullMQ objects, from REDIS_URL. Giving BullMQ options rather than a
 * client lets each Queue and Worker own its connections and close them itself; a client shared
 * with us could be quit while BullMQ still had a command to send (an unhandled rejection).
 */
export function bullConnection(url: string): RedisOptions {
  const parsed = new URL(url);
  const db = parsed.pathname.replace('/', '');
  return {
    host: parsed.hostname.replace(/^\[|\]$/g, ''),
    port: parsed.port === '' ? 6379 : Number(parsed.port),
    ...(parsed.username === '' ? {} : { username: decodeURIComponent(parsed.username) }),
    ...(parsed.password === '' ? {} : { password: decodeURIComponent(parsed.password) }),
    ...(db === '' ? {} : { db: Number(db) }),
    ...(parsed.protocol === 'rediss:' ? { tls: {} } : {}),
    maxRetriesPerRequest: null,
    retryStrategy: (attempt: number) => Math.min(attempt * 200, 5_000),
  };
}
