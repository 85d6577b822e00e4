import type { Result } from 'ioredis';
import { z } from 'zod';
import { isTerminal, type Run } from '../domain/run.js';
import { ADD_STANDARD_JOB_LUA, type ScriptedJob } from '../queue/scripted-job.js';
import type { Redis } from '../redis.js';

/**
 * Run state in Redis (SPEC §1: survives restarts of any process). Each run is
 * a hash {json, version}; writes are compare-and-set on the version so two
 * processes never overwrite each other's changes. Indexes: the active runs
 * and each requester's active ones, by creation time. A run
 * leaves the active indexes in the same script that stores its terminal
 * state, so the active-run limits (SPEC §1) count exactly the runs not yet ended.
 */

// The scripts below, as ioredis commands (defineCommand: EVALSHA, loaded again after a Redis restart).
declare module 'ioredis' {
  interface RedisCommander<Context> {
    /** CREATE_SCRIPT, defined by createRunStore: 4 keys, and 7 more per job added with the run. */
    shipgateCreateRun(numberOfKeys: number, ...keysThenArgs: string[]): Result<unknown, Context>;
    /** UPDATE_SCRIPT, defined by createRunStore. */
    shipgateUpdateRun(
      runKey: string,
      activeKey: string,
      userActiveKey: string,
      expectedVersion: string,
      newVersion: string,
      json: string,
      runId: string,
      terminal: '1' | '0',
      score: string,
      perUserLimit: string,
      globalLimit: string,
    ): Result<unknown, Context>;
  }
}

const gateSchema = z.object({
  name: z.string(),
  kind: z.enum(['agent', 'pr', 'ci', 'merge', 'freight', 'stage', 'approval', 'argocd']),
  state: z.enum(['pending', 'running', 'passed', 'failed', 'skipped']),
  summary: z.string().optional(),
  notConfigured: z.boolean().optional(),
  startedAt: z.string().optional(),
  endedAt: z.string().optional(),
});

/**
 * Where the card lives. Runs stored before the chat port became neutral have `{ channel, ts }`
 * (the Slack message ts of the card): read as `card`, so a deployed bot keeps updating their cards.
 */
export const runChatSchema = z
  .object({ channel: z.string(), card: z.string().optional(), ts: z.string().optional() })
  .transform(({ channel, card, ts }) => (card ?? ts) === undefined ? { channel } : { channel, card: card ?? ts });

const agentArtifactsSchema = z.object({
  branch: z.string().optional(),
  commitSha: z.string().optional(),
  previousCommitSha: z.string().optional(),
  summary: z.string().optional(),
  diffStat: z.string().optional(),
  checks: z.array(z.object({ name: z.string(), passed: z.boolean() })).optional(),
  turns: z.number().int().nonnegative().optional(),
  feedback: z.string().optional(),
  testWarnings: z.array(z.string()).optional(),
});

const namespacedArtifactsSchema = z.object({
  agent: agentArtifactsSchema.optional(),
  pr: z.object({ number: z.number().int().optional() }).optional(),
  ci: z.object({ iterations: z.number().int().nonnegative().optional(), fingerprints: z.array(z.string()).optional() }).optional(),
  merge: z.object({ commitSha: z.string().optional(), awaitingClick: z.boolean().optional() }).optional(),
  freight: z
    .object({
      name: z.string().optional(),
      alias: z.string().optional(),
      matchedBy: z.string().optional(),
      revisions: z.array(z.object({ repoURL: z.string(), revision: z.string(), chart: z.string().optional() })).optional(),
    })
    .optional(),
  deploy: z
    .object({
      iterations: z.number().int().nonnegative().optional(),
      fingerprints: z.array(z.string()).optional(),
      stages: z.record(z.string(), z.object({ promotion: z.string().optional(), promotedAt: z.string().optional(), signalsSince: z.string().optional() })).optional(),
      mergedBranches: z.array(z.string()).optional(),
      redGate: z
        .object({
          fix: z.number().int().positive(),
          stage: z.string(),
          namespace: z.string().optional(),
          objects: z.array(
            z.object({ kind: z.enum(['Freight', 'Stage', 'Promotion', 'Application', 'AnalysisRun']), namespace: z.string(), name: z.string() }),
          ),
          diagnosis: z.object({ text: z.string(), looked: z.array(z.string()), clusterUnavailable: z.string().optional() }).optional(),
        })
        .optional(),
    })
    .optional(),
});

/** The one flat bag every gate shared before artifacts were namespaced per gate. */
const legacyArtifactsSchema = z.object({
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
});

const LEGACY_ARTIFACT_KEYS = Object.keys(legacyArtifactsSchema.shape);

/** Drops undefined fields, and the namespace itself when nothing is left in it. */
function compact<T extends Record<string, unknown>>(value: T): T | undefined {
  const entries = Object.entries(value).filter(([, v]) => v !== undefined);
  return entries.length === 0 ? undefined : (Object.fromEntries(entries) as T);
}

/**
 * Artifacts as stored. Runs stored before the namespaces (a deployed bot's active runs) have the
 * flat bag: read into the namespaces, so they go on where they were; the next write stores the new shape.
 * Ended runs are never written again but are still read (`/ship status`, `/ship audit`), so this reader
 * stays until a migration rewrites them.
 */
export const runArtifactsSchema = z.unknown().transform((raw, ctx) => {
  const isLegacy = typeof raw === 'object' && raw !== null && Object.keys(raw).some((key) => LEGACY_ARTIFACT_KEYS.includes(key));
  if (!isLegacy) {
    const parsed = namespacedArtifactsSchema.safeParse(raw);
    if (!parsed.success) {
      for (const issue of parsed.error.issues) ctx.addIssue({ ...issue });
      return z.NEVER;
    }
    return parsed.data;
  }
  const legacy = legacyArtifactsSchema.safeParse(raw);
  if (!legacy.success) {
    for (const issue of legacy.error.issues) ctx.addIssue({ ...issue });
    return z.NEVER;
  }
  const l = legacy.data;
  const agent = compact({ branch: l.branch, commitSha: l.commitSha, previousCommitSha: l.previousCommitSha, summary: l.summary, diffStat: l.diffStat, checks: l.checks, turns: l.agentTurns, feedback: l.feedback, testWarnings: l.testWarnings });
  const pr = compact({ number: l.prNumber });
  const ci = compact({ iterations: l.ciIterations, fingerprints: l.ciFingerprints });
  const merge = compact({ commitSha: l.mergeCommitSha });
  return { ...(agent === undefined ? {} : { agent }), ...(pr === undefined ? {} : { pr }), ...(ci === undefined ? {} : { ci }), ...(merge === undefined ? {} : { merge }) };
});

const runSchema = z.object({
  id: z.string(),
  repo: z.string(),
  task: z.string(),
  requester: z.object({ userId: z.string(), name: z.string().optional() }),
  chat: runChatSchema,
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
  artifacts: runArtifactsSchema,
  activity: z.string().optional(),
  jobSeq: z.number().int().nonnegative(),
  createdAt: z.string(),
  updatedAt: z.string(),
  version: z.number().int().nonnegative(),
}) satisfies z.ZodType<Run>;

export class RunStoreError extends Error {
  override name = 'RunStoreError';
}

/** An update would make an ended run active again (a retry) while the policy's limits leave no room. */
export class ActiveRunLimitError extends Error {
  override name = 'ActiveRunLimitError';
  constructor(readonly refusal: Extract<CreateResult, { reason: 'user-limit' | 'global-limit' }>) {
    super(`no room for another active run (${refusal.reason})`);
  }
}

// The active-run limits (0: none), as both scripts below check them before a run becomes active:
// nil when there is room, else the refusal ({2, the requester's active run ids} or {3, how many are active}).
const NO_ROOM_LUA = `
local function noRoom(activeKey, requesterKey, perUser, total)
  if perUser > 0 and redis.call('ZCARD', requesterKey) >= perUser then
    return {2, table.concat(redis.call('ZRANGE', requesterKey, 0, -1), ' ')}
  end
  if total > 0 then
    local active = redis.call('ZCARD', activeKey)
    if active >= total then return {3, tostring(active)} end
  end
  return nil
end
`;

/** A limit refusal as the scripts answer it (status 2 or 3 and its detail), for the caller. */
function limitRefusal(status: 2 | 3, detail: string): Extract<CreateResult, { reason: 'user-limit' | 'global-limit' }> {
  return status === 2
    ? { created: false, reason: 'user-limit', activeRunIds: detail.split(' ').filter((id) => id !== '') }
    : { created: false, reason: 'global-limit', active: Number(detail) };
}

// KEYS: dedupe, run, active index, requester's active index, then 7 per job (ScriptedJob.keys).
// ARGV: run id, json, score, dedupe ttl seconds, per-user limit, global limit (0: no limit), then 5 per job.
// One script, so the limit check and the create cannot interleave with another replica's create,
// and the run exists exactly when its jobs do (for /ship: one Redis round trip before the ack).
// A redelivered command answers with its run before any limit is looked at (it adds nothing).
// The requester's run ids are read only to name them in a refusal.
const CREATE_SCRIPT = `${ADD_STANDARD_JOB_LUA}${NO_ROOM_LUA}
local existing = redis.call('GET', KEYS[1])
if existing then return {0, existing} end
local refused = noRoom(KEYS[3], KEYS[4], tonumber(ARGV[5]), tonumber(ARGV[6]))
if refused then return refused end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[4]))
redis.call('HSET', KEYS[2], 'json', ARGV[2], 'version', '0')
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
for job = 0, (#KEYS - 4) / 7 - 1 do
  local k, a = 4 + 7 * job, 6 + 5 * job
  addStandardJob({KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4], KEYS[k + 5], KEYS[k + 6], KEYS[k + 7]}, {ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]})
end
return {1, ARGV[1]}
`;

// KEYS: run, active index, requester's active index.
// ARGV: expected version, new version, json, run id, '1' when terminal, score (creation time),
// per-user limit, global limit (0: no limit).
// A run that is active again (retry) goes back into the active indexes, within the limits as a new
// run would be, checked in the same step (the same answers as CREATE_SCRIPT's refusals).
const UPDATE_SCRIPT = `${NO_ROOM_LUA}
local current = redis.call('HGET', KEYS[1], 'version')
if current ~= ARGV[1] then return 0 end
if ARGV[5] ~= '1' and not redis.call('ZSCORE', KEYS[2], ARGV[4]) then
  local refused = noRoom(KEYS[2], KEYS[3], tonumber(ARGV[7]), tonumber(ARGV[8]))
  if refused then return refused end
end
redis.call('HSET', KEYS[1], 'json', ARGV[3], 'version', ARGV[2])
if ARGV[5] == '1' then
  redis.call('ZREM', KEYS[2], ARGV[4])
  redis.call('ZREM', KEYS[3], ARGV[4])
else
  redis.call('ZADD', KEYS[2], 'NX', ARGV[6], ARGV[4])
  redis.call('ZADD', KEYS[3], 'NX', ARGV[6], ARGV[4])
end
return 1
`;

// [status, detail] from CREATE_SCRIPT; built once, not per call (the ack path is hot).
const createReplySchema = z.tuple([z.number(), z.string()]);

// 1: stored; 0: the version moved on since the read (another writer won), read again; [2, ids] or
// [3, count]: not stored, a limit left no room for the run to be active again.
const updateReplySchema = z.union([z.literal(0), z.literal(1), z.tuple([z.union([z.literal(2), z.literal(3)]), z.string()])]);

/** The policy's `limits` (SPEC §1); a run is created only while both leave room. */
export interface ActiveRunLimits {
  activeRunsPerUser: number;
  activeRuns: number;
}

export type CreateResult =
  | { created: true; run: Run }
  /** The command was delivered before: `runId` is the run it created. */
  | { created: false; reason: 'duplicate'; runId: string }
  /** The requester already has `activeRunsPerUser` active runs: these, oldest first. */
  | { created: false; reason: 'user-limit'; activeRunIds: string[] }
  /** The installation already has `activeRuns` active runs. */
  | { created: false; reason: 'global-limit'; active: number };

export interface RunChange {
  before: Run;
  after: Run;
}

export interface RunStore {
  /**
   * Creates the run unless `deliveryId` was seen before (a redelivered command), then returns that
   * run's id, or unless `limits` are reached. Check and create are one atomic step in Redis, so
   * concurrent requests on any number of processes never exceed a limit. `jobs` (Queues.cardJob,
   * Queues.runJob) are added in that same step, in order, when the run is created, and only then.
   */
  create(run: Run, deliveryId: string, limits?: ActiveRunLimits, jobs?: readonly ScriptedJob[]): Promise<CreateResult>;
  get(id: string): Promise<Run | undefined>;
  /**
   * Applies `mutate` to the latest stored run and stores the result atomically,
   * retrying on concurrent changes. `mutate` returning undefined means "no change".
   */
  update(
    id: string,
    mutate: (run: Run) => Run | undefined,
    options?: {
      silent?: boolean;
      /** When the change makes an ended run active again, it must fit these, or ActiveRunLimitError. */
      limits?: ActiveRunLimits | undefined;
    },
  ): Promise<RunChange | undefined>;
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
  const userActiveKey = (userId: string) => `${prefix}:runs:active:user:${userId}`;
  // No numberOfKeys: each call says how many keys it passes (it depends on the jobs added with the run).
  redis.defineCommand('shipgateCreateRun', { lua: CREATE_SCRIPT });
  redis.defineCommand('shipgateUpdateRun', { numberOfKeys: 3, lua: UPDATE_SCRIPT });

  async function read(id: string): Promise<{ run: Run; version: string } | undefined> {
    const [json, version] = await redis.hmget(runKey(id), 'json', 'version');
    if (json === null || json === undefined || version === null || version === undefined) return undefined;
    const parsed = runSchema.safeParse(JSON.parse(json));
    if (!parsed.success) throw new RunStoreError(`stored run ${id} does not match the run schema: ${parsed.error.message}`);
    return { run: parsed.data, version };
  }

  return {
    async create(run, deliveryId, limits, jobs = []) {
      const keys = [`${prefix}:dedupe:${deliveryId}`, runKey(run.id), activeKey, userActiveKey(run.requester.userId)];
      const args = [
        run.id,
        JSON.stringify(run),
        String(Date.parse(run.createdAt)),
        String(DEDUPE_TTL_SECONDS),
        String(limits?.activeRunsPerUser ?? 0),
        String(limits?.activeRuns ?? 0),
      ];
      for (const job of jobs) keys.push(...job.keys);
      for (const job of jobs) args.push(...job.args);
      const result = await redis.shipgateCreateRun(keys.length, ...keys, ...args);
      const [status, detail] = createReplySchema.parse(result);
      switch (status) {
        case 1:
          return { created: true, run };
        case 0:
          return { created: false, reason: 'duplicate', runId: detail };
        case 2:
        case 3:
          return limitRefusal(status, detail);
        default:
          throw new RunStoreError(`unexpected answer ${status} from the create script`);
      }
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
        const stored = updateReplySchema.parse(
          await redis.shipgateUpdateRun(
            runKey(id),
            activeKey,
            userActiveKey(after.requester.userId),
            current.version,
            String(after.version),
            JSON.stringify(after),
            id,
            isTerminal(after.state) ? '1' : '0',
            String(Date.parse(after.createdAt)),
            String(options.limits?.activeRunsPerUser ?? 0),
            String(options.limits?.activeRuns ?? 0),
          ),
        );
        if (Array.isArray(stored)) {
          throw new ActiveRunLimitError(limitRefusal(...stored));
        }
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
