import { PassThrough } from 'node:stream';
import { Redis } from 'ioredis';
import { Worker } from 'bullmq';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { parsePolicy } from '../../src/config/config.js';
import { newRun, type Run } from '../../src/domain/run.js';
import { createLogger } from '../../src/log.js';
import type { ChatPort } from '../../src/ports/chat.js';
import { CHAT_QUEUE, createQueues, type ChatJob, type Queues } from '../../src/queue/queues.js';
import type { MessageView } from '../../src/render/view.js';
import { createOutboxStore } from '../../src/store/outbox-store.js';
import { createRunStore, type RunStore } from '../../src/store/run-store.js';
import { createWriteLimiter, type WriteLimiter } from '../../src/store/write-limiter.js';
import { createChatProcessor } from '../../workers/chat-processor.js';
import { eventually } from '../helpers/eventually.js';
import { testPrefix } from '../helpers/ids.js';

/**
 * The chat outbox over real BullMQ and Redis (issue 12): card jobs deduplicated per run without
 * losing a change made while the run's card job is active, and chat writes paced across workers
 * by BullMQ's queue-wide rate limit, with the held jobs handed back and no attempt spent.
 */

const url = new URL(inject('redisUrl'));
const connection = { host: url.hostname, port: Number(url.port) };
const policy = parsePolicy('repos:\n  acme/shop: {}\n', 'test');
const log = createLogger({ level: 'silent', destination: new PassThrough() });

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

/** A promise with its resolver, to park a fake call until the test lets it go. */
function latch(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => (open = resolve));
  return { promise, open };
}

/** A chat that records posts and card updates; `holdNextUpdate` parks the next update until released. */
function recordingChat() {
  const posts: { key: string; thread: string | undefined }[] = [];
  const updates: MessageView[] = [];
  let parked: { reached: ReturnType<typeof latch>; released: ReturnType<typeof latch> } | undefined;
  const chat: ChatPort = {
    postMessage: async (input) => {
      posts.push({ key: input.key, thread: input.thread });
      return { ref: `m${posts.length}` };
    },
    updateMessage: async (input) => {
      const hold = parked;
      parked = undefined;
      if (hold !== undefined) {
        hold.reached.open();
        await hold.released.promise;
      }
      updates.push(input.view);
    },
    postEphemeral: async () => undefined,
    findMessageByKey: async () => undefined,
    uploadFile: async () => ({ ref: 'F1' }),
    permalink: async () => undefined,
    principals: {
      platform: 'Test',
      describe: { principal: 'a test id', channel: 'a test channel' },
      owns: () => true,
      isGroup: () => false,
      groupMembers: async () => [],
    },
  };
  return {
    chat,
    posts,
    updates,
    /** The next card update waits (its job active) until `release`; `reached` says it got there. */
    holdNextUpdate(): { reached: Promise<void>; release: () => void } {
      const hold = { reached: latch(), released: latch() };
      parked = hold;
      return { reached: hold.reached.promise, release: hold.released.open };
    },
  };
}

async function world(name: string, options: { writesPerSecond?: number } = {}) {
  const prefix = testPrefix(name);
  const redis = new Redis(inject('redisUrl'));
  const outbox = createOutboxStore({ redis, prefix });
  const queues: Queues = createQueues({ connection, prefix, replyOrder: outbox });
  const store: RunStore = createRunStore({
    redis,
    prefix,
    clock: () => new Date(),
    onChanged: async ({ after }) => queues.refreshCard(after.id, after.version),
  });
  const recorded = recordingChat();
  const takes: { taken: boolean; second: number }[] = [];
  const counted = createWriteLimiter({ redis, prefix, perSecond: options.writesPerSecond ?? 1_000 });
  const limiter: WriteLimiter = {
    async take() {
      // The window as the limiter reads it: its clock is read in this same tick, before its first
      // await (reading it after the answer put a take at x.999 s into the next second).
      const second = Math.floor(Date.now() / 1000);
      const slot = await counted.take();
      takes.push({ taken: slot.taken, second });
      return slot;
    },
  };
  const processChat = createChatProcessor({
    chat: recorded.chat,
    store,
    outbox,
    log,
    updateIntervalMs: 1,
    scrub: (text) => text,
    writes: { limiter, hold: (ms) => queues.chat.rateLimit(ms) },
  });
  const workers: Worker<ChatJob>[] = [];
  cleanups.push(async () => {
    await Promise.all(workers.map((worker) => worker.close()));
    await queues.chat.obliterate({ force: true });
    await queues.close();
    redis.disconnect();
  });
  /** Chat workers as the worker role starts them (a limiter, so that BullMQ honours the queue-wide hold). */
  const startWorkers = (count: number): void => {
    for (let i = 0; i < count; i += 1) {
      workers.push(
        new Worker<ChatJob>(CHAT_QUEUE, processChat, {
          connection,
          prefix: `${prefix}:bull`,
          concurrency: 4,
          limiter: { max: 200, duration: 1_000 },
        }),
      );
    }
  };
  const addRun = async (id: string): Promise<Run> => {
    const run = newRun(policy, {
      id,
      repo: 'acme/shop',
      task: 'add a /healthz endpoint',
      requester: { userId: 'UALICE' },
      channel: 'CSHOP',
      now: new Date(),
    });
    await store.create(run, `delivery-${id}`);
    // As the /ship handler does: a created run asks for its card (the store's change hook is for updates).
    await queues.refreshCard(run.id, run.version);
    return run;
  };
  return { ...recorded, store, queues, takes, addRun, startWorkers };
}

const taskOf = (view: MessageView | undefined): string => JSON.stringify(view ?? '');

describe('chat outbox on BullMQ', () => {
  it('keeps one card job per run however many changes come, and shows the last one', async () => {
    const w = await world('card-dedupe');
    const run = await w.addRun('sg-dedupe01');
    for (let i = 1; i <= 20; i += 1) {
      await w.store.update(run.id, (latest) => ({ ...latest, task: `change ${i}` }));
    }
    // Twenty-one asks for a card job; BullMQ keeps the one, which renders what is stored.
    expect(await w.queues.chat.getJobCounts('waiting', 'delayed')).toMatchObject({ waiting: 1, delayed: 0 });
    w.startWorkers(1);
    await eventually(async () => w.posts.length === 1, 'the root card', 30_000);
    // The root was rendered from the stored run: the last change, with no update needed after it.
    await eventually(
      async () => ((await w.queues.chat.getJobCounts('completed')).completed ?? 0) === 1,
      'the one card job done',
      30_000,
    );
    expect(w.posts.map((p) => p.key)).toEqual([`${run.id}.root`]);
    expect(w.updates).toEqual([]);
  });

  it('a change made while the card job is writing is shown by the next job, not lost', async () => {
    const w = await world('card-active');
    w.startWorkers(1);
    const run = await w.addRun('sg-active001');
    await eventually(async () => w.posts.length === 1, 'the root card', 30_000);
    const hold = w.holdNextUpdate();
    await w.store.update(run.id, (latest) => ({ ...latest, task: 'first change' }));
    await hold.reached;
    // The card job is active (parked in its write): this change is deduplicated against it.
    await w.store.update(run.id, (latest) => ({ ...latest, task: 'second change' }));
    hold.release();
    await eventually(
      async () => taskOf(w.updates.at(-1)).includes('second change'),
      'the second change on the card',
      30_000,
    );
    expect(w.updates.map(taskOf).filter((view) => view.includes('first change'))).toHaveLength(1);
  });

  it('paces writes across two workers with BullMQ holding the queue: every post once, no attempt spent', async () => {
    const w = await world('write-pacing', { writesPerSecond: 2 });
    const runs = await Promise.all(['sg-pace0001', 'sg-pace0002', 'sg-pace0003'].map((id) => w.addRun(id)));
    for (const run of runs) {
      await w.queues.reply(run.id, 'agent', {
        type: 'retrying',
        gate: 'agent',
        attempt: 1,
        of: 3,
        reason: 'model overloaded',
      });
    }
    w.startWorkers(2);
    // Three roots and three replies at two writes per second.
    await eventually(async () => w.posts.length === 6, 'six posts', 30_000);
    const perSecond = new Map<number, number>();
    for (const take of w.takes.filter((t) => t.taken))
      perSecond.set(take.second, (perSecond.get(take.second) ?? 0) + 1);
    expect(Math.max(...perSecond.values())).toBeLessThanOrEqual(2);
    expect(w.takes.some((t) => !t.taken)).toBe(true);
    expect(new Set(w.posts.map((p) => p.key)).size).toBe(6);
    await eventually(
      async () => ((await w.queues.chat.getJobCounts('completed')).completed ?? 0) >= 6,
      'every job completed',
      30_000,
    );
    const done = await w.queues.chat.getJobs(['completed'], 0, -1);
    // Handed back by the hold, not failed and retried: one attempt each, none failed.
    expect(done.every((job) => job.attemptsMade <= 1)).toBe(true);
    expect(await w.queues.chat.getJobCounts('failed')).toMatchObject({ failed: 0 });
  });
});
