import { randomBytes, randomUUID } from 'node:crypto';
import { PassThrough } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createGitHubRest, type GitHubRestOptions } from '../../src/adapters/github/github-rest.js';
import { CancelledError } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';
import type { GitHubCiPort, GitHubPort } from '../../src/ports/github.js';
import { eventually } from '../helpers/eventually.js';
import { secondaryRateLimit, startGitHubServer, type GitHubServer } from '../helpers/github-server.js';

/**
 * A cancel (or a worker's shutdown) interrupts GitHub calls at once (issue 12): the real adapter
 * (Octokit with plugin-retry and plugin-throttling) against the GitHub fake. A call's promise
 * settles with CancelledError as soon as its signal aborts — also while a plugin sits in its
 * backoff wait — and no request is sent for it afterwards. "Settled before the wait ended" is an
 * order, not a duration: the adapter logs (at debug) when it refuses the attempt a plugin's timer
 * starts after the abort, and the call must have settled before that line appears.
 */

const TOKEN = randomBytes(20).toString('hex');
const SHA = 'a'.repeat(40);
const NOT_SENT = 'GitHub attempt not sent: its call was stopped';
const ABORTED_IN_FLIGHT = 'GitHub attempt aborted in flight';

function captureLog(): { log: ReturnType<typeof createLogger>; text: () => string } {
  const stream = new PassThrough();
  let text = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    text += chunk;
  });
  return { log: createLogger({ level: 'trace', destination: stream }), text: () => text };
}

describe('a cancelled GitHub call', () => {
  let server: GitHubServer;
  let logs: ReturnType<typeof captureLog>;

  function adapter(retry: NonNullable<GitHubRestOptions['retry']>): GitHubPort & GitHubCiPort {
    return createGitHubRest({
      apiUrl: server.apiUrl,
      auth: { kind: 'token', token: TOKEN },
      log: logs.log,
      retry,
      limiterId: randomUUID(),
    });
  }

  const repositoryReads = (): number => server.requestsTo({ method: 'GET', path: '/repos/acme/shop' }).length;

  /** The call's outcome, kept so that its rejection is never unhandled while the test waits. */
  function settled<T>(call: Promise<T>): { done: () => boolean; outcome: Promise<unknown> } {
    let done = false;
    const outcome = call.then(
      (value) => {
        done = true;
        return value;
      },
      (error: unknown) => {
        done = true;
        return error;
      },
    );
    return { done: () => done, outcome };
  }

  beforeEach(async () => {
    server = await startGitHubServer({ token: TOKEN });
    server.setRepository('acme/shop', { cloneUrl: 'file:///nowhere/shop.git', defaultBranch: 'main' });
    logs = captureLog();
  });

  afterEach(async () => {
    expect(server.unexpected).toEqual([]);
    await server.close();
  });

  it("during plugin-retry's wait after a 502 settles at once and sends no further attempt", async () => {
    for (let i = 0; i < 4; i++) server.failNext('GET', '/repos/acme/shop', { status: 502 });
    // plugin-retry waits 1² × 3 s before its second attempt.
    const github = adapter({ retries: 3, retryAfterBaseMs: 3_000 });
    const controller = new AbortController();
    const call = settled(github.getRepository('acme', 'shop', { signal: controller.signal }));
    // Octokit's request log: the 502 came back, so plugin-retry is in its wait (nothing in flight).
    await eventually(async () => /shop - 502 /.test(logs.text()), 'the first 502');
    controller.abort(new Error('run sg-test was cancelled'));

    const error = await call.outcome;
    expect(error).toBeInstanceOf(CancelledError);
    expect(String(error)).toContain('run sg-test was cancelled');
    // Settled while plugin-retry was still waiting: its timer has not fired yet.
    expect(logs.text()).not.toContain(NOT_SENT);
    expect(repositoryReads()).toBe(1);

    // The timer fires and starts the next attempt: it is refused before anything is sent.
    await eventually(async () => logs.text().includes(NOT_SENT), 'the retry timer to fire and be refused');
    expect(repositoryReads()).toBe(1);
  });

  it("during plugin-throttling's wait after a 429 with retry-after settles at once and sends no further attempt", async () => {
    server.failNext('GET', '/repos/acme/shop', secondaryRateLimit({ status: 429, retryAfterSeconds: 3 }));
    server.failNext('GET', '/repos/acme/shop', secondaryRateLimit({ status: 429, retryAfterSeconds: 3 }));
    // plugin-throttling waits retry-after × 1 s.
    const github = adapter({ retries: 3, retryAfterBaseMs: 1_000 });
    const controller = new AbortController();
    const call = settled(github.getRepository('acme', 'shop', { signal: controller.signal }));
    await eventually(async () => logs.text().includes('GitHub secondary rate limit reached'), 'the rate limit');
    controller.abort(new Error('shipgate is shutting down'));

    expect(await call.outcome).toBeInstanceOf(CancelledError);
    expect(logs.text()).not.toContain(NOT_SENT);
    expect(repositoryReads()).toBe(1);

    await eventually(async () => logs.text().includes(NOT_SENT), 'the rate-limit timer to fire and be refused');
    expect(repositoryReads()).toBe(1);
  });

  it('aborts the attempt in flight (the server sees the connection go) and does not retry it', async () => {
    const held = server.holdNext('GET', '/repos/acme/shop');
    // A retry, were one made, would follow 1 ms later.
    const github = adapter({ retries: 3, retryAfterBaseMs: 1 });
    const controller = new AbortController();
    const call = settled(github.getRepository('acme', 'shop', { signal: controller.signal }));
    await held.arrived;
    controller.abort(new Error('run sg-test was cancelled'));

    expect(await call.outcome).toBeInstanceOf(CancelledError);
    await held.clientGone;
    await eventually(async () => logs.text().includes(ABORTED_IN_FLIGHT), 'the aborted attempt to end');
    // Well past when plugin-retry's next attempt (1 ms) would have gone out.
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(repositoryReads()).toBe(1);
    expect(logs.text()).not.toContain(NOT_SENT);
  });

  it('sends nothing when the signal aborted before the call', async () => {
    const github = adapter({ retries: 3, retryAfterBaseMs: 1 });
    const signal = AbortSignal.abort(new Error('run sg-test was cancelled'));
    await expect(github.getRepository('acme', 'shop', { signal })).rejects.toBeInstanceOf(CancelledError);
    await expect(github.ciSnapshot('acme', 'shop', SHA, { signal })).rejects.toBeInstanceOf(CancelledError);
    await expect(github.pushCredentials('acme', 'shop', { signal })).rejects.toBeInstanceOf(CancelledError);
    expect(server.requests).toEqual([]);
  });

  it('stops the conditional, paged CI reads in their retry wait too', async () => {
    for (let i = 0; i < 4; i++) server.failNext('GET', `/repos/acme/shop/commits/${SHA}/check-runs`, { status: 503 });
    const github = adapter({ retries: 3, retryAfterBaseMs: 3_000 });
    const controller = new AbortController();
    const call = settled(github.ciSnapshot('acme', 'shop', SHA, { signal: controller.signal }));
    // Both reads of the snapshot answered (Octokit's request log): the statuses read is done, the check
    // runs read sits in plugin-retry's wait, and nothing is in flight when the signal aborts.
    await eventually(
      async () => /check-runs\?[^"]* - 503 /.test(logs.text()) && /\/status\?[^"]* - 200 /.test(logs.text()),
      'the 503 and the statuses answer',
    );
    controller.abort(new Error('run sg-test was cancelled'));

    expect(await call.outcome).toBeInstanceOf(CancelledError);
    expect(logs.text()).not.toContain(NOT_SENT);
    await eventually(async () => logs.text().includes(NOT_SENT), 'the retry timer to fire and be refused');
    expect(server.requestsTo({ path: `/repos/acme/shop/commits/${SHA}/check-runs` })).toHaveLength(1);
  });

  it('leaves calls without a signal, and calls whose signal never aborts, as they were', async () => {
    server.failNext('GET', '/repos/acme/shop', { status: 502 });
    const github = adapter({ retries: 3, retryAfterBaseMs: 1 });
    const controller = new AbortController();
    await expect(github.getRepository('acme', 'shop', { signal: controller.signal })).resolves.toMatchObject({
      defaultBranch: 'main',
    });
    await expect(github.getRepository('acme', 'shop')).resolves.toMatchObject({ defaultBranch: 'main' });
    expect(server.requestsTo({ path: '/repos/acme/shop' }).map((r) => r.status)).toEqual([502, 200, 200]);
  });
});
