import { describe, expect, it } from 'vitest';
import { startAnthropicServer } from '../helpers/anthropic-server.js';
import {
  addHealthz,
  localWorld,
  modelAsked,
  processScope,
  runEnded,
  saysDone,
  shipFromConsole,
  sigterm,
} from '../helpers/kill-world.js';

/**
 * SIGTERM while a step is in flight (issue 14): the process stops taking work, aborts the step
 * through its signal (here a model call the scripted model holds for a minute), hands the run's job
 * back and exits within 5 s; the next process picks the job up at once and the run completes. Real
 * processes in local mode (the local forge, the real sandbox), real Redis.
 */

const scope = processScope();

describe('SIGTERM mid-step', { timeout: 120_000 }, () => {
  it('exits within 5 s while the model call is in flight, and the run completes in the next process', async () => {
    const model = await startAnthropicServer({ apiKey: 'sk-ant-scripted' });
    scope.defer(() => model.close());
    // The first answer is held for a minute: the SIGTERM lands while the bot waits for it.
    model.script({ ...addHealthz, delayMs: 60_000 }, addHealthz, saysDone('Added GET /healthz.'));
    const { env, store } = localWorld(scope, 'graceful-stop', model);
    const first = scope.spawn(env);
    const runId = await shipFromConsole(first);
    await modelAsked(model, 1, 'the held model call', 60_000);

    const stopped = await sigterm(first);
    expect(stopped.code).toBe(0);
    expect(stopped.ms).toBeLessThan(5_000);
    expect(first.stderr()).not.toMatch(/shutdown did not finish|Unhandled|unhandled rejection/);

    // The job was handed back, not left to stall: the next process takes it and finishes the run.
    expect((await store.get(runId))?.state).not.toMatch(/done|failed|cancelled/);
    const second = scope.spawn(env);
    const ended = await runEnded(store, runId, 'the run ended in the next process', 90_000);
    expect(ended.state, ended.outcome).toBe('done');
    expect(model.remaining()).toBe(0);
    expect(model.unexpected).toEqual([]);
    second.child.stdin.end();
    expect(await second.exited).toBe(0);
  });
});
