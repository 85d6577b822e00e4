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
  z.object({ state: z.literal('running'), startedAt: z.string() }),
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
  ci(repo: string, sha: string): Promise<LocalCiRecord | undefined>;
  /** Takes the run of CI for this commit; false when another worker holds it (its lease ends with `leaseMs`). */
  claimCi(repo: string, sha: string, startedAt: string, leaseMs: number): Promise<boolean>;
  /**
   * Records CI of `sha` as finished. Each result gets an id unique in the repository (a counter),
   * under which `checkResult` finds it again (the CI gate asks for a failed check's log by id).
   */
  finishCi(repo: string, sha: string, results: ReadonlyArray<Omit<LocalCheckResult, 'id'>>): Promise<LocalCheckResult[]>;
  checkResult(repo: string, id: number): Promise<LocalCheckResult | undefined>;
}

export function createLocalForgeStore({ redis, prefix }: { redis: Redis; prefix: string }): LocalForgeStore {
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
    async ci(repo, sha) {
      return parseCi(await redis.get(ciKey(repo, sha)));
    },
    async claimCi(repo, sha, startedAt, leaseMs) {
      const record: LocalCiRecord = { state: 'running', startedAt };
      return (await redis.set(ciKey(repo, sha), JSON.stringify(record), 'PX', leaseMs, 'NX')) === 'OK';
    },
    async finishCi(repo, sha, results) {
      const numbered: LocalCheckResult[] = [];
      for (const result of results) numbered.push({ ...result, id: await redis.incr(checkCounterKey(repo)) });
      const record: LocalCiRecord = { state: 'completed', results: numbered };
      const multi = redis.multi().set(ciKey(repo, sha), JSON.stringify(record), 'EX', KEEP_SECONDS);
      for (const result of numbered) multi.hset(checkIdsKey(repo), String(result.id), sha);
      await multi.exec();
      return numbered;
    },
    async checkResult(repo, id) {
      const sha = await redis.hget(checkIdsKey(repo), String(id));
      if (sha === null) return undefined;
      const record = parseCi(await redis.get(ciKey(repo, sha)));
      return record?.state === 'completed' ? record.results.find((result) => result.id === id) : undefined;
    },
  };
}
