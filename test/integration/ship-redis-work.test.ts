import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { createShipCommand } from '../../commands/ship-command.js';
import { createAuditLog } from '../../src/audit/audit-log.js';
import { parsePolicy } from '../../src/config/config.js';
import { createLogger } from '../../src/log.js';
import type { CommandEvent, CommandReply } from '../../src/ports/chat.js';
import { createCancellation } from '../../src/queue/cancellation.js';
import { CHAT_JOB_OPTIONS, createQueues, type Queues } from '../../src/queue/queues.js';
import { redisAnswers } from '../../src/dev-redis.js';
import { bullConnection } from '../../src/redis.js';
import { plainText } from '../../src/render/view.js';
import { createRunStore, type RunStore } from '../../src/store/run-store.js';
import { TEST_AUDIT_KEY_BYTES } from '../helpers/audit-key.js';
import { SIGNING_SECRET, startTestBot, type TestBot } from '../helpers/bot.js';
import { eventually } from '../helpers/eventually.js';
import { freePort, spawnRedis, type SpawnedRedis } from '../helpers/global-redis.js';
import { testPrefix } from '../helpers/ids.js';
import { sendSlashCommand } from '../helpers/slack-requests.js';

/**
 * Issue 14: the Redis work of one `/ship` is one script before its ack (dedupe, limits, the run,
 * its indexes, its card job and its first run job) and nothing after it. Counted with INFO
 * commandstats on a Redis of this file's own, which counts every command, those run inside scripts
 * too, and which nothing else talks to. A change that adds a command or a round trip to the ack
 * path fails the first test; one that stores a job differently from BullMQ's Queue.add (through
 * refreshCard and scheduleRun) fails the conformance tests.
 */

let own: SpawnedRedis;
let redis: Redis;
beforeAll(async () => {
  own = await spawnRedis();
  redis = new Redis(own.url);
});
afterAll(async () => {
  redis.disconnect();
  await own.stop();
});

const policy = parsePolicy('repos:\n  acme/docs: {}\nlimits: { activeRunsPerUser: 5, activeRuns: 100 }\n', 'test');

/** Calls per command since the server started, without the INFO calls that read them. */
async function commandCalls(): Promise<Map<string, number>> {
  const calls = new Map<string, number>();
  for (const match of (await redis.info('commandstats')).matchAll(/^cmdstat_([\w|]+):calls=(\d+)/gm))
    calls.set(match[1] ?? '', Number(match[2]));
  return calls;
}

function between(before: Map<string, number>, after: Map<string, number>): Record<string, number> {
  const diff: Record<string, number> = {};
  for (const [name, calls] of after) {
    const d = calls - (before.get(name) ?? 0) - (name === 'info' ? 1 : 0);
    if (d > 0) diff[name] = d;
  }
  return diff;
}

interface Bench {
  handle: (event: CommandEvent) => Promise<CommandReply>;
  store: RunStore;
  queues: Queues;
  close(): Promise<void>;
}

/** The `/ship` command wired as the web role wires it, on this file's Redis. */
async function shipBench(name: string): Promise<Bench> {
  const prefix = testPrefix(name);
  const queues = createQueues({ connection: bullConnection(own.url), prefix });
  await Promise.all([queues.runs.waitUntilReady(), queues.chat.waitUntilReady()]);
  const store = createRunStore({ redis, prefix, clock: () => new Date() });
  const handle = createShipCommand({
    policy,
    store,
    audit: createAuditLog({ redis, prefix, clock: () => new Date(), key: TEST_AUDIT_KEY_BYTES }),
    queues,
    cancellation: await createCancellation({ publisher: redis, subscriber: undefined, prefix }),
    groups: { isGroup: () => false, members: async () => [] },
    clock: () => new Date(),
    log: createLogger({ level: 'silent', destination: new PassThrough() }),
  });
  return { handle, store, queues, close: () => queues.close() };
}

let deliveries = 0;
function ship(user = 'UALICE', deliveryId = `trigger-${++deliveries}`): CommandEvent {
  return { command: '/ship', text: 'acme/docs fix the typo', userId: user, channelId: 'CDOCS', deliveryId };
}

const text = (reply: CommandReply): string => (reply.ephemeral === undefined ? '' : plainText(reply.ephemeral));
const runIdOf = (reply: CommandReply): string => /sg-[a-z0-9]{8}/.exec(text(reply))?.[0] ?? '';

/** A few turns of the event loop and a moment: time for any work the command left for after its answer. */
const afterAnswer = async () => {
  for (let i = 0; i < 3; i++) await new Promise((resolve) => setImmediate(resolve));
  await new Promise((resolve) => setTimeout(resolve, 200));
};

let bench: Bench | undefined;
afterEach(async () => {
  await bench?.close();
  bench = undefined;
});

describe('the Redis work of one /ship', () => {
  it('is one script before the ack (dedupe, limits, run, indexes, card job, run job) and nothing after it', async () => {
    bench = await shipBench('ship-count');
    // The first command loads the script into this Redis (EVAL on a fresh connection): not what is counted.
    await bench.handle(ship());

    const before = await commandCalls();
    const reply = await bench.handle(ship());
    const atAnswer = await commandCalls();
    expect(text(reply)).toMatch(/^Queued run sg-[a-z0-9]{8} on acme\/docs/);
    expect(between(before, atAnswer)).toEqual({
      evalsha: 1,
      // the dedupe key, the per-user and the global limit
      get: 1,
      zcard: 2,
      // the dedupe key, the run, the active and the requester's active index (2 of the zadds)
      set: 1,
      hset: 1,
      // each of the two jobs, as BullMQ adds one: max events, exists, the hash, 'added', paused or
      // maxed, the wait list, the marker that wakes a worker (2 of the zadds), 'waiting'
      hget: 2,
      exists: 2,
      hmset: 2,
      xadd: 4,
      hmget: 2,
      lpush: 2,
      zadd: 4,
    });
    await afterAnswer();
    expect(between(atAnswer, await commandCalls())).toEqual({});

    const runId = runIdOf(reply);
    expect((await bench.queues.chat.getJob(`${runId}.card.0`))?.data).toEqual({ kind: 'card', runId, version: 0 });
    expect((await bench.queues.runs.getJob(`${runId}.0`))?.data).toEqual({ runId });
  });

  it('is the dedupe key alone for a redelivered command', async () => {
    bench = await shipBench('ship-dup');
    const first = await bench.handle(ship('UALICE', 'trigger-dup'));

    const before = await commandCalls();
    const again = await bench.handle(ship('UALICE', 'trigger-dup'));
    expect(between(before, await commandCalls())).toEqual({ evalsha: 1, get: 1 });
    expect(text(again)).toBe(`Run ${runIdOf(first)} is already queued for this request.`);
    expect((await bench.store.listActive()).map((run) => run.id)).toEqual([runIdOf(first)]);
    expect(await bench.queues.runs.getWaitingCount()).toBe(1);
    expect(await bench.queues.chat.getWaitingCount()).toBe(1);
  });

  it("reads the requester's run ids only to name them in a refusal, and adds no job then", async () => {
    bench = await shipBench('ship-limit');
    const mine: string[] = [];
    for (let i = 0; i < 5; i++) mine.push(runIdOf(await bench.handle(ship('UBUSY'))));
    // A first refusal loads the audit log's script into this Redis: not what is counted.
    expect(text(await bench.handle({ ...ship('UBUSY'), text: 'acme/unknown do it' }))).not.toMatch(/^Queued/);
    const before = await commandCalls();
    const refused = await bench.handle(ship('UBUSY'));
    const calls = between(before, await commandCalls());
    // The create script, then the refusal's audit event (its own script, on the ack path as before).
    expect(calls).toMatchObject({ evalsha: 2, get: 1, zcard: 1, zrange: 1 });
    expect(calls).not.toHaveProperty('hmset');
    for (const id of mine) expect(text(refused)).toContain(id);
    expect(await bench.queues.runs.getWaitingCount()).toBe(5);
    expect(await bench.queues.chat.getWaitingCount()).toBe(5);
  });
});

/** One of the two queues the create script adds to, and the id of a run's job in it. */
interface Target {
  name: string;
  queue: (q: Queues) => Queues['runs'] | Queues['chat'];
  jobId: (runId: string) => string;
  /** What /ship's script stands in for: the Queue.add of refreshCard or scheduleRun. */
  add: (q: Queues, runId: string) => Promise<void>;
}
const TARGETS: Target[] = [
  {
    name: 'first card job (a plain Queue.add of the card job with its id)',
    queue: (q) => q.chat,
    jobId: (runId) => `${runId}.card.0`,
    add: async (q, runId) => {
      await q.chat.add('card', { kind: 'card', runId, version: 0 }, { ...CHAT_JOB_OPTIONS, jobId: `${runId}.card.0` });
    },
  },
  {
    name: 'run job (scheduleRun)',
    queue: (q) => q.runs,
    jobId: (runId) => `${runId}.0`,
    add: (q, runId) => q.scheduleRun(runId, 0),
  },
];

/** A job's hash with its run id and time taken out, its options parsed (BullMQ re-encodes them in Lua). */
async function storedJob(
  queue: Queues['runs'] | Queues['chat'],
  jobId: string,
  runId: string,
): Promise<Record<string, unknown>> {
  const { opts, data, timestamp, ...rest } = await redis.hgetall(queue.toKey(jobId));
  expect(Number(timestamp)).toBeGreaterThan(Date.now() - 60_000);
  const parse = (json: string | undefined) => z.unknown().parse(JSON.parse((json ?? '').replaceAll(runId, '<run>')));
  return { ...rest, data: parse(data), opts: parse(opts) };
}

/** Where the queue holds the job, and what it announced, with the run id taken out. */
async function placement(queue: Queues['runs'] | Queues['chat'], jobId: string, runId: string) {
  const events = await redis.xrange(queue.toKey('events'), '-', '+');
  return {
    wait: (await redis.lrange(queue.toKey('wait'), 0, -1)).includes(jobId),
    paused: (await redis.lrange(queue.toKey('paused'), 0, -1)).includes(jobId),
    events: events
      .map(([, fields]) => fields)
      .filter((fields) => fields.includes(jobId))
      .map((fields) => fields.map((field) => field.replaceAll(runId, '<run>'))),
  };
}

describe('the jobs stored by the create script', () => {
  for (const target of TARGETS) {
    it(`${target.name}: is the job Queue.add stores, with the same hash, list, marker and events, running, paused and at its concurrency`, async () => {
      bench = await shipBench('ship-conform');
      const queue = target.queue(bench.queues);
      const marker = queue.toKey('marker');
      let n = 0;
      /** One run through /ship's script, one job through Queue.add, in the queue's current state. */
      const compare = async () => {
        n += 1;
        await redis.del(marker);
        const scripted = runIdOf(await bench!.handle(ship(`USTATE${n}`)));
        const markerByScript = await redis.zrange(marker, 0, -1);
        await redis.del(marker);
        const added = `sg-added0${n}`;
        await target.add(bench!.queues, added);
        expect(markerByScript).toEqual(await redis.zrange(marker, 0, -1));
        expect(await storedJob(queue, target.jobId(scripted), scripted)).toEqual(
          await storedJob(queue, target.jobId(added), added),
        );
        const where = await placement(queue, target.jobId(scripted), scripted);
        expect(where).toEqual(await placement(queue, target.jobId(added), added));
        return { marker: markerByScript, ...where };
      };
      expect(await compare()).toMatchObject({ marker: ['0'], wait: true, paused: false });
      await queue.pause();
      expect(await compare()).toMatchObject({ marker: [], wait: false, paused: true });
      await queue.resume();
      // At its global concurrency (one active job here, a stand-in): waiting, without a marker.
      await queue.setGlobalConcurrency(1);
      await redis.lpush(queue.toKey('active'), 'stand-in');
      expect(await compare()).toMatchObject({ marker: [], wait: true, paused: false });
    });
  }

  it('are taken by BullMQ workers like any other job', async () => {
    bench = await shipBench('ship-worker');
    const runId = runIdOf(await bench.handle(ship()));
    const taken: Array<{ queue: string; id: string | undefined; data: unknown; attempts: number | undefined }> = [];
    const workers = [bench.queues.runs, bench.queues.chat].map(
      (queue) =>
        new Worker(
          queue.name,
          async (job) => {
            taken.push({ queue: queue.name, id: job.id, data: job.data, attempts: job.opts.attempts });
          },
          { connection: bullConnection(own.url), prefix: queue.opts.prefix },
        ),
    );
    try {
      await eventually(async () => taken.length === 2, 'both scripted jobs taken by workers', 15_000);
      expect(taken.sort((a, b) => a.queue.localeCompare(b.queue))).toEqual([
        { queue: 'chat', id: `${runId}.card.0`, data: { kind: 'card', runId, version: 0 }, attempts: 10 },
        { queue: 'runs', id: `${runId}.0`, data: { runId }, attempts: 8 },
      ]);
      // removeOnComplete, as the options said.
      await eventually(
        async () => (await bench!.queues.runs.getJob(`${runId}.0`)) === undefined,
        'the completed run job removed',
        15_000,
      );
    } finally {
      await Promise.all(workers.map((worker) => worker.close()));
    }
  });
});

describe('Redis gone at a /ship (web role over signed HTTP)', () => {
  let bot: TestBot | undefined;
  let server: { port: number; stop(): Promise<void> } | undefined;
  afterEach(async () => {
    await bot?.stop();
    await server?.stop();
    bot = undefined;
    server = undefined;
  });

  /** A redis-server on a port of the test's choosing, so it can come back where the bot looks. */
  async function redisServer(port: number): Promise<{ port: number; stop(): Promise<void> }> {
    const dir = mkdtempSync(join(tmpdir(), 'shipgate-redis-blip-'));
    const child = spawn(
      'redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
      { stdio: 'ignore' },
    );
    await eventually(() => redisAnswers(`redis://127.0.0.1:${port}`), 'redis-server to answer', 10_000);
    return {
      port,
      async stop() {
        if (child.exitCode === null) {
          const exited = new Promise((r) => child.once('exit', r));
          child.kill('SIGTERM');
          await exited;
        }
        rmSync(dir, { recursive: true, force: true });
      },
    };
  }

  it('answers that it failed rather than "Queued", and takes commands again once Redis is back', async () => {
    server = await redisServer(await freePort());
    bot = await startTestBot({
      name: 'ship-blip',
      env: { REDIS_URL: `redis://127.0.0.1:${server.port}`, SHIPGATE_ROLE: 'web' },
    });
    await server.stop();

    const lost = await sendSlashCommand(bot.eventsUrl, SIGNING_SECRET, {
      text: 'acme/docs fix the typo',
      user_id: 'UALICE',
      channel_id: 'CDOCS',
    });
    expect(lost.status).toBe(200);
    expect(lost.body).not.toContain('Queued run');
    expect(lost.body).toMatch(/internal error|slow to answer/);

    server = await redisServer(server.port);
    await eventually(
      async () => (await bot!.app.store.listActive().catch(() => undefined)) !== undefined,
      'the bot to reconnect',
      20_000,
    );
    const taken = await sendSlashCommand(bot.eventsUrl, SIGNING_SECRET, {
      text: 'acme/docs fix the typo',
      user_id: 'UALICE',
      channel_id: 'CDOCS',
    });
    expect(taken.body).toContain('Queued run');
    expect((await bot.app.store.listActive()).length).toBe(1);
  });
});
