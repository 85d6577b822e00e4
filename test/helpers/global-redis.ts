import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { freePort, redisAnswers as answers } from '../../src/dev-redis.js';

export { freePort };

/**
 * Vitest global setup (SPEC §9): every test run gets a real Redis. REDIS_URL
 * wins when it answers; otherwise a throwaway `redis-server` is spawned on a
 * free port and removed afterwards. Tests isolate themselves by key prefix.
 */

declare module 'vitest' {
  export interface ProvidedContext {
    redisUrl: string;
  }
}

export interface SpawnedRedis {
  url: string;
  stop(): Promise<void>;
}

/** Starts a private redis-server (used by the global setup and by tests that need their own). */
export async function spawnRedis(): Promise<SpawnedRedis> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'shipgate-redis-'));
  const child: ChildProcess = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--maxmemory-policy', 'noeviction'],
    { stdio: 'ignore' },
  );
  const spawnError = new Promise<never>((_, reject) => {
    child.once('error', (error) => reject(new Error(`cannot start redis-server (is it installed?): ${error.message}`)));
  });
  const url = `redis://127.0.0.1:${port}`;
  const deadline = Date.now() + 10_000;
  try {
    for (;;) {
      const up = await Promise.race([answers(url), spawnError]);
      if (up) break;
      if (Date.now() > deadline) throw new Error(`redis-server on port ${port} did not answer within 10 s`);
      await new Promise((r) => setTimeout(r, 50));
    }
  } catch (error) {
    child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
  return {
    url,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

let spawned: SpawnedRedis | undefined;

export async function setup(project: TestProject): Promise<void> {
  const fromEnv = process.env.REDIS_URL;
  if (fromEnv !== undefined && fromEnv !== '' && (await answers(fromEnv))) {
    project.provide('redisUrl', fromEnv);
    return;
  }
  spawned = await spawnRedis();
  project.provide('redisUrl', spawned.url);
}

export async function teardown(): Promise<void> {
  await spawned?.stop();
}
