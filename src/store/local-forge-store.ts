import { randomBytes } from 'node:crypto';
import type { Result } from 'ioredis';
import { z } from 'zod';
import type { Redis } from '../redis.js';

/**
 * What the local forge (SPEC §8) keeps in Redis, shared by every worker: its pull requests (review
 * records with their diff) and its CI results per commit. The repository itself is the git
 * repository on disk; only what GitHub would hold beside it lives here.
 */

export interface LocalPull {
  number: number;
  repo: string;
  /** The run branch and the branch it merges into. */
  head: string;
  base: string;
  title: string;
  body: string;
  /** `git diff --stat --patch` from the fork point, capped, as it was when the pull was opened. */
  diff: string;
  state: 'open' | 'closed';
  merged: boolean;
  mergeCommitSha?: string | undefined;
  createdAt: string;
  mergedAt?: string | undefined;
  /** Who clicked Merge, where the repository requires one (`merge: { requireApproval: true }`). */
  mergeApprovedBy?: string | undefined;
  /** The head commit that click approved: only that commit merges (a later push needs a new click). */
  approvedSha?: string | undefined;
}

export interface LocalCheckResult {
  /** Stable per commit and check, for the CI gate's failure report. */
  id: number;
  name: string;
  conclusion: 'success' | 'failure' | 'timed_out' | 'cancelled';
  /** The scrubbed tail of the check's output. */
  output: string;
  startedAt: string;
  completedAt: string;
}

export type LocalCiRecord =
  { state: 'running'; startedAt: string } | { state: 'completed'; results: LocalCheckResult[] };

/** A worker's hold on running CI of one commit (`claimCi`); only its holder may record the results. */
export interface CiLease {
  readonly token: string;
  readonly startedAt: string;
}

/** What a Merge click did to the pull's record (`approveMerge`). */
export type MergeApproval = 'approved' | 'already' | 'not-open';

const pullSchema = z.object({
  number: z.number().int().positive(),
  repo: z.string(),
  head: z.string(),
  base: z.string(),
  title: z.string(),
  body: z.string(),
  diff: z.string(),
  state: z.enum(['open', 'closed']),
  merged: z.boolean(),
  mergeCommitSha: z.string().optional(),
  createdAt: z.string(),
  mergedAt: z.string().optional(),
  mergeApprovedBy: z.string().optional(),
  approvedSha: z.string().optional(),
});

const ciSchema = z.discriminatedUnion('state', [
  z.object({ state: z.literal('running'), startedAt: z.string(), lease: z.string().optional() }),
  z.object({
    state: z.literal('completed'),
    results: z.array(
      z.object({
        id: z.number().int(),
        name: z.string(),
        conclusion: z.enum(['success', 'failure', 'timed_out', 'cancelled']),
        output: z.string(),
        startedAt: z.string(),
        completedAt: z.string(),
      }),
    ),
  }),
]);

/** Finished CI and merged or closed pulls are kept this long (like a forge's history, within reason). */
const KEEP_SECONDS = 30 * 86_400;

export interface LocalForgeStore {
  findOpenByHead(repo: string, head: string): Promise<LocalPull | undefined>;
  openPulls(repo: string): Promise<LocalPull[]>;
  get(repo: string, number: number): Promise<LocalPull | undefined>;
  /** Opens the pull of `head` once: a second call for the same open head returns the first. */
  open(fields: Omit<LocalPull, 'number' | 'state' | 'merged'>): Promise<LocalPull>;
  save(pull: LocalPull): Promise<void>;
  /**
   * Records `by`'s Merge click for head `sha` of pull `number`, atomically: of simultaneous clicks
   * for one commit exactly one answers `approved`, the others `already`; `not-open` once the pull
   * is merged or closed (or unknown).
   */
  approveMerge(repo: string, number: number, by: string, sha: string): Promise<MergeApproval>;
  ci(repo: string, sha: string): Promise<LocalCiRecord | undefined>;
  /**
   * Takes the run of CI for this commit: the lease to finish it with, or undefined when another
   * worker holds it or CI already finished (the lease ends by itself after `leaseMs`).
   */
  claimCi(repo: string, sha: string, startedAt: string, leaseMs: number): Promise<CiLease | undefined>;
  /**
   * Records CI of `sha` as finished, only while `lease` is still the commit's: a worker whose lease
   * ran out and was taken over (it was slow) records nothing and gets undefined, so it never
   * overwrites the result of the worker that took over. A lease that ran out with nobody taking
   * over still records (no one else's result is there to lose). Each result gets an id unique in
   * the repository (a counter), under which `checkResult` finds it again (the CI gate asks for a
   * failed check's log by id).
   */
  finishCi(
    repo: string,
    sha: string,
    lease: CiLease,
    results: ReadonlyArray<Omit<LocalCheckResult, 'id'>>,
  ): Promise<LocalCheckResult[] | undefined>;
  checkResult(repo: string, id: number): Promise<LocalCheckResult | undefined>;
}

// Compare-and-set of one hash field: the pull record is written only over the text it was read as,
// so of two clicks that read the same record only the first writes; the other reads again.
const SWAP_FIELD_SCRIPT = `
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
`;

// KEYS: the commit's CI record, the repository's check-id index. ARGV: the running record of the
// finishing lease, the completed record, its lifetime, the sha, then the result ids. Anything but
// that lease's own running record (another worker's lease, a finished record) is left alone; an
// expired lease nobody took (no record) is not someone else's result.
const FINISH_CI_SCRIPT = `
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
for i = 5, #ARGV do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[4])
end
return 1
`;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    shipgateLocalForgeSwapField(key: string, field: string, expected: string, next: string): Result<number, Context>;
    shipgateLocalForgeFinishCi(ciKey: string, checkIdsKey: string, ...args: string[]): Result<number, Context>;
  }
}

/** A Merge click retries its compare-and-set this often before giving up (only other writes of the same pull make it retry). */
const APPROVE_ATTEMPTS = 20;

/** The running record a lease writes, byte for byte: finishing compares the stored text with it. */
function runningRecord(lease: CiLease): string {
  return JSON.stringify({ state: 'running', startedAt: lease.startedAt, lease: lease.token });
}

export function createLocalForgeStore({ redis, prefix }: { redis: Redis; prefix: string }): LocalForgeStore {
  redis.defineCommand('shipgateLocalForgeSwapField', { numberOfKeys: 1, lua: SWAP_FIELD_SCRIPT });
  redis.defineCommand('shipgateLocalForgeFinishCi', { numberOfKeys: 2, lua: FINISH_CI_SCRIPT });
  const base = (repo: string) => `${prefix}:localforge:${repo}`;
  const pullsKey = (repo: string) => `${base(repo)}:pulls`;
  const headsKey = (repo: string) => `${base(repo)}:heads`;
  const counterKey = (repo: string) => `${base(repo)}:counter`;
  const ciKey = (repo: string, sha: string) => `${base(repo)}:ci:${sha}`;
  const checkCounterKey = (repo: string) => `${base(repo)}:check-counter`;
  const checkIdsKey = (repo: string) => `${base(repo)}:check-ids`;

  function parseCi(raw: string | null): LocalCiRecord | undefined {
    if (raw === null) return undefined;
    const parsed = ciSchema.safeParse(JSON.parse(raw));
    return parsed.success ? parsed.data : undefined;
  }

  function parsePull(raw: string | null): LocalPull | undefined {
    if (raw === null) return undefined;
    const parsed = pullSchema.safeParse(JSON.parse(raw));
    return parsed.success ? parsed.data : undefined;
  }

  async function get(repo: string, number: number): Promise<LocalPull | undefined> {
    return parsePull(await redis.hget(pullsKey(repo), String(number)));
  }

  return {
    get,
    async findOpenByHead(repo, head) {
      const number = await redis.hget(headsKey(repo), head);
      if (number === null) return undefined;
      const pull = await get(repo, Number(number));
      return pull?.state === 'open' ? pull : undefined;
    },
    async openPulls(repo) {
      const all = await redis.hvals(pullsKey(repo));
      return all
        .map((raw) => parsePull(raw))
        .filter((pull): pull is LocalPull => pull !== undefined && pull.state === 'open');
    },
    async open(fields) {
      const candidate = await redis.incr(counterKey(fields.repo));
      // The head's number is taken once (HSETNX); a crash before the record was written leaves the
      // number taken and the record missing, which the next call writes under that same number.
      const taken = await redis.hsetnx(headsKey(fields.repo), fields.head, String(candidate));
      const number = taken === 1 ? candidate : Number(await redis.hget(headsKey(fields.repo), fields.head));
      const existing = await get(fields.repo, number);
      if (existing !== undefined) return existing;
      const pull: LocalPull = { ...fields, number, state: 'open', merged: false };
      // HSETNX again: of two workers racing here, the first record stays.
      await redis.hsetnx(pullsKey(fields.repo), String(number), JSON.stringify(pull));
      return (await get(fields.repo, number)) ?? pull;
    },
    async save(pull) {
      await redis.hset(pullsKey(pull.repo), String(pull.number), JSON.stringify(pull));
    },
    async approveMerge(repo, number, by, sha) {
      const field = String(number);
      for (let attempt = 0; attempt < APPROVE_ATTEMPTS; attempt += 1) {
        const raw = await redis.hget(pullsKey(repo), field);
        const pull = parsePull(raw);
        if (raw === null || pull === undefined || pull.state !== 'open') return 'not-open';
        if (pull.approvedSha === sha) return 'already';
        const next = JSON.stringify({ ...pull, mergeApprovedBy: by, approvedSha: sha });
        if ((await redis.shipgateLocalForgeSwapField(pullsKey(repo), field, raw, next)) === 1) return 'approved';
      }
      throw new Error(`local pull ${repo}#${number} kept changing while a Merge click was recorded`);
    },
    async ci(repo, sha) {
      return parseCi(await redis.get(ciKey(repo, sha)));
    },
    async claimCi(repo, sha, startedAt, leaseMs) {
      const lease: CiLease = { token: randomBytes(12).toString('hex'), startedAt };
      const taken = await redis.set(ciKey(repo, sha), runningRecord(lease), 'PX', leaseMs, 'NX');
      return taken === 'OK' ? lease : undefined;
    },
    async finishCi(repo, sha, lease, results) {
      // Ids are taken first, in one step; a finish refused below only leaves a gap in the numbers.
      const last = results.length === 0 ? 0 : await redis.incrby(checkCounterKey(repo), results.length);
      const numbered: LocalCheckResult[] = results.map((result, index) => ({
        ...result,
        id: last - results.length + index + 1,
      }));
      const record: LocalCiRecord = { state: 'completed', results: numbered };
      const recorded = await redis.shipgateLocalForgeFinishCi(
        ciKey(repo, sha),
        checkIdsKey(repo),
        runningRecord(lease),
        JSON.stringify(record),
        String(KEEP_SECONDS),
        sha,
        ...numbered.map((result) => String(result.id)),
      );
      return recorded === 1 ? numbered : undefined;
    },
    async checkResult(repo, id) {
      const sha = await redis.hget(checkIdsKey(repo), String(id));
      if (sha === null) return undefined;
      const record = parseCi(await redis.get(ciKey(repo, sha)));
      return record?.state === 'completed' ? record.results.find((result) => result.id === id) : undefined;
    },
  };
}
