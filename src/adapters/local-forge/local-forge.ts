import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { createCheckRunner } from '../../agent/check-runner.js';
import type { LocalRepoPolicy } from '../../config/policy.js';
import { RefusedError, throwIfCancelled } from '../../errors.js';
import type { Git } from '../../git/git.js';
import type { Logger } from '../../log.js';
import {
  LOCAL_CI_APP,
  type CheckRunInfo,
  type CiSnapshot,
  type GitHubCiPort,
  type GitHubPort,
  type MergeClickPort,
  type PullRequestRef,
  type PullRequestState,
} from '../../ports/github.js';
import type { SandboxPort } from '../../ports/sandbox.js';
import type { Scrub } from '../../security/scrubber.js';
import type { CiLease, LocalCheckResult, LocalForgeStore, LocalPull } from '../../store/local-forge-store.js';

/**
 * The local forge (SPEC §8, issue 12): the GitHub ports for repositories given by `path:`, so the
 * agent, pr, ci and merge gates work unchanged on one machine with no GitHub.
 *
 * - The repository is the git repository on disk; the run branch is pushed there by the same git
 *   layer (never the default branch, never forced).
 * - A pull request is a review record in Redis (number, title, body, diff, state), shown in the
 *   thread and in `/ship status`.
 * - CI is the repository's `ci:` commands (default: its `checks`), run in the sandbox on a clean
 *   checkout of the pushed commit, once per commit across every worker (a lease in Redis; a worker
 *   that dies mid-run leaves a lease that runs out, and the next look runs it again), reported as
 *   check runs; finishing wakes the runs that follow the commit.
 * - Merge follows the local rule: without `merge: { requireApproval: true }` a pull whose head has
 *   green CI is fast-forwarded into the default branch when the merge gate looks; with it, only
 *   after someone other than the requester clicked Merge (`approveMerge`).
 * - A call's signal (ForgeCallOptions) is looked at on entry and before each write: a cancelled
 *   step neither opens a pull request nor merges. Each call is a few local reads, so it is not
 *   raced; CI runs on in the background (it belongs to the commit, not to one run).
 */

export interface LocalForgeOptions {
  repos: Readonly<Record<string, LocalRepoPolicy>>;
  git: Git;
  store: LocalForgeStore;
  sandbox: SandboxPort;
  scrub: Scrub;
  log: Logger;
  clock: () => Date;
  /** Where CI checkouts are made (removed after each run). */
  workRoot: string;
  /** Per CI command (default 10 minutes). */
  ciTimeoutMs?: number | undefined;
  ciOutputCapBytes?: number | undefined;
  /** Called once CI of `sha` finished, to wake the runs that follow it. */
  onCiFinished?: ((repo: string, sha: string) => Promise<void>) | undefined;
}

export interface LocalForge extends GitHubPort, GitHubCiPort, MergeClickPort {
  /** Whether `repo` (owner/name) is one of the local forge's. */
  serves(repo: string): boolean;
  /** The pull's review record, for the thread and `/ship status`. */
  pull(repo: string, number: number): Promise<LocalPull | undefined>;
  /** Waits for the CI runs this process started (shutdown, tests). */
  idle(): Promise<void>;
}

const DIFF_MAX_BYTES = 64 * 1024;
const LEASE_MARGIN_MS = 60_000;

/** The id of a check still queued or running (a finished one has the store's own, unique id). */
function checkId(sha: string, index: number): number {
  return Number.parseInt(sha.slice(0, 6), 16) * 64 + index + 1;
}

/**
 * The review record as the thread shows it: title, state, the head commit and the diff of that head
 * (its stat first, so a cut never hides which files changed), capped.
 */
export function reviewText(pull: LocalPull, head: string, diff: string, maxChars = 1_500): string {
  const state = pull.merged ? 'merged' : pull.state === 'closed' ? 'closed' : 'open for review';
  const shown = diff.length <= maxChars ? diff : `${diff.slice(0, maxChars)}\n[diff cut at ${maxChars} characters]`;
  return `local pull request #${pull.number} (${state}) at ${head.slice(0, 12)}: ${pull.title}\n${shown.trimEnd()}`;
}

function fileUrl(path: string): string {
  return pathToFileURL(path).href;
}

export function createLocalForge(options: LocalForgeOptions): LocalForge {
  const { repos, git, store, scrub, log, clock } = options;
  const ciTimeoutMs = options.ciTimeoutMs ?? 10 * 60_000;
  const running = new Set<Promise<void>>();

  function repoOf(owner: string, name: string): { full: string; policy: LocalRepoPolicy } {
    const full = `${owner}/${name}`;
    const policy = repos[full];
    if (policy === undefined) throw new RefusedError(`${full} is not a local repository (no path: in the policy)`);
    return { full, policy };
  }

  function ciCommands(policy: LocalRepoPolicy): Record<string, string> {
    return policy.ci ?? policy.checks;
  }

  function pullUrl(policy: LocalRepoPolicy, number: number): string {
    return `${fileUrl(policy.path)}#pull-${number}`;
  }

  async function liveHead(policy: LocalRepoPolicy, pull: LocalPull): Promise<string> {
    return (await git.local.branchSha(policy.path, pull.head)) ?? pull.mergeCommitSha ?? '';
  }

  /** The diff a reviewer must see: of the pull's head as it is now (a follow-up may have added commits). */
  async function liveDiff(policy: LocalRepoPolicy, pull: LocalPull, head: string): Promise<string> {
    if (pull.state !== 'open') return pull.diff;
    const base = await git.local.branchSha(policy.path, pull.base);
    return base === undefined || head === '' ? pull.diff : scrub(await git.local.diff(policy.path, base, head, DIFF_MAX_BYTES));
  }

  /** `head`: the pull branch's commit when the caller has just read it. */
  async function asRef(policy: LocalRepoPolicy, pull: LocalPull, head?: string): Promise<PullRequestRef> {
    const headSha = pull.state === 'open' && head !== undefined ? head : await liveHead(policy, pull);
    return {
      number: pull.number,
      url: pullUrl(policy, pull.number),
      headSha,
      state: pull.state,
      merged: pull.merged,
      review: reviewText(pull, headSha, await liveDiff(policy, pull, headSha)),
    };
  }

  function asCheckRuns(
    policy: LocalRepoPolicy,
    sha: string,
    record: Awaited<ReturnType<LocalForgeStore['ci']>>,
  ): CheckRunInfo[] {
    const names = Object.keys(ciCommands(policy));
    if (record === undefined || record.state === 'running')
      return names.map((name, index) => ({
        id: checkId(sha, index),
        name,
        status: record === undefined ? 'queued' : 'in_progress',
        conclusion: null,
        detailsUrl: null,
        appSlug: LOCAL_CI_APP,
        output: { title: null, summary: null, annotationsCount: 0 },
        startedAt: record?.startedAt ?? null,
        completedAt: null,
      }));
    return record.results.map((result) => ({
      id: result.id,
      name: result.name,
      status: 'completed',
      conclusion: result.conclusion,
      detailsUrl: null,
      appSlug: LOCAL_CI_APP,
      output: {
        title: `${result.name}: ${result.conclusion}`,
        summary: result.output.slice(-2_000),
        annotationsCount: 0,
      },
      startedAt: result.startedAt,
      completedAt: result.completedAt,
    }));
  }

  /** Runs CI for `sha` on a clean checkout of the open pull whose branch points at it. */
  async function runCi(full: string, policy: LocalRepoPolicy, sha: string, lease: CiLease): Promise<void> {
    const startedAt = clock().toISOString();
    const commands = ciCommands(policy);
    const names = Object.keys(commands);
    const dir = join(
      options.workRoot,
      `ci-${full.replace('/', '-')}-${sha.slice(0, 12)}-${randomBytes(4).toString('hex')}`,
    );
    const results: Array<Omit<LocalCheckResult, 'id'>> = [];
    const cancelled = (why: string): Array<Omit<LocalCheckResult, 'id'>> =>
      names.map((name) => ({
        name,
        conclusion: 'cancelled',
        output: why,
        startedAt,
        completedAt: clock().toISOString(),
      }));
    /** Records the results under this worker's lease; false when the lease was taken over meanwhile. */
    const finish = async (finished: ReadonlyArray<Omit<LocalCheckResult, 'id'>>): Promise<boolean> => {
      if ((await store.finishCi(full, sha, lease, finished)) !== undefined) return true;
      log.warn({ repo: full, sha }, 'local CI: results dropped, the lease ran out and another worker took the run over');
      return false;
    };
    let finished: boolean;
    try {
      const pulls = await store.openPulls(full);
      let branch: string | undefined;
      for (const pull of pulls) if ((await git.local.branchSha(policy.path, pull.head)) === sha) branch = pull.head;
      if (branch === undefined) {
        await finish(cancelled(`no open pull request has ${sha.slice(0, 12)} as its head any more`));
        return;
      }
      const prepared = await git.prepareWorkspace({
        dir,
        cloneUrl: fileUrl(policy.path),
        defaultBranch: await git.local.defaultBranch(policy.path),
        branch,
      });
      if (prepared.head !== sha) {
        await finish(
          cancelled(`the branch moved on to ${prepared.head.slice(0, 12)} before CI of ${sha.slice(0, 12)} started`),
        );
        return;
      }
      const runner = createCheckRunner({
        root: dir,
        checks: commands,
        timeoutMs: ciTimeoutMs,
        outputCapBytes: options.ciOutputCapBytes ?? 64 * 1024,
        sandbox: options.sandbox,
        scrub,
      });
      for (const name of names) {
        const checkStarted = clock().toISOString();
        const result = await runner.run(name);
        results.push({
          name,
          conclusion: result.timedOut ? 'timed_out' : result.exitCode === 0 ? 'success' : 'failure',
          output: scrub(result.output),
          startedAt: checkStarted,
          completedAt: clock().toISOString(),
        });
      }
      finished = await finish(results);
      if (finished)
        log.info(
          { repo: full, sha, failed: results.filter((r) => r.conclusion !== 'success').map((r) => r.name) },
          'local CI finished',
        );
    } finally {
      await git
        .removeWorkspace(dir)
        .catch((error: unknown) => log.warn({ err: error, dir }, 'local CI: removing the checkout failed'));
    }
    // Results that were not recorded wake nobody: the worker that took the lease over wakes them.
    if (!finished) return;
    await options
      .onCiFinished?.(full, sha)
      .catch((error: unknown) => log.warn({ err: error, repo: full, sha }, 'local CI: waking the runs failed'));
  }

  function startCi(full: string, policy: LocalRepoPolicy, sha: string, lease: CiLease): void {
    const work = runCi(full, policy, sha, lease).catch((error: unknown) => {
      // The lease runs out and the next look runs it again; the error is the machine's, not the change's.
      log.error({ err: error, repo: full, sha }, 'local CI could not run');
    });
    running.add(work);
    void work.finally(() => running.delete(work));
  }

  /** Whether CI of `sha` finished with every check green. */
  async function isGreen(full: string, sha: string | undefined): Promise<boolean> {
    const ci = sha === undefined ? undefined : await store.ci(full, sha);
    return ci?.state === 'completed' && ci.results.every((result) => result.conclusion === 'success');
  }

  /** The local rule (SPEC §8): fast-forward a pull with green CI, after a Merge click where one is required. */
  async function mergeIfAllowed(
    full: string,
    policy: LocalRepoPolicy,
    pull: LocalPull,
    head: string | undefined,
    signal: AbortSignal | undefined,
  ): Promise<{ pull: LocalPull; cannotMerge?: string }> {
    if (pull.state !== 'open' || head === undefined) return { pull };
    // The click approved one commit: anything pushed after it needs a click of its own.
    if (policy.merge?.requireApproval === true && pull.approvedSha !== head) return { pull };
    if (!(await isGreen(full, head))) return { pull };
    const baseSha = await git.local.branchSha(policy.path, pull.base);
    if (baseSha === undefined) return { pull };
    // A cancelled run's merge gate must not merge on its way out.
    throwIfCancelled(signal, `merging local pull #${pull.number} of ${full}`);
    const outcome = await git.local.fastForward(policy.path, pull.base, baseSha, head);
    if (outcome === 'moved') {
      // Someone moved the default branch between the read and the swap: the next look decides.
      log.info({ repo: full, pull: pull.number }, 'local forge: not merged yet (the default branch moved during the merge)');
      return { pull };
    }
    if (outcome === 'not-fast-forward') {
      // Only fast-forwards merge, so that what lands is byte for byte the commit CI checked: a
      // default branch that moved on since the branch was cut never becomes mergeable by waiting.
      log.info({ repo: full, pull: pull.number, base: baseSha }, 'local forge: cannot merge (the default branch moved on; only fast-forwards merge)');
      return {
        pull,
        cannotMerge: `${pull.base} moved on to ${baseSha.slice(0, 12)} since the branch was cut, and local repositories merge only fast-forwards (so that what lands is the commit CI checked)`,
      };
    }
    const merged: LocalPull = {
      ...pull,
      state: 'closed',
      merged: true,
      mergeCommitSha: head,
      mergedAt: clock().toISOString(),
    };
    await store.save(merged);
    log.info({ repo: full, pull: pull.number, sha: head }, 'local forge: merged (fast-forward)');
    return { pull: merged };
  }

  return {
    serves: (repo) => repos[repo] !== undefined,
    mergesOnClick: (repo) => repos[repo]?.merge?.requireApproval === true,
    pull: async (repo, number) => store.get(repo, number),

    async getRepository(owner, name, options) {
      throwIfCancelled(options?.signal, `reading local repository ${owner}/${name}`);
      const { policy } = repoOf(owner, name);
      if (!(await git.local.exists(policy.path)))
        throw new RefusedError(`the local repository ${policy.path} does not exist (repos.${owner}/${name}.path)`);
      const url = fileUrl(policy.path);
      return { cloneUrl: url, defaultBranch: await git.local.defaultBranch(policy.path), htmlUrl: url };
    },

    async findOpenPullRequest(owner, name, branch, options) {
      throwIfCancelled(options?.signal, `looking up the local pull request of ${branch}`);
      const { full, policy } = repoOf(owner, name);
      const pull = await store.findOpenByHead(full, branch);
      return pull === undefined ? undefined : asRef(policy, pull);
    },

    async createPullRequest({ owner, repo: name, head, base, title, body }, options) {
      const what = `opening a local pull request ${head} → ${base} in ${owner}/${name}`;
      throwIfCancelled(options?.signal, what);
      const { full, policy } = repoOf(owner, name);
      const headSha = await git.local.branchSha(policy.path, head);
      const baseSha = await git.local.branchSha(policy.path, base);
      if (headSha === undefined || baseSha === undefined)
        throw new RefusedError(`the local repository has no branch ${headSha === undefined ? head : base}`);
      const diff = scrub(await git.local.diff(policy.path, baseSha, headSha, DIFF_MAX_BYTES));
      throwIfCancelled(options?.signal, what);
      const pull = await store.open({ repo: full, head, base, title, body, diff, createdAt: clock().toISOString() });
      return asRef(policy, pull);
    },

    // file:// needs none; a fresh random value keeps the git layer's scrubbing meaningless but harmless.
    async pushCredentials(owner, name, options) {
      throwIfCancelled(options?.signal, `getting push credentials for ${owner}/${name}`);
      return { username: 'shipgate-local', password: randomBytes(16).toString('hex') };
    },

    async ciSnapshot(owner, name, sha, options): Promise<CiSnapshot> {
      const what = `reading local CI of ${owner}/${name}@${sha}`;
      throwIfCancelled(options?.signal, what);
      const { full, policy } = repoOf(owner, name);
      let record = await store.ci(full, sha);
      if (record === undefined) {
        // Starting CI is a write: a cancelled look leaves it to the next run that looks.
        throwIfCancelled(options?.signal, what);
        const ttl = ciTimeoutMs * Math.max(1, Object.keys(ciCommands(policy)).length) + LEASE_MARGIN_MS;
        const lease = await store.claimCi(full, sha, clock().toISOString(), ttl);
        if (lease !== undefined) startCi(full, policy, sha, lease);
        record = await store.ci(full, sha);
      }
      return { checkRuns: asCheckRuns(policy, sha, record), statuses: [] };
    },

    async requiredChecks(owner, name, _branch, options) {
      throwIfCancelled(options?.signal, `reading the checks of local repository ${owner}/${name}`);
      return Object.keys(ciCommands(repoOf(owner, name).policy));
    },

    async checkRunAnnotations(_owner, _name, _id, options) {
      throwIfCancelled(options?.signal, 'reading local check annotations');
      return [];
    },

    async actionsJobLogTail(owner, name, jobId, maxBytes, options) {
      throwIfCancelled(options?.signal, `reading the log of local check ${jobId}`);
      const { full } = repoOf(owner, name);
      // The CI gate asks for the log of a failed check: that check's output, found by its own id.
      const result = await store.checkResult(full, jobId);
      return result === undefined ? undefined : Buffer.from(result.output, 'utf8').subarray(-maxBytes).toString('utf8');
    },

    async getPullRequest(owner, name, number, options): Promise<PullRequestState> {
      const signal = options?.signal;
      throwIfCancelled(signal, `reading local pull request #${number} of ${owner}/${name}`);
      const { full, policy } = repoOf(owner, name);
      const stored = await store.get(full, number);
      if (stored === undefined) throw new RefusedError(`${full} has no local pull request #${number}`);
      // The branch is read once per look: the merge rule, the Merge button and the record all see one head.
      const head = stored.state === 'open' ? await git.local.branchSha(policy.path, stored.head) : undefined;
      const { pull, cannotMerge } = await mergeIfAllowed(full, policy, stored, head, signal);
      const awaitingMergeClick =
        pull.state === 'open' && policy.merge?.requireApproval === true && pull.approvedSha !== head && (await isGreen(full, head));
      return {
        ...(await asRef(policy, pull, head)),
        mergeCommitSha: pull.mergeCommitSha ?? null,
        base: pull.base,
        awaitingMergeClick,
        cannotMerge,
      };
    },

    async approveMerge(repo, number, by, sha) {
      const policy = repos[repo];
      if (policy === undefined || policy.merge?.requireApproval !== true) return 'not-required';
      const pull = await store.get(repo, number);
      if (pull === undefined || pull.state !== 'open') return 'not-open';
      // The clicker saw the run at `sha`; a branch that moved since is not what they approved.
      if ((await git.local.branchSha(policy.path, pull.head)) !== sha) return 'moved';
      // Recorded atomically in the store: of simultaneous clicks exactly one is the approval.
      return store.approveMerge(repo, number, by, sha);
    },

    async idle() {
      await Promise.all([...running]);
    },
  };
}
