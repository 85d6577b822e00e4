import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { parsePolicy } from '../../../src/config/config.js';
import { newRun, type GateOutcome, type Run } from '../../../src/domain/run.js';
import { createLogger } from '../../../src/log.js';
import type { CheckRunInfo, GitHubCiPort, GitHubPort, PullRequestState } from '../../../src/ports/github.js';
import type { RunIndex } from '../../../src/store/run-index.js';
import type { GateAuditType, GateContext } from '../gate-step.js';
import { createCiStep } from './ci-step.js';

/**
 * The `ci` gate step on its own, against in-memory ports and a hand-built context (issue 8): each
 * branch of the fix loop — pending, green, red back to the agent, the same failure again, the
 * iteration budget, infrastructure failures, a closed PR, and thread instructions waiting.
 */

const SHA = 'c'.repeat(40);
const policy = parsePolicy('repos:\n  acme/shop: {}\nbudgets: { maxCiIterations: 3 }\n', 'test');
const clock = () => new Date('2026-12-01T10:05:00Z');

function checkRun(overrides: Partial<CheckRunInfo>): CheckRunInfo {
  return {
    id: 11,
    name: 'test',
    status: 'completed',
    conclusion: 'success',
    detailsUrl: null,
    appSlug: 'github-actions',
    output: { title: null, summary: null, annotationsCount: 0 },
    startedAt: null,
    completedAt: null,
    ...overrides,
  };
}

function world(options: { checkRuns: CheckRunInfo[]; pr?: Partial<PullRequestState>; followUps?: string[] }) {
  const linked: string[] = [];
  const pr: PullRequestState = { number: 5, url: 'https://github.test/acme/shop/pull/5', headSha: SHA, state: 'open', merged: false, mergeCommitSha: null, base: 'main', ...options.pr };
  const github: GitHubPort & GitHubCiPort = {
    getRepository: async () => ({ cloneUrl: 'file:///x.git', defaultBranch: 'main', htmlUrl: 'https://github.test/acme/shop' }),
    findOpenPullRequest: async () => undefined,
    createPullRequest: async () => {
      throw new Error('not used');
    },
    pushCredentials: async () => {
      throw new Error('not used');
    },
    ciSnapshot: async () => ({ checkRuns: options.checkRuns, statuses: [] }),
    requiredChecks: async () => undefined,
    checkRunAnnotations: async () => [{ path: 'test/a.test.js', startLine: 3, endLine: 3, level: 'failure', message: "expected 'a' to be 'b'", title: null }],
    actionsJobLogTail: async () => 'FAIL test/a.test.js\n',
    getPullRequest: async () => pr,
  };
  const index: RunIndex = {
    link: async (key) => {
      linked.push(key.kind);
    },
    find: async () => [],
    unlinkKubernetes: async () => undefined,
  };
  const followUps = { add: async () => true, pending: async () => options.followUps ?? [], acknowledge: async () => undefined };
  return { step: createCiStep({ policy, github, index, clock, followUps, scrub: (text) => text }), linked };
}

function contextFor(artifacts: Run['artifacts'] = {}) {
  const base = newRun(policy, { id: 'sg-cistep01', repo: 'acme/shop', task: 'fix it', requester: { userId: 'UALICE' }, channel: 'CSHOP', now: new Date('2026-12-01T10:00:00Z') });
  const run: Run = { ...base, artifacts: { agent: { commitSha: SHA }, pr: { number: 5 }, ...artifacts } };
  const gate = { ...run.gates.find((g) => g.name === 'ci')!, startedAt: '2026-12-01T10:04:00Z' };
  const audits: Array<{ type: GateAuditType; data: Record<string, unknown> }> = [];
  const ctx: GateContext = {
    run,
    gate,
    signal: new AbortController().signal,
    log: createLogger({ level: 'silent', destination: new PassThrough() }),
    record: async (change) => ({ ...run, ...change(run) }),
    reply: async () => undefined,
    audit: async (type, data) => {
      audits.push({ type, data });
    },
  };
  return { ctx, audits };
}

const red = checkRun({ conclusion: 'failure', output: { title: '1 failed', summary: 'a.test.js', annotationsCount: 1 } });

describe('ci gate step', () => {
  it('stays pending while checks run, with a poll delay, and links the commit and PR for webhooks', async () => {
    const { step, linked } = world({ checkRuns: [checkRun({ status: 'in_progress', conclusion: null })] });
    const { ctx, audits } = contextFor();
    const outcome = await step.run(ctx);
    expect(outcome).toMatchObject({ kind: 'pending' });
    expect(outcome.kind === 'pending' ? outcome.recheckAfterMs : 0).toBeGreaterThan(0);
    expect(linked).toEqual(['commit', 'pull']);
    expect(audits).toEqual([]);
  });

  it('passes on green and records the verdict', async () => {
    const { step } = world({ checkRuns: [checkRun({})] });
    const { ctx, audits } = contextFor();
    expect((await step.run(ctx)).kind).toBe('passed');
    expect(audits).toEqual([{ type: 'ci.verdict', data: expect.objectContaining({ commit: SHA, verdict: 'passed' }) as unknown }]);
  });

  it('sends red CI back to the agent with the annotation, counting the iteration and the failure fingerprint', async () => {
    const { step } = world({ checkRuns: [red] });
    const { ctx, audits } = contextFor();
    const outcome: GateOutcome = await step.run(ctx);
    expect(outcome.kind).toBe('retry-from');
    if (outcome.kind !== 'retry-from') return;
    expect(outcome.gate).toBe('agent');
    expect(outcome.feedback).toContain("expected 'a' to be 'b'");
    expect(outcome.artifacts?.ci?.iterations).toBe(1);
    expect(outcome.artifacts?.ci?.fingerprints).toHaveLength(1);
    expect(audits[0]).toMatchObject({ type: 'ci.verdict', data: { verdict: 'failed' } });

    // The same failure after the agent's fix: the loop stops instead of spending another iteration.
    const repeat = await world({ checkRuns: [red] }).step.run(contextFor({ ci: { iterations: 1, fingerprints: outcome.artifacts?.ci?.fingerprints ?? [] } }).ctx);
    expect(repeat).toMatchObject({ kind: 'failed' });
    expect(repeat.summary).toMatch(/same failure/);
  });

  it('fails when the iteration budget is used up', async () => {
    const outcome = await world({ checkRuns: [red] }).step.run(contextFor({ ci: { iterations: 2, fingerprints: ['other'] } }).ctx);
    expect(outcome.kind).toBe('failed');
    expect(outcome.summary).toMatch(/budgets\.maxCiIterations = 3/);
  });

  it('offers a re-run, not an agent iteration, when CI only timed out or was cancelled', async () => {
    const { ctx, audits } = contextFor();
    const outcome = await world({ checkRuns: [checkRun({ conclusion: 'timed_out' })] }).step.run(ctx);
    expect(outcome.kind).toBe('failed');
    expect(outcome.summary).toMatch(/infrastructure problem/);
    expect(audits[0]).toMatchObject({ data: { verdict: 'incomplete' } });
  });

  it('fails when the pull request was closed without merging', async () => {
    const outcome = await world({ checkRuns: [checkRun({})], pr: { state: 'closed', merged: false } }).step.run(contextFor().ctx);
    expect(outcome).toMatchObject({ kind: 'failed' });
    expect(outcome.summary).toMatch(/closed without merging/);
  });

  it('sends the run back to the agent first when thread instructions are waiting', async () => {
    const outcome = await world({ checkRuns: [checkRun({})], followUps: ['also add a test'] }).step.run(contextFor().ctx);
    expect(outcome).toMatchObject({ kind: 'retry-from', gate: 'agent' });
  });
});
