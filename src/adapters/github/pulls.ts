import { z } from 'zod';
import type { GitHubCiPort, GitHubPort, PullRequestRef, PullRequestState } from '../../ports/github.js';
import type { Client } from './clients.js';
import type { GitHubRestContext } from './context.js';
import { signalOption } from './conditional-get.js';
import { requestErrorSchema } from './port-errors.js';

/** Pull requests: finding, opening (idempotently) and reading the run's one pull request. */

/** Single PR answers carry `merged`; list answers only `merged_at`. */
const pullSchema = z.object({
  number: z.number().int().positive(),
  html_url: z.string().min(1),
  state: z.enum(['open', 'closed']),
  head: z.object({ sha: z.string().min(1) }),
  merged: z.boolean().optional(),
  merged_at: z.string().nullable().optional(),
});

const validationBodySchema = z.object({
  message: z.string().optional(),
  errors: z.array(z.object({ message: z.string().optional() }).loose()).optional(),
});

const pullStateSchema = pullSchema.extend({
  base: z.object({ ref: z.string().min(1) }),
  merge_commit_sha: z.string().nullable().optional(),
});

function toPullRequestRef(data: unknown): PullRequestRef {
  const pull = pullSchema.parse(data);
  return {
    number: pull.number,
    url: pull.html_url,
    headSha: pull.head.sha,
    state: pull.state,
    merged: pull.merged ?? (pull.merged_at !== null && pull.merged_at !== undefined),
  };
}

function isAlreadyExists(error: unknown): boolean {
  const parsed = requestErrorSchema.safeParse(error);
  if (!parsed.success || parsed.data.status !== 422) return false;
  const body = validationBodySchema.safeParse(parsed.data.response?.data);
  const messages = body.success ? [body.data.message, ...(body.data.errors ?? []).map((e) => e.message)] : [];
  return [...messages, parsed.data.message].some((m) => m !== undefined && /pull request already exists/i.test(m));
}

export function createPulls(ctx: GitHubRestContext): Pick<GitHubPort, 'findOpenPullRequest' | 'createPullRequest'> & Pick<GitHubCiPort, 'getPullRequest'> {
  const { call, clientFor, log, scrub } = ctx;
  const { conditionalGet } = ctx.reads;

  async function findOpen(
    client: Client,
    owner: string,
    repo: string,
    branch: string,
    signal: AbortSignal | undefined,
  ): Promise<PullRequestRef | undefined> {
    // GitHub ignores a `head` filter without the `owner:` part and would list every open PR.
    const { data } = await client.request('GET /repos/{owner}/{repo}/pulls', {
      owner,
      repo,
      state: 'open',
      head: `${owner}:${branch}`,
      ...signalOption(signal),
    });
    const first: unknown = z.array(z.unknown()).parse(data)[0];
    return first === undefined ? undefined : toPullRequestRef(first);
  }

  return {
    async findOpenPullRequest(owner, repo, branch, options) {
      const signal = options?.signal;
      return call(
        `listing open pull requests of ${owner}/${repo} for ${branch}`,
        async () => findOpen(await clientFor(owner, repo), owner, repo, branch, signal),
        signal,
      );
    },

    async createPullRequest(input, options) {
      const { owner, repo, head, base } = input;
      const signal = options?.signal;
      // The body carries the task and the agent's summary: nothing secret reaches the pull request.
      const title = scrub(input.title);
      const body = scrub(input.body);
      return call(`opening a pull request ${head} → ${base} in ${owner}/${repo}`, async () => {
        const client = await clientFor(owner, repo);
        try {
          const { data } = await client.request('POST /repos/{owner}/{repo}/pulls', {
            owner,
            repo,
            head,
            base,
            title,
            body,
            ...signalOption(signal),
          });
          const pull = toPullRequestRef(data);
          log.info({ owner, repo, head, number: pull.number }, 'pull request opened');
          return pull;
        } catch (error) {
          // A retry after a crash (or after a 502 that had in fact created it) finds the PR there
          // already: answer with that one, so opening is idempotent.
          if (!isAlreadyExists(error)) throw error;
          const branch = head.includes(':') ? head.slice(head.indexOf(':') + 1) : head;
          const existing = await findOpen(client, owner, repo, branch, signal);
          if (existing === undefined) throw error;
          log.info({ owner, repo, head, number: existing.number }, 'pull request already open; reusing it');
          return existing;
        }
      }, signal);
    },

    async getPullRequest(owner, repo, number, options): Promise<PullRequestState> {
      const signal = options?.signal;
      return call(`reading pull request #${number} of ${owner}/${repo}`, async () => {
        const client = await clientFor(owner, repo);
        const url = client.request.endpoint('GET /repos/{owner}/{repo}/pulls/{pull_number}', {
          owner,
          repo,
          pull_number: number,
        }).url;
        const { data } = await conditionalGet(client, url, signal);
        const pull = pullStateSchema.parse(data);
        const merged = pull.merged ?? (pull.merged_at !== null && pull.merged_at !== undefined);
        return {
          ...toPullRequestRef(data),
          base: pull.base.ref,
          // An unmerged PR's merge_commit_sha is GitHub's test merge, which is on no branch.
          mergeCommitSha: merged ? (pull.merge_commit_sha ?? null) : null,
        };
      }, signal);
    },
  };
}
