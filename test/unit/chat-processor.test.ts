import { PassThrough } from 'node:stream';
import { DelayedError } from 'bullmq';
import { describe, expect, it } from 'vitest';
import { parsePolicy } from '../../src/config/config.js';
import { newRun, type Run } from '../../src/domain/run.js';
import { createLogger } from '../../src/log.js';
import type { ChatPort } from '../../src/ports/chat.js';
import type { ChatJob } from '../../src/queue/queues.js';
import type { MessageView } from '../../src/render/view.js';
import type { RunStore } from '../../src/store/run-store.js';
import { createChatProcessor, REPLY_ORDER_PATIENCE_MS } from '../../workers/chat-processor.js';
import { createMemoryOutboxStore } from '../helpers/memory-outbox.js';

/**
 * The chat outbox's logic (workers/chat-processor.ts) against an in-memory outbox store, run store
 * and chat: each message posted once however often its job runs, a post that died mid-call found
 * instead of repeated, and card updates coalesced and spaced. BullMQ's part (a delayed job runs
 * again later) is played by the test: `process` reports the delay a job asked for.
 */

const policy = parsePolicy('repos:\n  acme/shop: {}\n', 'test');
const INTERVAL = 3_000;

interface Posted {
  ref: string;
  channel: string;
  thread: string | undefined;
  key: string;
  view: MessageView;
}

function world() {
  let now = 1_000_000;
  const runs = new Map<string, Run>();
  const store: RunStore = {
    create: async () => {
      throw new Error('not used');
    },
    get: async (id) => runs.get(id),
    update: async (id, mutate) => {
      const before = runs.get(id);
      if (before === undefined) return undefined;
      const next = mutate(before);
      if (next === undefined) return { before, after: before };
      const after = { ...next, version: before.version + 1 };
      runs.set(id, after);
      return { before, after };
    },
    listActive: async () => [...runs.values()],
  };

  const posted: Posted[] = [];
  const updates: Array<{ ref: string; view: MessageView }> = [];
  const uploads: Array<Parameters<ChatPort['uploadFile']>[0]> = [];
  /** How the next postMessage fails: before it reaches the chat, or after the message landed (the answer lost). */
  let failNextPost: 'before-landing' | 'after-landing' | undefined;
  let postGate: { reached: () => void; released: Promise<void> } | undefined;
  const chat: ChatPort = {
    postMessage: async (input) => {
      if (postGate !== undefined) {
        postGate.reached();
        await postGate.released;
      }
      if (failNextPost === 'before-landing') {
        failNextPost = undefined;
        throw new Error('connect ECONNREFUSED');
      }
      const ref = `m${posted.length + 1}`;
      posted.push({ ref, channel: input.channel, thread: input.thread, key: input.key, view: input.view });
      if (failNextPost === 'after-landing') {
        failNextPost = undefined;
        throw new Error('socket hang up');
      }
      return { ref };
    },
    updateMessage: async (input) => {
      updates.push({ ref: input.ref, view: input.view });
    },
    postEphemeral: async () => undefined,
    findMessageByKey: async ({ channel, thread, key }) => {
      const found = posted.find((m) => m.channel === channel && m.thread === thread && m.key === key);
      return found === undefined ? undefined : { ref: found.ref };
    },
    uploadFile: async (input) => {
      uploads.push(input);
      return { ref: `F${uploads.length}` };
    },
    permalink: async () => undefined,
    principals: {
      platform: 'Test',
      describe: { principal: 'a test id', channel: 'a test channel' },
      owns: () => true,
      isGroup: () => false,
      groupMembers: async () => [],
    },
  };

  const outbox = createMemoryOutboxStore(() => now);
  const processChat = createChatProcessor({
    chat,
    store,
    outbox,
    log: createLogger({ level: 'silent', destination: new PassThrough() }),
    updateIntervalMs: INTERVAL,
    scrub: (text: string) => text,
    clock: () => new Date(now),
  });

  /** Runs one attempt of a job: 'done', or the delay it asked for (BullMQ would run it again after that). */
  async function process(data: ChatJob, { addedAt }: { addedAt?: number } = {}): Promise<'done' | { delayedMs: number }> {
    let until: number | undefined;
    const job = {
      data,
      ...(addedAt === undefined ? {} : { timestamp: addedAt }),
      moveToDelayed: async (timestamp: number) => {
        until = timestamp;
      },
    };
    try {
      await processChat(job);
      return 'done';
    } catch (error) {
      if (error instanceof DelayedError && until !== undefined) return { delayedMs: until - Date.now() };
      throw error;
    }
  }

  function addRun(): Run {
    const run = newRun(policy, {
      id: 'sg-outbox01',
      repo: 'acme/shop',
      task: 'add a /healthz endpoint',
      requester: { userId: 'UALICE' },
      channel: 'CSHOP',
      now: new Date('2026-12-01T10:00:00Z'),
    });
    runs.set(run.id, run);
    return run;
  }

  async function change(id: string, mutate: (run: Run) => Run): Promise<Run> {
    const result = await store.update(id, mutate);
    if (result === undefined) throw new Error(`no run ${id}`);
    return result.after;
  }

  return {
    store,
    outbox,
    posted,
    updates,
    process,
    addRun,
    change,
    failNextPost: (how: 'before-landing' | 'after-landing') => {
      failNextPost = how;
    },
    /** Posts wait until `release`; `reached` resolves once a post is waiting. */
    holdPosts: () => {
      let release = () => {};
      let reached = () => {};
      const waiting = new Promise<void>((resolve) => {
        reached = resolve;
      });
      const released = new Promise<void>((resolve) => {
        release = () => {
          postGate = undefined;
          resolve();
        };
      });
      postGate = { reached, released };
      return { waiting, release };
    },
    advance: (ms: number) => {
      now += ms;
    },
    now: () => now,
  };
}

/** The job asked to run again in `ms` (less the time the assertion took to get here). */
function expectDelayed(result: 'done' | { delayedMs: number }, ms: number): void {
  expect(result).not.toBe('done');
  if (result === 'done') return;
  expect(result.delayedMs).toBeGreaterThan(ms - 100);
  expect(result.delayedMs).toBeLessThanOrEqual(ms);
}

const passedAgent: ChatJob = {
  kind: 'reply',
  runId: 'sg-outbox01',
  key: 'gate-agent',
  content: { type: 'gate', gate: 'agent', outcome: 'passed', summary: 'committed' },
};

describe('chat processor: posting once', () => {
  it('a reply job run again and again posts the card once and the reply once', async () => {
    const w = world();
    w.addRun();
    for (let attempt = 0; attempt < 3; attempt++) expect(await w.process(passedAgent)).toBe('done');
    expect(w.posted.map((m) => [m.key, m.thread])).toEqual([
      ['sg-outbox01.root', undefined],
      ['sg-outbox01.gate-agent', 'm1'],
    ]);
    expect((await w.store.get('sg-outbox01'))?.chat.card).toBe('m1');
  });

  it('a reply whose post landed but whose answer was lost is found on retry, not posted again', async () => {
    const w = world();
    w.addRun();
    expect(await w.process({ kind: 'card', runId: 'sg-outbox01', version: 0 })).toBe('done');
    w.failNextPost('after-landing');
    await expect(w.process(passedAgent)).rejects.toThrow('socket hang up');
    expect(await w.outbox.postRecord('sg-outbox01.gate-agent')).toEqual({ state: 'pending' });
    expect(await w.process(passedAgent)).toBe('done');
    expect(w.posted.map((m) => m.key)).toEqual(['sg-outbox01.root', 'sg-outbox01.gate-agent']);
    expect(await w.outbox.postRecord('sg-outbox01.gate-agent')).toEqual({ state: 'posted', ref: 'm2' });
  });

  it('a card whose post landed before a crash is found by the next job at once, without waiting out the dead holder’s lease, then brought up to date', async () => {
    const w = world();
    w.addRun();
    w.failNextPost('after-landing');
    await expect(w.process({ kind: 'card', runId: 'sg-outbox01', version: 0 })).rejects.toThrow('socket hang up');
    // The crashed attempt still holds the root lease, but its post is in the chat under its key: adopted now.
    expect(await w.process({ kind: 'card', runId: 'sg-outbox01', version: 0 })).toBe('done');
    expect(w.posted).toHaveLength(1);
    expect((await w.store.get('sg-outbox01'))?.chat.card).toBe('m1');
    // The found card may show an older version than the run: it is updated once.
    expect(w.updates.map((u) => u.ref)).toEqual(['m1']);
  });

  it('a post that failed before reaching the chat is posted on retry, once', async () => {
    const w = world();
    w.addRun();
    w.failNextPost('before-landing');
    await expect(w.process({ kind: 'card', runId: 'sg-outbox01', version: 0 })).rejects.toThrow('ECONNREFUSED');
    w.advance(30_000);
    expect(await w.process({ kind: 'card', runId: 'sg-outbox01', version: 0 })).toBe('done');
    expect(w.posted.map((m) => m.key)).toEqual(['sg-outbox01.root']);
    expect(w.updates).toEqual([]);
  });

  it('while one job posts the card, another job of the run waits for it instead of posting a second', async () => {
    const w = world();
    w.addRun();
    const hold = w.holdPosts();
    const first = w.process({ kind: 'card', runId: 'sg-outbox01', version: 0 });
    await hold.waiting;
    const second = await w.process(passedAgent);
    expectDelayed(second, 300);
    hold.release();
    expect(await first).toBe('done');
    expect(await w.process(passedAgent)).toBe('done');
    expect(w.posted.map((m) => m.key)).toEqual(['sg-outbox01.root', 'sg-outbox01.gate-agent']);
  });

  it('the run-ended reply waits until the end is stored', async () => {
    const w = world();
    w.addRun();
    const ended: ChatJob = { kind: 'reply', runId: 'sg-outbox01', key: 'ended', content: { type: 'ended' } };
    expectDelayed(await w.process(ended), 250);
    expect(w.posted).toEqual([]);
    // A run processor that died between enqueueing the reply and storing the end: after half a
    // minute the reply checks gently, not four times a second until BullMQ retries that job.
    expectDelayed(await w.process(ended, { addedAt: w.now() - 60_000 }), 5_000);
    await w.change('sg-outbox01', (run) => ({
      ...run,
      state: 'cancelled',
      cancel: { by: 'UALICE', at: '2026-12-01T10:01:00Z' },
    }));
    expect(await w.process(ended)).toBe('done');
    expect(w.posted.map((m) => m.key)).toEqual(['sg-outbox01.root', 'sg-outbox01.ended']);
  });
});

describe('chat processor: coalescing card updates', () => {
  it('spaces updates an interval apart, renders the latest version, and skips jobs already shown', async () => {
    const w = world();
    w.addRun();
    expect(await w.process({ kind: 'card', runId: 'sg-outbox01', version: 0 })).toBe('done');
    expect(w.updates).toEqual([]);

    const running = await w.change('sg-outbox01', (run) => ({
      ...run,
      state: 'running',
      activity: 'reading the code',
    }));
    // The card was written just now: the update waits for the rest of the interval.
    expectDelayed(await w.process({ kind: 'card', runId: 'sg-outbox01', version: running.version }), INTERVAL);
    const later = await w.change('sg-outbox01', (run) => ({ ...run, activity: 'running the checks' }));
    const latest = await w.change('sg-outbox01', (run) => ({ ...run, activity: 'committing' }));
    w.advance(INTERVAL);

    expect(await w.process({ kind: 'card', runId: 'sg-outbox01', version: running.version })).toBe('done');
    expect(w.updates).toHaveLength(1);
    expect(JSON.stringify(w.updates[0]?.view)).toContain('committing');
    expect(await w.outbox.renderedVersion('sg-outbox01')).toBe(latest.version);
    // The jobs of the changes in between find them shown already.
    expect(await w.process({ kind: 'card', runId: 'sg-outbox01', version: later.version })).toBe('done');
    expect(await w.process({ kind: 'card', runId: 'sg-outbox01', version: latest.version })).toBe('done');
    expect(w.updates).toHaveLength(1);
  });

  it('a change that renders the same card costs no chat write, and no wait', async () => {
    const w = world();
    w.addRun();
    expect(await w.process({ kind: 'card', runId: 'sg-outbox01', version: 0 })).toBe('done');
    const same = await w.change('sg-outbox01', (run) => ({ ...run }));
    // Inside the interval: an unchanged card does not even need the slot.
    expect(await w.process({ kind: 'card', runId: 'sg-outbox01', version: same.version })).toBe('done');
    expect(w.updates).toEqual([]);
    expect(await w.outbox.renderedVersion('sg-outbox01')).toBe(same.version);
  });
});

describe('chat processor: thread order', () => {
  const reply = (key: string, gate: string): ChatJob => ({ kind: 'reply', runId: 'sg-outbox01', key, content: { type: 'gate', gate, outcome: 'passed', summary: gate } });

  it('posts a run’s replies in the order they were enqueued, whichever job runs first', async () => {
    const w = world();
    w.addRun();
    await w.outbox.enqueueReply('sg-outbox01', 'agent.1.passed');
    await w.outbox.enqueueReply('sg-outbox01', 'pr.1.passed');
    // A retried enqueue of the first keeps its place.
    await w.outbox.enqueueReply('sg-outbox01', 'agent.1.passed');
    expectDelayed(await w.process(reply('pr.1.passed', 'pr')), 200);
    expect(await w.process(reply('agent.1.passed', 'agent'))).toBe('done');
    expect(await w.process(reply('pr.1.passed', 'pr'))).toBe('done');
    expect(w.posted.map((m) => m.key)).toEqual(['sg-outbox01.root', 'sg-outbox01.agent.1.passed', 'sg-outbox01.pr.1.passed']);
    expect(await w.outbox.firstPendingReply('sg-outbox01', w.now())).toBeUndefined();
  });

  it('a reply whose earlier one never comes waits REPLY_ORDER_PATIENCE_MS, then posts, and the rest keep their order', async () => {
    const w = world();
    w.addRun();
    for (const key of ['lost.1.passed', 'ci.1.passed', 'merge.1.passed']) await w.outbox.enqueueReply('sg-outbox01', key);
    expectDelayed(await w.process(reply('ci.1.passed', 'ci')), 200);
    w.advance(REPLY_ORDER_PATIENCE_MS);
    // The lost one is dropped from the order; merge still waits for ci.
    expectDelayed(await w.process(reply('merge.1.passed', 'merge')), 200);
    expect(await w.process(reply('ci.1.passed', 'ci'))).toBe('done');
    expect(await w.process(reply('merge.1.passed', 'merge'))).toBe('done');
    expect(w.posted.map((m) => m.key).slice(1)).toEqual(['sg-outbox01.ci.1.passed', 'sg-outbox01.merge.1.passed']);
  });

  it('a head that was posted already (re-enqueued after its post) and a reply that lost its place wait for nothing', async () => {
    const w = world();
    w.addRun();
    await w.outbox.enqueueReply('sg-outbox01', 'agent.1.passed');
    expect(await w.process(reply('agent.1.passed', 'agent'))).toBe('done');
    // A crash redo enqueues the posted reply again: its job is a duplicate BullMQ drops, so it must not block.
    await w.outbox.enqueueReply('sg-outbox01', 'agent.1.passed');
    await w.outbox.enqueueReply('sg-outbox01', 'pr.1.passed');
    expect(await w.process(reply('pr.1.passed', 'pr'))).toBe('done');
    // A reply that was given up on (not in the order any more) posts at once, whatever is queued.
    await w.outbox.enqueueReply('sg-outbox01', 'ci.1.passed');
    expect(await w.process(reply('late.1.passed', 'late'))).toBe('done');
    expect(w.posted.map((m) => m.key).slice(1)).toEqual(['sg-outbox01.agent.1.passed', 'sg-outbox01.pr.1.passed', 'sg-outbox01.late.1.passed']);
  });
});

