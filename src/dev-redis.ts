import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';

/**
 * For the console chat on a fresh machine: when REDIS_URL is not set and no
 * Redis answers at the default address, start a private redis-server so that
 * `npm start` works out of the box. Never used with Slack or an explicit
 * REDIS_URL: production state must not live in a throwaway process.
 */

/** True when a Redis at `url` answers PING (one attempt, no retries). */
export async function redisAnswers(url: string): Promise<boolean> {
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: 1_000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
    return (await client.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    client.disconnect();
  }
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

export interface DevRedis {
  url: string;
  stop(): void;
}

/** Returns undefined when the default Redis answers (use it) or redis-server is not installed. */
export async function startDevRedisIfNeeded(defaultUrl: string): Promise<DevRedis | undefined> {
  if (await redisAnswers(defaultUrl)) return undefined;
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'shipgate-dev-redis-'));
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], {
    stdio: 'ignore',
  });
  const failed = await new Promise<boolean>((resolve) => {
    child.once('error', () => resolve(true));
    child.once('spawn', () => resolve(false));
  });
  if (failed) return undefined;
  const url = `redis://127.0.0.1:${port}`;
  for (let attempt = 0; attempt < 100 && !(await redisAnswers(url)); attempt++) {
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url,
    stop() {
      child.kill('SIGTERM');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
