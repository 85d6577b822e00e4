import { randomBytes, randomUUID } from 'node:crypto';
import { sampleJson } from '../helpers/samples.js';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, inject, it } from 'vitest';
import { z } from 'zod';
import { createGitHubRest, type GitHubRestOptions } from '../../src/adapters/github/github-rest.js';
import { createLogger } from '../../src/log.js';
import { createMetrics, type Metrics } from '../../src/metrics.js';
import type { EtagCache, GitHubCiPort, GitHubPort } from '../../src/ports/github.js';
import { createEtagCache } from '../../src/store/etag-cache.js';
import { requiredStatusChecksRule, startGitHubServer, type GitHubServer } from '../helpers/github-server.js';
import { testPrefix } from '../helpers/ids.js';

/**
 * The CI half of the GitHub adapter (SPEC §5, §10) with the real Octokit against the GitHub fake,
 * and the real Redis ETag cache: unchanged answers must come back as 304s (free on GitHub), so a
 * watched commit costs "state changes + 3" rate-limited requests at most.
 */

const redisUrl = inject('redisUrl');
const TOKEN = randomBytes(20).toString('hex');
const SHA = 'ce587453ced02b1526dfb4cb910479d431683101';

const CHECK_RUNS = '/repos/:owner/:repo/commits/:ref/check-runs';
const STATUSES = '/repos/:owner/:repo/commits/:ref/status';

function sample(name: string): unknown {
  return sampleJson('github', name);
}

const sampleCheckRun = z
  .object({
    check_runs: z.array(
      z.object({
        id: z.number(),
        name: z.string(),
        status: z.literal('completed'),
        conclusion: z.string(),
        details_url: z.string(),
        started_at: z.string(),
        completed_at: z.string(),
        output: z.object({ title: z.string(), summary: z.string(), text: z.string(), annotations_count: z.number() }),
        app: z.object({ slug: z.string() }),
      }),
    ),
  })
  .parse(sample('rest.checks.list-for-ref.example.json')).check_runs[0]!;

const sampleAnnotation = z
  .array(
    z.object({
      path: z.string(),
      start_line: z.number(),
      end_line: z.number(),
      start_column: z.number(),
      end_column: z.number(),
      annotation_level: z.enum(['notice', 'warning', 'failure']),
      title: z.string(),
      message: z.string(),
      raw_details: z.string(),
    }),
  )
  .parse(sample('rest.checks.list-annotations.example.json'))[0]!;

/** The fixture's `GET …/commits/:sha/statuses` answer (newest first), with its real ETag header. */
const sampleStatusExchange = z
  .array(
    z.object({
      method: z.string(),
      path: z.string(),
      headers: z.record(z.string(), z.unknown()),
      response: z.unknown(),
    }),
  )
  .parse(sample('octokit-fixtures.create-status.combined-status-failure.json'))
  .find((exchange) => exchange.method === 'get' && exchange.path.endsWith('/statuses'))!;
/** The fixture's combined status (`GET …/commits/:sha/status`): what the adapter reads. */
const sampleCombinedExchange = z
  .array(z.object({ method: z.string(), path: z.string(), response: z.unknown() }))
  .parse(sample('octokit-fixtures.create-status.combined-status-failure.json'))
  .find((exchange) => exchange.method === 'get' && exchange.path.endsWith('/status'))!;
const sampleStatuses = z
  .array(
    z.object({
      context: z.string(),
      state: z.enum(['pending', 'success', 'failure', 'error']),
      description: z.string(),
      target_url: z.string(),
      created_at: z.string(),
      updated_at: z.string(),
    }),
  )
  .parse(sampleStatusExchange.response);

async function externalCalls(metrics: Metrics): Promise<Record<string, number>> {
  const metric = await metrics.registry.getSingleMetric('shipgate_external_calls_total')?.get();
  const counts: Record<string, number> = {};
  for (const value of metric?.values ?? []) {
    if (value.labels.system === 'github') counts[String(value.labels.status)] = value.value;
  }
  return counts;
}

describe('GitHub CI reads against the GitHub fake, with the Redis ETag cache', () => {
  let redis: Redis;
  let prefix: string;
  let cache: EtagCache;
  let server: GitHubServer;
  let metrics: Metrics;

  function adapter(overrides: Partial<GitHubRestOptions> = {}): GitHubPort & GitHubCiPort {
    return createGitHubRest({
      apiUrl: server.apiUrl,
      auth: { kind: 'token', token: TOKEN },
      log: createLogger({ level: 'silent' }),
      metrics,
      retry: { retries: 2, retryAfterBaseMs: 1 },
      limiterId: randomUUID(),
      etagCache: cache,
      ...overrides,
    });
  }

  const checkRunCounts = (): Record<number, number> => server.countStatuses({ method: 'GET', path: CHECK_RUNS });
  const statusCounts = (): Record<number, number> => server.countStatuses({ method: 'GET', path: STATUSES });

  beforeAll(() => {
    redis = new Redis(redisUrl);
  });

  afterAll(async () => {
    await redis.quit();
  });

  beforeEach(async () => {
    prefix = testPrefix('github-ci');
    cache = createEtagCache({ redis, prefix });
    server = await startGitHubServer({ token: TOKEN });
    server.setRepository('acme/shop', { cloneUrl: 'file:///srv/git/shop.git', defaultBranch: 'main' });
    metrics = createMetrics();
  });

  afterEach(async () => {
    expect(server.unexpected).toEqual([]);
    await server.close();
    const keys = await redis.keys(`${prefix}:*`);
    if (keys.length > 0) await redis.del(...keys);
  });

  it('maps check runs and commit statuses of the samples; statuses keep the newest per context', async () => {
    const { id, name, status, conclusion, details_url, started_at, completed_at, output, app } = sampleCheckRun;
    server.setCheckRuns('acme/shop', SHA, [
      { id, name, status, conclusion, details_url, started_at, completed_at, output, app },
      { name: 'build', status: 'in_progress' },
    ]);
    server.setStatuses('acme/shop', SHA, [
      { context: 'example/1', state: 'pending', description: 'queued' },
      // The fixture lists newest first; setStatuses takes them in the order they were posted.
      ...[...sampleStatuses].reverse(),
    ]);

    const snapshot = await adapter().ciSnapshot('acme', 'shop', SHA);

    expect(snapshot.checkRuns).toEqual([
      {
        id: 4,
        name: 'mighty_readme',
        status: 'completed',
        conclusion: 'neutral',
        detailsUrl: 'https://example.com',
        appSlug: 'octoapp',
        output: {
          title: 'Mighty Readme report',
          summary: 'There are 0 failures, 2 warnings, and 1 notice.',
          annotationsCount: 2,
        },
        startedAt: '2018-05-04T01:14:52Z',
        completedAt: '2018-05-04T01:14:52Z',
      },
      {
        id: expect.any(Number) as number,
        name: 'build',
        status: 'in_progress',
        conclusion: null,
        detailsUrl: expect.stringMatching(/\/actions\/runs\/\d+\/job\/\d+$/) as string,
        appSlug: 'github-actions',
        output: { title: null, summary: null, annotationsCount: 0 },
        startedAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/) as string,
        completedAt: null,
      },
    ]);
    expect(snapshot.statuses).toEqual([
      {
        context: 'example/2',
        state: 'success',
        description: 'create-status success test',
        targetUrl: 'https://example.com',
        updatedAt: '2017-10-10T16:00:00Z',
      },
      {
        context: 'example/1',
        state: 'failure',
        description: 'create-status failure test',
        targetUrl: 'https://example.com',
        updatedAt: '2017-10-10T16:00:00Z',
      },
    ]);
    const [checksRequest] = server.requestsTo({ method: 'GET', path: CHECK_RUNS });
    expect(checksRequest?.query).toEqual({ per_page: '100', filter: 'latest' });
    expect(checksRequest?.headers['if-none-match']).toBeUndefined();
    expect(server.requestsTo({ method: 'GET', path: STATUSES })[0]?.query).toEqual({ per_page: '100' });
  });

  it('the fake answers with every field of the samples, and ETags in their format', async () => {
    const [run] = server.setCheckRuns('acme/shop', SHA, [{ name: 'build', conclusion: 'failure' }]);
    server.setStatuses('acme/shop', SHA, [{ context: 'ci/jenkins', state: 'success' }]);
    server.setAnnotations(run!.id, [{ path: 'src/a.ts', message: 'boom' }]);
    const get = async (path: string): Promise<{ etag: string | null; body: unknown }> => {
      const response = await fetch(`${server.apiUrl}${path}`, { headers: { authorization: `token ${TOKEN}` } });
      return { etag: response.headers.get('etag'), body: await response.json() };
    };
    const keysOf = (value: unknown): string[] => Object.keys(z.record(z.string(), z.unknown()).parse(value)).sort();
    const first = (value: unknown): unknown => z.array(z.unknown()).parse(value)[0];

    const checks = await get(`/repos/acme/shop/commits/${SHA}/check-runs`);
    const statuses = await get(`/repos/acme/shop/commits/${SHA}/statuses`);
    const combined = await get(`/repos/acme/shop/commits/${SHA}/status`);
    const annotations = await get(`/repos/acme/shop/check-runs/${run!.id}/annotations`);

    const sampleChecks = z
      .object({ check_runs: z.array(z.unknown()) })
      .parse(sample('rest.checks.list-for-ref.example.json'));
    const fakeChecks = z.object({ check_runs: z.array(z.unknown()) }).parse(checks.body);
    expect(keysOf(fakeChecks.check_runs[0])).toEqual(keysOf(sampleChecks.check_runs[0]));
    expect(keysOf(first(statuses.body))).toEqual(
      keysOf(first(sampleStatusExchange.response))
        .filter((key) => key !== 'creator')
        .concat('creator')
        .sort(),
    );
    // The combined status the adapter reads: the same fields as the fixture's, at both levels.
    const statusesOf = (value: unknown): unknown[] => z.object({ statuses: z.array(z.unknown()) }).parse(value).statuses;
    expect(keysOf(combined.body)).toEqual(keysOf(sampleCombinedExchange.response));
    expect(keysOf(statusesOf(combined.body)[0])).toEqual(keysOf(statusesOf(sampleCombinedExchange.response)[0]));
    expect(keysOf(first(annotations.body))).toEqual(keysOf(first(sample('rest.checks.list-annotations.example.json'))));
    // The fixture's ETag is a quoted 32-hex string, as are the fake's.
    expect(String(sampleStatusExchange.headers.etag)).toMatch(/^"[0-9a-f]{32}"$/);
    expect(checks.etag).toMatch(/^"[0-9a-f]{32}"$/);
  });

  it('ten polls of an unchanged commit cost two 200s, then only 304s that spend no rate limit', async () => {
    server.setCheckRuns('acme/shop', SHA, [
      { name: 'build', conclusion: 'success' },
      { name: 'test', status: 'in_progress' },
    ]);
    server.setStatuses('acme/shop', SHA, [{ context: 'ci/jenkins', state: 'pending' }]);
    const github = adapter();

    const snapshots = [];
    for (let i = 0; i < 10; i++) snapshots.push(await github.ciSnapshot('acme', 'shop', SHA));

    expect(checkRunCounts()).toEqual({ 200: 1, 304: 9 });
    expect(statusCounts()).toEqual({ 200: 1, 304: 9 });
    expect(server.countStatuses()).toEqual({ 200: 2, 304: 18 });
    expect(await externalCalls(metrics)).toEqual({ '200': 2, '304': 18 });
    for (const snapshot of snapshots) expect(snapshot).toEqual(snapshots[0]);
    expect(snapshots[0]?.checkRuns.map((r) => r.name)).toEqual(['build', 'test']);
    // Every poll after the first revalidated the ETag the first one stored.
    const sent = server.requestsTo({ method: 'GET', path: CHECK_RUNS }).map((r) => r.headers['if-none-match']);
    expect(sent[0]).toBeUndefined();
    expect(new Set(sent.slice(1)).size).toBe(1);
    expect(sent[1]).toMatch(/^"[0-9a-f]{32}"$/);

    const probe = await fetch(`${server.apiUrl}/repos/acme/shop`, { headers: { authorization: `token ${TOKEN}` } });
    await probe.arrayBuffer();
    // Two 200s spent, plus this probe.
    expect(probe.headers.get('x-ratelimit-used')).toBe('3');
  });

  it('a state change costs exactly one new 200, on the endpoint that changed', async () => {
    server.setCheckRuns('acme/shop', SHA, [{ name: 'build', status: 'in_progress' }]);
    server.setStatuses('acme/shop', SHA, [{ context: 'ci/jenkins', state: 'pending' }]);
    const github = adapter();
    await github.ciSnapshot('acme', 'shop', SHA);

    server.setCheckRuns('acme/shop', SHA, [{ name: 'build', conclusion: 'failure' }]);
    const afterCheck = await github.ciSnapshot('acme', 'shop', SHA);
    expect(checkRunCounts()).toEqual({ 200: 2 });
    expect(statusCounts()).toEqual({ 200: 1, 304: 1 });
    expect(afterCheck.checkRuns[0]).toMatchObject({ status: 'completed', conclusion: 'failure' });

    server.setStatuses('acme/shop', SHA, [
      { context: 'ci/jenkins', state: 'pending' },
      { context: 'ci/jenkins', state: 'success' },
    ]);
    const afterStatus = await github.ciSnapshot('acme', 'shop', SHA);
    expect(checkRunCounts()).toEqual({ 200: 2, 304: 1 });
    expect(statusCounts()).toEqual({ 200: 2, 304: 1 });
    expect(afterStatus.statuses).toEqual([expect.objectContaining({ context: 'ci/jenkins', state: 'success' })]);
    // The run kept its id across the update: the same run moved on, so the gate sees one check.
    expect(afterStatus.checkRuns.map((r) => r.id)).toEqual(afterCheck.checkRuns.map((r) => r.id));

    // Setting the same state again changes no body, so no ETag: still free.
    server.setCheckRuns('acme/shop', SHA, [{ name: 'build', conclusion: 'failure' }]);
    server.setStatuses('acme/shop', SHA, [
      { context: 'ci/jenkins', state: 'pending' },
      { context: 'ci/jenkins', state: 'success' },
    ]);
    await github.ciSnapshot('acme', 'shop', SHA);
    expect(server.countStatuses()).toEqual({ 200: 4, 304: 4 });
  });

  it('two adapters sharing the Redis cache share ETags: the second one starts with 304s', async () => {
    server.setCheckRuns('acme/shop', SHA, [{ name: 'build', conclusion: 'success' }]);
    server.setStatuses('acme/shop', SHA, [{ context: 'ci/jenkins', state: 'success' }]);

    const first = await adapter().ciSnapshot('acme', 'shop', SHA);
    // Another worker process: its own Octokit and Redis connection, the same cache prefix.
    const otherRedis = new Redis(redisUrl);
    try {
      const second = await adapter({ etagCache: createEtagCache({ redis: otherRedis, prefix }) }).ciSnapshot(
        'acme',
        'shop',
        SHA,
      );
      expect(second).toEqual(first);
    } finally {
      await otherRedis.quit();
    }

    expect(server.countStatuses()).toEqual({ 200: 2, 304: 2 });
    // Keyed by the full request URL, query included.
    const keys = await redis.keys(`${prefix}:etag:*`);
    expect(keys.sort()).toEqual(
      [
        `${prefix}:etag:${server.apiUrl}/repos/acme/shop/commits/${SHA}/check-runs?per_page=100&filter=latest`,
        `${prefix}:etag:${server.apiUrl}/repos/acme/shop/commits/${SHA}/status?per_page=100`,
      ].sort(),
    );
  });

  it('an adapter without a shared cache still revalidates its own answers', async () => {
    server.setCheckRuns('acme/shop', SHA, [{ name: 'build', conclusion: 'success' }]);
    const github = createGitHubRest({
      apiUrl: server.apiUrl,
      auth: { kind: 'token', token: TOKEN },
      log: createLogger({ level: 'silent' }),
      retry: { retryAfterBaseMs: 1 },
      limiterId: randomUUID(),
    });

    await github.ciSnapshot('acme', 'shop', SHA);
    await github.ciSnapshot('acme', 'shop', SHA);

    expect(server.countStatuses()).toEqual({ 200: 2, 304: 2 });
  });

  it('reads check runs across two pages, each page conditional on its own', async () => {
    const runs = Array.from({ length: 150 }, (_, i) => ({
      name: `job-${String(i).padStart(3, '0')}`,
      conclusion: 'success',
    }));
    server.setCheckRuns('acme/shop', SHA, runs);
    const github = adapter();

    const snapshot = await github.ciSnapshot('acme', 'shop', SHA);
    expect(snapshot.checkRuns).toHaveLength(150);
    expect(new Set(snapshot.checkRuns.map((r) => r.name)).size).toBe(150);
    const pages = server.requestsTo({ method: 'GET', path: CHECK_RUNS });
    expect(pages.map((r) => r.query)).toEqual([
      { per_page: '100', filter: 'latest' },
      { per_page: '100', filter: 'latest', page: '2' },
    ]);

    await github.ciSnapshot('acme', 'shop', SHA);
    expect(checkRunCounts()).toEqual({ 200: 2, 304: 2 });

    // Only the second page's content changes: page 1 is still a 304.
    server.setCheckRuns('acme/shop', SHA, [...runs.slice(0, 149), { name: 'job-149', conclusion: 'failure' }]);
    const changed = await github.ciSnapshot('acme', 'shop', SHA);
    expect(
      server
        .requestsTo({ method: 'GET', path: CHECK_RUNS })
        .slice(-2)
        .map((r) => r.status),
    ).toEqual([304, 200]);
    expect(changed.checkRuns.find((r) => r.name === 'job-149')?.conclusion).toBe('failure');
    expect(changed.checkRuns).toHaveLength(150);
  });

  it('keeps only the latest attempt of a re-run check', async () => {
    const [attempt1] = server.setCheckRuns('acme/shop', SHA, [{ name: 'build', conclusion: 'failure' }]);
    // A re-run is a new check run with the same name and a higher id.
    server.setCheckRuns('acme/shop', SHA, [
      { name: 'build', id: attempt1!.id, conclusion: 'failure' },
      { name: 'build', id: attempt1!.id + 10, status: 'in_progress' },
    ]);

    const snapshot = await adapter().ciSnapshot('acme', 'shop', SHA);

    expect(snapshot.checkRuns).toEqual([
      expect.objectContaining({ id: attempt1!.id + 10, name: 'build', status: 'in_progress', conclusion: null }),
    ]);
  });

  describe('requiredChecks', () => {
    it('reads contexts and checks of classic branch protection', async () => {
      server.setRequiredChecks('acme/shop', 'main', ['ci/build', 'ci/test']);

      await expect(adapter().requiredChecks('acme', 'shop', 'main')).resolves.toEqual(['ci/build', 'ci/test']);
    });

    it('reads required_status_checks rules of rulesets, also for a branch name with a slash', async () => {
      server.setBranchRules('acme/shop', 'release/1.x', [
        { type: 'deletion' },
        requiredStatusChecksRule(['build', 'e2e']),
        requiredStatusChecksRule(['build', 'lint']),
      ]);

      await expect(adapter().requiredChecks('acme', 'shop', 'release/1.x')).resolves.toEqual(['build', 'e2e', 'lint']);
      expect(server.requestsTo({ path: '/repos/:owner/:repo/rules/branches/:branch' })[0]?.path).toBe(
        '/repos/acme/shop/rules/branches/release%2F1.x',
      );
    });

    it('unions protection and rulesets', async () => {
      server.setRequiredChecks('acme/shop', 'main', ['ci/build']);
      server.setBranchRules('acme/shop', 'main', [requiredStatusChecksRule(['ci/build', 'security/scan'])]);

      await expect(adapter().requiredChecks('acme', 'shop', 'main')).resolves.toEqual(['ci/build', 'security/scan']);
    });

    it('is undefined when neither protection nor a ruleset requires checks', async () => {
      server.setBranchRules('acme/shop', 'main', [{ type: 'non_fast_forward' }]);

      await expect(adapter().requiredChecks('acme', 'shop', 'main')).resolves.toBeUndefined();
      expect(
        server.countStatuses({ path: '/repos/:owner/:repo/branches/:branch/protection/required_status_checks' }),
      ).toEqual({
        404: 1,
      });
    });

    it('falls back to rulesets when the token may not read protection (403), and is undefined without them', async () => {
      const noPermission = {
        status: 403,
        body: { message: 'Resource not accessible by integration', documentation_url: 'https://docs.github.com/rest' },
      };
      server.setRequiredChecks('acme/shop', 'main', ['hidden']);
      server.failNext('GET', '/repos/acme/shop/branches/main/protection/required_status_checks', noPermission);
      server.failNext('GET', '/repos/acme/shop/branches/main/protection/required_status_checks', noPermission);
      const github = adapter();

      await expect(github.requiredChecks('acme', 'shop', 'main')).resolves.toBeUndefined();
      server.setBranchRules('acme/shop', 'main', [requiredStatusChecksRule(['ci/build'])]);
      await expect(github.requiredChecks('acme', 'shop', 'main')).resolves.toEqual(['ci/build']);
      // 403 is not retried (it will not change) and not mistaken for a rate limit.
      expect(
        server.countStatuses({ path: '/repos/:owner/:repo/branches/:branch/protection/required_status_checks' }),
      ).toEqual({
        403: 2,
      });
    });
  });

  it('maps check run annotations (first page of 50)', async () => {
    const [run] = server.setCheckRuns('acme/shop', SHA, [{ name: 'lint', conclusion: 'failure' }]);
    server.setAnnotations(run!.id, [
      sampleAnnotation,
      { path: 'src/b.ts', message: 'Unexpected any', start_line: 7, annotation_level: 'failure' },
    ]);
    const github = adapter();

    const annotations = await github.checkRunAnnotations('acme', 'shop', run!.id);

    expect(annotations).toEqual([
      {
        path: 'README.md',
        startLine: 2,
        endLine: 2,
        level: 'warning',
        message: "Check your spelling for 'banaas'.",
        title: 'Spell Checker',
      },
      { path: 'src/b.ts', startLine: 7, endLine: 7, level: 'failure', message: 'Unexpected any', title: null },
    ]);
    expect(server.requestsTo({ path: '/repos/:owner/:repo/check-runs/:id/annotations' })[0]?.query).toEqual({
      per_page: '50',
    });
    // The run's own output counts them, as GitHub's does.
    const snapshot = await github.ciSnapshot('acme', 'shop', SHA);
    expect(snapshot.checkRuns[0]?.output.annotationsCount).toBe(2);
  });

  describe('actionsJobLogTail', () => {
    const LOG = Array.from(
      { length: 2000 },
      (_, i) => `2025-01-01T00:00:${String(i % 60).padStart(2, '0')}.0000000Z line ${i}`,
    ).join('\n');

    it('returns the tail from the redirect, at a line boundary, without sending the token to the download', async () => {
      server.setJobLog(4242, `${LOG}\n##[error]Process completed with exit code 1.\n`);

      const tail = await adapter().actionsJobLogTail('acme', 'shop', 4242, 300);

      expect(tail).toBeDefined();
      expect(Buffer.byteLength(tail!)).toBeLessThanOrEqual(300);
      expect(tail).toMatch(/^2025-01-01T00:00:\d\d\.0000000Z line \d+\n/);
      expect(tail!.endsWith('line 1999\n##[error]Process completed with exit code 1.\n')).toBe(true);
      const [api] = server.requestsTo({ path: '/repos/:owner/:repo/actions/jobs/:id/logs' });
      expect(api?.status).toBe(302);
      expect(api?.headers.authorization).toBe(`token ${TOKEN}`);
      expect(server.logDownloads).toEqual([expect.objectContaining({ authorization: false })]);
      expect(server.requestsTo({ path: /^\/_downloads\// })[0]?.status).toBe(200);
      expect(await externalCalls(metrics)).toEqual({ '302': 1, '200': 1 });
    });

    it('returns a short log whole, and cuts one long line at a character boundary', async () => {
      server.setJobLog(1, 'only line\n');
      server.setJobLog(2, 'é'.repeat(100));
      const github = adapter();

      await expect(github.actionsJobLogTail('acme', 'shop', 1, 1000)).resolves.toBe('only line\n');
      const cut = await github.actionsJobLogTail('acme', 'shop', 2, 11);
      expect(cut).toBe('é'.repeat(5));
    });

    it('is undefined for an unknown job, expired logs (410) and no permission (403)', async () => {
      const github = adapter();
      await expect(github.actionsJobLogTail('acme', 'shop', 999, 100)).resolves.toBeUndefined();

      server.setJobLog(5, 'log');
      server.failNext('GET', '/repos/acme/shop/actions/jobs/5/logs', { status: 410 });
      await expect(github.actionsJobLogTail('acme', 'shop', 5, 100)).resolves.toBeUndefined();
      server.failNext('GET', '/repos/acme/shop/actions/jobs/5/logs', { status: 403 });
      await expect(github.actionsJobLogTail('acme', 'shop', 5, 100)).resolves.toBeUndefined();

      expect(server.logDownloads).toEqual([]);
    });
  });

  it('getPullRequest reports merged and merge_commit_sha after the merge, conditionally', async () => {
    const github = adapter();
    const opened = await github.createPullRequest({
      owner: 'acme',
      repo: 'shop',
      head: 'shipgate/run-0001',
      base: 'main',
      title: 'Fix typo',
      body: 'b',
    });

    const open = await github.getPullRequest('acme', 'shop', opened.number);
    expect(open).toEqual({ ...opened, base: 'main', mergeCommitSha: null });
    await github.getPullRequest('acme', 'shop', opened.number);

    const mergeSha = 'f'.repeat(40);
    server.mergePull('acme/shop', opened.number, mergeSha);
    const merged = await github.getPullRequest('acme', 'shop', opened.number);

    expect(merged).toEqual({
      number: opened.number,
      url: opened.url,
      headSha: opened.headSha,
      state: 'closed',
      merged: true,
      base: 'main',
      mergeCommitSha: mergeSha,
    });
    expect(
      server.requestsTo({ method: 'GET', path: '/repos/:owner/:repo/pulls/:number' }).map((r) => r.status),
    ).toEqual([200, 304, 200]);
  });

  it('a closed, unmerged pull request is not merged and has no merge commit', async () => {
    const github = adapter();
    const opened = await github.createPullRequest({
      owner: 'acme',
      repo: 'shop',
      head: 'shipgate/run-0002',
      base: 'main',
      title: 't',
      body: 'b',
    });
    server.closePull('acme/shop', opened.number);

    await expect(github.getPullRequest('acme', 'shop', opened.number)).resolves.toMatchObject({
      state: 'closed',
      merged: false,
      mergeCommitSha: null,
    });
  });
});
