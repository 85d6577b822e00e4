import { z } from 'zod';
import { cancelledBy } from '../../errors.js';
import type { GitHubPort, RepositoryInfo } from '../../ports/github.js';
import { signalOption } from './conditional-get.js';
import type { GitHubRestContext } from './context.js';
import type { GitHubAuth } from './options.js';

/** The repository itself: where to clone it from, and a push credential scoped to it. */

/** A push credential must outlive the push; auth-app caches tokens for 59 of their 60 minutes. */
const MIN_TOKEN_LIFETIME_MS = 5 * 60_000;

const repositorySchema = z.object({
  clone_url: z.string().min(1),
  default_branch: z.string().min(1),
  html_url: z.string().min(1),
});

/** What `octokit.auth({ type: 'installation' })` resolves to (only the fields used). */
const installationTokenSchema = z.object({ token: z.string().min(1), expiresAt: z.string() });

export function createRepositoryReads(ctx: GitHubRestContext, auth: GitHubAuth, onSecret: ((secret: string) => void) | undefined): Pick<GitHubPort, 'getRepository' | 'pushCredentials'> {
  const { call, clientFor, log } = ctx;
  return {
    async getRepository(owner, repo, options): Promise<RepositoryInfo> {
      const signal = options?.signal;
      return call(`reading repository ${owner}/${repo}`, async () => {
        const client = await clientFor(owner, repo);
        const { data } = await client.request('GET /repos/{owner}/{repo}', { owner, repo, ...signalOption(signal) });
        const parsed = repositorySchema.parse(data);
        return { cloneUrl: parsed.clone_url, defaultBranch: parsed.default_branch, htmlUrl: parsed.html_url };
      }, signal);
    },

    async pushCredentials(owner, repo, options) {
      const signal = options?.signal;
      if (signal?.aborted === true) throw cancelledBy(signal, `getting push credentials for ${owner}/${repo}`);
      if (auth.kind === 'token') return { username: 'x-access-token', password: auth.token };
      // auth-app mints the token with requests of its own that take no signal: the call is raced with it instead.
      return call(`getting push credentials for ${owner}/${repo}`, async () => {
        const client = await clientFor(owner, repo);
        // A token limited to this one repository (SPEC §3): a leaked push credential reaches nothing else.
        const scope = { type: 'installation', repositoryNames: [repo] };
        let token = installationTokenSchema.parse(await client.auth(scope));
        if (Date.parse(token.expiresAt) - Date.now() < MIN_TOKEN_LIFETIME_MS) {
          token = installationTokenSchema.parse(await client.auth({ ...scope, refresh: true }));
        }
        onSecret?.(token.token);
        log.debug({ owner, repo, expiresAt: token.expiresAt }, 'installation token issued for push');
        return { username: 'x-access-token', password: token.token };
      }, signal);
    },
  };
}
