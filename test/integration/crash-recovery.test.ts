import { describe, expect, inject, it } from 'vitest';
import { advanceJobId, createQueues } from '../../src/queue/queues.js';
import { bullConnection } from '../../src/redis.js';
import { startAnthropicServer } from '../helpers/anthropic-server.js';
import { eventually } from '../helpers/eventually.js';
import {
  addHealthz,
  localWorld,
  modelAsked,
  processScope,
  runEnded,
  saysDone,
  shipFromConsole,
  sigkill,
} from '../helpers/kill-world.js';

/**
 * SIGKILL while a step is in flight (issue 14): nothing hands the job back, so it comes back
 * through BullMQ's stalled-job check once its lock lapses. The same job is killed twice, mid
 * model call, in two processes; the third process continues the run to done. With BullMQ's
 * default maxStalledCount (1) the second kill would have failed the run ("job stalled more than
 * allowable limit"). Real processes in local mode (the local forge, the real sandbox), real Redis.
 */

const scope = processScope();

describe('SIGKILL mid-step', { timeout: 240_000 }, () => {
  it('a run whose job was killed twice continues on a new process and completes', async () => {
    const model = await startAnthropicServer({ apiKey: 'sk-ant-scripted' });
    scope.defer(() => model.close());
    // The first two answers are held for minutes: each process is killed while it waits for one.
    model.script(
      { ...addHealthz, delayMs: 120_000 },
      { ...addHealthz, delayMs: 120_000 },
      addHealthz,
      saysDone('Added GET /healthz.'),
    );
    const { env, prefix, store } = localWorld(scope, 'crash-recovery', model);
    const queues = createQueues({ connection: bullConnection(inject('redisUrl')), prefix });
    scope.defer(() => queues.close());

    const first = scope.spawn(env);
    const runId = await shipFromConsole(first);
    await modelAsked(model, 1, 'the first held model call', 60_000);
    const jobId = advanceJobId(runId, (await store.get(runId))?.jobSeq ?? -1);
    await sigkill(first);

    // No hand-back happened: the second process gets the job only through the stalled check.
    const second = scope.spawn(env);
    await modelAsked(model, 2, 'the second process at the model call', 90_000);
    await sigkill(second);

    const third = scope.spawn(env);
    // Either the run goes on (the third model call) or BullMQ failed its job for the stalls.
    await eventually(
      async () => model.requests.length >= 3 || (await store.get(runId))?.state === 'failed',
      'the third process at the model call',
      90_000,
    );
    expect((await store.get(runId))?.state).not.toBe('failed');
    // Both kills stalled this one job (the run did not move to a new job in between).
    const job = await queues.runs.getJob(jobId);
    expect(job?.stalledCounter).toBe(2);
    const ended = await runEnded(store, runId, 'the run ended in the third process', 120_000);
    expect(ended.state, ended.outcome).toBe('done');
    expect(model.remaining()).toBe(0);
    expect(model.unexpected).toEqual([]);
    third.child.stdin.end();
    expect(await third.exited).toBe(0);
  });
});
