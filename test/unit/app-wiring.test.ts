import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { buildChat } from '../../src/app/build-chat.js';
import { collectRunMetrics } from '../../src/app/collect-metrics.js';
import { redisReady, waitForRedis } from '../../src/app/connections.js';
import { resolveAuditKey } from '../../src/app/resolve-audit-key.js';
import { scrubbedReplies } from '../../src/app/web-role.js';
import { ConfigError, loadConfig, parsePolicy } from '../../src/config/config.js';
import { newRun, type RunState } from '../../src/domain/run.js';
import { createLogger } from '../../src/log.js';
import { createMetrics } from '../../src/metrics.js';
import type { CommandReply } from '../../src/ports/chat.js';
import { bold, rich } from '../../src/render/view.js';
import { TEST_AUDIT_KEY } from '../helpers/audit-key.js';

/** The small pieces of the composition root (issue 8), each on its own. */

const silent = createLogger({ level: 'silent', destination: new PassThrough() });
const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function captured(): { log: ReturnType<typeof createLogger>; lines: () => string[] } {
  const chunks: string[] = [];
  const destination = new PassThrough();
  destination.on('data', (chunk: Buffer) => chunks.push(chunk.toString()));
  return { log: createLogger({ level: 'info', destination }), lines: () => chunks.join('').trim().split('\n') };
}

async function thrown(run: () => unknown): Promise<unknown> {
  try {
    await run();
  } catch (error) {
    return error;
  }
  return undefined;
}

describe('resolveAuditKey', () => {
  it('takes SHIPGATE_AUDIT_KEY as it is', () => {
    const key = Buffer.alloc(32, 7);
    expect(resolveAuditKey({ kind: 'env', key }, silent)).toBe(key);
  });

  it('in local mode generates the key file on first start and says so, then reuses it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'shipgate-app-key-'));
    dirs.push(dir);
    const path = join(dir, '.shipgate', 'audit.key');
    const first = captured();
    const key = resolveAuditKey({ kind: 'generate-local', path }, first.log);
    const second = captured();
    expect(resolveAuditKey({ kind: 'generate-local', path }, second.log)).toEqual(key);
    await new Promise((resolve) => setImmediate(resolve));
    expect(first.lines().join('\n')).toContain('generated a local audit key');
    expect(second.lines().join('\n')).toContain('using the local audit key');
  });

  it('a key file that cannot be used stops the start-up naming SHIPGATE_AUDIT_KEY and the file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'shipgate-app-key-'));
    dirs.push(dir);
    const path = join(dir, 'audit.key');
    writeFileSync(path, 'not a key\n', { mode: 0o600 });
    const error = await thrown(() => resolveAuditKey({ kind: 'generate-local', path }, silent));
    expect(error).toBeInstanceOf(ConfigError);
    expect(String(error)).toContain('SHIPGATE_AUDIT_KEY: is unset and the local audit key cannot be used');
    expect(String(error)).toContain(`repair ${path}`);
  });
});

describe('Redis readiness', () => {
  it('answers from the connection state without waiting on a PING while Redis is away', async () => {
    let pinged = false;
    const redis = {
      status: 'reconnecting' as const,
      ping: async (): Promise<'PONG'> => {
        pinged = true;
        return 'PONG';
      },
    };
    expect(await redisReady(redis)).toBe(false);
    expect(pinged).toBe(false);
    expect(await redisReady({ ...redis, status: 'ready' as const })).toBe(true);
  });

  it('a PING that hangs is not ready once the timeout passes', async () => {
    expect(await redisReady({ status: 'ready', ping: () => new Promise<'PONG'>(() => undefined) }, 20)).toBe(false);
  });

  it('start-up gives up on a Redis that never answers with a ConfigError naming REDIS_URL, password hidden', async () => {
    const redis = { ping: async (): Promise<'PONG'> => Promise.reject(new Error('ECONNREFUSED')) };
    const error = await thrown(() =>
      waitForRedis(redis, 'redis://:hunter2@cache.internal:6379', { timeoutMs: 30, pauseMs: 5 }),
    );
    expect(error).toBeInstanceOf(ConfigError);
    expect(String(error)).toContain('REDIS_URL: no Redis answers at redis://***@cache.internal:6379');
    expect(String(error)).not.toContain('hunter2');
  });
});

describe('buildChat', () => {
  const policy = 'repos:\n  acme/shop: {}\n';
  const configFor = (env: Record<string, string>) =>
    loadConfig({ REDIS_URL: 'redis://127.0.0.1:1', ...env }, { readFile: () => policy });
  const streams = { input: new PassThrough(), output: new PassThrough() };
  const slack = { SLACK_BOT_TOKEN: 'xoxb-not-real', SHIPGATE_AUDIT_KEY: TEST_AUDIT_KEY };

  it('the console chat serves no route and needs role all', async () => {
    const chat = buildChat({ config: configFor({}), log: silent, metrics: createMetrics(), console: streams });
    expect(chat.routes).toEqual([]);
    expect(chat.closed).toBeInstanceOf(Promise);
    const error = await thrown(() =>
      buildChat({
        config: configFor({ SHIPGATE_ROLE: 'worker' }),
        log: silent,
        metrics: createMetrics(),
        console: streams,
      }),
    );
    expect(error).toBeInstanceOf(ConfigError);
    expect(String(error)).toContain('SHIPGATE_ROLE: the console chat needs role all (got worker)');
  });

  it('Slack in HTTP mode declares its events route; in Socket Mode none', async () => {
    const http = buildChat({
      config: configFor({ ...slack, SLACK_SIGNING_SECRET: 'secret' }),
      log: silent,
      metrics: createMetrics(),
    });
    expect(http.routes.map((route) => `${route.method} ${route.path}`)).toEqual(['POST /slack/events']);
    const socket = buildChat({
      config: configFor({ ...slack, SLACK_APP_TOKEN: 'xapp-not-real' }),
      log: silent,
      metrics: createMetrics(),
    });
    expect(socket.routes).toEqual([]);
    await Promise.all([http.stop(), socket.stop()]);
  });
});

describe('scrubbedReplies', () => {
  it('scrubs every literal of an ephemeral answer, and passes an empty answer through', async () => {
    const scrub = (text: string) => text.replaceAll('sekrit', '[REDACTED]');
    const handle = scrubbedReplies(
      async (text: string): Promise<CommandReply> => (text === '' ? {} : { ephemeral: rich`status: ${bold(text)}` }),
      scrub,
    );
    expect(JSON.stringify(await handle('token sekrit'))).not.toContain('sekrit');
    expect(JSON.stringify(await handle('token sekrit'))).toContain('[REDACTED]');
    expect(await handle('')).toEqual({});
  });
});

describe('collectRunMetrics', () => {
  it('reports both queues and the active runs by state at scrape time', async () => {
    const metrics = createMetrics();
    const counts = async () => ({ waiting: 2, active: 1, delayed: 0, failed: 3 });
    const policy = parsePolicy('repos:\n  acme/shop: {}\n', 'test');
    const run = (id: string, state: RunState) => ({
      ...newRun(policy, {
        id,
        repo: 'acme/shop',
        task: 't',
        requester: { userId: 'U1' },
        channel: 'C1',
        now: new Date(0),
      }),
      state,
    });
    collectRunMetrics({
      metrics,
      queues: { runs: { getJobCounts: counts }, chat: { getJobCounts: counts } },
      store: { listActive: async () => [run('a', 'waiting'), run('b', 'waiting'), run('c', 'running')] },
    });
    const text = await metrics.registry.metrics();
    expect(text).toMatch(/shipgate_runs_active\{state="waiting"\} 2/);
    expect(text).toMatch(/shipgate_runs_active\{state="cancelling"\} 0/);
    expect(text).toMatch(/shipgate_queue_jobs\{queue="[^"]+",state="failed"\} 3/);
  });
});
