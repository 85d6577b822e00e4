import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { z } from 'zod';

/**
 * A local stand-in for the GitHub REST API (SPEC §9), for the real `@octokit/rest` client.
 * It speaks the wire protocol as GitHub does: `token`/`Bearer` authorization (App JWTs only on
 * the App routes), JSON error bodies `{ message, errors?, documentation_url, status }`,
 * `x-ratelimit-*` headers on every answer, and an ETag on every GET answer with `304 Not Modified`
 * (empty body, not counted against the rate limit) when `If-None-Match` matches.
 *
 * Stricter than GitHub where GitHub would quietly do something surprising is a feature: unknown
 * routes answer 404 and land in `unexpected`, which tests assert empty.
 *
 * More routes (checks, statuses, …) can be added with `route()`; they get the same recording,
 * authorization, failure injection, rate-limit headers and ETags.
 */

export type JsonValue = z.core.util.JSONType;
export type JsonObject = { [key: string]: JsonValue };

export interface RecordedRequest {
  method: string;
  /** Path without the query string (and without `pathPrefix`). */
  path: string;
  query: Record<string, string>;
  /** Lower-cased names; repeated headers joined with `, `. */
  headers: Record<string, string>;
  /** Parsed JSON body; the raw text when it was not JSON; undefined when empty. */
  body: JsonValue | undefined;
  /** Status answered (304 for conditional hits, the injected status for `failNext`). */
  status: number;
  /** True when the answer came from `failNext`. */
  injected: boolean;
  at: number;
}

export interface UnexpectedRequest {
  method: string;
  path: string;
  reason: string;
  at: number;
}

/** An injected answer. Headers override the defaults (so `x-ratelimit-remaining: 0` wins). */
export interface FailSpec {
  status: number;
  headers?: Record<string, string>;
  body?: JsonValue;
}

export interface RepositorySetup {
  /** What the API returns as `clone_url`: a bare repository path or file:// URL in tests. */
  cloneUrl: string;
  defaultBranch?: string;
  /** Default `<server origin>/<owner>/<name>`. */
  htmlUrl?: string;
}

export interface StoredPull {
  number: number;
  state: 'open' | 'closed';
  title: string;
  body: string | null;
  head: { ref: string; sha: string; owner: string };
  base: { ref: string };
  merged: boolean;
  /** Set by `mergePull`; while unmerged the answer carries a test-merge sha, as GitHub's does. */
  mergeCommitSha?: string | null;
  draft: boolean;
  htmlUrl: string;
  createdAt: string;
  updatedAt: string;
}

/**
 * A check run as a test describes it: any REST field (snake_case, as GitHub sends them), only
 * `name` required. Defaults are what GitHub Actions would report (app `github-actions`).
 */
export interface CheckRunSetup {
  name: string;
  /** Default: the id of this sha's earlier run with the same name (an update), else a new one (a new run). */
  id?: number;
  status?: 'queued' | 'in_progress' | 'completed' | 'waiting' | 'requested' | 'pending';
  /** Default `success` when `status` is `completed`, else null; a conclusion alone implies `completed`. */
  conclusion?: string | null;
  details_url?: string | null;
  html_url?: string;
  external_id?: string;
  started_at?: string | null;
  completed_at?: string | null;
  /** `annotations_count` defaults to the number given to `setAnnotations` for this run. */
  output?: { title?: string | null; summary?: string | null; text?: string | null; annotations_count?: number };
  app?: { id?: number; slug?: string; name?: string } | null;
  check_suite?: { id: number };
}

export interface CommitStatusSetup {
  context?: string;
  state: 'pending' | 'success' | 'failure' | 'error';
  description?: string | null;
  target_url?: string | null;
  /** Default: increasing in the order given (statuses are append-only on GitHub). */
  id?: number;
  created_at?: string;
  updated_at?: string;
}

export interface AnnotationSetup {
  path: string;
  message: string;
  start_line?: number;
  end_line?: number;
  start_column?: number | null;
  end_column?: number | null;
  annotation_level?: 'notice' | 'warning' | 'failure';
  title?: string | null;
  raw_details?: string | null;
}

/** One rule of `GET /repos/{o}/{r}/rules/branches/{branch}` (see `requiredStatusChecksRule`). */
export interface BranchRuleSetup {
  type: string;
  parameters?: JsonObject;
  ruleset_id?: number;
}

export interface LogDownload {
  path: string;
  /** Whether the download request carried an Authorization header (it must not: the URL is pre-signed). */
  authorization: boolean;
  at: number;
}

export interface IssuedToken {
  token: string;
  installationId: number;
  /** Repository names the token was limited to; undefined = every repository of the installation. */
  repositories: string[] | undefined;
  expiresAt: string;
}

export type HeadShaResolver = (
  repository: { fullName: string; cloneUrl: string },
  branch: string,
) => string | undefined | Promise<string | undefined>;

export interface RouteContext {
  params: Record<string, string>;
  query: URLSearchParams;
  body: JsonValue | undefined;
  headers: Record<string, string>;
}

export interface RouteAnswer {
  status: number;
  body?: JsonValue;
  headers?: Record<string, string>;
}

export type RouteHandler = (context: RouteContext) => RouteAnswer | Promise<RouteAnswer>;

export interface GitHubServerOptions {
  /** When set, repository routes need `token <it>` / `Bearer <it>` (or an installation token this server issued). */
  token?: string;
  /** When set, App JWTs must carry it as `iss`, and repository routes need a token as with `token`. */
  appId?: string;
  /** The id of the one App installation that covers every repository (default 4242). */
  installationId?: number;
  /** `head.sha` of new pull requests; undefined means "no such branch" (422). Default: a fake sha per branch. */
  resolveHeadSha?: HeadShaResolver;
  /** Serve under a prefix such as `/api/v3`, as GitHub Enterprise Server does. */
  pathPrefix?: string;
}

export interface RequestFilter {
  method?: string;
  /** Exact path, `:param` pattern, or RegExp. */
  path?: string | RegExp;
}

export interface GitHubServer {
  /** Base URL for Octokit's `baseUrl` (includes `pathPrefix`). */
  readonly apiUrl: string;
  /** Origin, e.g. `http://127.0.0.1:1234`. */
  readonly url: string;
  readonly installationId: number;
  readonly requests: readonly RecordedRequest[];
  readonly unexpected: readonly UnexpectedRequest[];
  readonly issuedTokens: readonly IssuedToken[];
  setRepository(fullName: string, setup: RepositorySetup): void;
  /** Pull requests of a repository, by number; live objects (tests may close or merge them). */
  pulls(fullName: string): StoredPull[];
  setHeadShaResolver(resolver: HeadShaResolver): void;
  /** Queues one injected answer for the next request matching method and path (FIFO per match). */
  failNext(method: string, path: string | RegExp, spec: FailSpec): void;
  /** Holds the next request matching method and path without an answer (before `failNext` answers apply). */
  holdNext(method: string, path: string | RegExp): HeldRequest;
  /** Recorded requests matching the filter. */
  requestsTo(filter: RequestFilter): RecordedRequest[];
  /** Answers by status for the matching requests, e.g. `{ 200: 3, 304: 7 }`. */
  countStatuses(filter?: RequestFilter): Record<number, number>;
  /** Adds a route (`/repos/:owner/:repo/commits/:ref/check-runs`); answers to GET get ETags. */
  route(method: string, pattern: string, handler: RouteHandler, options?: { auth?: RouteAuth }): void;
  /**
   * Replaces the check runs of a commit (`GET …/commits/:ref/check-runs`), in the order given.
   * Returns their ids and names (ids for `setAnnotations` and `setJobLog`).
   */
  setCheckRuns(fullName: string, sha: string, runs: CheckRunSetup[]): Array<{ id: number; name: string }>;
  /** Replaces the statuses of a commit, given oldest first; `GET …/commits/:ref/statuses` lists them newest first. */
  setStatuses(fullName: string, sha: string, statuses: CommitStatusSetup[]): void;
  setAnnotations(checkRunId: number, annotations: AnnotationSetup[]): void;
  /** The log `GET …/actions/jobs/:id/logs` redirects to; jobs without one answer 404 (as expired logs do 410). */
  setJobLog(jobId: number, text: string): void;
  /** Required status checks of classic branch protection; undefined = branch not protected (404). */
  setRequiredChecks(fullName: string, branch: string, contexts: string[] | undefined): void;
  /** Active ruleset rules of a branch; unset = `[]`. */
  setBranchRules(fullName: string, branch: string, rules: BranchRuleSetup[]): void;
  mergePull(fullName: string, number: number, mergeCommitSha: string): void;
  closePull(fullName: string, number: number): void;
  /** Requests to the log download URLs (outside the API; no rate limit, no auth). */
  readonly logDownloads: readonly LogDownload[];
  close(): Promise<void>;
}

/** A request `holdNext` keeps waiting: no answer until released, so a test can abort it in flight. */
export interface HeldRequest {
  /** Resolves once the matching request arrived (and is being held). */
  readonly arrived: Promise<void>;
  /** Resolves once the client closed the connection before any answer was sent (an aborted fetch). */
  readonly clientGone: Promise<void>;
  /** Ends the hold: answers `spec`, or as the routes would without one. */
  release(spec?: FailSpec): void;
}

/** `repo`: token or installation token when required; `app`: an App JWT, always required. */
export type RouteAuth = 'repo' | 'app' | 'none';

const DOCS = 'https://docs.github.com/rest';

export function primaryRateLimit(options: { resetInSeconds?: number } = {}): FailSpec {
  const reset = Math.floor(Date.now() / 1000) + (options.resetInSeconds ?? 0);
  return {
    status: 403,
    headers: { 'x-ratelimit-remaining': '0', 'x-ratelimit-reset': String(reset) },
    body: {
      message: 'API rate limit exceeded for installation ID 4242.',
      documentation_url: `${DOCS}/overview/resources-in-the-rest-api#rate-limiting`,
      status: '403',
    },
  };
}

export function secondaryRateLimit(options: { retryAfterSeconds?: number; status?: 403 | 429 } = {}): FailSpec {
  const status = options.status ?? 403;
  return {
    status,
    headers: { 'retry-after': String(options.retryAfterSeconds ?? 1) },
    body: {
      message: 'You have exceeded a secondary rate limit. Please wait a few minutes before you try again.',
      documentation_url: `${DOCS}/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits`,
      status: String(status),
    },
  };
}

/** A ruleset rule requiring these status checks, as `GET …/rules/branches/:branch` lists it. */
export function requiredStatusChecksRule(contexts: string[], rulesetId?: number): BranchRuleSetup {
  return {
    type: 'required_status_checks',
    parameters: {
      strict_required_status_checks_policy: false,
      do_not_enforce_on_create: false,
      required_status_checks: contexts.map((context) => ({ context })),
    },
    ...(rulesetId === undefined ? {} : { ruleset_id: rulesetId }),
  };
}

// --- helpers ---------------------------------------------------------------------------------

function errorBody(status: number, message: string, documentation = DOCS, errors?: JsonObject[]): JsonObject {
  return { message, ...(errors ? { errors } : {}), documentation_url: documentation, status: String(status) };
}

function validationFailed(errors: JsonObject[], documentation: string): RouteAnswer {
  return { status: 422, body: errorBody(422, 'Validation Failed', documentation, errors) };
}

function notFound(documentation = DOCS): RouteAnswer {
  return { status: 404, body: errorBody(404, 'Not Found', documentation) };
}

function compilePattern(pattern: string): (path: string) => Record<string, string> | undefined {
  const parts = pattern.split('/');
  return (path) => {
    const segments = path.split('/');
    if (segments.length !== parts.length) return undefined;
    const params: Record<string, string> = {};
    for (const [i, part] of parts.entries()) {
      const segment = segments[i] ?? '';
      if (part.startsWith(':')) {
        if (segment === '') return undefined;
        params[part.slice(1)] = decodeURIComponent(segment);
      } else if (part !== segment) {
        return undefined;
      }
    }
    return params;
  };
}

function pathMatches(filter: string | RegExp | undefined, path: string): boolean {
  if (filter === undefined) return true;
  if (filter instanceof RegExp) return filter.test(path);
  return compilePattern(filter)(path) !== undefined;
}

function etagOf(text: string): string {
  return `"${createHash('sha256').update(text).digest('hex').slice(0, 32)}"`;
}

/** Weak comparison (RFC 9110 §13.1.2): `W/"x"` matches `"x"`; a list or `*` is allowed. */
function ifNoneMatchHits(header: string | undefined, etag: string): boolean {
  if (header === undefined) return false;
  const strip = (tag: string): string => tag.trim().replace(/^W\//, '');
  return header.split(',').some((tag) => tag.trim() === '*' || strip(tag) === strip(etag));
}

const base64urlJson = z
  .string()
  .regex(/^[A-Za-z0-9_-]+$/)
  .transform((text, ctx) => {
    try {
      const parsed: unknown = JSON.parse(Buffer.from(text, 'base64url').toString('utf8'));
      return parsed;
    } catch {
      ctx.addIssue({ code: 'custom', message: 'not base64url JSON' });
      return z.NEVER;
    }
  });

const jwtPayloadSchema = z.object({ iss: z.union([z.string(), z.number()]), iat: z.number(), exp: z.number() });

function parseAuthorization(header: string | undefined): { scheme: string; credential: string } | undefined {
  const match = header === undefined ? null : /^(\S+)\s+(\S+)$/.exec(header.trim());
  if (match === null) return undefined;
  return { scheme: (match[1] ?? '').toLowerCase(), credential: match[2] ?? '' };
}

/** Structure and claims of an App JWT; the signature is not verified (no public key here). */
function jwtPayload(credential: string): z.infer<typeof jwtPayloadSchema> | undefined {
  const parts = credential.split('.');
  if (parts.length !== 3 || parts[2] === '') return undefined;
  const header = base64urlJson.safeParse(parts[0]);
  const payload = base64urlJson.pipe(jwtPayloadSchema).safeParse(parts[1]);
  if (!header.success || !payload.success) return undefined;
  return payload.data;
}

const createPullSchema = z.object({
  title: z.string().optional(),
  head: z.string().optional(),
  base: z.string().optional(),
  body: z.string().nullable().optional(),
  draft: z.boolean().optional(),
  maintainer_can_modify: z.boolean().optional(),
  issue: z.number().optional(),
});

const accessTokenRequestSchema = z
  .object({
    repositories: z.array(z.string()).optional(),
    repository_ids: z.array(z.number()).optional(),
    permissions: z.record(z.string(), z.string()).optional(),
  })
  .optional();

interface Repository {
  id: number;
  owner: string;
  name: string;
  fullName: string;
  cloneUrl: string;
  defaultBranch: string;
  htmlUrl: string;
  pulls: StoredPull[];
}

interface Route {
  method: string;
  match: (path: string) => Record<string, string> | undefined;
  handler: RouteHandler;
  auth: RouteAuth;
}

function headersOf(request: IncomingMessage): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(request.headers)) {
    if (value !== undefined) headers[name.toLowerCase()] = Array.isArray(value) ? value.join(', ') : value;
  }
  return headers;
}

async function readBody(request: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of request) {
    chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk)));
  }
  return Buffer.concat(chunks).toString('utf8');
}

function isoSeconds(date: Date): string {
  return date.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

export async function startGitHubServer(options: GitHubServerOptions = {}): Promise<GitHubServer> {
  const prefix = (options.pathPrefix ?? '').replace(/\/+$/, '');
  const installationId = options.installationId ?? 4242;
  const requireToken = options.token !== undefined || options.appId !== undefined;
  const requests: RecordedRequest[] = [];
  const unexpected: UnexpectedRequest[] = [];
  const issuedTokens: IssuedToken[] = [];
  const failures: Array<{ method: string; path: string | RegExp; spec: FailSpec }> = [];
  const holds: Array<{
    method: string;
    path: string | RegExp;
    arrive: () => void;
    gone: () => void;
    released: Promise<FailSpec | undefined>;
  }> = [];
  const repositories = new Map<string, Repository>();
  const routes: Route[] = [];
  let resolveHeadSha: HeadShaResolver =
    options.resolveHeadSha ??
    ((repository, branch) => createHash('sha1').update(`${repository.fullName}:${branch}`).digest('hex'));
  let nextRepositoryId = 1_000;
  let requestCounter = 0;
  const rateLimit = { limit: 5000, used: 0, reset: Math.floor(Date.now() / 1000) + 3600 };
  let origin = '';

  function repositoryOf(params: Record<string, string>): Repository | undefined {
    return repositories.get(`${params.owner ?? ''}/${params.repo ?? ''}`.toLowerCase());
  }

  function repositoryJson(repository: Repository): JsonObject {
    const api = `${origin}${prefix}/repos/${repository.fullName}`;
    return {
      id: repository.id,
      node_id: Buffer.from(`010:Repository${repository.id}`).toString('base64'),
      name: repository.name,
      full_name: repository.fullName,
      private: true,
      owner: { login: repository.owner, id: 1, type: 'Organization' },
      html_url: repository.htmlUrl,
      description: null,
      fork: false,
      url: api,
      pulls_url: `${api}/pulls{/number}`,
      clone_url: repository.cloneUrl,
      ssh_url: `git@github.test:${repository.fullName}.git`,
      default_branch: repository.defaultBranch,
      visibility: 'private',
      archived: false,
      disabled: false,
      permissions: { admin: false, maintain: false, push: true, triage: true, pull: true },
    };
  }

  /** `full` adds the fields only single-PR answers carry (GitHub's list items lack `merged` & co). */
  function pullJson(repository: Repository, pull: StoredPull, full: boolean): JsonObject {
    const api = `${origin}${prefix}/repos/${repository.fullName}/pulls/${pull.number}`;
    const repoJson = repositoryJson(repository);
    const summary: JsonObject = {
      url: api,
      id: repository.id * 1_000_000 + pull.number,
      html_url: pull.htmlUrl,
      number: pull.number,
      state: pull.state,
      locked: false,
      title: pull.title,
      user: { login: 'shipgate[bot]', id: 2, type: 'Bot' },
      body: pull.body,
      created_at: pull.createdAt,
      updated_at: pull.updatedAt,
      closed_at: pull.state === 'closed' ? pull.updatedAt : null,
      merged_at: pull.merged ? pull.updatedAt : null,
      // Unmerged: GitHub's test merge commit (on no branch), which clients must not take for the merge.
      merge_commit_sha:
        pull.mergeCommitSha ??
        createHash('sha1').update(`test-merge:${repository.fullName}#${pull.number}:${pull.head.sha}`).digest('hex'),
      draft: pull.draft,
      head: {
        label: `${pull.head.owner}:${pull.head.ref}`,
        ref: pull.head.ref,
        sha: pull.head.sha,
        user: { login: pull.head.owner },
        repo: repoJson,
      },
      base: {
        label: `${repository.owner}:${pull.base.ref}`,
        ref: pull.base.ref,
        user: { login: repository.owner },
        repo: repoJson,
      },
      author_association: 'NONE',
    };
    if (!full) return summary;
    return {
      ...summary,
      merged: pull.merged,
      mergeable: pull.state === 'open' ? true : null,
      mergeable_state: 'clean',
      merged_by: null,
      comments: 0,
      commits: 1,
    };
  }

  function addRoute(
    method: string,
    pattern: string,
    handler: RouteHandler,
    routeOptions: { auth?: RouteAuth } = {},
  ): void {
    routes.push({
      method: method.toUpperCase(),
      match: compilePattern(pattern),
      handler,
      auth: routeOptions.auth ?? 'repo',
    });
  }

  // --- routes ----------------------------------------------------------------------------

  addRoute('GET', '/repos/:owner/:repo', ({ params }) => {
    const repository = repositoryOf(params);
    if (repository === undefined) return notFound(`${DOCS}/repos/repos#get-a-repository`);
    return { status: 200, body: repositoryJson(repository) };
  });

  addRoute('GET', '/repos/:owner/:repo/pulls', ({ params, query }) => {
    const repository = repositoryOf(params);
    if (repository === undefined) return notFound(`${DOCS}/pulls/pulls#list-pull-requests`);
    const state = query.get('state') ?? 'open';
    if (state !== 'open' && state !== 'closed' && state !== 'all') {
      return validationFailed(
        [{ resource: 'Search', field: 'state', code: 'invalid' }],
        `${DOCS}/pulls/pulls#list-pull-requests`,
      );
    }
    const head = query.get('head');
    // GitHub filters by head only in the `user:ref-name` form and ignores anything else.
    const headFilter = head !== null && head.includes(':') ? head : undefined;
    const base = query.get('base');
    const perPage = Math.min(Math.max(Number(query.get('per_page') ?? 30) || 30, 1), 100);
    const page = Math.max(Number(query.get('page') ?? 1) || 1, 1);
    const matching = repository.pulls
      .filter((p) => state === 'all' || p.state === state)
      .filter(
        (p) => headFilter === undefined || `${p.head.owner}:${p.head.ref}`.toLowerCase() === headFilter.toLowerCase(),
      )
      .filter((p) => base === null || p.base.ref === base)
      .sort((a, b) => b.number - a.number);
    const slice = matching.slice((page - 1) * perPage, page * perPage);
    const headers: Record<string, string> = {};
    if (page * perPage < matching.length) {
      const next = new URLSearchParams(query);
      next.set('page', String(page + 1));
      headers.link = `<${origin}${prefix}/repos/${repository.fullName}/pulls?${next.toString()}>; rel="next"`;
    }
    return { status: 200, body: slice.map((p) => pullJson(repository, p, false)), headers };
  });

  addRoute('POST', '/repos/:owner/:repo/pulls', async ({ params, body }) => {
    const docs = `${DOCS}/pulls/pulls#create-a-pull-request`;
    const repository = repositoryOf(params);
    if (repository === undefined) return notFound(docs);
    const parsed = createPullSchema.safeParse(body ?? {});
    if (!parsed.success) {
      return { status: 422, body: errorBody(422, `Invalid request.\n\n${z.prettifyError(parsed.error)}`, docs) };
    }
    const { title, head, base, draft } = parsed.data;
    const missing = (['title', 'head', 'base'] as const).filter((field) => !parsed.data[field]);
    if (missing.length > 0) {
      return validationFailed(
        missing.map((field) => ({ resource: 'PullRequest', code: 'missing_field', field })),
        docs,
      );
    }
    if (title === undefined || head === undefined || base === undefined) return validationFailed([], docs);
    const [headOwner, headRef] = head.includes(':')
      ? [head.slice(0, head.indexOf(':')), head.slice(head.indexOf(':') + 1)]
      : [repository.owner, head];
    // Only same-repository pull requests are modelled; a fork head is treated as unknown.
    const sha =
      headOwner.toLowerCase() === repository.owner.toLowerCase()
        ? await resolveHeadSha({ fullName: repository.fullName, cloneUrl: repository.cloneUrl }, headRef)
        : undefined;
    if (sha === undefined) {
      return validationFailed([{ resource: 'PullRequest', field: 'head', code: 'invalid' }], docs);
    }
    if (headRef === base) {
      return validationFailed(
        [{ resource: 'PullRequest', code: 'custom', message: `No commits between ${base} and ${headRef}` }],
        docs,
      );
    }
    // GitHub allows one open pull request per head and base.
    const existing = repository.pulls.find(
      (p) =>
        p.state === 'open' &&
        p.head.ref === headRef &&
        p.head.owner.toLowerCase() === headOwner.toLowerCase() &&
        p.base.ref === base,
    );
    if (existing !== undefined) {
      return validationFailed(
        [
          {
            resource: 'PullRequest',
            code: 'custom',
            message: `A pull request already exists for ${headOwner}:${headRef}.`,
          },
        ],
        docs,
      );
    }
    const now = isoSeconds(new Date());
    const number = repository.pulls.reduce((max, p) => Math.max(max, p.number), 0) + 1;
    const pull: StoredPull = {
      number,
      state: 'open',
      title,
      body: parsed.data.body ?? null,
      head: { ref: headRef, sha, owner: headOwner },
      base: { ref: base },
      merged: false,
      draft: draft ?? false,
      htmlUrl: `${repository.htmlUrl}/pull/${number}`,
      createdAt: now,
      updatedAt: now,
    };
    repository.pulls.push(pull);
    return {
      status: 201,
      body: pullJson(repository, pull, true),
      headers: { location: `${origin}${prefix}/repos/${repository.fullName}/pulls/${number}` },
    };
  });

  addRoute('GET', '/repos/:owner/:repo/pulls/:number', ({ params }) => {
    const docs = `${DOCS}/pulls/pulls#get-a-pull-request`;
    const repository = repositoryOf(params);
    const pull = repository?.pulls.find((p) => String(p.number) === params.number);
    if (repository === undefined || pull === undefined) return notFound(docs);
    return { status: 200, body: pullJson(repository, pull, true) };
  });

  addRoute(
    'GET',
    '/repos/:owner/:repo/installation',
    ({ params }) => {
      const repository = repositoryOf(params);
      if (repository === undefined)
        return notFound(`${DOCS}/apps/apps#get-a-repository-installation-for-the-authenticated-app`);
      return {
        status: 200,
        body: {
          id: installationId,
          account: { login: repository.owner, id: 1, type: 'Organization' },
          app_id: Number(options.appId ?? 1),
          app_slug: 'shipgate',
          target_type: 'Organization',
          repository_selection: 'all',
          access_tokens_url: `${origin}${prefix}/app/installations/${installationId}/access_tokens`,
          permissions: {
            contents: 'write',
            pull_requests: 'write',
            checks: 'read',
            statuses: 'read',
            metadata: 'read',
          },
          events: ['check_run', 'check_suite', 'pull_request', 'workflow_run'],
        },
      };
    },
    { auth: 'app' },
  );

  addRoute(
    'POST',
    '/app/installations/:id/access_tokens',
    ({ params, body }) => {
      const docs = `${DOCS}/apps/apps#create-an-installation-access-token-for-an-app`;
      if (params.id !== String(installationId)) return notFound(docs);
      const parsed = accessTokenRequestSchema.safeParse(body);
      if (!parsed.success) return { status: 422, body: errorBody(422, 'Invalid request.', docs) };
      const names = parsed.data?.repositories;
      const known = new Set([...repositories.values()].map((r) => r.name.toLowerCase()));
      if (names !== undefined && names.some((name) => !known.has(name.toLowerCase()))) {
        return {
          status: 422,
          body: errorBody(
            422,
            'There is at least one repository that does not exist or is not accessible to the parent installation.',
            docs,
          ),
        };
      }
      const token: IssuedToken = {
        token: `ghs_${randomBytes(27).toString('base64url').replace(/[-_]/g, 'x').slice(0, 36)}`,
        installationId,
        repositories: names,
        expiresAt: isoSeconds(new Date(Date.now() + 3_600_000)),
      };
      issuedTokens.push(token);
      const scoped = [...repositories.values()].filter((r) =>
        names?.some((n) => n.toLowerCase() === r.name.toLowerCase()),
      );
      return {
        status: 201,
        body: {
          token: token.token,
          expires_at: token.expiresAt,
          permissions: parsed.data?.permissions ?? {
            contents: 'write',
            pull_requests: 'write',
            checks: 'read',
            statuses: 'read',
            metadata: 'read',
          },
          repository_selection: names === undefined ? 'all' : 'selected',
          ...(names === undefined ? {} : { repositories: scoped.map((r) => repositoryJson(r)) }),
        },
      };
    },
    { auth: 'app' },
  );

  // --- CI state (issue 4): check runs, statuses, annotations, job logs, protection, rulesets ---

  interface StoredCheckRun {
    id: number;
    name: string;
    startedAt: string | null;
    completedAt: string | null;
    /** The REST JSON; `annotations_count` is filled in when answering unless the test fixed it. */
    render: () => JsonObject;
  }
  interface StoredStatus {
    setup: CommitStatusSetup;
    id: number;
    createdAt: string;
    json: JsonObject;
  }
  const ciKey = (fullName: string, ref: string): string => `${fullName.toLowerCase()}@${ref}`;
  const branchKey = (fullName: string, branch: string): string => `${fullName.toLowerCase()}#${branch}`;
  const checkRuns = new Map<string, StoredCheckRun[]>();
  const checkRunRepository = new Map<number, { fullName: string; sha: string }>();
  const statuses = new Map<string, StoredStatus[]>();
  const annotations = new Map<number, AnnotationSetup[]>();
  const jobLogs = new Map<number, string>();
  const downloads = new Map<string, { text: string; expiresAt: number }>();
  const logDownloads: LogDownload[] = [];
  const requiredChecks = new Map<string, string[]>();
  const branchRules = new Map<string, JsonObject[]>();
  // Realistically large ids: GitHub's check run and status ids are well past 2^32.
  let nextCheckRunId = 21_000_000_001;
  let nextStatusId = 30_000_000_001;
  /** How long a log download URL stays valid (GitHub's signed URLs last about a minute). */
  const DOWNLOAD_TTL_MS = 60_000;
  const GITHUB_ACTIONS_APP = { id: 15368, slug: 'github-actions', name: 'GitHub Actions' };

  function requireRepository(fullName: string): Repository {
    const repository = repositories.get(fullName.toLowerCase());
    if (repository === undefined) throw new Error(`github fake: unknown repository ${fullName} (setRepository first)`);
    return repository;
  }

  /** Pagination as GitHub does it: `per_page` (default 30), `page`, and a `Link` header with prev/next/last/first. */
  function paginate<T>(
    items: T[],
    query: URLSearchParams,
    path: string,
    maxPerPage = 100,
  ): { slice: T[]; headers: Record<string, string> } {
    const perPage = Math.min(Math.max(Number(query.get('per_page') ?? 30) || 30, 1), maxPerPage);
    const page = Math.max(Number(query.get('page') ?? 1) || 1, 1);
    const last = Math.max(Math.ceil(items.length / perPage), 1);
    const link = (n: number): string => {
      const next = new URLSearchParams(query);
      next.set('page', String(n));
      return `<${origin}${prefix}${path}?${next.toString()}>`;
    };
    const rels: string[] = [];
    if (page > 1) rels.push(`${link(Math.min(page - 1, last))}; rel="prev"`);
    if (page < last) rels.push(`${link(page + 1)}; rel="next"`, `${link(last)}; rel="last"`);
    if (page > 1) rels.push(`${link(1)}; rel="first"`);
    return {
      slice: items.slice((page - 1) * perPage, page * perPage),
      headers: rels.length === 0 ? {} : { link: rels.join(', ') },
    };
  }

  function setCheckRuns(fullName: string, sha: string, runs: CheckRunSetup[]): Array<{ id: number; name: string }> {
    const repository = requireRepository(fullName);
    const api = `${origin}${prefix}/repos/${repository.fullName}`;
    const previous = checkRuns.get(ciKey(fullName, sha)) ?? [];
    const now = isoSeconds(new Date());
    const suiteId = Number.parseInt(
      createHash('sha1').update(`${repository.fullName}@${sha}`).digest('hex').slice(0, 8),
      16,
    );
    const used = new Set<number>();
    const stored = runs.map((run): StoredCheckRun => {
      // Same name, no id: the same run moving on (queued → completed), so its id and start time stay.
      const prior = previous.find((p) =>
        run.id !== undefined ? p.id === run.id : p.name === run.name && !used.has(p.id),
      );
      const id = run.id ?? prior?.id ?? nextCheckRunId++;
      used.add(id);
      const status = run.status ?? (run.conclusion !== undefined && run.conclusion !== null ? 'completed' : 'queued');
      const conclusion = run.conclusion !== undefined ? run.conclusion : status === 'completed' ? 'success' : null;
      const startedAt = run.started_at !== undefined ? run.started_at : (prior?.startedAt ?? now);
      const completedAt =
        run.completed_at !== undefined ? run.completed_at : status === 'completed' ? (prior?.completedAt ?? now) : null;
      const htmlUrl = run.html_url ?? `${repository.htmlUrl}/actions/runs/${suiteId}/job/${id}`;
      const app: JsonObject | null =
        run.app === null
          ? null
          : {
              id: run.app?.id ?? GITHUB_ACTIONS_APP.id,
              slug: run.app?.slug ?? GITHUB_ACTIONS_APP.slug,
              node_id: Buffer.from(`03:App${run.app?.id ?? GITHUB_ACTIONS_APP.id}`).toString('base64'),
              owner: { login: 'github', id: 9919, type: 'Organization' },
              name: run.app?.name ?? GITHUB_ACTIONS_APP.name,
              description: '',
              external_url: 'https://help.github.com/en/actions',
              html_url: `https://github.com/apps/${run.app?.slug ?? GITHUB_ACTIONS_APP.slug}`,
            };
      checkRunRepository.set(id, { fullName: repository.fullName, sha });
      return {
        id,
        name: run.name,
        startedAt,
        completedAt,
        render: () => ({
          id,
          name: run.name,
          node_id: Buffer.from(`04:CheckRun${id}`).toString('base64'),
          head_sha: sha,
          external_id: run.external_id ?? '',
          url: `${api}/check-runs/${id}`,
          html_url: htmlUrl,
          details_url: run.details_url !== undefined ? run.details_url : htmlUrl,
          status,
          conclusion,
          started_at: startedAt,
          completed_at: completedAt,
          output: {
            title: run.output?.title ?? null,
            summary: run.output?.summary ?? null,
            text: run.output?.text ?? null,
            annotations_count: run.output?.annotations_count ?? annotations.get(id)?.length ?? 0,
            annotations_url: `${api}/check-runs/${id}/annotations`,
          },
          check_suite: { id: run.check_suite?.id ?? suiteId },
          app,
          pull_requests: [],
        }),
      };
    });
    checkRuns.set(ciKey(fullName, sha), stored);
    return stored.map(({ id, name }) => ({ id, name }));
  }

  function setStatuses(fullName: string, sha: string, setups: CommitStatusSetup[]): void {
    const repository = requireRepository(fullName);
    const previous = statuses.get(ciKey(fullName, sha)) ?? [];
    const now = isoSeconds(new Date());
    const stored = setups.map((setup, index): StoredStatus => {
      // An unchanged entry keeps its id and times, so re-setting the same list changes no ETag.
      const prior = previous[index];
      const same = prior !== undefined && JSON.stringify(setup) === JSON.stringify(prior.setup);
      const id = setup.id ?? (same ? prior.id : nextStatusId++);
      const createdAt = setup.created_at ?? (same ? prior.createdAt : now);
      return {
        setup,
        id,
        createdAt,
        json: {
          url: `${origin}${prefix}/repos/${repository.fullName}/statuses/${sha}`,
          avatar_url: 'https://avatars.githubusercontent.com/u/9919?v=4',
          id,
          node_id: Buffer.from(`011:StatusContext${id}`).toString('base64'),
          state: setup.state,
          description: setup.description ?? null,
          target_url: setup.target_url ?? null,
          context: setup.context ?? 'default',
          created_at: createdAt,
          updated_at: setup.updated_at ?? createdAt,
          creator: { login: 'ci-bot', id: 3, type: 'Bot' },
        },
      };
    });
    statuses.set(ciKey(fullName, sha), stored);
  }

  function pullOf(fullName: string, number: number): { repository: Repository; pull: StoredPull } {
    const repository = requireRepository(fullName);
    const pull = repository.pulls.find((p) => p.number === number);
    if (pull === undefined) throw new Error(`github fake: no pull request #${number} in ${fullName}`);
    return { repository, pull };
  }

  addRoute('GET', '/repos/:owner/:repo/commits/:ref/check-runs', ({ params, query }) => {
    const repository = repositoryOf(params);
    if (repository === undefined) return notFound(`${DOCS}/checks/runs#list-check-runs-for-a-git-reference`);
    const ref = params.ref ?? '';
    const filter = query.get('filter') ?? 'latest';
    if (filter !== 'latest' && filter !== 'all') {
      return validationFailed(
        [{ resource: 'CheckRun', field: 'filter', code: 'invalid' }],
        `${DOCS}/checks/runs#list-check-runs-for-a-git-reference`,
      );
    }
    let runs = checkRuns.get(ciKey(repository.fullName, ref)) ?? [];
    if (filter === 'latest') {
      // A re-run is a new check run with the same name; `latest` keeps only the newest attempt.
      const newest = new Map<string, number>();
      for (const run of runs) newest.set(run.name, Math.max(newest.get(run.name) ?? 0, run.id));
      runs = runs.filter((run) => newest.get(run.name) === run.id);
    }
    const checkName = query.get('check_name');
    const rendered = runs
      .filter((run) => checkName === null || run.name === checkName)
      .map((run) => run.render())
      .filter((run) => query.get('status') === null || run.status === query.get('status'));
    const { slice, headers } = paginate(
      rendered,
      query,
      `/repos/${repository.fullName}/commits/${encodeURIComponent(ref)}/check-runs`,
    );
    return { status: 200, body: { total_count: rendered.length, check_runs: slice }, headers };
  });

  addRoute('GET', '/repos/:owner/:repo/commits/:ref/statuses', ({ params, query }) => {
    const repository = repositoryOf(params);
    if (repository === undefined) return notFound(`${DOCS}/commits/statuses#list-commit-statuses-for-a-reference`);
    const ref = params.ref ?? '';
    const newestFirst = [...(statuses.get(ciKey(repository.fullName, ref)) ?? [])].reverse().map((s) => s.json);
    const { slice, headers } = paginate(
      newestFirst,
      query,
      `/repos/${repository.fullName}/commits/${encodeURIComponent(ref)}/statuses`,
    );
    return { status: 200, body: slice, headers };
  });

  // The combined status (docs: commits/statuses#get-the-combined-status-for-a-specific-reference): the
  // latest status of each context, newest first, without `creator`, paginated like GitHub's.
  addRoute('GET', '/repos/:owner/:repo/commits/:ref/status', ({ params, query }) => {
    const repository = repositoryOf(params);
    if (repository === undefined) return notFound(`${DOCS}/commits/statuses#get-the-combined-status-for-a-specific-reference`);
    const ref = params.ref ?? '';
    const latest = new Map<string, JsonObject>();
    for (const stored of [...(statuses.get(ciKey(repository.fullName, ref)) ?? [])].reverse()) {
      const { creator: _creator, ...status } = stored.json;
      const context = stored.setup.context ?? 'default';
      if (!latest.has(context)) latest.set(context, status);
    }
    const all = [...latest.values()];
    const states = all.map((status) => status.state);
    const state = states.some((s) => s === 'failure' || s === 'error') ? 'failure' : states.length === 0 || states.some((s) => s === 'pending') ? 'pending' : 'success';
    const path = `/repos/${repository.fullName}/commits/${encodeURIComponent(ref)}/status`;
    const { slice, headers } = paginate(all, query, path);
    return {
      status: 200,
      body: {
        state,
        statuses: slice,
        sha: ref,
        total_count: all.length,
        repository: { id: 1, full_name: repository.fullName },
        commit_url: `${origin}${prefix}/repos/${repository.fullName}/commits/${ref}`,
        url: `${origin}${prefix}${path}`,
      },
      headers,
    };
  });

  addRoute('GET', '/repos/:owner/:repo/check-runs/:id/annotations', ({ params, query }) => {
    const docs = `${DOCS}/checks/runs#list-check-run-annotations`;
    const repository = repositoryOf(params);
    const id = Number(params.id);
    const owner = checkRunRepository.get(id);
    const list = annotations.get(id);
    const known = owner !== undefined && owner.fullName.toLowerCase() === repository?.fullName.toLowerCase();
    if (repository === undefined || (!known && list === undefined)) return notFound(docs);
    const blob = `${repository.htmlUrl}/blob/${owner?.sha ?? 'HEAD'}`;
    const rendered = (list ?? []).map((a): JsonObject => ({
      path: a.path,
      blob_href: `${blob}/${a.path}`,
      start_line: a.start_line ?? 1,
      start_column: a.start_column ?? null,
      end_line: a.end_line ?? a.start_line ?? 1,
      end_column: a.end_column ?? null,
      annotation_level: a.annotation_level ?? 'failure',
      title: a.title ?? null,
      message: a.message,
      raw_details: a.raw_details ?? null,
    }));
    const { slice, headers } = paginate(rendered, query, `/repos/${repository.fullName}/check-runs/${id}/annotations`);
    return { status: 200, body: slice, headers };
  });

  addRoute('GET', '/repos/:owner/:repo/actions/jobs/:id/logs', ({ params }) => {
    const docs = `${DOCS}/actions/workflow-jobs#download-job-logs-for-a-workflow-run`;
    const repository = repositoryOf(params);
    const text = jobLogs.get(Number(params.id));
    if (repository === undefined || text === undefined) return notFound(docs);
    // GitHub redirects to a pre-signed URL on another host; here a one-minute URL on this server,
    // so a client that followed with its Authorization header would be seen doing it.
    const token = randomBytes(16).toString('hex');
    downloads.set(token, { text, expiresAt: Date.now() + DOWNLOAD_TTL_MS });
    return {
      status: 302,
      headers: { location: `${origin}/_downloads/${token}?sv=2024-01-01&sig=${token.slice(0, 8)}` },
    };
  });

  addRoute('GET', '/repos/:owner/:repo/branches/:branch/protection/required_status_checks', ({ params }) => {
    const docs = `${DOCS}/branches/branch-protection#get-status-checks-protection`;
    const repository = repositoryOf(params);
    const branch = params.branch ?? '';
    const contexts = repository === undefined ? undefined : requiredChecks.get(branchKey(repository.fullName, branch));
    if (repository === undefined) return notFound(docs);
    if (contexts === undefined) return { status: 404, body: errorBody(404, 'Branch not protected', docs) };
    const url = `${origin}${prefix}/repos/${repository.fullName}/branches/${encodeURIComponent(branch)}/protection/required_status_checks`;
    return {
      status: 200,
      body: {
        url,
        strict: true,
        contexts,
        contexts_url: `${url}/contexts`,
        checks: contexts.map((context) => ({ context, app_id: null })),
      },
    };
  });

  addRoute('GET', '/repos/:owner/:repo/rules/branches/:branch', ({ params, query }) => {
    const repository = repositoryOf(params);
    if (repository === undefined) return notFound(`${DOCS}/repos/rules#get-rules-for-a-branch`);
    const branch = params.branch ?? '';
    const rules = branchRules.get(branchKey(repository.fullName, branch)) ?? [];
    const { slice, headers } = paginate(
      rules,
      query,
      `/repos/${repository.fullName}/rules/branches/${encodeURIComponent(branch)}`,
    );
    return { status: 200, body: slice, headers };
  });

  /** A log download (outside the API: no rate limit, no auth, not a route). Undefined when not one. */
  function download(pathname: string, headers: Record<string, string>): RouteAnswer | undefined {
    const match = /^\/_downloads\/([0-9a-f]+)$/.exec(pathname);
    if (match === null) return undefined;
    logDownloads.push({ path: pathname, authorization: headers.authorization !== undefined, at: Date.now() });
    const entry = downloads.get(match[1] ?? '');
    // Blob storage answers an expired signature with 403 (no JSON: plain text like the log).
    if (entry === undefined || entry.expiresAt < Date.now()) return { status: 403, body: 'AuthenticationFailed' };
    return { status: 200, body: entry.text };
  }

  // --- request handling ------------------------------------------------------------------

  /** Undefined when allowed; otherwise the 401/404 answer GitHub would give. */
  function authorize(
    route: Route,
    headers: Record<string, string>,
    params: Record<string, string>,
  ): RouteAnswer | undefined {
    const authorization = parseAuthorization(headers.authorization);
    if (route.auth === 'none') return undefined;
    if (route.auth === 'app') {
      const payload = authorization?.scheme === 'bearer' ? jwtPayload(authorization.credential) : undefined;
      if (payload === undefined) {
        return { status: 401, body: errorBody(401, 'A JSON web token could not be decoded', DOCS) };
      }
      const now = Math.floor(Date.now() / 1000);
      if (payload.exp < now || payload.exp - payload.iat > 600) {
        return { status: 401, body: errorBody(401, "'Expiration time' claim ('exp') is too far in the future", DOCS) };
      }
      if (options.appId !== undefined && String(payload.iss) !== options.appId) {
        return { status: 401, body: errorBody(401, 'Integration not found', DOCS) };
      }
      return undefined;
    }
    if (!requireToken) return undefined;
    const credential =
      authorization?.scheme === 'token' || authorization?.scheme === 'bearer' ? authorization.credential : undefined;
    if (credential !== undefined && credential === options.token) return undefined;
    const issued = issuedTokens.find((t) => t.token === credential && Date.parse(t.expiresAt) > Date.now());
    if (issued === undefined) return { status: 401, body: errorBody(401, 'Bad credentials', DOCS) };
    // A token limited to some repositories does not see the others (GitHub answers 404).
    if (issued.repositories !== undefined && params.repo !== undefined) {
      const repo = params.repo.toLowerCase();
      if (!issued.repositories.some((name) => name.toLowerCase() === repo)) return notFound();
    }
    return undefined;
  }

  function rateLimitHeaders(): Record<string, string> {
    return {
      'x-ratelimit-limit': String(rateLimit.limit),
      'x-ratelimit-remaining': String(Math.max(rateLimit.limit - rateLimit.used, 0)),
      'x-ratelimit-used': String(rateLimit.used),
      'x-ratelimit-reset': String(rateLimit.reset),
      'x-ratelimit-resource': 'core',
    };
  }

  async function handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const method = (request.method ?? 'GET').toUpperCase();
    const url = new URL(request.url ?? '/', 'http://github.test');
    const headers = headersOf(request);
    const raw = await readBody(request);
    let body: JsonValue | undefined;
    let badJson = false;
    if (raw !== '') {
      try {
        body = z.json().parse(JSON.parse(raw));
      } catch {
        body = raw;
        badJson = true;
      }
    }
    let path = url.pathname;
    const outsidePrefix = prefix !== '' && !(path === prefix || path.startsWith(`${prefix}/`));
    if (!outsidePrefix) path = path.slice(prefix.length) || '/';
    const record: RecordedRequest = {
      method,
      path,
      query: Object.fromEntries(url.searchParams),
      headers,
      body,
      status: 0,
      injected: false,
      at: Date.now(),
    };
    requests.push(record);

    const send = (answer: RouteAnswer, conditional: boolean): void => {
      const extra: Record<string, string> = {
        'content-type': 'application/json; charset=utf-8',
        'x-github-media-type': 'github.v3; format=json',
        'x-github-request-id': `0000:${(++requestCounter).toString(16).padStart(5, '0')}:0000000:0000000:00000000`,
      };
      let text = answer.body === undefined ? '' : JSON.stringify(answer.body);
      let status = answer.status;
      if (method === 'GET' && status === 200) {
        const etag = etagOf(text);
        extra.etag = etag;
        extra['cache-control'] = 'private, max-age=60, s-maxage=60';
        extra.vary = 'Accept, Authorization, Cookie, X-GitHub-OTP';
        if (conditional && ifNoneMatchHits(headers['if-none-match'], etag)) {
          status = 304;
          text = '';
          delete extra['content-type'];
        }
      }
      // Conditional hits are free on GitHub; everything else spends one request.
      if (status !== 304) rateLimit.used += 1;
      const all = { ...extra, ...rateLimitHeaders(), ...answer.headers };
      if (text !== '') all['content-length'] = String(Buffer.byteLength(text));
      record.status = status;
      response.writeHead(status, all);
      response.end(text);
    };

    const downloaded = method === 'GET' ? download(url.pathname, headers) : undefined;
    if (downloaded !== undefined) {
      // Served as blob storage would: plain text, no x-ratelimit-* headers, nothing charged.
      const text = typeof downloaded.body === 'string' ? downloaded.body : '';
      record.status = downloaded.status;
      response.writeHead(downloaded.status, {
        'content-type': downloaded.status === 200 ? 'text/plain; charset=utf-8' : 'application/xml',
        'content-length': String(Buffer.byteLength(text)),
      });
      response.end(text);
      return;
    }

    const holdIndex = holds.findIndex((h) => h.method === method && pathMatches(h.path, path));
    let releasedWith: FailSpec | undefined;
    if (holdIndex >= 0) {
      const [hold] = holds.splice(holdIndex, 1);
      if (hold !== undefined) {
        const clientGone = new Promise<'gone'>((resolve) =>
          response.on('close', () => {
            if (!response.writableFinished) resolve('gone');
          }),
        );
        hold.arrive();
        const outcome = await Promise.race([hold.released.then((spec) => ({ spec })), clientGone]);
        if (outcome === 'gone') {
          hold.gone();
          return;
        }
        releasedWith = outcome.spec;
      }
    }
    if (releasedWith !== undefined) {
      record.injected = true;
      send({ status: releasedWith.status, body: releasedWith.body ?? errorBody(releasedWith.status, 'Injected failure'), headers: releasedWith.headers }, false);
      return;
    }

    const failureIndex = failures.findIndex((f) => f.method === method && pathMatches(f.path, path));
    if (failureIndex >= 0) {
      const [failure] = failures.splice(failureIndex, 1);
      if (failure !== undefined) {
        record.injected = true;
        const fallbackBody = errorBody(
          failure.spec.status,
          failure.spec.status >= 500 ? 'Server Error' : 'Injected failure',
        );
        send(
          { status: failure.spec.status, body: failure.spec.body ?? fallbackBody, headers: failure.spec.headers },
          false,
        );
        return;
      }
    }

    const matched = outsidePrefix
      ? undefined
      : routes
          .map((route) => ({ route, params: route.method === method ? route.match(path) : undefined }))
          .find((m) => m.params !== undefined);
    if (matched?.params === undefined) {
      unexpected.push({ method, path: url.pathname, reason: 'no such route', at: Date.now() });
      send(notFound(), false);
      return;
    }
    if (badJson) {
      send({ status: 400, body: errorBody(400, 'Problems parsing JSON') }, false);
      return;
    }
    const refused = authorize(matched.route, headers, matched.params);
    if (refused !== undefined) {
      send(refused, false);
      return;
    }
    const answer = await matched.route.handler({ params: matched.params, query: url.searchParams, body, headers });
    send(answer, true);
  }

  const http = createServer((request, response) => {
    handle(request, response).catch((error: unknown) => {
      unexpected.push({
        method: request.method ?? '',
        path: request.url ?? '',
        reason: `handler threw: ${error instanceof Error ? error.message : String(error)}`,
        at: Date.now(),
      });
      if (!response.headersSent) response.writeHead(500, { 'content-type': 'application/json; charset=utf-8' });
      response.end(JSON.stringify(errorBody(500, 'Server Error')));
    });
  });
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
  const address = http.address();
  if (address === null || typeof address === 'string') throw new Error('github fake: no TCP address');
  origin = `http://127.0.0.1:${address.port}`;

  function requestsTo(filter: RequestFilter): RecordedRequest[] {
    return requests.filter(
      (r) =>
        (filter.method === undefined || r.method === filter.method.toUpperCase()) && pathMatches(filter.path, r.path),
    );
  }

  return {
    apiUrl: `${origin}${prefix}`,
    url: origin,
    installationId,
    requests,
    unexpected,
    issuedTokens,
    setRepository(fullName, setup) {
      const [owner, name, ...rest] = fullName.split('/');
      if (owner === undefined || name === undefined || owner === '' || name === '' || rest.length > 0) {
        throw new Error(`github fake: repository must be owner/name, got ${fullName}`);
      }
      const key = fullName.toLowerCase();
      const existing = repositories.get(key);
      repositories.set(key, {
        id: existing?.id ?? nextRepositoryId++,
        owner,
        name,
        fullName,
        cloneUrl: setup.cloneUrl,
        defaultBranch: setup.defaultBranch ?? 'main',
        htmlUrl: setup.htmlUrl ?? `${origin}/${fullName}`,
        pulls: existing?.pulls ?? [],
      });
    },
    pulls(fullName) {
      return repositories.get(fullName.toLowerCase())?.pulls ?? [];
    },
    setHeadShaResolver(resolver) {
      resolveHeadSha = resolver;
    },
    failNext(method, path, spec) {
      failures.push({ method: method.toUpperCase(), path, spec });
    },
    holdNext(method, path) {
      let arrive = (): void => undefined;
      let gone = (): void => undefined;
      let release = (_spec?: FailSpec): void => undefined;
      const arrived = new Promise<void>((resolve) => (arrive = resolve));
      const clientGone = new Promise<void>((resolve) => (gone = resolve));
      const released = new Promise<FailSpec | undefined>((resolve) => (release = resolve));
      holds.push({ method: method.toUpperCase(), path, arrive, gone, released });
      return { arrived, clientGone, release: (spec) => release(spec) };
    },
    requestsTo,
    countStatuses(filter = {}) {
      const counts: Record<number, number> = {};
      for (const r of requestsTo(filter)) counts[r.status] = (counts[r.status] ?? 0) + 1;
      return counts;
    },
    route: addRoute,
    setCheckRuns,
    setStatuses,
    setAnnotations(checkRunId, list) {
      annotations.set(checkRunId, list);
    },
    setJobLog(jobId, text) {
      jobLogs.set(jobId, text);
    },
    setRequiredChecks(fullName, branch, contexts) {
      requireRepository(fullName);
      if (contexts === undefined) requiredChecks.delete(branchKey(fullName, branch));
      else requiredChecks.set(branchKey(fullName, branch), [...contexts]);
    },
    setBranchRules(fullName, branch, rules) {
      const repository = requireRepository(fullName);
      branchRules.set(
        branchKey(fullName, branch),
        rules.map((rule, index): JsonObject => ({
          type: rule.type,
          ...(rule.parameters === undefined ? {} : { parameters: rule.parameters }),
          ruleset_source_type: 'Repository',
          ruleset_source: repository.fullName,
          ruleset_id: rule.ruleset_id ?? 100 + index,
        })),
      );
    },
    mergePull(fullName, number, mergeCommitSha) {
      const { pull } = pullOf(fullName, number);
      pull.state = 'closed';
      pull.merged = true;
      pull.mergeCommitSha = mergeCommitSha;
      pull.updatedAt = isoSeconds(new Date());
    },
    closePull(fullName, number) {
      const { pull } = pullOf(fullName, number);
      pull.state = 'closed';
      pull.updatedAt = isoSeconds(new Date());
    },
    logDownloads,
    close() {
      return new Promise<void>((resolve, reject) => {
        http.close((error) => (error ? reject(error) : resolve()));
        // Octokit's fetch keeps connections alive; without this close() waits for them to idle out.
        http.closeAllConnections();
      });
    },
  };
}
