import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { routeForge } from '../../src/app/route-forge.js';
import { parsePolicy } from '../../src/config/config.js';
import { newRun, type Run } from '../../src/domain/run.js';
import type { Git } from '../../src/git/git.js';
import { createLogger } from '../../src/log.js';
import type {
  CheckRunInfo,
  ForgeCallOptions,
  GitHubCiPort,
  GitHubPort,
  PullRequestState,
} from '../../src/ports/github.js';
import type { RunIndex } from '../../src/store/run-index.js';
import { prepareAgentWorkspace } from '../../workers/gates/agent/workspace.js';
import { createCiStep } from '../../workers/gates/ci/ci-step.js';
import type { GateContext } from '../../workers/gates/gate-step.js';
import { createMergeStep } from '../../workers/gates/merge/merge-step.js';
import { createPrStep } from '../../workers/gates/pr/pr-step.js';

/**
 * Every forge call a gate step makes carries the step's signal (issue 12: cancel interrupts the
 * wait at once), through the composition's per-repository router to the forge behind it. A call
 * that dropped it would sit out GitHub's retry waits after a cancel.
 */

const SHA = 'c'.repeat(40);
const policy = parsePolicy('repos:\n  acme/shop: {}\n', 'test');

type Forge = GitHubPort & GitHubCiPort;

/** A forge that notes, per call, whether it got `expected` as its signal. */
function recordingForge(expected: AbortSignal) {
  const calls: Array<{ method: string; signalled: boolean }> = [];
  const note = (method: string, options: ForgeCallOptions | undefined): void => {
    calls.push({ method, signalled: options?.signal === expected });
  };
  const pr: PullRequestState = {
    number: 5,
    url: 'https://github.test/acme/shop/pull/5',
    headSha: SHA,
    state: 'open',
    merged: false,
    mergeCommitSha: null,
    base: 'main',
  };
  const red: CheckRunInfo = {
    id: 11,
    name: 'test',
    status: 'completed',
    conclusion: 'failure',
    detailsUrl: null,
    appSlug: 'github-actions',
    output: { title: '1 failed', summary: null, annotationsCount: 1 },
    startedAt: null,
    completedAt: null,
  };
  const forge: Forge = {
    getRepository: async (_o, _r, options) => {
      note('getRepository', options);
      return { cloneUrl: 'file:///x.git', defaultBranch: 'main', htmlUrl: 'https://github.test/acme/shop' };
    },
    findOpenPullRequest: async (_o, _r, _b, options) => {
      note('findOpenPullRequest', options);
      return undefined;
    },
    createPullRequest: async (_input, options) => {
      note('createPullRequest', options);
      return pr;
    },
    pushCredentials: async (_o, _r, options) => {
      note('pushCredentials', options);
      return { username: 'u', password: 'p' };
    },
    ciSnapshot: async (_o, _r, _s, options) => {
      note('ciSnapshot', options);
      return { checkRuns: [red], statuses: [] };
    },
    requiredChecks: async (_o, _r, _b, options) => {
      note('requiredChecks', options);
      return undefined;
    },
    checkRunAnnotations: async (_o, _r, _id, options) => {
      note('checkRunAnnotations', options);
      return [];
    },
    actionsJobLogTail: async (_o, _r, _id, _max, options) => {
      note('actionsJobLogTail', options);
      return 'FAIL\n';
    },
    getPullRequest: async (_o, _r, _n, options) => {
      note('getPullRequest', options);
      return pr;
    },
  };
  return { calls, forge: routeForge(undefined, () => forge) };
}

function contextFor(gateName: string, signal: AbortSignal): GateContext {
  const base = newRun(policy, {
    id: 'sg-signal01',
    repo: 'acme/shop',
    task: 'fix it',
    requester: { userId: 'UALICE' },
    channel: 'CSHOP',
    now: new Date('2026-12-01T10:00:00Z'),
  });
  const run: Run = {
    ...base,
    artifacts: { agent: { branch: 'shipgate/sg-signal01-fix-it', commitSha: SHA }, pr: { number: 5 } },
  };
  const gate = run.gates.find((g) => g.name === gateName);
  if (gate === undefined) throw new Error(`no ${gateName} gate`);
  return {
    run,
    gate: { ...gate, startedAt: '2026-12-01T10:04:00Z' },
    signal,
    log: createLogger({ level: 'silent', destination: new PassThrough() }),
    record: async (change) => ({ ...run, ...change(run) }),
    reply: async () => undefined,
    audit: async () => undefined,
  };
}

describe('the gate steps pass their signal to every forge call', () => {
  it('pr, ci (red, with annotations and the job log) and merge', async () => {
    const controller = new AbortController();
    const { calls, forge } = recordingForge(controller.signal);
    const clock = () => new Date('2026-12-01T10:05:00Z');
    const index: RunIndex = {
      link: async () => undefined,
      find: async () => [],
      unlinkKubernetes: async () => undefined,
    };

    await createPrStep({
      github: forge,
      chat: { permalink: async () => 'https://chat.test/t' },
      scrub: (text) => text,
    }).run(contextFor('pr', controller.signal));
    await createCiStep({ policy, github: forge, index, clock, scrub: (text) => text }).run(
      contextFor('ci', controller.signal),
    );
    await createMergeStep({ github: forge, clock }).run(contextFor('merge', controller.signal));

    expect(new Set(calls.map((call) => call.method))).toEqual(
      new Set([
        'getRepository',
        'findOpenPullRequest',
        'createPullRequest',
        'getPullRequest',
        'ciSnapshot',
        'requiredChecks',
        'checkRunAnnotations',
        'actionsJobLogTail',
      ]),
    );
    // Every read carries the signal; the pull request create does not, so that a cancel cannot cut
    // it off after the forge took it (an unrecorded, unaudited PR).
    expect(calls.filter((call) => !call.signalled)).toEqual([{ method: 'createPullRequest', signalled: false }]);
  });

  it("the agent's workspace (repository look-up and push credentials)", async () => {
    const controller = new AbortController();
    const { calls, forge } = recordingForge(controller.signal);
    const git: Pick<Git, 'prepareWorkspace' | 'mergeBase' | 'submodulePaths'> = {
      prepareWorkspace: async () => ({ resumed: false, source: 'default-branch', head: 'h'.repeat(40) }),
      mergeBase: async () => 'b'.repeat(40),
      submodulePaths: async () => [],
    };
    const repoPolicy = policy.repos['acme/shop'];
    if (repoPolicy === undefined) throw new Error('no policy');
    await prepareAgentWorkspace(
      { github: forge, git, workRoot: '/work/runs', policyFileName: 'shipgate.yaml' },
      contextFor('agent', controller.signal).run,
      repoPolicy,
      'acme',
      'shop',
      controller.signal,
    );
    expect(calls).toEqual([
      { method: 'getRepository', signalled: true },
      { method: 'pushCredentials', signalled: true },
    ]);
  });
});
