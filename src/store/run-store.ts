import { z } from 'zod';
import { isTerminal, type Run } from '../domain/run.js';
import type { Redis } from '../redis.js';

/**
 * Run state in Redis (SPEC §1: survives restarts of any process). Each run is
 * a hash {json, version}; writes are compare-and-set on the version so two
 * processes never overwrite each other's changes. Indexes: all runs and the
 * active ones, by creation time.
 */

const gateSchema = z.object({
  name: z.string(),
  kind: z.enum(['agent', 'pr', 'ci', 'merge', 'freight', 'stage', 'approval']),
  state: z.enum(['pending', 'running', 'passed', 'failed', 'skipped']),
  summary: z.string().optional(),
  notConfigured: z.boolean().optional(),
  startedAt: z.string().optional(),
  endedAt: z.string().optional(),
});

const runSchema = z.object({
  id: z.string(),
  repo: z.string(),
  task: z.string(),
  requester: z.object({ userId: z.string(), name: z.string().optional() }),
  chat: z.object({ channel: z.string(), ts: z.string().optional() }),
  state: z.enum(['queued', 'running', 'waiting', 'cancelling', 'done', 'failed', 'cancelled', 'rejected', 'expired']),
  gates: z.array(gateSchema),
  outcome: z.string().optional(),
  cancel: z.object({ by: z.string(), at: z.string() }).optional(),
  usage: z.object({
    inputTokens: z.number(),
    outputTokens: z.number(),
    cacheReadTokens: z.number(),
    cacheWriteTokens: z.number(),
    costUsd: z.number(),
  }),
  links: z.object({
    pr: z.string().optional(),
    ci: z.string().optional(),
    argocd: z.string().optional(),
    kargo: z.string().optional(),
  }),
  artifacts: z.object({
    branch: z.string().optional(),
    commitSha: z.string().optional(),
    summary: z.string().optional(),
    diffStat: z.string().optional(),
    checks: z.array(z.object({ name: z.string(), passed: z.boolean() })).optional(),
    prNumber: z.number().int().optional(),
    agentTurns: z.number().int().nonnegative().optional(),
    feedback: z.string().optional(),
    ciIterations: z.number().int().nonnegative().optional(),
    ciFingerprints: z.array(z.string()).optional(),
    previousCommitSha: z.string().optional(),
    mergeCommitSha: z.string().optional(),
    testWarnings: z.array(z.string()).optional(),
  }),
  activity: z.string().optional(),
  jobSeq: z.number().int().nonnegative(),
  createdAt: z.string(),
  updatedAt: z.string(),
  version: z.number().int().nonnegative(),
}) satisfies z.ZodType<Run>;

export class RunStoreError extends Error {
  override name = 'RunStoreError';
}

// KEYS: dedupe, run, active index, all index. ARGV: run id, json, score, dedupe ttl seconds.
const CREATE_SCRIPT = `
local existing = redis.call('GET', KEYS[1])
if existing then return {0, existing} end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[4]))
redis.call('HSET', KEYS[2], 'json', ARGV[2], 'version', '0')
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
return {1, ARGV[1]}
`;

// KEYS: run, active index. ARGV: expected version, new version, json, run id, '1' when terminal.
const UPDATE_SCRIPT = `
local current = redis.call('HGET', KEYS[1], 'version')
if current ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'json', ARGV[3], 'version', ARGV[2])
if ARGV[5] == '1' then redis.call('ZREM', KEYS[2], ARGV[4]) end
return 1
`;

export type CreateResult = { created: true; run: Run } | { created: false; runId: string };

export interface RunChange {
  before: Run;
  after: Run;
}

export interface RunStore {
  /** Creates the run unless `deliveryId` was seen before (a redelivered command), then returns that run's id. */
  create(run: Run, deliveryId: string): Promise<CreateResult>;
  get(id: string): Promise<Run | undefined>;
  /**
   * Applies `mutate` to the latest stored run and stores the result atomically,
   * retrying on concurrent changes. `mutate` returning undefined means "no change".
   */
  update(id: string, mutate: (run: Run) => Run | undefined, options?: { silent?: boolean }): Promise<RunChange | undefined>;
  listActive(): Promise<Run[]>;
}

export interface RunStoreDeps {
  redis: Redis;
  prefix: string;
  clock: () => Date;
  /** Called after every stored change that is not `silent` (the card refresh hangs off this). */
  onChanged?: (change: RunChange) => Promise<void>;
}

const DEDUPE_TTL_SECONDS = 24 * 3600;
const MAX_CAS_ATTEMPTS = 20;

export function createRunStore({ redis, prefix, clock, onChanged }: RunStoreDeps): RunStore {
  const runKey = (id: string) => `${prefix}:run:${id}`;
  const activeKey = `${prefix}:runs:active`;
  const allKey = `${prefix}:runs:all`;

  async function read(id: string): Promise<{ run: Run; version: string } | undefined> {
    const [json, version] = await redis.hmget(runKey(id), 'json', 'version');
    if (json === null || json === undefined || version === null || version === undefined) return undefined;
    const parsed = runSchema.safeParse(JSON.parse(json));
    if (!parsed.success) throw new RunStoreError(`stored run ${id} does not match the run schema: ${parsed.error.message}`);
    return { run: parsed.data, version };
  }

  return {
    async create(run, deliveryId) {
      const result: unknown = await redis.eval(
        CREATE_SCRIPT,
        4,
        `${prefix}:dedupe:${deliveryId}`,
        runKey(run.id),
        activeKey,
        allKey,
        run.id,
        JSON.stringify(run),
        String(Date.parse(run.createdAt)),
        String(DEDUPE_TTL_SECONDS),
      );
      const parsed = z.tuple([z.number(), z.string()]).parse(result);
      return parsed[0] === 1 ? { created: true, run } : { created: false, runId: parsed[1] };
    },

    async get(id) {
      return (await read(id))?.run;
    },

    async update(id, mutate, options = {}) {
      for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
        const current = await read(id);
        if (current === undefined) return undefined;
        const next = mutate(current.run);
        if (next === undefined) return { before: current.run, after: current.run };
        const after: Run = { ...next, version: current.run.version + 1, updatedAt: clock().toISOString() };
        const stored: unknown = await redis.eval(
          UPDATE_SCRIPT,
          2,
          runKey(id),
          activeKey,
          current.version,
          String(after.version),
          JSON.stringify(after),
          id,
          isTerminal(after.state) ? '1' : '0',
        );
        if (stored === 1) {
          const change = { before: current.run, after };
          if (options.silent !== true) await onChanged?.(change);
          return change;
        }
      }
      throw new RunStoreError(`run ${id} kept changing under ${MAX_CAS_ATTEMPTS} concurrent updates`);
    },

    async listActive() {
      const ids = await redis.zrange(activeKey, 0, -1);
      const runs = await Promise.all(ids.map((id) => read(id)));
      return runs.flatMap((entry) => (entry === undefined || isTerminal(entry.run.state) ? [] : [entry.run]));
    },
  };
}
