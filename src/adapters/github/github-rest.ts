import { createPrivateKey } from 'node:crypto';
import { createAppAuth } from '@octokit/auth-app';
import { retry } from '@octokit/plugin-retry';
import { throttling } from '@octokit/plugin-throttling';
import { Octokit } from '@octokit/rest';
import { z } from 'zod';
import { ExternalOutageError, RefusedError } from '../../errors.js';
import { scrubSecrets, type Logger } from '../../log.js';
import type { Metrics } from '../../metrics.js';
import type { GitHubPort, PullRequestRef, RepositoryInfo } from '../../ports/github.js';

/**
 * The GitHub port over REST (SPEC §4, §5) with the real Octokit: rate-limit and
 * secondary-limit aware through plugin-throttling, transient failures retried by
 * plugin-retry, every HTTP answer counted in `shipgate_external_calls_total`.
 * Errors leave as `RefusedError` (GitHub said no; retrying cannot help) or
 * `ExternalOutageError` (5xx, network, rate limit; the queue retries later).
 */

const GitHubOctokit = Octokit.plugin(throttling, retry);
type Client = InstanceType<typeof GitHubOctokit>;

export type GitHubAuth =
  { kind: 'token'; token: string } | { kind: 'app'; appId: string; privateKey: string; installationId?: string };

export interface GitHubRestOptions {
  /** REST base URL: `https://api.github.com`, `https://ghes.example/api/v3`, or a test server. */
  apiUrl: string;
  auth: GitHubAuth;
  log: Logger;
  metrics?: Metrics;
  retry?: {
    /** plugin-retry attempts after the first for 5xx and network errors (default 3). */
    retries?: number;
    /**
     * Milliseconds per "second" of wait for both plugins (default 1000). plugin-retry waits
     * (attempt)² units, plugin-throttling waits Retry-After / until x-ratelimit-reset; tests pass 1.
     */
    retryAfterBaseMs?: number;
    /** Wait for a secondary limit whose answer has no Retry-After (plugin-throttling `fallbackSecondaryRateRetryAfter`, default 60). */
    minRetryAfterSeconds?: number;
    /**
     * Longest rate-limit wait spent inside one call (default 120 s). A limit that resets later is
     * raised as an `ExternalOutageError` so the queue backs off instead of a worker sleeping for an hour.
     */
    maxRetryAfterSeconds?: number;
  };
  /**
   * Key of plugin-throttling's limiters. They are process-wide: all adapters with the same id share
   * the 10-concurrent-requests cap and the 1 s (writes) / 3 s (notifying writes such as opening a
   * pull request) spacing GitHub asks for. Tests give each adapter its own id so they do not wait
   * for one another.
   */
  limiterId?: string;
  /** Per HTTP attempt, including reading the body (default 30 s): a hung connection becomes a retryable failure. */
  requestTimeoutMs?: number;
}

const PRIMARY_RATE_LIMIT_RETRIES = 2;
const SECONDARY_RATE_LIMIT_RETRIES = 1;
/** Statuses plugin-retry leaves alone: its defaults plus 429, which plugin-throttling owns (no double retries). */
const DO_NOT_RETRY = [400, 401, 403, 404, 410, 422, 429, 451];
/** A push credential must outlive the push; auth-app caches tokens for 59 of their 60 minutes. */
const MIN_TOKEN_LIFETIME_MS = 5 * 60_000;

const repositorySchema = z.object({
  clone_url: z.string().min(1),
  default_branch: z.string().min(1),
  html_url: z.string().min(1),
});

/** Single PR answers carry `merged`; list answers only `merged_at`. */
const pullSchema = z.object({
  number: z.number().int().positive(),
  html_url: z.string().min(1),
  state: z.enum(['open', 'closed']),
  head: z.object({ sha: z.string().min(1) }),
  merged: z.boolean().optional(),
  merged_at: z.string().nullable().optional(),
});

const installationSchema = z.object({ id: z.number().int().positive() });

/** What `octokit.auth({ type: 'installation' })` resolves to (only the fields used). */
const installationTokenSchema = z.object({ token: z.string().min(1), expiresAt: z.string() });

/** The parts of an Octokit `RequestError` that decide how to report it; duck-typed to avoid a transitive import. */
const requestErrorSchema = z.object({
  status: z.number(),
  message: z.string(),
  response: z.object({ headers: z.record(z.string(), z.unknown()), data: z.unknown() }).optional(),
});

const validationBodySchema = z.object({
  message: z.string().optional(),
  errors: z.array(z.object({ message: z.string().optional() }).loose()).optional(),
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

/** Maps whatever a call threw to the two error kinds the queue understands (src/errors.ts). */
function toPortError(what: string, error: unknown): Error {
  if (error instanceof RefusedError || error instanceof ExternalOutageError) return error;
  if (error instanceof z.ZodError) {
    return new ExternalOutageError('github', `${what}: unexpected answer: ${z.prettifyError(error)}`, { cause: error });
  }
  const parsed = requestErrorSchema.safeParse(error);
  if (!parsed.success) {
    const message = error instanceof Error ? error.message : String(error);
    return new ExternalOutageError('github', `${what}: ${scrubSecrets(message)}`, { cause: error });
  }
  const { status, response } = parsed.data;
  const message = scrubSecrets(parsed.data.message);
  const headers = response?.headers ?? {};
  const rateLimited =
    status === 429 || (status === 403 && (headers['x-ratelimit-remaining'] === '0' || /rate limit/i.test(message)));
  if (rateLimited) {
    return new ExternalOutageError('github', `${what}: rate limited (HTTP ${status}): ${message}`, { cause: error });
  }
  if (status >= 400 && status < 500) {
    return new RefusedError(`GitHub refused ${what} (HTTP ${status}): ${message}`, { cause: error });
  }
  // Octokit reports network failures and timeouts as status 500 too.
  return new ExternalOutageError('github', `${what} failed (HTTP ${status}): ${message}`, { cause: error });
}

export function createGitHubRest(options: GitHubRestOptions): GitHubPort {
  const log = options.log.child({ component: 'github' });
  const retryAfterBaseMs = options.retry?.retryAfterBaseMs ?? 1000;
  const maxRetryAfterSeconds = options.retry?.maxRetryAfterSeconds ?? 120;
  const requestTimeoutMs = options.requestTimeoutMs ?? 30_000;

  if (options.auth.kind === 'app') {
    // Fail at start-up (SPEC §3) rather than on the first gate: a bad key would otherwise surface
    // as a retried outage deep inside a run.
    try {
      createPrivateKey(options.auth.privateKey);
    } catch {
      throw new RefusedError('GITHUB_APP_PRIVATE_KEY is not a PEM private key');
    }
    if (options.auth.installationId !== undefined && !/^[1-9]\d*$/.test(options.auth.installationId)) {
      throw new RefusedError('GITHUB_APP_INSTALLATION_ID must be a positive integer');
    }
  }

  // Counting in fetch sees every HTTP attempt: each retry, 304s, network failures (no status) and
  // auth-app's installation-token requests. Hooks added with octokit.hook.after/error after
  // construction sit outside plugin-retry and would only see the final outcome of a retried call.
  const countingFetch: typeof fetch = async (input, init) => {
    const timeout = AbortSignal.timeout(requestTimeoutMs);
    const signal = init?.signal ? AbortSignal.any([init.signal, timeout]) : timeout;
    try {
      const response = await fetch(input, { ...init, signal });
      options.metrics?.externalCall('github', String(response.status));
      return response;
    } catch (error) {
      options.metrics?.externalCall('github', 'network_error');
      throw error;
    }
  };

  function newClient(auth: { token: string } | { appId: string; privateKey: string; installationId?: number }): Client {
    return new GitHubOctokit({
      baseUrl: options.apiUrl.replace(/\/+$/, ''),
      userAgent: 'shipgate',
      ...('token' in auth ? { auth: auth.token } : { authStrategy: createAppAuth, auth }),
      request: { fetch: countingFetch },
      // Octokit's request logger passes whole request options (authorization header included) to
      // `debug`, so that level is dropped; only message strings are forwarded, scrubbed.
      log: {
        debug: () => undefined,
        info: (message: string) => log.debug(scrubSecrets(message)),
        warn: (message: string, info?: object) =>
          log.warn(info instanceof Error ? { err: info } : {}, scrubSecrets(message)),
        // Failed requests are reported to the caller as errors; logging each again here is noise.
        error: (message: string) => log.debug(scrubSecrets(message)),
      },
      throttle: {
        id: options.limiterId ?? 'shipgate',
        retryAfterBaseValue: retryAfterBaseMs,
        fallbackSecondaryRateRetryAfter: options.retry?.minRetryAfterSeconds ?? 60,
        onRateLimit: (retryAfter, request, _octokit, retryCount) => {
          const willRetry = retryCount < PRIMARY_RATE_LIMIT_RETRIES && retryAfter <= maxRetryAfterSeconds;
          log.warn(
            { method: request.method, url: request.url, retryAfter, retryCount, willRetry },
            'GitHub rate limit reached',
          );
          return willRetry;
        },
        onSecondaryRateLimit: (retryAfter, request, _octokit, retryCount) => {
          const willRetry = retryCount < SECONDARY_RATE_LIMIT_RETRIES && retryAfter <= maxRetryAfterSeconds;
          log.warn(
            { method: request.method, url: request.url, retryAfter, retryCount, willRetry },
            'GitHub secondary rate limit reached',
          );
          return willRetry;
        },
      },
      retry: {
        retries: options.retry?.retries ?? 3,
        retryAfterBaseValue: retryAfterBaseMs,
        doNotRetry: DO_NOT_RETRY,
      },
    });
  }

  const auth = options.auth;
  // Token and fixed-installation modes have one client; an App without an installation id looks
  // the installation up per repository and keeps one client per installation.
  const fixedClient =
    auth.kind === 'token'
      ? newClient({ token: auth.token })
      : auth.installationId !== undefined
        ? newClient({ appId: auth.appId, privateKey: auth.privateKey, installationId: Number(auth.installationId) })
        : undefined;
  const appClient =
    auth.kind === 'app' && fixedClient === undefined
      ? newClient({ appId: auth.appId, privateKey: auth.privateKey })
      : undefined;
  const installationIds = new Map<string, Promise<number>>();
  const installationClients = new Map<number, Client>();

  async function lookUpInstallation(client: Client, owner: string, repo: string): Promise<number> {
    const key = `${owner}/${repo}`.toLowerCase();
    let pending = installationIds.get(key);
    if (pending === undefined) {
      pending = client
        .request('GET /repos/{owner}/{repo}/installation', { owner, repo })
        .then(({ data }) => installationSchema.parse(data).id)
        .catch((error: unknown) => {
          // GitHub answers 404 both for a missing repository and for one the App is not installed on.
          if (requestErrorSchema.safeParse(error).data?.status !== 404) throw error;
          throw new RefusedError(
            `the GitHub App is not installed on ${owner}/${repo}, or the repository does not exist`,
            {
              cause: error,
            },
          );
        });
      installationIds.set(key, pending);
      // A failed lookup is not remembered; the next call asks again.
      pending.catch(() => installationIds.delete(key));
    }
    return pending;
  }

  async function clientFor(owner: string, repo: string): Promise<Client> {
    if (fixedClient !== undefined) return fixedClient;
    if (appClient === undefined || auth.kind !== 'app') throw new Error('unreachable: no GitHub client');
    const installationId = await lookUpInstallation(appClient, owner, repo);
    let client = installationClients.get(installationId);
    if (client === undefined) {
      client = newClient({ appId: auth.appId, privateKey: auth.privateKey, installationId });
      installationClients.set(installationId, client);
    }
    return client;
  }

  async function call<T>(what: string, action: () => Promise<T>): Promise<T> {
    try {
      return await action();
    } catch (error) {
      throw toPortError(what, error);
    }
  }

  async function findOpen(
    client: Client,
    owner: string,
    repo: string,
    branch: string,
  ): Promise<PullRequestRef | undefined> {
    // GitHub ignores a `head` filter without the `owner:` part and would list every open PR.
    const { data } = await client.request('GET /repos/{owner}/{repo}/pulls', {
      owner,
      repo,
      state: 'open',
      head: `${owner}:${branch}`,
    });
    const first: unknown = z.array(z.unknown()).parse(data)[0];
    return first === undefined ? undefined : toPullRequestRef(first);
  }

  return {
    async getRepository(owner, repo): Promise<RepositoryInfo> {
      return call(`reading repository ${owner}/${repo}`, async () => {
        const client = await clientFor(owner, repo);
        const { data } = await client.request('GET /repos/{owner}/{repo}', { owner, repo });
        const parsed = repositorySchema.parse(data);
        return { cloneUrl: parsed.clone_url, defaultBranch: parsed.default_branch, htmlUrl: parsed.html_url };
      });
    },

    async findOpenPullRequest(owner, repo, branch) {
      return call(`listing open pull requests of ${owner}/${repo} for ${branch}`, async () =>
        findOpen(await clientFor(owner, repo), owner, repo, branch),
      );
    },

    async createPullRequest(input) {
      const { owner, repo, head, base, title, body } = input;
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
          });
          const pull = toPullRequestRef(data);
          log.info({ owner, repo, head, number: pull.number }, 'pull request opened');
          return pull;
        } catch (error) {
          // A retry after a crash (or after a 502 that had in fact created it) finds the PR there
          // already: answer with that one, so opening is idempotent.
          if (!isAlreadyExists(error)) throw error;
          const branch = head.includes(':') ? head.slice(head.indexOf(':') + 1) : head;
          const existing = await findOpen(client, owner, repo, branch);
          if (existing === undefined) throw error;
          log.info({ owner, repo, head, number: existing.number }, 'pull request already open; reusing it');
          return existing;
        }
      });
    },

    async pushCredentials(owner, repo) {
      if (auth.kind === 'token') return { username: 'x-access-token', password: auth.token };
      return call(`getting push credentials for ${owner}/${repo}`, async () => {
        const client = await clientFor(owner, repo);
        // A token limited to this one repository (SPEC §3): a leaked push credential reaches nothing else.
        const scope = { type: 'installation', repositoryNames: [repo] };
        let token = installationTokenSchema.parse(await client.auth(scope));
        if (Date.parse(token.expiresAt) - Date.now() < MIN_TOKEN_LIFETIME_MS) {
          token = installationTokenSchema.parse(await client.auth({ ...scope, refresh: true }));
        }
        log.debug({ owner, repo, expiresAt: token.expiresAt }, 'installation token issued for push');
        return { username: 'x-access-token', password: token.token };
      });
    },
  };
}
