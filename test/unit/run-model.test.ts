import { describe, expect, it } from 'vitest';
import { PIPELINE_POLICY } from '../helpers/policies.js';
import { applyOutcome, completeRun, currentGate, finishCancellation, forceFail, isWakeable, needsLiveJob, FOLLOW_UP_REWINDABLE, gatesFor, isStopping, markNotConfigured, newRun, requestCancellation, retryRun, rewindForFollowUp, withNextJob, type Run } from '../../src/domain/run.js';

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
    const waiting = markNotConfigured(run, 'agent', 'needs GITHUB_TOKEN');
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

describe('transitions commands and workers share (issue 8: every run transition in the domain)', () => {
  const base = newRun(policy, { id: 'sg-test0002', repo: 'acme/lib', task: 't', requester: { userId: 'U1' }, channel: 'C1', now: new Date(0) });
  const passed = (r: Run, ...gates: string[]) => gates.reduce((acc, gate) => applyOutcome(acc, gate, { kind: 'passed', summary: 'ok' }, new Date(1)), r);

  it('cancel: once, recording who and when; never on a run that is already stopping', () => {
    const cancelling = requestCancellation(base, 'U2', new Date(5));
    expect(cancelling).toMatchObject({ state: 'cancelling', cancel: { by: 'U2', at: new Date(5).toISOString() } });
    expect(cancelling === undefined ? undefined : requestCancellation(cancelling, 'U3', new Date(6))).toBeUndefined();
    expect(requestCancellation({ ...base, state: 'done' }, 'U2', new Date(5))).toBeUndefined();
    expect(isStopping(base)).toBe(false);
    expect(isStopping({ ...base, state: 'cancelling' })).toBe(true);
    expect(isStopping({ ...base, state: 'expired' })).toBe(true);
  });

  it('retry: only a failed run, from its failed gate, in a new job', () => {
    const failed = applyOutcome(passed(base, 'agent'), 'pr', { kind: 'failed', summary: 'no' }, new Date(2));
    const retried = retryRun(failed);
    expect(retried).toMatchObject({ state: 'queued', jobSeq: failed.jobSeq + 1 });
    expect(retried === undefined ? undefined : currentGate(retried)?.name).toBe('pr');
    expect(retryRun(base)).toBeUndefined();
  });

  it('a follow-up past the agent rewinds to it in a new job, keeping the pushed commit as the one to build on', () => {
    const atCi = { ...passed(base, 'agent', 'pr'), artifacts: { agent: { commitSha: 'a'.repeat(40) } } };
    const rewound = rewindForFollowUp(atCi);
    expect(rewound).toMatchObject({ state: 'running', jobSeq: atCi.jobSeq + 1, artifacts: { agent: { previousCommitSha: 'a'.repeat(40), commitSha: undefined } } });
    expect(rewound === undefined ? undefined : currentGate(rewound)?.name).toBe('agent');
    // At the agent itself the instruction is read in place; a stopping run takes none.
    expect(rewindForFollowUp(base)).toBeUndefined();
    expect(rewindForFollowUp({ ...atCi, state: 'cancelling' })).toBeUndefined();
    expect(FOLLOW_UP_REWINDABLE.has('merge')).toBe(true);
  });

  it('done and the next job', () => {
    expect(completeRun(base)).toMatchObject({ state: 'done', outcome: 'every gate passed' });
    expect(withNextJob(base).jobSeq).toBe(base.jobSeq + 1);
  });
});

describe('ending and waking a run', () => {
  const base = newRun(policy, { id: 'sg-test0003', repo: 'acme/lib', task: 't', requester: { userId: 'U1' }, channel: 'C1', now: new Date(0) });

  it('a cancel finishes only from cancelling; a forced failure only before the end', () => {
    const cancelling = requestCancellation(base, 'U2', new Date(1));
    expect(cancelling === undefined ? undefined : finishCancellation(cancelling, new Date(2))).toMatchObject({ state: 'cancelled', outcome: 'cancelled on request' });
    expect(finishCancellation(base, new Date(2))).toBeUndefined();
    expect(forceFail(base, 'over budget', new Date(2))).toMatchObject({ state: 'failed', outcome: 'over budget' });
    expect(forceFail({ ...base, state: 'done' }, 'late', new Date(2))).toBeUndefined();
  });

  it('webhooks wake runs at a gate; recovery re-adds the job of runs that need a live one', () => {
    expect(['queued', 'running', 'waiting', 'cancelling', 'done'].map((state) => isWakeable({ state: state as Run['state'] }))).toEqual([false, true, true, false, false]);
    expect(['queued', 'running', 'waiting', 'cancelling', 'done'].map((state) => needsLiveJob({ state: state as Run['state'] }))).toEqual([true, true, false, true, false]);
  });
});
