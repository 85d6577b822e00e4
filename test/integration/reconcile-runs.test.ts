import { Redis } from 'ioredis';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { recoverRuns } from '../../src/app/recover-runs.js';
import { parsePolicy } from '../../src/config/config.js';
import { newRun, withNextJob, type Run } from '../../src/domain/run.js';
import { advanceJobId, createQueues, type Queues } from '../../src/queue/queues.js';
import { createRunStore } from '../../src/store/run-store.js';
import { testPrefix } from '../helpers/ids.js';

/**
 * The reconcile of runs (issue 14) against real Redis and BullMQ: a waiting run whose delayed job is
 * gone gets one back, one that has it keeps it untouched; and a wake that races its job becoming due
 * is no error.
 */

const url = new URL(inject('redisUrl'));
const policy = parsePolicy('repos:\n  acme/shop: {}\n', 'test');
let queues: Queues | undefined;
let redis: Redis | undefined;

afterEach(async () => {
  await queues?.runs.obliterate({ force: true });
  await queues?.close();
  queues = undefined;
  redis?.disconnect();
});

async function setUp(name: string) {
  const prefix = testPrefix(name);
  redis = new Redis(inject('redisUrl'));
  queues = createQueues({ connection: { host: url.hostname, port: Number(url.port) }, prefix });
  const store = createRunStore({ redis, prefix, clock: () => new Date() });
  const waiting = async (id: string): Promise<Run> => {
    const run = withNextJob({
      ...newRun(policy, {
        id,
        repo: 'acme/shop',
        task: 't',
        requester: { userId: 'UALICE' },
        channel: 'CSHOP',
        now: new Date(),
      }),
      state: 'waiting',
    });
    await store.create(run, `delivery-${id}`);
    return run;
  };
  return { store, queues, waiting };
}

describe('reconciling runs', () => {
  it('gives a waiting run without its delayed job a job due now, and leaves one with its job alone', async () => {
    const { store, queues: q, waiting } = await setUp('reconcile');
    const lost = await waiting('sg-lost0001');
    const kept = await waiting('sg-kept0001');
    await q.scheduleRun(kept.id, kept.jobSeq, 600_000);

    await recoverRuns({ store, queues: q });
    const recovered = await q.runs.getJob(advanceJobId(lost.id, lost.jobSeq));
    expect(await recovered?.getState()).toBe('waiting');
    const untouched = await q.runs.getJob(advanceJobId(kept.id, kept.jobSeq));
    expect(await untouched?.getState()).toBe('delayed');
    // Idempotent: a second pass (another worker's) adds nothing.
    await recoverRuns({ store, queues: q });
    expect(await q.runs.getJobCounts('waiting', 'delayed')).toMatchObject({ waiting: 1, delayed: 1 });
  });

  it('a wake of a delayed job that another wake promoted meanwhile is no error', async () => {
    const { queues: q } = await setUp('reconcile-wake');
    await q.scheduleRun('sg-wake0001', 1, 600_000);
    // Twenty concurrent wakes: each reads "delayed", one promotes, the others find it moved on.
    await Promise.all(Array.from({ length: 20 }, () => q.wakeRun('sg-wake0001', 1)));
    expect(await (await q.runs.getJob(advanceJobId('sg-wake0001', 1)))?.getState()).toBe('waiting');
  });
});
