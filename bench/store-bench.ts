import type { Policy } from '../src/config/policy.js';
import { newRun, type Run } from '../src/domain/run.js';
import { createRedis, type Redis } from '../src/redis.js';
import { createRunStore } from '../src/store/run-store.js';
import { runPool } from './stats.js';

/**
 * Run store throughput (section 3): N runs created and read back through
 * createRunStore against a baseline of plain SET/GET of the same JSON, and
 * the Redis memory each stored run costs (INFO memory used_memory deltas).
 */

export interface Throughput {
  createOps: number;
  getOps: number;
  /** create + get over both phases' total time. */
  totalOps: number;
}

export interface StoreBenchResult {
  runs: number;
  concurrency: number;
  rounds: number;
  store: Throughput;
  baseline: Throughput;
  /** used_memory delta over all creates / runs. */
  storeBytesPerRun: number;
  baselineBytesPerRun: number;
  /** Per-run cost of the first and the second half of the creates (a fixed cost per run shows as two equal figures). */
  storeBytesPerRunFirstHalf: number;
  storeBytesPerRunSecondHalf: number;
}

export async function usedMemory(redis: Redis): Promise<number> {
  const info = await redis.info('memory');
  const match = /^used_memory:(\d+)/m.exec(info);
  if (match?.[1] === undefined) throw new Error('INFO memory has no used_memory');
  return Number(match[1]);
}

function benchRuns(policy: Policy, count: number, tag: string): Run[] {
  const now = new Date();
  return Array.from({ length: count }, (_, i) =>
    newRun(policy, {
      id: `sg-${tag}${String(i).padStart(6, '0')}`,
      repo: 'acme/docs',
      task: `benchmark task ${i}: fix the typo in the getting started guide`,
      requester: { userId: `UBENCH${i % 50}`, name: 'bench' },
      channel: 'CDOCS',
      now,
    }),
  );
}

const throughput = (n: number, createMs: number, getMs: number): Throughput => ({
  createOps: n / (createMs / 1000),
  getOps: n / (getMs / 1000),
  totalOps: (2 * n) / ((createMs + getMs) / 1000),
});

interface Round {
  createMs: number;
  getMs: number;
  baseCreateMs: number;
  baseGetMs: number;
  memStore: number;
  memStoreFirstHalf: number;
  memStoreSecondHalf: number;
  memBase: number;
}

const median = (values: readonly number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
};

async function round(redis: Redis, policy: Policy, n: number, concurrency: number, tag: string): Promise<Round> {
  const store = createRunStore({ redis, prefix: `bench-store-${tag}`, clock: () => new Date() });
  const runs = benchRuns(policy, n, tag);
  const half = Math.floor(n / 2);
  const create = async (from: number, count: number): Promise<number> => {
    const t = performance.now();
    await runPool(count, concurrency, async (i) => {
      const run = runs[from + i]!;
      const result = await store.create(run, `command.${run.id}`);
      if (!result.created) throw new Error(`run store: ${run.id} was not created`);
    });
    return performance.now() - t;
  };

  // Run store: create (in two halves, to see whether the per-run cost stays flat), then read back.
  const mem0 = await usedMemory(redis);
  let createMs = await create(0, half);
  const memHalf = await usedMemory(redis);
  createMs += await create(half, n - half);
  const mem1 = await usedMemory(redis);
  let t = performance.now();
  await runPool(n, concurrency, async (i) => {
    const run = runs[i]!;
    const read = await store.get(run.id);
    if (read?.id !== run.id || read.task !== run.task) throw new Error(`run store: ${run.id} did not read back`);
  });
  const getMs = performance.now() - t;
  const active = await store.listActive();
  if (active.length !== n) throw new Error(`run store: listActive shows ${active.length} of ${n} runs`);

  // Baseline: the same JSON with plain SET / GET (+ JSON.parse).
  const basePrefix = `bench-base-${tag}`;
  const bmem0 = await usedMemory(redis);
  t = performance.now();
  await runPool(n, concurrency, async (i) => {
    const run = runs[i]!;
    await redis.set(`${basePrefix}:run:${run.id}`, JSON.stringify(run));
  });
  const baseCreateMs = performance.now() - t;
  const bmem1 = await usedMemory(redis);
  t = performance.now();
  await runPool(n, concurrency, async (i) => {
    const run = runs[i]!;
    const raw = await redis.get(`${basePrefix}:run:${run.id}`);
    const read = JSON.parse(raw ?? 'null') as Run | null;
    if (read?.id !== run.id) throw new Error(`baseline: ${run.id} did not read back`);
  });
  const baseGetMs = performance.now() - t;
  return {
    createMs,
    getMs,
    baseCreateMs,
    baseGetMs,
    memStore: (mem1 - mem0) / n,
    memStoreFirstHalf: (memHalf - mem0) / half,
    memStoreSecondHalf: (mem1 - memHalf) / (n - half),
    memBase: (bmem1 - bmem0) / n,
  };
}

/** `rounds` rounds of `runs` fresh runs each; every figure is the median over the rounds (2 cores are noisy). */
export async function benchRunStore(
  redisUrl: string,
  policy: Policy,
  options: { runs: number; concurrency: number; tag: string; rounds: number },
): Promise<StoreBenchResult> {
  const { runs: n, concurrency, tag } = options;
  const redis = createRedis(redisUrl, 'command');
  try {
    // Warm-up: load the scripts, JIT the schemas and JSON paths, open the connection.
    const warmStore = createRunStore({ redis, prefix: `bench-warm-${tag}`, clock: () => new Date() });
    for (const run of benchRuns(policy, 200, `w${tag}`)) {
      await warmStore.create(run, `warm.${run.id}`);
      await warmStore.get(run.id);
      await redis.set(`bench-warm-${tag}:base:${run.id}`, JSON.stringify(run));
      JSON.parse((await redis.get(`bench-warm-${tag}:base:${run.id}`)) ?? '{}') as unknown;
    }
    const rounds: Round[] = [];
    for (let r = 0; r < options.rounds; r++) rounds.push(await round(redis, policy, n, concurrency, `${tag}${r}`));
    const m = (pick: (r: Round) => number): number => median(rounds.map(pick));
    return {
      runs: n,
      concurrency,
      rounds: options.rounds,
      store: throughput(n, m((r) => r.createMs), m((r) => r.getMs)),
      baseline: throughput(n, m((r) => r.baseCreateMs), m((r) => r.baseGetMs)),
      storeBytesPerRun: m((r) => r.memStore),
      baselineBytesPerRun: m((r) => r.memBase),
      storeBytesPerRunFirstHalf: m((r) => r.memStoreFirstHalf),
      storeBytesPerRunSecondHalf: m((r) => r.memStoreSecondHalf),
    };
  } finally {
    await redis.quit();
  }
}
