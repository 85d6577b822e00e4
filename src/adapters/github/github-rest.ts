import { createPrivateKey } from 'node:crypto';
import { createAppAuth } from '@octokit/auth-app';
import { retry } from '@octokit/plugin-retry';
import { throttling } from '@octokit/plugin-throttling';
import { Octokit } from '@octokit/rest';
import { z } from 'zod';
import { ExternalOutageError, RefusedError } from '../../errors.js';
import { scrubSecrets, type Logger } from '../../log.js';
import type { Metrics } from '../../metrics.js';
import type { Scrub } from '../../security/scrubber.js';
import type {
  CheckAnnotation,
  CheckRunInfo,
  CiSnapshot,
  CommitStatusInfo,
  EtagCache,
  GitHubCiPort,
  GitHubPort,
  PullRequestRef,
  PullRequestState,
  RepositoryInfo,
} from '../../ports/github.js';

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
  /**
   * ETags and bodies of earlier GET answers, for conditional requests (SPEC §5, §10: a 304 costs no
   * rate limit). Production passes the Redis cache (src/store/etag-cache.ts) so that every worker
   * revalidates the others' answers; without one, a bounded in-memory cache of this adapter is used.
   */
  etagCache?: EtagCache;
  /**
   * Scrubs what this adapter writes to GitHub (pull request titles and bodies) and the text of the
   * errors it raises (SPEC §4). Default: the token patterns of src/log.ts.
   */
  scrub?: Scrub | undefined;
  /**
   * Told every credential minted at run time (GitHub App installation tokens, for the API and for
   * pushes) before it is used, so the scrubber can remove it from whatever text it later shows up in.
   */
  onSecret?: ((secret: string) => void) | undefined;
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

/** `POST /app/installations/{id}/access_tokens` answers (only the field used). */
const accessTokenAnswerSchema = z.object({ token: z.string().min(1) });
const ACCESS_TOKENS_PATH = /\/app\/installations\/\d+\/access_tokens$/;

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

/** Pages followed per list before giving up (10,000 check runs): a safety net against a Link loop. */
const MAX_PAGES = 100;
/** Entries of the default in-memory ETag cache (one per URL, so a few per watched commit). */
const MEMORY_ETAG_ENTRIES = 2_000;
/** Statuses that mean "this is not there for you" on the optional reads; rate limits are told apart. */
const UNREADABLE = [403, 404];
const LOG_GONE = [403, 404, 410];

/** A REST check run (only the fields used); the shape of `GET …/commits/{ref}/check-runs` items. */
const checkRunSchema = z.object({
  id: z.number().int(),
  name: z.string(),
  status: z.string(),
  conclusion: z.string().nullable().optional(),
  details_url: z.string().nullable().optional(),
  app: z.object({ slug: z.string().optional() }).nullable().optional(),
  output: z
    .object({
      title: z.string().nullable().optional(),
      summary: z.string().nullable().optional(),
      annotations_count: z.number().int().nonnegative().optional(),
    })
    .optional(),
  started_at: z.string().nullable().optional(),
  completed_at: z.string().nullable().optional(),
});

const checkRunsPageSchema = z.object({ total_count: z.number().optional(), check_runs: z.array(checkRunSchema) });

const commitStatusSchema = z.object({
  context: z.string(),
  state: z.enum(['pending', 'success', 'failure', 'error']),
  description: z.string().nullable().optional(),
  target_url: z.string().nullable().optional(),
  updated_at: z.string(),
});

const requiredStatusChecksSchema = z.object({
  contexts: z.array(z.string()).optional(),
  checks: z.array(z.object({ context: z.string() })).optional(),
});

/** `GET /repos/{o}/{r}/rules/branches/{branch}`: every active rule for the branch, from every ruleset. */
const branchRuleSchema = z.object({
  type: z.string(),
  parameters: z.unknown().optional(),
});

const requiredStatusChecksRuleParametersSchema = z.object({
  required_status_checks: z.array(z.object({ context: z.string() })),
});

const annotationSchema = z.object({
  path: z.string(),
  start_line: z.number().int(),
  end_line: z.number().int(),
  // Nullable in GitHub's own schema, though every app sets them.
  annotation_level: z.string().nullable().optional(),
  message: z.string().nullable().optional(),
  title: z.string().nullable().optional(),
});

const pullStateSchema = pullSchema.extend({
  base: z.object({ ref: z.string().min(1) }),
  merge_commit_sha: z.string().nullable().optional(),
});

/** What this adapter keeps as an ETag cache entry's `body`: the JSON answer and its `rel="next"` link. */
const cachedPageSchema = z.object({ next: z.string().nullable(), data: z.unknown() });

/** A 302 answer's headers (the job-log download). */
const redirectHeadersSchema = z.object({ location: z.string().min(1) });

interface Page {
  data: unknown;
  next: string | undefined;
}

function nextLink(link: string | undefined): string | undefined {
  // `<https://api.github.com/…&page=2>; rel="next", <…&page=5>; rel="last"`
  return link === undefined ? undefined : /<([^<>]+)>;\s*rel="next"/.exec(link)?.[1];
}

/** A bounded LRU, for adapters built without a shared cache (tests, one-off CLIs). */
function createMemoryEtagCache(maxEntries = MEMORY_ETAG_ENTRIES): EtagCache {
  const entries = new Map<string, { etag: string; body: string }>();
  return {
    async get(key) {
      const entry = entries.get(key);
      if (entry !== undefined) {
        entries.delete(key);
        entries.set(key, entry);
      }
      return entry;
    },
    async set(key, entry) {
      entries.delete(key);
      entries.set(key, entry);
      for (const oldest of entries.keys()) {
        if (entries.size <= maxEntries) break;
        entries.delete(oldest);
      }
    },
  };
}

/**
 * The last `maxBytes` of a stream, starting at a line boundary when the window holds one. Only
 * about `maxBytes` stay in memory whatever the log's size (Actions logs reach hundreds of MB).
 */
async function readTail(body: ReadableStream<Uint8Array> | null, maxBytes: number): Promise<string> {
  if (body === null) return '';
  const limit = Math.max(0, Math.floor(maxBytes));
  if (limit === 0) {
    await body.cancel();
    return '';
  }
  // One byte more than asked, to see whether the window starts right after a newline.
  const chunks: Buffer[] = [];
  let kept = 0;
  let dropped = false;
  for await (const chunk of body) {
    chunks.push(Buffer.from(chunk));
    kept += chunk.byteLength;
    for (
      let first = chunks[0];
      first !== undefined && chunks.length > 1 && kept - first.length > limit;
      first = chunks[0]
    ) {
      chunks.shift();
      kept -= first.length;
      dropped = true;
    }
  }
  let tail = Buffer.concat(chunks);
  let cutMidLine = false;
  if (tail.length > limit) {
    cutMidLine = tail[tail.length - limit - 1] !== 0x0a;
    tail = tail.subarray(tail.length - limit);
  } else if (dropped) {
    cutMidLine = true;
  }
  if (cutMidLine) {
    const newline = tail.indexOf(0x0a);
    if (newline >= 0 && newline < tail.length - 1) {
      tail = tail.subarray(newline + 1);
    } else {
      // One line longer than the window: keep its end, from a UTF-8 character boundary.
      let start = 0;
      while (start < tail.length && ((tail[start] ?? 0) & 0xc0) === 0x80) start++;
      tail = tail.subarray(start);
    }
  }
  return tail.toString('utf8').replace(/^\uFEFF/, '');
}

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

function isRateLimited(error: z.infer<typeof requestErrorSchema>): boolean {
  const remaining = error.response?.headers['x-ratelimit-remaining'];
  return error.status === 429 || (error.status === 403 && (remaining === '0' || /rate limit/i.test(error.message)));
}

/** A GitHub answer with one of `statuses` that is not a rate limit (GitHub also limits with 403). */
function isAnswer(error: unknown, statuses: readonly number[]): boolean {
  const parsed = requestErrorSchema.safeParse(error);
  return parsed.success && statuses.includes(parsed.data.status) && !isRateLimited(parsed.data);
}

/** Maps whatever a call threw to the two error kinds the queue understands (src/errors.ts). */
function toPortError(what: string, error: unknown, scrub: Scrub): Error {
  if (error instanceof RefusedError || error instanceof ExternalOutageError) return error;
  if (error instanceof z.ZodError) {
    return new ExternalOutageError('github', `${what}: unexpected answer: ${z.prettifyError(error)}`, { cause: error });
  }
  const parsed = requestErrorSchema.safeParse(error);
  if (!parsed.success) {
    const message = error instanceof Error ? error.message : String(error);
    return new ExternalOutageError('github', `${what}: ${scrub(message)}`, { cause: error });
  }
  const { status } = parsed.data;
  const message = scrub(parsed.data.message);
  if (isRateLimited(parsed.data)) {
    return new ExternalOutageError('github', `${what}: rate limited (HTTP ${status}): ${message}`, { cause: error });
  }
  if (status >= 400 && status < 500) {
    return new RefusedError(`GitHub refused ${what} (HTTP ${status}): ${message}`, { cause: error });
  }
  // Octokit reports network failures and timeouts as status 500 too.
  return new ExternalOutageError('github', `${what} failed (HTTP ${status}): ${message}`, { cause: error });
}

export function createGitHubRest(options: GitHubRestOptions): GitHubPort & GitHubCiPort {
  const log = options.log.child({ component: 'github' });
  const retryAfterBaseMs = options.retry?.retryAfterBaseMs ?? 1000;
  const maxRetryAfterSeconds = options.retry?.maxRetryAfterSeconds ?? 120;
  const requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
  const scrub = options.scrub ?? scrubSecrets;

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

  async function call<T>(what: string, action: () => Promise<T>): Promise<T> {
    try {
      return await action();
    } catch (error) {
      throw toPortError(what, error, scrub);
    }
  }

  const etagCache = options.etagCache ?? createMemoryEtagCache();

  /**
   * The cache only saves rate limit: when Redis is unreachable the read is sent unconditionally
   * (it costs one request) rather than failing a gate on a cache outage.
   */
  async function cachedPage(url: string): Promise<{ etag: string; page: Page } | undefined> {
    let entry: { etag: string; body: string } | undefined;
    try {
      entry = await etagCache.get(url);
    } catch (error) {
      log.warn({ err: error }, 'ETag cache unreadable; sending an unconditional request');
      return undefined;
    }
    if (entry === undefined) return undefined;
    let parsed: z.infer<typeof cachedPageSchema>;
    try {
      parsed = cachedPageSchema.parse(JSON.parse(entry.body));
    } catch {
      // Written by something else (or an older format): not worth a revalidation.
      return undefined;
    }
    return { etag: entry.etag, page: { data: parsed.data, next: parsed.next ?? undefined } };
  }

  /**
   * One GET sent with `If-None-Match` when an earlier answer is cached. Octokit throws a
   * RequestError with status 304 for "not modified": the cached body is the answer. The cache key
   * is the full URL with its query (page and per_page included), as the request went out.
   */
  async function conditionalGet(client: Client, url: string): Promise<Page> {
    const cached = await cachedPage(url);
    try {
      const response = await client.request<unknown>({
        method: 'GET',
        url,
        headers: cached === undefined ? {} : { 'if-none-match': cached.etag },
      });
      const page: Page = { data: response.data, next: nextLink(response.headers.link) };
      const etag = response.headers.etag;
      if (etag !== undefined && etag !== '') {
        try {
          await etagCache.set(url, { etag, body: JSON.stringify({ next: page.next ?? null, data: page.data }) });
        } catch (error) {
          log.warn({ err: error }, 'ETag cache unwritable; the next read of this URL will not be conditional');
        }
      }
      return page;
    } catch (error) {
      if (cached !== undefined && requestErrorSchema.safeParse(error).data?.status === 304) return cached.page;
      throw error;
    }
  }

  /** Every page of a list, each page conditional on its own, following GitHub's `Link: rel="next"`. */
  async function allPages(client: Client, firstUrl: string): Promise<unknown[]> {
    const pages: unknown[] = [];
    let url: string | undefined = firstUrl;
    while (url !== undefined) {
      if (pages.length >= MAX_PAGES) {
        log.warn({ url: firstUrl, pages: pages.length }, 'GitHub list has too many pages; reading no further');
        break;
      }
      const page: Page = await conditionalGet(client, url);
      pages.push(page.data);
      url = page.next;
    }
    return pages;
  }

  /** A read that may legitimately be hidden: undefined for 404 (not set) and 403 (no permission). */
  async function unlessUnreadable<T>(read: () => Promise<T>): Promise<T | undefined> {
    try {
      return await read();
    } catch (error) {
      if (isAnswer(error, UNREADABLE)) return undefined;
      throw error;
    }
  }

  /**
   * The tail of a pre-signed log download. Sent by hand, not by Octokit or fetch's redirect
   * following: fetch keeps the Authorization header on a same-origin redirect (it drops it only
   * across origins), and GitHub Enterprise may serve downloads from the API's own host. The token
   * must go to the API only; the download URL carries its own short-lived signature.
   */
  async function downloadTail(url: URL, maxBytes: number): Promise<string | undefined> {
    if (url.protocol !== 'https:' && url.protocol !== 'http:') {
      throw new ExternalOutageError('github', `job log download has an unexpected scheme ${url.protocol}`);
    }
    const response = await countingFetch(url, { headers: { 'user-agent': 'shipgate' }, redirect: 'follow' });
    if (LOG_GONE.includes(response.status)) {
      // The signed URL expired or the blob was deleted between the 302 and now.
      await response.body?.cancel();
      return undefined;
    }
    if (!response.ok) {
      await response.body?.cancel();
      // The URL is a credential of sorts (signed); it is left out of the message.
      throw new ExternalOutageError('github', `job log download failed (HTTP ${response.status})`);
    }
    return readTail(response.body, maxBytes);
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
      const { owner, repo, head, base } = input;
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
        options.onSecret?.(token.token);
        log.debug({ owner, repo, expiresAt: token.expiresAt }, 'installation token issued for push');
        return { username: 'x-access-token', password: token.token };
      });
    },

    async ciSnapshot(owner, repo, sha): Promise<CiSnapshot> {
      return call(`reading checks and statuses of ${owner}/${repo}@${sha}`, async () => {
        const client = await clientFor(owner, repo);
        const checkRunsUrl = client.request.endpoint('GET /repos/{owner}/{repo}/commits/{ref}/check-runs', {
          owner,
          repo,
          ref: sha,
          per_page: 100,
          // GitHub's default too, stated so that a re-run's superseded attempt never counts.
          filter: 'latest',
        }).url;
        const statusesUrl = client.request.endpoint('GET /repos/{owner}/{repo}/commits/{ref}/statuses', {
          owner,
          repo,
          ref: sha,
          per_page: 100,
        }).url;
        const [checkPages, statusPages] = await Promise.all([
          allPages(client, checkRunsUrl),
          allPages(client, statusesUrl),
        ]);

        // A run that moved from one page to the next between the two requests is seen once.
        const checkRuns = new Map<number, CheckRunInfo>();
        for (const page of checkPages) {
          for (const run of checkRunsPageSchema.parse(page).check_runs) {
            if (checkRuns.has(run.id)) continue;
            checkRuns.set(run.id, {
              id: run.id,
              name: run.name,
              status: run.status,
              conclusion: run.conclusion ?? null,
              detailsUrl: run.details_url ?? null,
              appSlug: run.app?.slug ?? null,
              output: {
                title: run.output?.title ?? null,
                summary: run.output?.summary ?? null,
                annotationsCount: run.output?.annotations_count ?? 0,
              },
              startedAt: run.started_at ?? null,
              completedAt: run.completed_at ?? null,
            });
          }
        }

        // The statuses list is every status ever posted, newest first: a context's first entry is
        // its current state (as in the combined status); older ones (`pending` before `success`)
        // would only mislead the gate.
        const statuses = new Map<string, CommitStatusInfo>();
        for (const page of statusPages) {
          for (const status of z.array(commitStatusSchema).parse(page)) {
            if (statuses.has(status.context)) continue;
            statuses.set(status.context, {
              context: status.context,
              state: status.state,
              description: status.description ?? null,
              targetUrl: status.target_url ?? null,
              updatedAt: status.updated_at,
            });
          }
        }
        return { checkRuns: [...checkRuns.values()], statuses: [...statuses.values()] };
      });
    },

    async requiredChecks(owner, repo, branch) {
      return call(`reading required checks of ${owner}/${repo} branch ${branch}`, async () => {
        const client = await clientFor(owner, repo);
        const protectionUrl = client.request.endpoint(
          'GET /repos/{owner}/{repo}/branches/{branch}/protection/required_status_checks',
          { owner, repo, branch },
        ).url;
        const rulesUrl = client.request.endpoint('GET /repos/{owner}/{repo}/rules/branches/{branch}', {
          owner,
          repo,
          branch,
          per_page: 100,
        }).url;
        // Classic protection and rulesets both apply to a branch; GitHub requires the union. 404 on
        // protection means "not protected / checks not required", 403 that the token may not read
        // it (it needs administration:read); GHES without rulesets answers 404 on the rules.
        const [protection, rules] = await Promise.all([
          unlessUnreadable(async () =>
            requiredStatusChecksSchema.parse((await conditionalGet(client, protectionUrl)).data),
          ),
          unlessUnreadable(async () =>
            (await allPages(client, rulesUrl)).flatMap((page) => z.array(branchRuleSchema).parse(page)),
          ),
        ]);

        const fromProtection =
          protection === undefined
            ? undefined
            : [...(protection.contexts ?? []), ...(protection.checks ?? []).map((check) => check.context)];
        const checkRules = (rules ?? []).filter((rule) => rule.type === 'required_status_checks');
        const fromRules =
          checkRules.length === 0
            ? undefined
            : checkRules.flatMap((rule) =>
                requiredStatusChecksRuleParametersSchema
                  .parse(rule.parameters)
                  .required_status_checks.map((c) => c.context),
              );
        if (fromProtection === undefined && fromRules === undefined) return undefined;
        return [...new Set([...(fromProtection ?? []), ...(fromRules ?? [])])];
      });
    },

    async checkRunAnnotations(owner, repo, checkRunId): Promise<CheckAnnotation[]> {
      return call(`reading annotations of check run ${checkRunId} in ${owner}/${repo}`, async () => {
        const client = await clientFor(owner, repo);
        // The first 50 are plenty for a failure summary; a run with thousands is summarised by its count.
        const url = client.request.endpoint('GET /repos/{owner}/{repo}/check-runs/{check_run_id}/annotations', {
          owner,
          repo,
          check_run_id: checkRunId,
          per_page: 50,
        }).url;
        const { data } = await conditionalGet(client, url);
        return z
          .array(annotationSchema)
          .parse(data)
          .map((a) => ({
            path: a.path,
            startLine: a.start_line,
            endLine: a.end_line,
            level: a.annotation_level ?? 'notice',
            message: a.message ?? '',
            title: a.title ?? null,
          }));
      });
    },

    async actionsJobLogTail(owner, repo, jobId, maxBytes) {
      return call(`reading the log of job ${jobId} in ${owner}/${repo}`, async () => {
        const client = await clientFor(owner, repo);
        let response;
        try {
          // GitHub answers 302 to a short-lived signed URL; the redirect is followed by hand below.
          response = await client.request('GET /repos/{owner}/{repo}/actions/jobs/{job_id}/logs', {
            owner,
            repo,
            job_id: jobId,
            request: { redirect: 'manual' },
          });
        } catch (error) {
          // 404: not an Actions job or no such job; 410: logs deleted by retention; 403: no actions:read.
          if (isAnswer(error, LOG_GONE)) return undefined;
          throw error;
        }
        const redirect = redirectHeadersSchema.safeParse(response.headers);
        if (redirect.success) return downloadTail(new URL(redirect.data.location, response.url), maxBytes);
        // A server that answers with the log itself (no redirect).
        const data: unknown = response.data;
        if (typeof data === 'string') return readTail(new Blob([data]).stream(), maxBytes);
        throw new ExternalOutageError('github', `job ${jobId} logs: neither a redirect nor a text answer`);
      });
    },

    async getPullRequest(owner, repo, number): Promise<PullRequestState> {
      return call(`reading pull request #${number} of ${owner}/${repo}`, async () => {
        const client = await clientFor(owner, repo);
        const url = client.request.endpoint('GET /repos/{owner}/{repo}/pulls/{pull_number}', {
          owner,
          repo,
          pull_number: number,
        }).url;
        const { data } = await conditionalGet(client, url);
        const pull = pullStateSchema.parse(data);
        const merged = pull.merged ?? (pull.merged_at !== null && pull.merged_at !== undefined);
        return {
          ...toPullRequestRef(data),
          base: pull.base.ref,
          // An unmerged PR's merge_commit_sha is GitHub's test merge, which is on no branch.
          mergeCommitSha: merged ? (pull.merge_commit_sha ?? null) : null,
        };
      });
    },
  };
}
