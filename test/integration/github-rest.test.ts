import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { PassThrough } from 'node:stream';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createGitHubRest, type GitHubRestOptions } from '../../src/adapters/github/github-rest.js';
import { ExternalOutageError, RefusedError } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';
import { createMetrics, type Metrics } from '../../src/metrics.js';
import { createScrubber } from '../../src/security/scrubber.js';
import type { GitHubPort } from '../../src/ports/github.js';
import {
  primaryRateLimit,
  secondaryRateLimit,
  startGitHubServer,
  type GitHubServer,
} from '../helpers/github-server.js';

/**
 * The real GitHub adapter (Octokit with throttling and retry) against the local GitHub REST fake
 * (SPEC §5, §9). Waits are scaled to milliseconds with `retryAfterBaseMs: 1`, and each adapter has
 * its own `limiterId` so plugin-throttling's process-wide write spacing does not chain tests.
 */

// A classic 40-hex token: pino's secret scrubber does not recognise this shape, so a leak would show.
const TOKEN = randomBytes(20).toString('hex');
const BRANCH = 'shipgate/run-0001-fix-typo';

function git(cwd: string, ...args: string[]): string {
  return execFileSync('git', ['-c', 'user.name=test', '-c', 'user.email=test@example.com', ...args], {
    cwd,
    encoding: 'utf8',
    env: { PATH: process.env.PATH ?? '', HOME: cwd, GIT_CONFIG_NOSYSTEM: '1' },
  }).trim();
}

/** A bare repository with `main` and BRANCH, as the worker would have pushed it. */
function createBareRepository(dir: string): { bare: string; branchSha: string } {
  const bare = join(dir, 'shop.git');
  const work = join(dir, 'work');
  git(dir, 'init', '--quiet', '--bare', '--initial-branch=main', bare);
  git(dir, 'init', '--quiet', '--initial-branch=main', work);
  writeFileSync(join(work, 'README.md'), 'shop\n');
  git(work, 'add', 'README.md');
  git(work, 'commit', '--quiet', '-m', 'initial');
  git(work, 'checkout', '--quiet', '-b', BRANCH);
  writeFileSync(join(work, 'README.md'), 'shop, fixed\n');
  git(work, 'commit', '--quiet', '-am', 'fix typo');
  git(work, 'push', '--quiet', bare, 'main', BRANCH);
  return { bare, branchSha: git(work, 'rev-parse', 'HEAD') };
}

function captureLog(): { log: ReturnType<typeof createLogger>; text: () => string } {
  const stream = new PassThrough();
  let text = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    text += chunk;
  });
  return { log: createLogger({ level: 'trace', destination: stream }), text: () => text };
}

async function externalCalls(metrics: Metrics): Promise<Record<string, number>> {
  const metric = await metrics.registry.getSingleMetric('shipgate_external_calls_total')?.get();
  const counts: Record<string, number> = {};
  for (const value of metric?.values ?? []) {
    if (value.labels.system === 'github') counts[String(value.labels.status)] = value.value;
  }
  return counts;
}

describe('GitHub REST adapter against the GitHub fake (token auth)', () => {
  let dir: string;
  let repo: { bare: string; branchSha: string };
  let server: GitHubServer;
  let metrics: Metrics;
  let logs: ReturnType<typeof captureLog>;

  function adapter(overrides: Partial<GitHubRestOptions> = {}): GitHubPort {
    return createGitHubRest({
      apiUrl: server.apiUrl,
      auth: { kind: 'token', token: TOKEN },
      log: logs.log,
      metrics,
      retry: { retries: 2, retryAfterBaseMs: 1 },
      limiterId: randomUUID(),
      ...overrides,
    });
  }

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'shipgate-github-'));
    repo = createBareRepository(dir);
  });

  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  beforeEach(async () => {
    server = await startGitHubServer({
      token: TOKEN,
      // head.sha comes from the bare repository, as GitHub's would from the pushed branch.
      resolveHeadSha: (_repository, branch) => {
        try {
          return git(dir, '--git-dir', repo.bare, 'rev-parse', '--verify', '--quiet', `refs/heads/${branch}`);
        } catch {
          return undefined;
        }
      },
    });
    server.setRepository('acme/shop', { cloneUrl: pathToFileURL(repo.bare).href, defaultBranch: 'main' });
    metrics = createMetrics();
    logs = captureLog();
  });

  afterEach(async () => {
    expect(server.unexpected).toEqual([]);
    expect(logs.text()).not.toContain(TOKEN);
    await server.close();
  });

  it('getRepository returns the clone_url, default branch and html_url the API reports', async () => {
    const info = await adapter().getRepository('acme', 'shop');

    expect(info).toEqual({
      cloneUrl: pathToFileURL(repo.bare).href,
      defaultBranch: 'main',
      htmlUrl: `${server.url}/acme/shop`,
    });
    const [request] = server.requestsTo({ method: 'GET', path: '/repos/acme/shop' });
    expect(request?.headers.authorization).toBe(`token ${TOKEN}`);
    expect(request?.status).toBe(200);
    expect(await externalCalls(metrics)).toEqual({ '200': 1 });
  });

  it('opens a pull request once: the same call after a crash returns the same PR', async () => {
    const input = {
      owner: 'acme',
      repo: 'shop',
      head: BRANCH,
      base: 'main',
      title: 'Fix typo',
      body: 'Requested in Slack',
    };

    const first = await adapter().createPullRequest(input);
    // A new adapter, as in a new worker process after the first one died before recording the PR.
    const again = await adapter().createPullRequest(input);

    expect(first).toEqual({
      number: 1,
      url: `${server.url}/acme/shop/pull/1`,
      headSha: repo.branchSha,
      state: 'open',
      merged: false,
    });
    expect(again).toEqual(first);
    expect(server.pulls('acme/shop')).toHaveLength(1);
    expect(server.requestsTo({ method: 'POST', path: '/repos/acme/shop/pulls' }).map((r) => r.status)).toEqual([
      201, 422,
    ]);
    expect(server.requestsTo({ method: 'POST' })[0]?.body).toEqual({
      head: BRANCH,
      base: 'main',
      title: 'Fix typo',
      body: 'Requested in Slack',
    });
  });

  it('scrubs the title and body of the pull request it opens with the scrub it was given', async () => {
    const secret = 'configured-secret-value';
    const scrub = createScrubber([secret]).scrub;
    await adapter({ scrub }).createPullRequest({ owner: 'acme', repo: 'shop', head: BRANCH, base: 'main', title: `Fix ${secret}`, body: `echo ${secret}; ${TOKEN}` });

    expect(server.requestsTo({ method: 'POST' })[0]?.body).toMatchObject({ title: 'Fix [REDACTED]', body: `echo [REDACTED]; ${TOKEN}` });
    // Without a scrub of its own the adapter still removes token patterns.
    const ghs = `ghs_${'a1B2'.repeat(9)}`;
    await adapter().createPullRequest({ owner: 'acme', repo: 'shop', head: BRANCH, base: 'main', title: 't', body: `b ${ghs}` });
    expect(JSON.stringify(server.requestsTo({ method: 'POST' }))).not.toContain(ghs);
  });

  it('findOpenPullRequest finds the open PR by branch, and nothing for other branches or closed PRs', async () => {
    const github = adapter();
    const opened = await github.createPullRequest({
      owner: 'acme',
      repo: 'shop',
      head: BRANCH,
      base: 'main',
      title: 't',
      body: 'b',
    });

    await expect(github.findOpenPullRequest('acme', 'shop', BRANCH)).resolves.toEqual(opened);
    await expect(github.findOpenPullRequest('acme', 'shop', 'shipgate/other')).resolves.toBeUndefined();
    const list = server.requestsTo({ method: 'GET', path: '/repos/acme/shop/pulls' });
    expect(list[0]?.query).toEqual({ state: 'open', head: `acme:${BRANCH}` });

    const stored = server.pulls('acme/shop')[0]!;
    stored.state = 'closed';
    stored.merged = true;
    await expect(github.findOpenPullRequest('acme', 'shop', BRANCH)).resolves.toBeUndefined();
  });

  it('retries a 502 with plugin-retry and counts both answers', async () => {
    server.failNext('GET', '/repos/:owner/:repo', { status: 502 });

    await expect(adapter().getRepository('acme', 'shop')).resolves.toMatchObject({ defaultBranch: 'main' });

    expect(server.requestsTo({ path: '/repos/acme/shop' }).map((r) => r.status)).toEqual([502, 200]);
    expect(await externalCalls(metrics)).toEqual({ '502': 1, '200': 1 });
  });

  it('retries a POST that failed with 500 and opens the PR', async () => {
    server.failNext('POST', '/repos/acme/shop/pulls', { status: 500 });

    const pull = await adapter().createPullRequest({
      owner: 'acme',
      repo: 'shop',
      head: BRANCH,
      base: 'main',
      title: 't',
      body: 'b',
    });

    expect(pull.number).toBe(1);
    expect(server.requestsTo({ method: 'POST' }).map((r) => r.status)).toEqual([500, 201]);
  });

  it('reports an outage that outlasts the retries as ExternalOutageError', async () => {
    for (let i = 0; i < 3; i++) server.failNext('GET', '/repos/acme/shop', { status: 503 });

    const error: unknown = await adapter()
      .getRepository('acme', 'shop')
      .catch((e: unknown) => e);

    expect(error).toBeInstanceOf(ExternalOutageError);
    expect(String(error)).toMatch(/reading repository acme\/shop failed \(HTTP 503\)/);
    expect(server.requestsTo({ path: '/repos/acme/shop' })).toHaveLength(3);
  });

  it('turns a 422 validation error into a RefusedError without retrying', async () => {
    const error: unknown = await adapter()
      .createPullRequest({ owner: 'acme', repo: 'shop', head: 'main', base: 'main', title: 't', body: 'b' })
      .catch((e: unknown) => e);

    expect(error).toBeInstanceOf(RefusedError);
    expect(String(error)).toContain('HTTP 422');
    expect(String(error)).toContain('Validation Failed');
    expect(String(error)).toContain('No commits between main and main');
    expect(server.requestsTo({ method: 'POST' })).toHaveLength(1);
  });

  it('refuses an unknown head branch and an unknown repository', async () => {
    const github = adapter();
    await expect(
      github.createPullRequest({
        owner: 'acme',
        repo: 'shop',
        head: 'no-such-branch',
        base: 'main',
        title: 't',
        body: 'b',
      }),
    ).rejects.toThrow(RefusedError);
    await expect(github.getRepository('acme', 'nope')).rejects.toThrow(
      /GitHub refused reading repository acme\/nope \(HTTP 404\): Not Found/,
    );
  });

  it('refuses bad credentials as RefusedError', async () => {
    await expect(adapter({ auth: { kind: 'token', token: 'wrong' } }).getRepository('acme', 'shop')).rejects.toThrow(
      /HTTP 401\): Bad credentials/,
    );
  });

  it('waits out a primary rate limit (plugin-throttling) and logs it', async () => {
    server.failNext('GET', '/repos/acme/shop', primaryRateLimit());

    await expect(adapter().getRepository('acme', 'shop')).resolves.toMatchObject({ defaultBranch: 'main' });

    expect(server.requestsTo({ path: '/repos/acme/shop' }).map((r) => r.status)).toEqual([403, 200]);
    expect(logs.text()).toContain('GitHub rate limit reached');
  });

  it('gives up on a primary rate limit after two retries', async () => {
    for (let i = 0; i < 3; i++) server.failNext('GET', '/repos/acme/shop', primaryRateLimit());

    await expect(adapter().getRepository('acme', 'shop')).rejects.toThrow(ExternalOutageError);
    expect(server.requestsTo({ path: '/repos/acme/shop' }).map((r) => r.status)).toEqual([403, 403, 403]);
  });

  it('does not sleep through a rate limit that resets far in the future', async () => {
    server.failNext('GET', '/repos/acme/shop', primaryRateLimit({ resetInSeconds: 3600 }));

    const error: unknown = await adapter({ retry: { retryAfterBaseMs: 1000, retries: 2 } })
      .getRepository('acme', 'shop')
      .catch((e: unknown) => e);

    expect(error).toBeInstanceOf(ExternalOutageError);
    expect(String(error)).toContain('rate limited (HTTP 403)');
    expect(server.requestsTo({ path: '/repos/acme/shop' })).toHaveLength(1);
  });

  it('retries a secondary rate limit once (403 or 429), then reports an outage', async () => {
    server.failNext('GET', '/repos/acme/shop', secondaryRateLimit({ status: 429 }));
    await expect(adapter().getRepository('acme', 'shop')).resolves.toMatchObject({ defaultBranch: 'main' });

    server.failNext('GET', '/repos/acme/shop', secondaryRateLimit());
    server.failNext('GET', '/repos/acme/shop', secondaryRateLimit());
    await expect(adapter().getRepository('acme', 'shop')).rejects.toThrow(
      /rate limited \(HTTP 403\).*secondary rate limit/,
    );

    expect(server.requestsTo({ path: '/repos/acme/shop' }).map((r) => r.status)).toEqual([429, 200, 403, 403]);
    expect(logs.text()).toContain('GitHub secondary rate limit reached');
  });

  it('pushCredentials hands out the configured token for token auth', async () => {
    await expect(adapter().pushCredentials('acme', 'shop')).resolves.toEqual({
      username: 'x-access-token',
      password: TOKEN,
    });
    expect(server.requests).toHaveLength(0);
  });

  it('the fake answers If-None-Match with 304 and does not charge the rate limit', async () => {
    const headers = { authorization: `token ${TOKEN}` };
    const first = await fetch(`${server.apiUrl}/repos/acme/shop`, { headers });
    const etag = first.headers.get('etag') ?? '';
    await first.arrayBuffer();
    const second = await fetch(`${server.apiUrl}/repos/acme/shop`, {
      headers: { ...headers, 'if-none-match': `W/${etag}` },
    });

    expect(etag).toMatch(/^"[0-9a-f]{32}"$/);
    expect(second.status).toBe(304);
    expect(await second.text()).toBe('');
    expect(second.headers.get('x-ratelimit-remaining')).toBe(first.headers.get('x-ratelimit-remaining'));
    expect(server.countStatuses({ method: 'GET', path: '/repos/:owner/:repo' })).toEqual({ 200: 1, 304: 1 });
  });
});

describe('GitHub REST adapter against the GitHub fake (App auth)', () => {
  const APP_ID = '123456';
  const { privateKey } = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs1', format: 'pem' },
  });
  let server: GitHubServer;
  let metrics: Metrics;
  let logs: ReturnType<typeof captureLog>;

  function appAdapter(installationId?: string, overrides: Partial<GitHubRestOptions> = {}): GitHubPort {
    return createGitHubRest({
      apiUrl: server.apiUrl,
      auth: { kind: 'app', appId: APP_ID, privateKey, ...(installationId === undefined ? {} : { installationId }) },
      log: logs.log,
      metrics,
      retry: { retries: 2, retryAfterBaseMs: 1 },
      limiterId: randomUUID(),
      ...overrides,
    });
  }

  beforeEach(async () => {
    // pathPrefix as on GitHub Enterprise Server: baseUrl carries a path.
    server = await startGitHubServer({ appId: APP_ID, pathPrefix: '/api/v3' });
    server.setRepository('acme/shop', { cloneUrl: 'file:///srv/git/shop.git', defaultBranch: 'main' });
    server.setRepository('acme/other', { cloneUrl: 'file:///srv/git/other.git', defaultBranch: 'main' });
    metrics = createMetrics();
    logs = captureLog();
  });

  afterEach(async () => {
    expect(server.unexpected).toEqual([]);
    const text = logs.text();
    for (const issued of server.issuedTokens) expect(text).not.toContain(issued.token);
    expect(text).not.toContain('PRIVATE KEY');
    await server.close();
  });

  it('fetches an installation token scoped to the repository for pushing (installation id configured)', async () => {
    const github = appAdapter(String(server.installationId));

    const credentials = await github.pushCredentials('acme', 'shop');

    const [tokenRequest] = server.requestsTo({ method: 'POST', path: '/app/installations/:id/access_tokens' });
    expect(tokenRequest?.path).toBe(`/app/installations/${server.installationId}/access_tokens`);
    expect(tokenRequest?.headers.authorization).toMatch(/^bearer [\w-]+\.[\w-]+\.[\w-]+$/);
    expect(tokenRequest?.body).toMatchObject({ repositories: ['shop'] });
    expect(tokenRequest?.status).toBe(201);
    expect(server.issuedTokens).toHaveLength(1);
    expect(server.issuedTokens[0]?.repositories).toEqual(['shop']);
    expect(credentials).toEqual({ username: 'x-access-token', password: server.issuedTokens[0]?.token });
    expect(credentials.password).toMatch(/^ghs_/);

    // Cached by auth-app: a second push in the same hour asks for no new token.
    await expect(github.pushCredentials('acme', 'shop')).resolves.toEqual(credentials);
    expect(server.issuedTokens).toHaveLength(1);
  });

  it('calls the REST API with an installation token', async () => {
    const github = appAdapter(String(server.installationId));

    await expect(github.getRepository('acme', 'shop')).resolves.toMatchObject({ cloneUrl: 'file:///srv/git/shop.git' });

    const [repoRequest] = server.requestsTo({ method: 'GET', path: '/repos/acme/shop' });
    expect(repoRequest?.headers.authorization).toBe(`token ${server.issuedTokens[0]?.token}`);
    expect(repoRequest?.status).toBe(200);
    // The token request auth-app sends by itself is counted too.
    expect(await externalCalls(metrics)).toEqual({ '201': 1, '200': 1 });
  });

  it('looks the installation up by repository when no installation id is configured', async () => {
    const github = appAdapter();

    const credentials = await github.pushCredentials('acme', 'shop');
    await github.getRepository('acme', 'shop');
    await github.pushCredentials('acme', 'shop');

    const lookups = server.requestsTo({ method: 'GET', path: '/repos/acme/shop/installation' });
    expect(lookups).toHaveLength(1);
    expect(lookups[0]?.headers.authorization).toMatch(/^bearer [\w-]+\.[\w-]+\.[\w-]+$/);
    expect(lookups[0]?.status).toBe(200);
    expect(credentials.password).toBe(server.issuedTokens.find((t) => t.repositories !== undefined)?.token);
    expect(server.requestsTo({ path: '/app/installations/:id/access_tokens' }).every((r) => r.status === 201)).toBe(
      true,
    );
  });

  it('reports every installation token it mints, for API calls and for pushes, before using it', async () => {
    const scrubber = createScrubber([]);
    const reported: string[] = [];
    const github = appAdapter(undefined, {
      onSecret: (secret) => {
        reported.push(secret);
        scrubber.add(secret);
      },
    });

    await github.getRepository('acme', 'shop');
    const { password } = await github.pushCredentials('acme', 'shop');

    expect(server.issuedTokens.length).toBeGreaterThanOrEqual(2);
    expect(new Set(reported)).toEqual(new Set(server.issuedTokens.map((t) => t.token)));
    expect(scrubber.scrub(`git push https://x-access-token:${password}@github.com (${password})`)).not.toContain(password);
  });

  it('refuses a repository the App is not installed on', async () => {
    await expect(appAdapter().getRepository('acme', 'nope')).rejects.toThrow(
      /GitHub App is not installed on acme\/nope/,
    );
  });

  it('a push token scoped to one repository does not reach another', async () => {
    const github = appAdapter(String(server.installationId));
    const { password } = await github.pushCredentials('acme', 'shop');

    const other = await fetch(`${server.apiUrl}/repos/acme/other`, { headers: { authorization: `token ${password}` } });
    await other.arrayBuffer();

    expect(other.status).toBe(404);
  });

  it('refuses a private key that is not PEM at construction', () => {
    expect(() =>
      createGitHubRest({
        apiUrl: server.apiUrl,
        auth: { kind: 'app', appId: APP_ID, privateKey: 'nope' },
        log: logs.log,
      }),
    ).toThrow(RefusedError);
  });
});
