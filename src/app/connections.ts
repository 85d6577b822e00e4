import type { RedisOptions } from 'ioredis';
import { ConfigError } from '../config/config.js';
import type { Logger } from '../log.js';
import { bullConnection, createRedis, type Redis } from '../redis.js';

export interface Connections {
  /** Commands: stores, the audit log, cancellation's publisher. */
  redis: Redis;
  /** Cancellation's subscriber; only a process that runs workers listens for cancels. */
  subscriber: Redis | undefined;
  /** BullMQ objects get options, not a client: each owns and closes its own connections. */
  bullmq: RedisOptions;
  close(): Promise<void>;
}

export function openConnections({
  url,
  subscribe,
  log,
}: {
  url: string;
  subscribe: boolean;
  log: Logger;
}): Connections {
  const redis = createRedis(url, 'command');
  const subscriber = subscribe ? createRedis(url, 'blocking') : undefined;
  for (const [name, client] of Object.entries({ redis, subscriber })) {
    client?.on('error', (error: Error) => log.warn({ connection: name, err: error }, 'redis connection error'));
  }
  return {
    redis,
    subscriber,
    bullmq: bullConnection(url),
    async close() {
      await Promise.all([redis.quit(), subscriber?.quit()]);
    },
  };
}

type Pingable = Pick<Redis, 'ping' | 'status'>;

/** Start-up waits this long for Redis, then stops with a ConfigError naming REDIS_URL (password hidden). */
export async function waitForRedis(
  redis: Pick<Redis, 'ping'>,
  url: string,
  { timeoutMs = 10_000, pauseMs = 250 } = {},
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if ((await redis.ping()) === 'PONG') return;
    } catch {
      // retried below until the deadline
    }
    if (Date.now() > deadline) {
      const where = url.replace(/\/\/[^@/]*@/, '//***@');
      throw new ConfigError([
        `REDIS_URL: no Redis answers at ${where}. Fix: start one (redis-server, or docker compose up -d redis) or point REDIS_URL at yours.`,
      ]);
    }
    await new Promise((resolve) => setTimeout(resolve, pauseMs));
  }
}

/** Readiness (`/readyz`): Redis answers within a second. */
export async function redisReady(redis: Pingable, timeoutMs = 1_000): Promise<boolean> {
  // Answer from the connection state first: while Redis is down a PING waits through
  // maxRetriesPerRequest reconnect attempts, whose backoff grows to 5 s each.
  if (redis.status !== 'ready') return false;
  const timeout = new Promise<'timeout'>((resolve) => setTimeout(resolve, timeoutMs, 'timeout').unref());
  return (await Promise.race([redis.ping(), timeout])) === 'PONG';
}
