import { describe, expect, it } from 'vitest';
import { parsePolicy } from '../../src/config/config.js';
import { applyOutcome, currentGate, fixForwardArtifacts, mergeArtifacts, newRun, resetForRetry, type GateOutcome, type Run, type RunArtifacts } from '../../src/domain/run.js';
import { runBranch } from '../../workers/gates/agent/workspace.js';

/**
 * The fix forward after a red deploy gate (SPEC §1), as domain transitions: `retry-from` the agent
 * with `restart: 'new-branch'` sends every gate from the agent onward back to pending and starts the
 * agent over on a new branch — the old branch's pull request, CI, merge and Freight are forgotten,
 * the agent's turns (a run-wide budget) and the deploy loop's bookkeeping are kept. And
 * `mergeArtifacts` over the deploy gates' namespaces.
 */

const policy = parsePolicy(
  `
repos:
  acme/shop: { pipeline: shop }
pipelines:
  shop:
    kargo: { project: shop, warehouse: shop }
    stages:
      - { name: dev, kargoStage: dev }
      - { name: staging, kargoStage: staging }
budgets: { maxDeployIterations: 2 }
`,
  'test',
);

const OLD_COMMIT = 'a'.repeat(40);
const MERGE = 'b'.repeat(40);
const NEW_COMMIT = 'c'.repeat(40);
const NEXT_COMMIT = 'd'.repeat(40);
const at = (minute: number) => new Date(Date.UTC(2026, 11, 1, 10, minute));
const passed = (summary: string): GateOutcome => ({ kind: 'passed', summary });

/** A run that got through merge, freight and stage:dev, and is at stage:staging with everything the gates recorded. */
function atStaging(): Run {
  let run = newRun(policy, { id: 'sg-fixfwd01', repo: 'acme/shop', task: 'add /healthz', requester: { userId: 'U1' }, channel: 'C1', now: at(0) });
  for (const gate of ['agent', 'pr', 'ci', 'merge', 'freight', 'stage:dev']) run = applyOutcome(run, gate, passed(`${gate} ok`), at(1));
  return {
    ...run,
    state: 'waiting',
    gates: run.gates.map((g) => (g.name === 'stage:staging' ? { ...g, state: 'running', startedAt: at(2).toISOString() } : g)),
    links: { pr: 'https://github.test/acme/shop/pull/3', ci: 'https://github.test/acme/shop/pull/3/checks' },
    artifacts: {
      agent: { branch: 'shipgate/sg-fixfwd01-add-healthz', commitSha: OLD_COMMIT, previousCommitSha: 'e'.repeat(40), summary: 'added it', diffStat: '1 file', turns: 12, checks: [{ name: 'test', passed: true }], testWarnings: ['w'] },
      pr: { number: 3 },
      ci: { iterations: 1, fingerprints: ['ci-fp-1'] },
      merge: { commitSha: MERGE },
      freight: { name: 'f1', alias: 'wonky-wombat', matchedBy: 'https://github.test/acme/shop.git', revisions: [{ repoURL: 'https://github.test/acme/shop.git', revision: MERGE }] },
      deploy: { stages: { dev: { promotion: 'dev.p1', promotedAt: at(1).toISOString() }, staging: { promotion: 'staging.p1', signalsSince: at(2).toISOString() } } },
    },
  };
}

const red: GateOutcome = {
  kind: 'retry-from',
  gate: 'agent',
  restart: 'new-branch',
  summary: 'Deploy gate stage:staging failed.\nSent back to the agent to fix forward (fix 1 of at most 2).',
  feedback: '<deploy_failure>\nPromotion staging.p1 ended Failed.\n</deploy_failure>',
  artifacts: { deploy: { iterations: 1, fingerprints: ['deploy-fp-1'] } },
};

describe('fix forward after a red deploy gate', () => {
  it('sends every gate from the agent onward back to pending, keeping the verdict as the red gate summary', () => {
    const before = atStaging();
    const fixed = applyOutcome(before, 'stage:staging', red, at(3));
    expect(fixed.state).toBe('running');
    expect(fixed.outcome).toBeUndefined();
    expect(currentGate(fixed)?.name).toBe('agent');
    expect(fixed.gates).toEqual([
      { name: 'agent', kind: 'agent', state: 'pending', summary: 'agent ok' },
      { name: 'pr', kind: 'pr', state: 'pending', summary: 'pr ok' },
      { name: 'ci', kind: 'ci', state: 'pending', summary: 'ci ok' },
      { name: 'merge', kind: 'merge', state: 'pending', summary: 'merge ok' },
      { name: 'freight', kind: 'freight', state: 'pending', summary: 'freight ok' },
      { name: 'stage:dev', kind: 'stage', state: 'pending', summary: 'stage:dev ok' },
      { name: 'stage:staging', kind: 'stage', state: 'pending', summary: red.summary },
    ]);
    expect(fixed.jobSeq).toBe(before.jobSeq);
  });

  it('drops the old branch, PR, CI, merge and Freight; the agent starts with its turns and the failure only; deploy bookkeeping stays without stages', () => {
    const fixed = applyOutcome(atStaging(), 'stage:staging', red, at(3));
    expect(Object.keys(fixed.artifacts).sort()).toEqual(['agent', 'deploy']);
    expect(fixed.artifacts.agent).toStrictEqual({ turns: 12, feedback: red.feedback });
    expect(fixed.artifacts.deploy).toStrictEqual({ iterations: 1, fingerprints: ['deploy-fp-1'], stages: undefined, mergedBranches: ['shipgate/sg-fixfwd01-add-healthz'] });
    expect(fixed.artifacts.pr).toBeUndefined();
    expect(fixed.artifacts.ci).toBeUndefined();
    expect(fixed.artifacts.merge).toBeUndefined();
    expect(fixed.artifacts.freight).toBeUndefined();
  });

  it('a red deploy without restart is an ordinary rewind (same branch, everything kept): only new-branch forgets', () => {
    const { restart: _restart, ...sameBranch } = red;
    const rewound = applyOutcome(atStaging(), 'stage:staging', sameBranch, at(3));
    expect(rewound.artifacts.agent).toMatchObject({ branch: 'shipgate/sg-fixfwd01-add-healthz', commitSha: undefined, previousCommitSha: OLD_COMMIT });
    expect(rewound.artifacts.merge).toEqual({ commitSha: MERGE });
    expect(rewound.artifacts.deploy?.stages?.dev).toEqual({ promotion: 'dev.p1', promotedAt: at(1).toISOString() });
  });

  it('deploy iterations survive the new iteration, whose CI loop on the new PR starts from 0', () => {
    let run = applyOutcome(atStaging(), 'stage:staging', red, at(3));
    // The fix: a new branch and commit, a new pull request.
    run = { ...run, artifacts: mergeArtifacts(run.artifacts, { agent: { branch: 'shipgate/sg-fixfwd01-fix-1-add-healthz', commitSha: NEW_COMMIT, feedback: undefined, turns: 20 }, pr: { number: 4 } }) };
    run = applyOutcome(applyOutcome(run, 'agent', passed('fix committed'), at(4)), 'pr', passed('PR #4 opened'), at(5));
    expect(currentGate(run)?.name).toBe('ci');
    // The CI gate reads `ci.iterations ?? 0`: nothing is left of the old PR's loop.
    expect(run.artifacts.ci).toBeUndefined();

    const redCi: GateOutcome = { kind: 'retry-from', gate: 'agent', summary: 'CI failed (fix 1 of at most 2)', feedback: 'test failed', artifacts: { ci: { iterations: 1, fingerprints: ['ci-fp-new'] } } };
    run = applyOutcome(run, 'ci', redCi, at(6));
    expect(run.artifacts.ci).toEqual({ iterations: 1, fingerprints: ['ci-fp-new'] });
    // An ordinary CI rewind stays on the fix's branch, building on its commit, and keeps the deploy count.
    expect(run.artifacts.agent).toMatchObject({ branch: 'shipgate/sg-fixfwd01-fix-1-add-healthz', commitSha: undefined, previousCommitSha: NEW_COMMIT, feedback: 'test failed', turns: 20 });
    expect(run.artifacts.pr).toEqual({ number: 4 });
    expect(run.artifacts.deploy).toEqual({ iterations: 1, fingerprints: ['deploy-fp-1'], mergedBranches: ['shipgate/sg-fixfwd01-add-healthz'] });

    // Through to the deploy gates again, red again: the second fix counts on from the first.
    run = { ...run, artifacts: mergeArtifacts(run.artifacts, { agent: { commitSha: NEXT_COMMIT } }) };
    for (const gate of ['agent', 'pr', 'ci', 'merge', 'freight', 'stage:dev']) run = applyOutcome(run, gate, passed(`${gate} ok`), at(7));
    const secondRed: GateOutcome = { ...red, artifacts: { deploy: { iterations: 2, fingerprints: ['deploy-fp-1', 'deploy-fp-2'] } } };
    run = applyOutcome(run, 'stage:staging', secondRed, at(8));
    expect(run.artifacts).toStrictEqual({
      agent: { turns: 20, feedback: red.feedback },
      deploy: { iterations: 2, fingerprints: ['deploy-fp-1', 'deploy-fp-2'], stages: undefined, mergedBranches: ['shipgate/sg-fixfwd01-add-healthz', 'shipgate/sg-fixfwd01-fix-1-add-healthz'] },
    });
  });

  it('fixForwardArtifacts on a run without a deploy record yet starts the bookkeeping from the outcome', () => {
    expect(fixForwardArtifacts({ merge: { commitSha: MERGE } }, 'fb', { iterations: 1, fingerprints: ['x'] })).toStrictEqual({
      agent: { turns: undefined, feedback: 'fb' },
      deploy: { iterations: 1, fingerprints: ['x'], stages: undefined, mergedBranches: [] },
    });
  });
});

describe('mergeArtifacts over the deploy namespaces', () => {
  const base: RunArtifacts = {
    merge: { commitSha: MERGE },
    freight: { name: 'f1', alias: 'wonky-wombat', matchedBy: 'repo' },
    deploy: { iterations: 1, fingerprints: ['fp1'], stages: { dev: { promotion: 'dev.p1' } } },
  };

  it('merges each namespace on its own, the extra winning field by field', () => {
    expect(mergeArtifacts(base, { freight: { name: 'f2', revisions: [{ repoURL: 'repo', revision: MERGE }] }, deploy: { fingerprints: ['fp1', 'fp2'] } })).toEqual({
      merge: { commitSha: MERGE },
      freight: { name: 'f2', alias: 'wonky-wombat', matchedBy: 'repo', revisions: [{ repoURL: 'repo', revision: MERGE }] },
      deploy: { iterations: 1, fingerprints: ['fp1', 'fp2'], stages: { dev: { promotion: 'dev.p1' } } },
    });
  });

  it('replaces a field as a whole (stages are one field of deploy), and leaves the input alone', () => {
    const merged = mergeArtifacts(base, { deploy: { stages: { staging: { promotion: 'staging.p1' } } } });
    expect(merged.deploy).toEqual({ iterations: 1, fingerprints: ['fp1'], stages: { staging: { promotion: 'staging.p1' } } });
    expect(base.deploy?.stages).toEqual({ dev: { promotion: 'dev.p1' } });
  });

  it('adds a namespace the run did not have, and returns the same artifacts without extra', () => {
    expect(mergeArtifacts({}, { deploy: { iterations: 1 } })).toEqual({ deploy: { iterations: 1 } });
    expect(mergeArtifacts(base, undefined)).toBe(base);
  });
});

describe('the branch of a fix forward, and a retried stage', () => {
  it('is new, and never one of the run’s merged branches, even when the task itself reads like a fix branch', () => {
    const tricky = 'fix 1 add healthz';
    const merged = runBranch({ id: 'sg-fixfwd01', task: tricky, artifacts: {} });
    const run = { id: 'sg-fixfwd01', task: tricky, artifacts: { deploy: { iterations: 1, mergedBranches: [merged] } } };
    const next = runBranch(run);
    expect(next).not.toBe(merged);
    expect(next).toMatch(/^shipgate\/sg-fixfwd01-fix-1-/);
    expect(fixForwardArtifacts({ agent: { branch: merged } }, 'f', { iterations: 1 }).deploy?.mergedBranches).toEqual([merged]);
  });

  it('a retry forgets what the failed stage recorded (its Promotion, its golden-signal clock), and keeps the others', () => {
    const failed = applyOutcome(
      { ...atStaging(), artifacts: { ...atStaging().artifacts, deploy: { stages: { dev: { promotion: 'dev.1' }, staging: { promotion: 'staging.1', signalsSince: at(2).toISOString() } } } } },
      'stage:staging',
      { kind: 'failed', summary: 'red' },
      at(3),
    );
    const retried = resetForRetry(failed);
    expect(retried.artifacts.deploy?.stages).toEqual({ dev: { promotion: 'dev.1' } });
  });
});
