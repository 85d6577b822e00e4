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
}

export interface GitHubPort {
  getRepository(owner: string, repo: string): Promise<RepositoryInfo>;
  /** The open PR whose head is `branch` in the same repository, if any (makes PR creation idempotent). */
  findOpenPullRequest(owner: string, repo: string, branch: string): Promise<PullRequestRef | undefined>;
  createPullRequest(input: { owner: string; repo: string; head: string; base: string; title: string; body: string }): Promise<PullRequestRef>;
  /** Credentials for one git push to this repository; never stored on disk or passed to checks. */
  pushCredentials(owner: string, repo: string): Promise<{ username: string; password: string }>;
}
