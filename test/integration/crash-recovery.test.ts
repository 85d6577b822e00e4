import { Redis } from 'ioredis';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { advanceJobId, createQueues, type Queues } from '../../src/queue/queues.js';
import { bullConnection } from '../../src/redis.js';
import { createRunStore } from '../../src/store/run-store.js';
import { startAnthropicServer, type AnthropicServer } from '../helpers/anthropic-server.js';
import { eventually } from '../helpers/eventually.js';
import { testPrefix } from '../helpers/ids.js';
import { killAll, removePolicyFile, spawnShipgate, writePolicyFile, type ShipgateProcess } from '../helpers/process.js';

/**
 * SIGKILL while a step is in flight (issue 14): nothing hands the job back, so it comes back
 * through BullMQ's stalled-job check once its lock lapses. The same job is killed twice, mid
 * model call, in two processes; the third process continues the run to done. With BullMQ's
 * default maxStalledCount (1) the second kill would have failed the run ("job stalled more than
 * allowable limit"). Real processes in local mode (the local forge, the real sandbox), real Redis.
 */

const DEMO_POLICY =
  'repos:\n  demo/shop:\n    path: ./repos/shop.git\n    sample: true\n    checks: { test: node --test }\n    ci: { test: node --test }\n';
const processes: ShipgateProcess[] = [];
const policies: string[] = [];
let model: AnthropicServer | undefined;
let redis: Redis | undefined;
let queues: Queues | undefined;

afterEach(async () => {
  await killAll(processes.splice(0));
  for (const path of policies.splice(0)) removePolicyFile(path);
  await model?.close();
  model = undefined;
  await queues?.close();
  queues = undefined;
  redis?.disconnect();
});

const edit = {
  content: [
    {
      type: 'tool_use' as const,
      id: 't1',
      name: 'str_replace_based_edit_tool',
      input: {
        command: 'str_replace',
        path: '/repo/src/app.js',
        old_str: "  '/products':",
        new_str: "  '/healthz': () => ({ status: 200, body: { ok: true } }),\n  '/products':",
      },
    },
  ],
};

describe('SIGKILL mid-step', { timeout: 240_000 }, () => {
  it('a run whose job was killed twice continues on a new process and completes', async () => {
    model = await startAnthropicServer({ apiKey: 'sk-ant-scripted' });
    // The first two answers are held for minutes: each process is killed while it waits for one.
    model.script({ ...edit, delayMs: 120_000 }, { ...edit, delayMs: 120_000 }, edit, {
      content: [{ type: 'text', text: 'Added GET /healthz.' }],
    });
    const policy = writePolicyFile(DEMO_POLICY);
    policies.push(policy);
    const prefix = testPrefix('crash-recovery');
    const env = {
      REDIS_URL: inject('redisUrl'),
      PORT: '0',
      SHIPGATE_CONFIG: policy,
      SHIPGATE_REDIS_PREFIX: prefix,
      ANTHROPIC_BASE_URL: model.baseUrl,
      ANTHROPIC_API_KEY: 'sk-ant-scripted',
    };
    redis = new Redis(inject('redisUrl'));
    const store = createRunStore({ redis, prefix, clock: () => new Date() });
    queues = createQueues({ connection: bullConnection(inject('redisUrl')), prefix });
    const server = model;
    const modelRequests = (n: number) => async () => (server.requests.length >= n ? true : undefined);

    const first = spawnShipgate(env);
    processes.push(first);
    await first.waitForOutput(/console chat — you are ULOCAL/, 60_000);
    first.child.stdin.write('/ship demo/shop add a /healthz endpoint\n');
    const runId = (await first.waitForOutput(/Queued run (sg-[a-z0-9]{8})/, 30_000))[1] ?? '';
    await eventually(modelRequests(1), 'the first held model call', 60_000);
    const jobId = advanceJobId(runId, (await store.get(runId))?.jobSeq ?? -1);
    first.child.kill('SIGKILL');
    await first.exited;

    // No hand-back happened: the second process gets the job only through the stalled check.
    const second = spawnShipgate(env);
    processes.push(second);
    await eventually(modelRequests(2), 'the second process at the model call', 90_000);
    second.child.kill('SIGKILL');
    await second.exited;

    const third = spawnShipgate(env);
    processes.push(third);
    // Either the run goes on (the third model call) or BullMQ failed its job for the stalls.
    await eventually(
      async () => server.requests.length >= 3 || (await store.get(runId))?.state === 'failed',
      'the third process at the model call',
      90_000,
    );
    expect((await store.get(runId))?.state).not.toBe('failed');
    // Both kills stalled this one job (the run did not move to a new job in between).
    const job = await queues.runs.getJob(jobId);
    expect(job?.stalledCounter).toBe(2);
    const ended = await eventually(
      async () => {
        const run = await store.get(runId);
        return run?.state === 'done' || run?.state === 'failed' ? run : undefined;
      },
      'the run ended in the third process',
      120_000,
    );
    expect(ended.state, ended.outcome).toBe('done');
    expect(model.remaining()).toBe(0);
    expect(model.unexpected).toEqual([]);
    third.child.stdin.end();
    expect(await third.exited).toBe(0);
  });
});
