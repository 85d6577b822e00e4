import { describe, expect, it } from 'vitest';
import { PIPELINE_POLICY } from '../helpers/policies.js';
import { applyOutcome, currentGate, gatesFor, markNotConfigured, newRun } from '../../src/domain/run.js';

const policy = PIPELINE_POLICY;

describe('gatesFor', () => {
  it('puts freight, stages and the approval before the stage that asks for it', () => {
    expect(gatesFor(policy, 'acme/shop').map((g) => g.name)).toEqual([
      'agent', 'pr', 'ci', 'merge', 'freight', 'stage:dev', 'approval', 'stage:prod',
    ]);
  });
  it('ends at merge for a repository without a Kargo pipeline', () => {
    expect(gatesFor(policy, 'acme/lib').map((g) => g.name)).toEqual(['agent', 'pr', 'ci', 'merge']);
  });
});

describe('run transitions', () => {
  const run = newRun(policy, { id: 'sg-test0001', repo: 'acme/lib', task: 't', requester: { userId: 'U1' }, channel: 'C1', now: new Date(0) });

  it('a gate without a step stays pending and is never reported passed', () => {
    const waiting = markNotConfigured(run, 'agent');
    expect(waiting.state).toBe('waiting');
    expect(waiting.gates[0]).toMatchObject({ state: 'pending', notConfigured: true });
  });

  it('passing every gate completes the run; a failure fails it with the reason', () => {
    let r = run;
    for (const gate of ['agent', 'pr', 'ci']) r = applyOutcome(r, gate, { kind: 'passed', summary: 'ok' }, new Date(1));
    expect(currentGate(r)?.name).toBe('merge');
    const failed = applyOutcome(r, 'merge', { kind: 'failed', summary: 'PR closed' }, new Date(2));
    expect(failed).toMatchObject({ state: 'failed', outcome: 'merge failed: PR closed' });
    const done = applyOutcome(r, 'merge', { kind: 'passed', summary: 'merged' }, new Date(2));
    expect(done.state).toBe('done');
  });
});
