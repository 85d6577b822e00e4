import { createPrivateKey } from 'node:crypto';
import { createAppAuth } from '@octokit/auth-app';
import { retry } from '@octokit/plugin-retry';
import { throttling } from '@octokit/plugin-throttling';
import { Octokit } from '@octokit/rest';
import { z } from 'zod';
import { cancelledBy, RefusedError } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { Scrub } from '../../security/scrubber.js';
import type { GitHubRestOptions } from './options.js';
import { requestErrorSchema } from './port-errors.js';

/**
 * Authentication and the Octokit clients: a token, a fixed App installation, or an App whose
 * installation is looked up per repository (one client per installation). Every HTTP attempt
 * goes through one fetch that times out, counts the call and tells the scrubber of minted tokens.
 */

/** Octokit core as plugins see it (named through plugin-retry's own signature: core is not a direct dependency). */
type CoreOctokit = Parameters<typeof retry>[0];

/**
 * Stops every HTTP attempt of a call whose signal (`request: { signal }`) aborted. Registered before
 * throttling and retry, so their wrappers sit outside it and each attempt they start passes through
 * it: one started after the abort is refused before it is sent, and the failure of one aborted in
 * flight (Octokit makes fetch's abort a status 500, which plugin-retry would retry) leaves as a
 * `CancelledError`, which neither plugin retries — plugin-retry only retries errors that carry a
 * request, plugin-throttling only 403, 429 and GraphQL answers.
 */
function stopOnAbort(log: Logger): (octokit: CoreOctokit) => void {
  return (octokit) => {
    octokit.hook.wrap('request', async (request, options) => {
      const signal = options.request.signal;
      if (signal === undefined) return request(options);
      const what = `${options.method} ${options.url}`;
      if (signal.aborted) {
        log.debug({ method: options.method, url: options.url }, 'GitHub attempt not sent: its call was stopped');
        throw cancelledBy(signal, what);
      }
      try {
        return await request(options);
      } catch (error) {
        if (!signal.aborted) throw error;
        log.debug({ method: options.method, url: options.url }, 'GitHub attempt aborted in flight');
        throw cancelledBy(signal, what);
      }
    });
  };
}

function createOctokitClass(log: Logger) {
  return Octokit.plugin(stopOnAbort(log), throttling, retry);
}
export type Client = InstanceType<ReturnType<typeof createOctokitClass>>;

const PRIMARY_RATE_LIMIT_RETRIES = 2;
const SECONDARY_RATE_LIMIT_RETRIES = 1;
/** Statuses plugin-retry leaves alone: its defaults plus 429, which plugin-throttling owns (no double retries). */
const DO_NOT_RETRY = [400, 401, 403, 404, 410, 422, 429, 451];

const installationSchema = z.object({ id: z.number().int().positive() });

/** `POST /app/installations/{id}/access_tokens` answers (only the field used). */
const accessTokenAnswerSchema = z.object({ token: z.string().min(1) });
const ACCESS_TOKENS_PATH = /\/app\/installations\/\d+\/access_tokens$/;

export interface GitHubClients {
  /** The client for this repository's installation (the one client in token and fixed-installation modes). */
  clientFor: (owner: string, repo: string) => Promise<Client>;
  /** The counting, timing-out fetch the clients use, for requests sent by hand. */
  fetch: typeof fetch;
}

export function createGitHubClients(options: GitHubRestOptions, log: Logger, scrub: Scrub): GitHubClients {
  const retryAfterBaseMs = options.retry?.retryAfterBaseMs ?? 1000;
  const maxRetryAfterSeconds = options.retry?.maxRetryAfterSeconds ?? 120;
  const requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
  const GitHubOctokit = createOctokitClass(log);

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
      if (options.onSecret !== undefined && response.ok && init?.method?.toUpperCase() === 'POST' && URL.canParse(response.url)) {
        if (ACCESS_TOKENS_PATH.test(new URL(response.url).pathname)) {
          // auth-app mints installation tokens on its own (one per installation and scope, renewed
          // hourly); the scrubber learns each before Octokit or git ever uses it.
          const minted = accessTokenAnswerSchema.safeParse(await response.clone().json().catch(() => undefined));
          if (minted.success) options.onSecret(minted.data.token);
        }
      }
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
        info: (message: string) => log.debug(scrub(message)),
        warn: (message: string, info?: object) => log.warn(info instanceof Error ? { err: info } : {}, scrub(message)),
        // Failed requests are reported to the caller as errors; logging each again here is noise.
        error: (message: string) => log.debug(scrub(message)),
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

  return { clientFor, fetch: countingFetch };
}
