import { request, type IncomingMessage } from 'node:http';
import { connect } from 'node:net';
import { PassThrough } from 'node:stream';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { z } from 'zod';
import { createShipgate, type Shipgate } from '../../src/app/create-shipgate.js';
import { loadConfig } from '../../src/config/config.js';
import { createLogger } from '../../src/log.js';
import { createRunStore } from '../../src/store/run-store.js';
import { TEST_AUDIT_KEY } from '../helpers/audit-key.js';
import { BOT_TOKEN, SIGNING_SECRET, TEST_POLICY, startTestBot, testEnv, type TestBot } from '../helpers/bot.js';
import { freePort, spawnRedis, type SpawnedRedis } from '../helpers/global-redis.js';
import { testPrefix } from '../helpers/ids.js';
import { killAll, spawnShipgate, waitForHealthy, writePolicyFile, type ShipgateProcess } from '../helpers/process.js';
import type { GateStep } from '../../workers/gates/gate-step.js';
import { sendSlashCommand, signSlackRequest, slashCommandBody } from '../helpers/slack-requests.js';
import { startSlackServer, type SlackServer } from '../helpers/slack-server.js';

/**
 * SPEC §3 (bad configuration stops the process, naming the key and the fix)
 * and §8 (health, readiness, metrics, graceful shutdown on SIGTERM/SIGINT).
 */

const EX_CONFIG = 78;
const logLineSchema = z.looseObject({ level: z.string(), msg: z.string() });

const processes: ShipgateProcess[] = [];
let slack: SlackServer | undefined;
let bot: TestBot | undefined;
let workerBot: TestBot | undefined;
let privateRedis: SpawnedRedis | undefined;
let strandedApp: Shipgate | undefined;
let redis: Redis | undefined;

afterEach(async () => {
  await killAll(processes.splice(0));
  await workerBot?.stop();
  workerBot = undefined;
  await bot?.stop();
  bot = undefined;
  await slack?.close();
  slack = undefined;
  redis?.disconnect();
  redis = undefined;
  if (strandedApp !== undefined) {
    // Its Redis is gone; BullMQ's Worker.close() waits for a reconnect that never comes, so bound it.
    await Promise.race([strandedApp.stop().catch(() => undefined), new Promise((r) => setTimeout(r, 3_000))]);
    strandedApp = undefined;
  }
  await privateRedis?.stop();
  privateRedis = undefined;
});

function spawn(env: Record<string, string>): ShipgateProcess {
  const p = spawnShipgate(env);
  processes.push(p);
  return p;
}

/** Resolves with the exit code, or fails with the output if the process is still running after `ms`. */
async function exitCode(p: ShipgateProcess, ms = 20_000): Promise<number | null> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(
        new Error(
          `shipgate still running after ${ms} ms\n--- stdout ---\n${p.stdout()}\n--- stderr ---\n${p.stderr()}`,
        ),
      );
    }, ms);
  });
  try {
    return await Promise.race([p.exited, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function logLines(text: string): z.infer<typeof logLineSchema>[] {
  return text
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => logLineSchema.parse(JSON.parse(line)));
}

async function portAcceptsConnections(port: number): Promise<boolean> {
  return new Promise((resolveAnswer) => {
    const socket = connect({ port, host: '127.0.0.1' });
    socket.once('connect', () => {
      socket.destroy();
      resolveAnswer(true);
    });
    socket.once('error', () => resolveAnswer(false));
  });
}

const CONSOLE_POLICY = 'repos:\n  acme/shop: {}\n';

function baseEnv(name: string, extra: Record<string, string>): Record<string, string> {
  return {
    REDIS_URL: inject('redisUrl'),
    SHIPGATE_REDIS_PREFIX: testPrefix(name),
    PORT: '0',
    LOG_LEVEL: 'info',
    SHIPGATE_CONFIG: writePolicyFile(CONSOLE_POLICY),
    ...extra,
  };
}

describe(
  'a bad configuration stops the process with exit code 78, naming the key and the fix',
  { timeout: 30_000 },
  () => {
    it.each([
      ['REDIS_URL is not a Redis URL', { REDIS_URL: 'http://x' }, ['REDIS_URL', 'redis://']],
      [
        'SLACK_BOT_TOKEN without SLACK_SIGNING_SECRET',
        { SLACK_BOT_TOKEN: BOT_TOKEN },
        ['SLACK_SIGNING_SECRET', 'Signing Secret'],
      ],
      ['PORT is not a port', { PORT: 'http' }, ['PORT', 'between 1 and 65535']],
      [
        'SHIPGATE_CONFIG names a missing file',
        { SHIPGATE_CONFIG: '/nonexistent/shipgate.yaml' },
        ['SHIPGATE_CONFIG', '/nonexistent/shipgate.yaml'],
      ],
      [
        'the policy has an unknown key',
        { SHIPGATE_CONFIG: writePolicyFile('repos:\n  acme/shop: { protected_paths: ["deploy/**"] }\n') },
        ['repos.acme/shop', 'protected_paths'],
      ],
      [
        'a repository names an undefined pipeline',
        { SHIPGATE_CONFIG: writePolicyFile('repos:\n  acme/shop: { pipeline: shop }\n') },
        ['repos.acme/shop.pipeline', 'not defined under pipelines'],
      ],
    ])('%s', async (_case, extra, expected) => {
      const p = spawn(baseEnv('badconfig', extra));
      expect(await exitCode(p)).toBe(EX_CONFIG);
      const stderr = p.stderr();
      expect(stderr).toContain('shipgate cannot start, the configuration is invalid');
      for (const text of expected) expect(stderr).toContain(text);
      // A message for a person, not a crash: no stack trace.
      expect(stderr).not.toMatch(/^\s+at /m);
      expect(p.stdout()).toBe('');
    });

    it('stops with 78 naming REDIS_URL when no Redis answers', { timeout: 45_000 }, async () => {
      const nobody = await freePort();
      const p = spawn(baseEnv('noredis', { REDIS_URL: `redis://127.0.0.1:${nobody}` }));
      p.child.stdin.end();
      expect(await exitCode(p, 40_000)).toBe(EX_CONFIG);
      expect(p.stderr()).toContain(`REDIS_URL: no Redis answers at redis://127.0.0.1:${nobody}`);
      expect(p.stderr()).toContain('Fix: start one');
    });
  },
);

describe('graceful shutdown', { timeout: 75_000 }, () => {
  it.each(['SIGTERM', 'SIGINT'] as const)(
    '%s stops a Slack HTTP process with exit 0, keeps its run and frees the port',
    async (signal) => {
      slack = await startSlackServer({ token: BOT_TOKEN });
      const prefix = testPrefix(`signal-${signal.toLowerCase()}`);
      const port = await freePort();
      const p = spawn(
        testEnv(slack, prefix, {
          PORT: String(port),
          LOG_LEVEL: 'info',
          SHIPGATE_CONFIG: writePolicyFile(TEST_POLICY),
        }),
      );
      await waitForHealthy(port);

      // Give it work, so shutdown has queues and a run to hand back.
      const ack = await sendSlashCommand(`http://127.0.0.1:${port}/slack/events`, SIGNING_SECRET, {
        text: 'acme/shop add a /healthz endpoint',
        user_id: 'UALICE',
        channel_id: 'CSHOP',
      });
      const runId = /sg-[a-z0-9]{8}/.exec(ack.body)?.[0];
      expect(runId, ack.body).toBeDefined();
      await slack.waitFor((s) => s.callsOf('chat.postMessage').length >= 1, 10_000, 'the run card');

      p.child.kill(signal);
      expect(await exitCode(p)).toBe(0);
      // In Slack mode the JSON logs are on stdout.
      const messages = logLines(p.stdout()).map((line) => line.msg);
      expect(messages).toContain('shutdown requested');
      expect(messages.at(-1)).toBe('shipgate stopped');
      expect(await portAcceptsConnections(port)).toBe(false);

      // Nothing was lost: the run is still in Redis, not failed by the shutdown.
      redis = new Redis(inject('redisUrl'));
      const store = createRunStore({ redis, prefix, clock: () => new Date() });
      const run = await store.get(runId ?? '');
      expect(run?.state).toMatch(/^(queued|running|waiting)$/);
    },
  );
});

async function getJson(url: string): Promise<{ status: number; json: unknown }> {
  const response = await fetch(url);
  return { status: response.status, json: await response.json() };
}

/**
 * A signed slash command whose body arrives in two parts: the request is in flight (its route
 * handler started) until `finish()` sends the rest. Resolves `response` with Slack's answer.
 */
function slowSlashCommand(
  port: number,
  text: string,
): { finish(): void; response: Promise<{ status: number; body: string }> } {
  const body = slashCommandBody({ text, user_id: 'UALICE', channel_id: 'CSHOP' });
  const timestamp = Math.floor(Date.now() / 1000);
  const req = request({
    host: '127.0.0.1',
    port,
    method: 'POST',
    path: '/slack/events',
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      'content-length': String(Buffer.byteLength(body)),
      'x-slack-request-timestamp': String(timestamp),
      'x-slack-signature': signSlackRequest(SIGNING_SECRET, timestamp, body),
    },
  });
  const response = new Promise<{ status: number; body: string }>((resolveResponse, reject) => {
    req.once('error', reject);
    req.once('response', (res: IncomingMessage) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.once('end', () => resolveResponse({ status: res.statusCode ?? 0, body: text }));
    });
  });
  const half = Math.floor(body.length / 2);
  req.write(body.slice(0, half));
  req.flushHeaders();
  return { finish: () => req.end(body.slice(half)), response };
}

describe('draining on SIGTERM with METRICS_PORT', { timeout: 45_000 }, () => {
  it('answers /readyz 503 from the signal on, keeps /healthz 200 and metrics scrapable while it drains, finishes the request in flight, exits 0', async () => {
    slack = await startSlackServer({ token: BOT_TOKEN });
    const port = await freePort();
    const metricsPort = await freePort();
    const p = spawn(
      testEnv(slack, testPrefix('drain'), {
        PORT: String(port),
        METRICS_PORT: String(metricsPort),
        LOG_LEVEL: 'info',
        SHIPGATE_CONFIG: writePolicyFile(TEST_POLICY),
      }),
    );
    await waitForHealthy(port);
    await waitForHealthy(metricsPort);
    const app = `http://127.0.0.1:${port}`;
    const ops = `http://127.0.0.1:${metricsPort}`;

    // Metrics live on their own port only: the Slack/GitHub ingress (PORT) never serves them.
    expect((await fetch(`${app}/metrics`)).status).toBe(404);
    const scraped = await fetch(`${ops}/metrics`);
    expect(scraped.status).toBe(200);
    const text = await scraped.text();
    expect(text).toContain('# TYPE shipgate_runs_requested_total counter');
    expect(text).toMatch(/^process_cpu_seconds_total \S+$/m);
    expect(text).toContain('# TYPE nodejs_eventloop_lag_seconds gauge');
    expect(text).not.toContain('shipgate_process_');
    expect(await getJson(`${ops}/readyz`)).toEqual({ status: 200, json: { status: 'ready' } });
    expect(await getJson(`${app}/readyz`)).toEqual({ status: 200, json: { status: 'ready' } });
    // The ops port serves no routes.
    expect((await fetch(`${ops}/slack/events`, { method: 'POST', body: '' })).status).toBe(404);

    // A command whose request is still arriving holds the drain open (up to its bound).
    const slow = slowSlashCommand(port, 'acme/shop add a /healthz endpoint');
    await new Promise((r) => setTimeout(r, 200));
    p.child.kill('SIGTERM');
    await p.waitForOutput(/"msg":"shutdown requested"/);

    // The first probe after the signal already says "not ready"; liveness stays green.
    expect(await getJson(`${ops}/readyz`)).toEqual({ status: 503, json: { status: 'draining' } });
    expect(await getJson(`${app}/readyz`)).toEqual({ status: 503, json: { status: 'draining' } });
    expect(await getJson(`${ops}/healthz`)).toEqual({ status: 200, json: { status: 'ok' } });
    expect(await getJson(`${app}/healthz`)).toEqual({ status: 200, json: { status: 'ok' } });
    expect((await fetch(`${ops}/metrics`)).status).toBe(200);
    // New work is refused (another replica takes it); the request already in flight is finished.
    const late = await sendSlashCommand(`${app}/slack/events`, SIGNING_SECRET, {
      text: 'acme/shop too late',
      user_id: 'UALICE',
      channel_id: 'CSHOP',
    });
    expect(late.status).toBe(503);
    expect(p.child.exitCode).toBeNull();

    slow.finish();
    const answered = await slow.response;
    expect(answered.status).toBe(200);
    expect(answered.body).toMatch(/sg-[a-z0-9]{8}/);

    expect(await exitCode(p)).toBe(0);
    expect(
      logLines(p.stdout())
        .map((line) => line.msg)
        .at(-1),
    ).toBe('shipgate stopped');
    expect(await portAcceptsConnections(port)).toBe(false);
    expect(await portAcceptsConnections(metricsPort)).toBe(false);
  });
});

describe('health, readiness and metrics', { timeout: 30_000 }, () => {
  it('a worker-only process serves health, readiness and metrics on METRICS_PORT, also while it drains a job', async () => {
    bot = await startTestBot({ name: 'worker-metrics', env: { SHIPGATE_ROLE: 'web' } });
    let entered: (() => void) | undefined;
    const stepEntered = new Promise<void>((resolveEntered) => (entered = resolveEntered));
    let release: (() => void) | undefined;
    const released = new Promise<void>((resolveReleased) => (release = resolveReleased));
    const holding: GateStep = {
      async run() {
        entered?.();
        await released;
        return { kind: 'pending', summary: 'held by the test', recheckAfterMs: 60_000 };
      },
    };
    workerBot = await startTestBot({
      name: 'worker-metrics-worker',
      env: { SHIPGATE_ROLE: 'worker', SHIPGATE_REDIS_PREFIX: bot.config.redisPrefix, METRICS_PORT: '0' },
      steps: { agent: holding },
    });
    const worker = workerBot.app;
    const metricsPort = worker.metricsPort();
    expect(metricsPort).toBeGreaterThan(0);
    expect(metricsPort).not.toBe(worker.port());
    const ops = `http://127.0.0.1:${metricsPort ?? 0}`;
    expect(await getJson(`${ops}/healthz`)).toEqual({ status: 200, json: { status: 'ok' } });
    expect(await getJson(`${ops}/readyz`)).toEqual({ status: 200, json: { status: 'ready' } });
    const scraped = await (await fetch(`${ops}/metrics`)).text();
    expect(scraped).toMatch(/^shipgate_queue_jobs\{queue="runs",state="waiting"\} \d+$/m);
    expect(scraped).toContain('# TYPE process_cpu_seconds_total counter');
    expect((await fetch(`${workerBot.baseUrl}/metrics`)).status).toBe(404);

    const ack = await sendSlashCommand(bot.eventsUrl, SIGNING_SECRET, {
      text: 'acme/shop add a /healthz endpoint',
      user_id: 'UALICE',
      channel_id: 'CSHOP',
    });
    expect(ack.body).toMatch(/sg-[a-z0-9]{8}/);
    await stepEntered;

    // The job in flight holds the worker's shutdown; it is not ready, still alive, still scrapable.
    let stopped = false;
    const stopping = worker.stop().then(() => {
      stopped = true;
    });
    expect(await getJson(`${ops}/readyz`)).toEqual({ status: 503, json: { status: 'draining' } });
    expect(await getJson(`${ops}/healthz`)).toEqual({ status: 200, json: { status: 'ok' } });
    expect((await fetch(`${ops}/metrics`)).status).toBe(200);
    expect(stopped).toBe(false);

    release?.();
    await stopping;
    expect(await portAcceptsConnections(metricsPort ?? 0)).toBe(false);
  });

  it('serves /healthz, /readyz and Prometheus /metrics with run and queue figures', async () => {
    bot = await startTestBot({ name: 'http-ops' });
    const health = await fetch(`${bot.baseUrl}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.json()).toEqual({ status: 'ok' });

    const ready = await fetch(`${bot.baseUrl}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ status: 'ready' });

    const ack = await sendSlashCommand(bot.eventsUrl, SIGNING_SECRET, {
      text: 'acme/shop add a /healthz endpoint',
      user_id: 'UALICE',
      channel_id: 'CSHOP',
    });
    expect(ack.body).toMatch(/sg-[a-z0-9]{8}/);

    const metrics = await fetch(`${bot.baseUrl}/metrics`);
    expect(metrics.status).toBe(200);
    expect(metrics.headers.get('content-type')).toMatch(/^text\/plain/);
    const text = await metrics.text();
    expect(text).toContain('# TYPE shipgate_runs_requested_total counter');
    expect(text).toMatch(/^shipgate_runs_requested_total 1$/m);
    expect(text).toContain('# TYPE shipgate_queue_jobs gauge');
    expect(text).toMatch(/^shipgate_queue_jobs\{queue="runs",state="waiting"\} \d+$/m);
    expect(text).toMatch(/^shipgate_queue_jobs\{queue="chat",state="failed"\} 0$/m);

    expect((await fetch(`${bot.baseUrl}/nope`)).status).toBe(404);
  });

  it('answers /readyz 503 within a few seconds once Redis is unreachable', async () => {
    privateRedis = await spawnRedis();
    const config = loadConfig(
      {
        REDIS_URL: privateRedis.url,
        SHIPGATE_REDIS_PREFIX: testPrefix('readyz'),
        PORT: '0',
        LOG_LEVEL: 'silent',
        SLACK_BOT_TOKEN: BOT_TOKEN,
        SLACK_SIGNING_SECRET: SIGNING_SECRET,
        SLACK_API_URL: 'http://127.0.0.1:9/api/',
        SHIPGATE_AUDIT_KEY: TEST_AUDIT_KEY,
      },
      { readFile: () => TEST_POLICY },
    );
    const app = createShipgate({ config, log: createLogger({ level: 'silent', destination: new PassThrough() }) });
    await app.start();
    strandedApp = app;
    const readyz = `http://127.0.0.1:${app.port()}/readyz`;
    expect((await fetch(readyz)).status).toBe(200);

    await privateRedis.stop();
    const started = Date.now();
    const response = await fetch(readyz, { signal: AbortSignal.timeout(8_000) });
    expect(response.status).toBe(503);
    expect(await response.json()).toEqual({ status: 'redis unreachable' });
    expect(Date.now() - started).toBeLessThan(5_000);
    // Liveness is not readiness: the process itself is fine and must not be restarted for it.
    expect((await fetch(`http://127.0.0.1:${app.port()}/healthz`)).status).toBe(200);
  });
});
