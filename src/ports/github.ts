/**
 * The GitHub port: only what the gates use (SPEC §4, §5). The REST adapter
 * lives in src/adapters/github/.
 */

export interface RepositoryInfo {
  /** `clone_url` as the API returns it (SPEC §3): GHES and local test servers work unchanged. */
  cloneUrl: string;
  defaultBranch: string;
  htmlUrl: string;
}

export interface PullRequestRef {
  number: number;
  url: string;
  headSha: string;
  state: 'open' | 'closed';
  merged: boolean;
  /**
   * Where the forge has no web page to look at (the local forge): the review record as the thread
   * shows it (title and diff, already capped and scrubbed).
   */
  review?: string | undefined;
}

/**
 * What every forge call of a gate step may carry: the step's signal (its run's cancel, the worker's
 * shutdown). Once it aborts the call settles at once with `CancelledError` (src/errors.ts), also
 * while the adapter sits in a retry or rate-limit wait, and no further request is sent for it.
 */
export interface ForgeCallOptions {
  signal?: AbortSignal | undefined;
}

export interface GitHubPort {
  getRepository(owner: string, repo: string, options?: ForgeCallOptions): Promise<RepositoryInfo>;
  /** The open PR whose head is `branch` in the same repository, if any (makes PR creation idempotent). */
  findOpenPullRequest(owner: string, repo: string, branch: string, options?: ForgeCallOptions): Promise<PullRequestRef | undefined>;
  createPullRequest(
    input: { owner: string; repo: string; head: string; base: string; title: string; body: string },
    options?: ForgeCallOptions,
  ): Promise<PullRequestRef>;
  /** Credentials for one git push to this repository; never stored on disk or passed to checks. */
  pushCredentials(owner: string, repo: string, options?: ForgeCallOptions): Promise<{ username: string; password: string }>;
}

/** The app slug of the local forge's CI (SPEC §8): its failed checks' logs come through `actionsJobLogTail` too. */
export const LOCAL_CI_APP = 'shipgate-local-ci';

/** Apps whose check runs have a job log `actionsJobLogTail` can read (GitHub Actions, the local forge's CI). */
export const LOG_TAIL_APPS: ReadonlySet<string> = new Set(['github-actions', LOCAL_CI_APP]);

/** A check run as the CI gate needs it (GitHub Actions and other apps report through checks). */
export interface CheckRunInfo {
  id: number;
  name: string;
  /** queued, in_progress, completed, waiting, requested, pending. */
  status: string;
  /** success, failure, neutral, cancelled, skipped, timed_out, action_required, stale, startup_failure; null while running. */
  conclusion: string | null;
  detailsUrl: string | null;
  /** The app that reported it, e.g. `github-actions`. */
  appSlug: string | null;
  output: { title: string | null; summary: string | null; annotationsCount: number };
  startedAt: string | null;
  completedAt: string | null;
}

/** A commit status (CI systems that report through the statuses API). */
export interface CommitStatusInfo {
  context: string;
  state: 'pending' | 'success' | 'failure' | 'error';
  description: string | null;
  targetUrl: string | null;
  updatedAt: string;
}

export interface CiSnapshot {
  checkRuns: CheckRunInfo[];
  statuses: CommitStatusInfo[];
}

export interface CheckAnnotation {
  path: string;
  startLine: number;
  endLine: number;
  level: string;
  message: string;
  title: string | null;
}

export interface PullRequestState extends PullRequestRef {
  mergeCommitSha: string | null;
  /** The branch the PR merges into. */
  base: string;
  /**
   * The forge merges only after a Merge click by someone other than the requester, and this pull is
   * ready for one (the local forge with `merge: { requireApproval: true }` and green CI).
   */
  awaitingMergeClick?: boolean | undefined;
  /**
   * Why this pull can never merge as it stands, where the forge knows (the local forge: its default
   * branch moved on, and only fast-forwards merge); the merge gate fails with it instead of waiting.
   */
  cannotMerge?: string | undefined;
}

/** The Merge click of a forge that merges on one (the local forge, SPEC §8). */
export interface MergeClickPort {
  /** Whether `repo` merges on a Merge click. */
  mergesOnClick(repo: string): boolean;
  /**
   * Records `by`'s click on pull `number` for its head commit `sha` (what the clicker saw); the merge
   * gate merges that commit, and only that one, when it next looks. `moved`: the head is not `sha`
   * any more. The caller checked that `by` may merge.
   */
  approveMerge(repo: string, number: number, by: string, sha: string): Promise<'approved' | 'already' | 'moved' | 'not-open' | 'not-required'>;
}

/** What the CI and merge gates ask of GitHub (issue 4). Reads use conditional requests where GitHub supports them. */
export interface GitHubCiPort {
  /** Every check run and commit status of `sha` (all pages); unchanged answers are served from the ETag cache (304s). */
  ciSnapshot(owner: string, repo: string, sha: string, options?: ForgeCallOptions): Promise<CiSnapshot>;
  /** Required status check names from branch protection; undefined when not readable (no protection, or no permission). */
  requiredChecks(owner: string, repo: string, branch: string, options?: ForgeCallOptions): Promise<string[] | undefined>;
  checkRunAnnotations(owner: string, repo: string, checkRunId: number, options?: ForgeCallOptions): Promise<CheckAnnotation[]>;
  /** The tail of a GitHub Actions job's log (the job id is the check run id), or undefined when unavailable. */
  actionsJobLogTail(owner: string, repo: string, jobId: number, maxBytes: number, options?: ForgeCallOptions): Promise<string | undefined>;
  getPullRequest(owner: string, repo: string, number: number, options?: ForgeCallOptions): Promise<PullRequestState>;
}

/** Remembers GitHub answers by URL so that a repeated GET can be sent with If-None-Match (SPEC §5). Shared by all workers. */
export interface EtagCache {
  get(key: string): Promise<{ etag: string; body: string } | undefined>;
  set(key: string, entry: { etag: string; body: string }): Promise<void>;
}
