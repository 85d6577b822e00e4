import { Redis } from 'ioredis';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { createRunStore } from '../../src/store/run-store.js';
import { startAnthropicServer, type AnthropicServer } from '../helpers/anthropic-server.js';
import { eventually } from '../helpers/eventually.js';
import { testPrefix } from '../helpers/ids.js';
import { killAll, removePolicyFile, spawnShipgate, writePolicyFile, type ShipgateProcess } from '../helpers/process.js';

/**
 * SIGTERM while a step is in flight (issue 14): the process stops taking work, aborts the step
 * through its signal (here a model call the scripted model holds for a minute), hands the run's job
 * back and exits within 5 s; the next process picks the job up at once and the run completes. Real
 * processes in local mode (the local forge, the real sandbox), real Redis.
 */

const DEMO_POLICY =
  'repos:\n  demo/shop:\n    path: ./repos/shop.git\n    sample: true\n    checks: { test: node --test }\n    ci: { test: node --test }\n';
const processes: ShipgateProcess[] = [];
const policies: string[] = [];
let model: AnthropicServer | undefined;
let redis: Redis | undefined;

afterEach(async () => {
  await killAll(processes.splice(0));
  for (const path of policies.splice(0)) removePolicyFile(path);
  await model?.close();
  model = undefined;
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

describe('SIGTERM mid-step', { timeout: 120_000 }, () => {
  it('exits within 5 s while the model call is in flight, and the run completes in the next process', async () => {
    model = await startAnthropicServer({ apiKey: 'sk-ant-scripted' });
    // The first answer is held for a minute: the SIGTERM lands while the bot waits for it.
    model.script({ ...edit, delayMs: 60_000 }, edit, { content: [{ type: 'text', text: 'Added GET /healthz.' }] });
    const policy = writePolicyFile(DEMO_POLICY);
    policies.push(policy);
    const prefix = testPrefix('graceful-stop');
    const env = {
      REDIS_URL: inject('redisUrl'),
      PORT: '0',
      SHIPGATE_CONFIG: policy,
      SHIPGATE_REDIS_PREFIX: prefix,
      ANTHROPIC_BASE_URL: model.baseUrl,
      ANTHROPIC_API_KEY: 'sk-ant-scripted',
    };
    const first = spawnShipgate(env);
    processes.push(first);
    await first.waitForOutput(/console chat — you are ULOCAL/, 60_000);
    first.child.stdin.write('/ship demo/shop add a /healthz endpoint\n');
    const runId = (await first.waitForOutput(/Queued run (sg-[a-z0-9]{8})/, 30_000))[1] ?? '';
    const server = model;
    await eventually(async () => (server.requests.length >= 1 ? true : undefined), 'the held model call', 60_000);

    const sent = Date.now();
    first.child.kill('SIGTERM');
    const code = await first.exited;
    const took = Date.now() - sent;
    expect(code).toBe(0);
    expect(took).toBeLessThan(5_000);
    expect(first.stderr()).not.toMatch(/shutdown did not finish|Unhandled|unhandled rejection/);

    // The job was handed back, not left to stall: the next process takes it and finishes the run.
    redis = new Redis(inject('redisUrl'));
    const store = createRunStore({ redis, prefix, clock: () => new Date() });
    expect((await store.get(runId))?.state).not.toMatch(/done|failed|cancelled/);
    const second = spawnShipgate(env);
    processes.push(second);
    await eventually(
      async () => ((await store.get(runId))?.state === 'done' ? true : undefined),
      'the run done in the next process',
      90_000,
    );
    expect(model.remaining()).toBe(0);
    expect(model.unexpected).toEqual([]);
    second.child.stdin.end();
    expect(await second.exited).toBe(0);
  });
});
