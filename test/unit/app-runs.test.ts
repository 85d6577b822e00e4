import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { ExternalOutageError } from '../../src/errors.js';
import { recoverRuns } from '../../src/app/recover-runs.js';
import { runFailurePolicy, type FailedRunJob } from '../../src/app/run-failure-policy.js';
import { wakeRunsOnGitHubEvent } from '../../src/app/wake-runs.js';
import { parsePolicy } from '../../src/config/config.js';
import { newRun, type Run, type RunState } from '../../src/domain/run.js';
import type { GitHubEvent } from '../../src/http/github-webhooks.js';
import { createLogger } from '../../src/log.js';
import type { RunIndexKey } from '../../src/store/run-index.js';

/**
 * What the composition root used to do inline (issue 8), now on its own against in-memory stores:
 * a GitHub webhook wakes the runs it concerns, a starting worker makes sure every run that should
 * have a job has one, and a run job BullMQ gives up on ends its run.
 */

const policy = parsePolicy('repos:\n  acme/shop: {}\n', 'test');
const SHA = 'a'.repeat(40);

function run(id: string, state: RunState, jobSeq = 2): Run {
  return {
    ...newRun(policy, {
      id,
      repo: 'acme/shop',
      task: 't',
      requester: { userId: 'U1' },
      channel: 'C1',
      now: new Date(0),
    }),
    state,
    jobSeq,
  };
}

function world(runs: Run[], links: Array<[RunIndexKey, string]>) {
  const byId = new Map(runs.map((r) => [r.id, r]));
  const keyOf = (key: RunIndexKey) => JSON.stringify(key);
  const index = new Map<string, string[]>();
  for (const [key, runId] of links) index.set(keyOf(key), [...(index.get(keyOf(key)) ?? []), runId]);
  const poked: string[] = [];
  const woken: Array<[string, number]> = [];
  const ensured: Array<[string, number]> = [];
  return {
    poked,
    woken,
    ensured,
    deps: {
      index: { find: async (key: RunIndexKey) => index.get(keyOf(key)) ?? [] },
      store: { get: async (id: string) => byId.get(id), listActive: async () => runs },
      pokes: {
        poke: async (runId: string) => {
          poked.push(runId);
        },
      },
      queues: {
        wakeRun: async (runId: string, jobSeq: number) => {
          woken.push([runId, jobSeq]);
        },
        ensureRunJob: async (runId: string, jobSeq: number) => {
          ensured.push([runId, jobSeq]);
        },
      },
      log: createLogger({ level: 'silent', destination: new PassThrough() }),
    },
  };
}

const checks: GitHubEvent = { kind: 'checks', repo: 'acme/shop', headSha: SHA, deliveryId: 'd1' };
const pullRequest: GitHubEvent = {
  kind: 'pull_request',
  repo: 'acme/shop',
  number: 7,
  headSha: SHA,
  action: 'closed',
  deliveryId: 'd2',
};

describe('wakeRunsOnGitHubEvent', () => {
  it('a checks event pokes the runs watching the commit and wakes the waiting ones now', async () => {
    const w = world(
      [run('sg-wait', 'waiting', 3), run('sg-busy', 'running', 1)],
      [
        [{ kind: 'commit', repo: 'acme/shop', sha: SHA }, 'sg-wait'],
        [{ kind: 'commit', repo: 'acme/shop', sha: SHA }, 'sg-busy'],
      ],
    );
    await wakeRunsOnGitHubEvent(w.deps)(checks);
    // A running gate is not re-queued: the poke makes it look again as soon as it ends pending.
    expect(w.poked.sort()).toEqual(['sg-busy', 'sg-wait']);
    expect(w.woken).toEqual([['sg-wait', 3]]);
  });

  it('a pull request event finds runs by the PR as well as by its head commit, each once', async () => {
    const w = world(
      [run('sg-pr', 'waiting'), run('sg-head', 'waiting')],
      [
        [{ kind: 'pull', repo: 'acme/shop', number: 7 }, 'sg-pr'],
        [{ kind: 'commit', repo: 'acme/shop', sha: SHA }, 'sg-head'],
        [{ kind: 'commit', repo: 'acme/shop', sha: SHA }, 'sg-pr'],
      ],
    );
    await wakeRunsOnGitHubEvent(w.deps)(pullRequest);
    expect(w.woken.map(([id]) => id).sort()).toEqual(['sg-head', 'sg-pr']);
  });

  it('leaves alone runs that are queued, cancelling, ended, unknown, or in another repository', async () => {
    const w = world(
      [run('sg-queued', 'queued'), run('sg-cancelling', 'cancelling'), run('sg-done', 'done')],
      [
        [{ kind: 'commit', repo: 'acme/shop', sha: SHA }, 'sg-queued'],
        [{ kind: 'commit', repo: 'acme/shop', sha: SHA }, 'sg-cancelling'],
        [{ kind: 'commit', repo: 'acme/shop', sha: SHA }, 'sg-done'],
        [{ kind: 'commit', repo: 'acme/shop', sha: SHA }, 'sg-vanished'],
        [{ kind: 'commit', repo: 'acme/other', sha: SHA }, 'sg-other'],
      ],
    );
    await wakeRunsOnGitHubEvent(w.deps)(checks);
    expect(w.poked).toEqual([]);
    expect(w.woken).toEqual([]);
  });
});

describe('recoverRuns', () => {
  it('re-adds the current job of every queued, running and cancelling run; a waiting run only gets one when its delayed job is missing', async () => {
    const w = world(
      [run('sg-q', 'queued', 0), run('sg-r', 'running', 4), run('sg-c', 'cancelling', 5), run('sg-w', 'waiting', 6)],
      [],
    );
    await recoverRuns(w.deps);
    expect(w.woken).toEqual([
      ['sg-q', 0],
      ['sg-r', 4],
      ['sg-c', 5],
    ]);
    expect(w.ensured).toEqual([['sg-w', 6]]);
  });
});

describe('runFailurePolicy', () => {
  function failedJob(state: string | Error): FailedRunJob {
    return {
      data: { runId: 'sg-job' },
      attemptsMade: 8,
      getState: async () => {
        if (state instanceof Error) throw state;
        return state === 'failed' ? 'failed' : 'waiting';
      },
    };
  }

  function policyWith(failRun: (runId: string, reason: string) => Promise<void>) {
    const lines: string[] = [];
    const destination = new PassThrough();
    destination.on('data', (chunk: Buffer) => lines.push(...chunk.toString().trim().split('\n')));
    return { lines, onFailed: runFailurePolicy({ log: createLogger({ level: 'warn', destination }), failRun }) };
  }

  it('ends the run once BullMQ will not retry the job, with the error as the reason', async () => {
    const ended: Array<[string, string]> = [];
    const { onFailed } = policyWith(async (runId, reason) => {
      ended.push([runId, reason]);
    });
    await onFailed(failedJob('failed'), new Error('boom'));
    expect(ended).toEqual([['sg-job', 'internal error after retries: boom']]);
  });

  it('leaves a job that will be retried to BullMQ, and ignores a failure without a job', async () => {
    const ended: string[] = [];
    const { onFailed } = policyWith(async (runId) => {
      ended.push(runId);
    });
    await onFailed(failedJob('waiting'), new Error('flaky'));
    await onFailed(undefined, new Error('no job'));
    expect(ended).toEqual([]);
  });

  it('never rejects: a failure to end the run is logged', async () => {
    const { onFailed, lines } = policyWith(async () => {
      throw new Error('redis down');
    });
    await expect(onFailed(failedJob('failed'), new Error('boom'))).resolves.toBeUndefined();
    await expect(onFailed(failedJob(new Error('no state')), new Error('boom'))).resolves.toBeUndefined();
    await new Promise((resolve) => setImmediate(resolve));
    expect(lines.filter((line) => line.includes('could not record run failure'))).toHaveLength(2);
  });

  it('logs an outage by its reason alone (the thread says it already), and anything else with its stack', async () => {
    const { onFailed, lines } = policyWith(async () => undefined);
    await onFailed(failedJob('waiting'), new ExternalOutageError('github', 'connect ECONNREFUSED 127.0.0.1:9'));
    await onFailed(failedJob('waiting'), new Error('a bug'));
    await new Promise((resolve) => setImmediate(resolve));
    const outage = lines.find((line) => line.includes('out of reach'));
    expect(outage).toContain('github: connect ECONNREFUSED 127.0.0.1:9');
    expect(outage).not.toContain('"stack"');
    expect(lines.find((line) => line.includes('a bug'))).toContain('"stack"');
  });
});
