import { Redis } from 'ioredis';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { createPromotionQueue, type PromotionQueue } from '../../src/store/promotion-queue.js';
import { testPrefix } from '../helpers/ids.js';

/**
 * The per-stage promotion queue on real Redis (issue 10): first arrival first, idempotent joins,
 * leaving wakes the next active run, runs that ended (or whose lease lapsed) never block the queue,
 * and any number of concurrent joins keep one head.
 */

const clients: Redis[] = [];
afterEach(() => {
  for (const client of clients.splice(0)) client.disconnect();
});

const PROD = { namespace: 'kargo-demo', kargoStage: 'prod' };
const QA = { namespace: 'kargo-demo', kargoStage: 'qa' };
const LEASE = Date.parse('2027-01-01T00:00:00Z');

interface QueueWorld {
  queue: PromotionQueue;
  redis: Redis;
  /** Runs that ended (isActive answers false for them). */
  ended: Set<string>;
  woken: string[];
  advance(ms: number): void;
}

function queueOn(prefix: string, shared?: Pick<QueueWorld, 'ended' | 'woken'>, isActive?: (runId: string) => Promise<boolean>): QueueWorld {
  const redis = new Redis(inject('redisUrl'));
  clients.push(redis);
  const ended = shared?.ended ?? new Set<string>();
  const woken = shared?.woken ?? [];
  let now = Date.parse('2026-12-01T10:00:00Z');
  const queue = createPromotionQueue({
    redis,
    prefix,
    clock: () => new Date(now),
    isActive: isActive ?? (async (runId) => !ended.has(runId)),
    wake: async (runId) => {
      woken.push(runId);
    },
  });
  return { queue, redis, ended, woken, advance: (ms) => (now += ms) };
}

describe('promotion queue', () => {
  it('orders runs by first arrival; joining again keeps the place', async () => {
    const { queue } = queueOn(testPrefix('pq-order'));
    expect(await queue.join(PROD, 'sg-a', LEASE)).toEqual({ position: 1, size: 1, head: 'sg-a' });
    expect(await queue.join(PROD, 'sg-b', LEASE)).toEqual({ position: 2, size: 2, head: 'sg-a' });
    expect(await queue.join(PROD, 'sg-c', LEASE)).toEqual({ position: 3, size: 3, head: 'sg-a' });
    // Again, in another order: nobody moves, and the head is re-entrant.
    expect(await queue.join(PROD, 'sg-c', LEASE)).toEqual({ position: 3, size: 3, head: 'sg-a' });
    expect(await queue.join(PROD, 'sg-a', LEASE)).toEqual({ position: 1, size: 3, head: 'sg-a' });
    expect(await queue.join(PROD, 'sg-b', LEASE)).toEqual({ position: 2, size: 3, head: 'sg-a' });
    expect(await queue.entries(PROD)).toEqual(['sg-a', 'sg-b', 'sg-c']);
    // Another stage is another queue.
    expect(await queue.join(QA, 'sg-c', LEASE)).toEqual({ position: 1, size: 1, head: 'sg-c' });
  });

  it('the head leaving wakes the next run, which then heads the queue; a non-head leaving wakes nobody', async () => {
    const { queue, woken } = queueOn(testPrefix('pq-leave'));
    for (const run of ['sg-a', 'sg-b', 'sg-c']) await queue.join(PROD, run, LEASE);
    await queue.leave(PROD, 'sg-b');
    expect(woken).toEqual([]);
    expect(await queue.entries(PROD)).toEqual(['sg-a', 'sg-c']);
    await queue.leave(PROD, 'sg-a');
    expect(woken).toEqual(['sg-c']);
    expect(await queue.join(PROD, 'sg-c', LEASE)).toEqual({ position: 1, size: 1, head: 'sg-c' });
    // Leaving twice (a retried clean-up) is a no-op and wakes nobody again.
    await queue.leave(PROD, 'sg-a');
    expect(woken).toEqual(['sg-c']);
    // A run that left and joins again (a fix forward back at the stage) queues at the end.
    expect(await queue.join(PROD, 'sg-a', LEASE)).toEqual({ position: 2, size: 2, head: 'sg-c' });
  });

  it('leaveAll leaves every queue the run is in, waking the next of each', async () => {
    const { queue, woken } = queueOn(testPrefix('pq-leave-all'));
    await queue.join(PROD, 'sg-a', LEASE);
    await queue.join(QA, 'sg-a', LEASE);
    await queue.join(PROD, 'sg-b', LEASE);
    await queue.join(QA, 'sg-c', LEASE);
    await queue.leaveAll('sg-a');
    expect(woken.sort()).toEqual(['sg-b', 'sg-c']);
    expect(await queue.entries(PROD)).toEqual(['sg-b']);
    expect(await queue.entries(QA)).toEqual(['sg-c']);
    await queue.leaveAll('sg-a');
    expect(woken).toHaveLength(2);
  });

  it('a head whose run ended without leaving is dropped by the next look, and the new head is woken', async () => {
    const { queue, ended, woken } = queueOn(testPrefix('pq-ended'));
    for (const run of ['sg-a', 'sg-b', 'sg-c', 'sg-d']) await queue.join(PROD, run, LEASE);
    // sg-a and sg-b ended (a worker died before its clean-up): sg-d's look drops both and wakes sg-c.
    ended.add('sg-a');
    ended.add('sg-b');
    expect(await queue.join(PROD, 'sg-d', LEASE)).toEqual({ position: 2, size: 2, head: 'sg-c' });
    expect(woken).toEqual(['sg-c']);
    expect(await queue.join(PROD, 'sg-c', LEASE)).toEqual({ position: 1, size: 2, head: 'sg-c' });
    // A head leaving past an ended run wakes the first active one.
    await queue.join(PROD, 'sg-e', LEASE);
    ended.add('sg-d');
    await queue.leave(PROD, 'sg-c');
    expect(woken).toEqual(['sg-c', 'sg-e']);
    expect(await queue.entries(PROD)).toEqual(['sg-e']);
  });

  it('an entry whose lease lapsed no longer holds its place', async () => {
    const world = queueOn(testPrefix('pq-lease'));
    const { queue } = world;
    await queue.join(PROD, 'sg-a', Date.parse('2026-12-01T11:00:00Z'));
    await queue.join(PROD, 'sg-b', Date.parse('2026-12-01T13:00:00Z'));
    expect(await queue.join(PROD, 'sg-b', Date.parse('2026-12-01T13:00:00Z'))).toMatchObject({ position: 2 });
    world.advance(2 * 3_600_000);
    expect(await queue.join(PROD, 'sg-b', Date.parse('2026-12-01T13:00:00Z'))).toEqual({ position: 1, size: 1, head: 'sg-b' });
    expect(await queue.entries(PROD)).toEqual(['sg-b']);
  });

  it('a drop judged on a stale look leaves alone the place the run took again meanwhile', async () => {
    const prefix = testPrefix('pq-stale-drop');
    const other = queueOn(prefix);
    let raced = false;
    // While sg-b's look asks whether sg-a is still active, sg-a leaves and joins again (a retried run
    // back at the stage): the answer "ended" is about its old entry, not its new one.
    const world = queueOn(prefix, undefined, async (runId) => {
      if (runId !== 'sg-a' || raced) return true;
      raced = true;
      await other.queue.leave(PROD, 'sg-a');
      await other.queue.join(PROD, 'sg-a', LEASE);
      return false;
    });
    await world.queue.join(PROD, 'sg-a', LEASE);
    expect(await world.queue.join(PROD, 'sg-b', LEASE)).toEqual({ position: 1, size: 2, head: 'sg-b' });
    expect(raced).toBe(true);
    expect(await world.queue.entries(PROD)).toEqual(['sg-b', 'sg-a']);
  });

  it('20 concurrent joins from separate clients keep one head, distinct places and one entry each', async () => {
    const prefix = testPrefix('pq-concurrent');
    const first = queueOn(prefix);
    const worlds = [first, ...Array.from({ length: 19 }, () => queueOn(prefix, first))];
    const runs = worlds.map((_, i) => `sg-c${String(i).padStart(3, '0')}`);
    // Each run joins twice at once (a redelivered job beside the first).
    const places = await Promise.all(worlds.flatMap((world, i) => [world.queue.join(PROD, runs[i] ?? '', LEASE), world.queue.join(PROD, runs[i] ?? '', LEASE)]));
    const byRun = new Map<string, number[]>();
    places.forEach((place, i) => {
      const run = runs[Math.floor(i / 2)] ?? '';
      byRun.set(run, [...(byRun.get(run) ?? []), place.position]);
    });
    const entries = await first.queue.entries(PROD);
    expect(entries).toHaveLength(20);
    expect(new Set(entries).size).toBe(20);
    const head = entries[0];
    // Both joins of a run agree on its position once everyone had arrived, and the head is one run.
    const final = await Promise.all(runs.map((run) => first.queue.join(PROD, run, LEASE)));
    expect(final.map((p) => p.head)).toEqual(runs.map(() => head));
    expect(final.filter((p) => p.position === 1)).toHaveLength(1);
    expect(new Set(final.map((p) => p.position)).size).toBe(20);
    for (const [run, positions] of byRun) {
      const expected = entries.indexOf(run) + 1;
      // Later arrivals queue behind: a place, once taken, never changes while nobody leaves.
      expect(positions).toEqual([expected, expected]);
    }
  });
});
