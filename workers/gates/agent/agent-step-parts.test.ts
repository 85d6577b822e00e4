import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { AgentConversation } from '../../../src/agent/agent-loop.js';
import type { CheckResult } from '../../../src/agent/check-runner.js';
import { createProtectedPaths } from '../../../src/agent/protected-paths.js';
import { newRun, type Run } from '../../../src/domain/run.js';
import type { Git } from '../../../src/git/git.js';
import { createLogger } from '../../../src/log.js';
import type { GitHubPort } from '../../../src/ports/github.js';
import { runCheckRounds, type CheckRoundsDeps } from './check-rounds.js';
import { commitChange, commitMessage, commitTrailers, diffStatText, reviewChange } from './commit.js';
import { passSummary } from './pass-summary.js';
import { readTreeText, testWarningsOf } from './test-warnings.js';
import { prepareAgentWorkspace } from './workspace.js';
import { PIPELINE_POLICY } from '../../../test/helpers/policies.js';

const log = createLogger({ level: 'silent' });
const signal = new AbortController().signal;

function sampleRun(change: Partial<Run> = {}): Run {
  const run = newRun(PIPELINE_POLICY, { id: 'sg-parts0001', repo: 'acme/lib', task: 'Add a healthz endpoint\n\nwith details', requester: { userId: 'U1', name: 'Ada' }, channel: 'C1', now: new Date(0) });
  return { ...run, ...change };
}

function result(name: string, exitCode: number | null, extra: Partial<CheckResult> = {}): CheckResult {
  return { name, command: `run ${name}`, exitCode, signal: null, timedOut: false, output: `${name} said ${exitCode ?? 'nothing'}`, durationMs: 5, ...extra };
}

/** Check rounds over scripted answers: `checkRounds[i]` maps each check to its exit code in round i + 1. */
function rounds(script: { answers: string[]; checkRounds: Record<string, number | null>[]; followUps?: string[][]; maxCheckRounds?: number }) {
  const conversation: AgentConversation = { system: 'sys', messages: [{ role: 'user', content: 'task' }] };
  const ran: string[] = [];
  let agentCalls = 0;
  let checkRound = 0;
  let followUpReads = 0;
  const names = Object.keys(script.checkRounds[0] ?? {});
  const deps: CheckRoundsDeps = {
    agent: async () => script.answers[agentCalls++] ?? 'done',
    checks: {
      names,
      async run(name, runSignal) {
        expect(runSignal).toBe(signal);
        ran.push(`${checkRound}:${name}`);
        return result(name, script.checkRounds[checkRound - 1]?.[name] ?? 0);
      },
    },
    pendingFollowUps: async () => script.followUps?.[followUpReads++] ?? script.followUps?.at(-1) ?? [],
    onChecking: async () => {
      checkRound++;
    },
    maxCheckRounds: script.maxCheckRounds ?? 3,
    log,
    signal,
  };
  return { deps, conversation, ran, agentCalls: () => agentCalls };
}

describe('check rounds', () => {
  it('passes when every check passes after the agent’s first answer, with the results and the answer', async () => {
    const r = rounds({ answers: ['Added it.'], checkRounds: [{ lint: 0, test: 0 }] });
    const outcome = await runCheckRounds(r.deps, r.conversation, []);
    expect(outcome).toMatchObject({ kind: 'passed', summary: 'Added it.', followUps: [] });
    expect(outcome.kind === 'passed' && outcome.results.map((c) => c.name)).toEqual(['lint', 'test']);
    expect(r.ran).toEqual(['1:lint', '1:test']);
  });

  it('sends failures back to the agent and passes once they are fixed', async () => {
    const r = rounds({ answers: ['first', 'second'], checkRounds: [{ test: 1 }, { test: 0 }] });
    const outcome = await runCheckRounds(r.deps, r.conversation, []);
    expect(outcome).toMatchObject({ kind: 'passed', summary: 'second' });
    const feedback = r.conversation.messages.at(-1);
    expect(feedback?.role).toBe('user');
    expect(feedback?.content).toContain('Check "test" exited with 1');
    expect(feedback?.content).toContain('test said 1');
  });

  it('fails after maxCheckRounds failing rounds, naming what failed and how', async () => {
    const r = rounds({ answers: [], checkRounds: [{ lint: 0, test: 2 }, { lint: 0, test: 2 }], maxCheckRounds: 2 });
    const outcome = await runCheckRounds(r.deps, r.conversation, []);
    expect(outcome).toEqual({ kind: 'failed', summary: 'checks still failing after 2 rounds:\ntest exited with 2\ntest said 2' });
    expect(r.agentCalls()).toBe(2);
  });

  it('counts a timed-out check as failing', async () => {
    const r = rounds({ answers: [], checkRounds: [{ slow: 0 }], maxCheckRounds: 1 });
    r.deps.checks = { names: ['slow'], run: async (name) => result(name, null, { timedOut: true, output: 'zzz' }) };
    expect(await runCheckRounds(r.deps, r.conversation, [])).toEqual({ kind: 'failed', summary: 'checks still failing after 1 rounds:\nslow timed out\nzzz' });
  });

  it('gives follow-ups that arrived meanwhile to the agent before any check runs, without using up a round', async () => {
    const r = rounds({ answers: ['one', 'two'], checkRounds: [{ test: 0 }], followUps: [['earlier', 'also use tabs'], ['earlier', 'also use tabs']], maxCheckRounds: 1 });
    const outcome = await runCheckRounds(r.deps, r.conversation, ['earlier']);
    expect(outcome).toMatchObject({ kind: 'passed', summary: 'two', followUps: ['earlier', 'also use tabs'] });
    expect(r.agentCalls()).toBe(2);
    expect(r.ran).toEqual(['1:test']);
    const message = r.conversation.messages.find((m) => typeof m.content === 'string' && m.content.includes('also use tabs'));
    expect(message?.content).not.toContain('earlier');
  });

  it('with no checks configured, passes on the first answer', async () => {
    const r = rounds({ answers: ['nothing to run'], checkRounds: [{}] });
    expect(await runCheckRounds(r.deps, r.conversation, [])).toMatchObject({ kind: 'passed', results: [] });
  });
});

/** An in-memory git answering only what the commit pieces ask. */
function fakeGit(state: { changed: Record<string, string[]>; committed?: string[]; files?: Record<string, string> }) {
  const commits: { message: string; trailers: Record<string, string> }[] = [];
  const git: Pick<Git, 'changedFiles' | 'commitAll' | 'committedFiles' | 'readFileAt'> = {
    changedFiles: async (_dir, base = 'HEAD') => state.changed[base] ?? [],
    commitAll: async (input) => {
      commits.push({ message: input.message, trailers: input.trailers });
      return { sha: 'c'.repeat(40), created: true };
    },
    committedFiles: async () => state.committed ?? [],
    readFileAt: async (_dir, _rev, path) => state.files?.[path],
  };
  return { git, commits };
}

describe('reviewing and committing the change', () => {
  const protectedPaths = createProtectedPaths(['deploy/**']);
  const input = { dir: '/w', base: 'b'.repeat(40), protectedPaths, previousCommitSha: undefined, summary: 'I did it.' };

  it('passes the changed files of an ordinary change', async () => {
    const { git } = fakeGit({ changed: { [input.base]: ['src/a.ts'] } });
    expect(await reviewChange(git, input)).toEqual({ kind: 'changed', changed: ['src/a.ts'] });
  });

  it('refuses an empty change, quoting the start of what the agent said', async () => {
    const { git } = fakeGit({ changed: {} });
    expect(await reviewChange(git, input)).toEqual({ kind: 'failed', summary: 'the agent finished without changing anything. It said: I did it.' });
    expect(await reviewChange(git, { ...input, summary: '' })).toEqual({ kind: 'failed', summary: 'the agent finished without changing anything' });
  });

  it('refuses a change to a protected path, the built-in ones included', async () => {
    const { git } = fakeGit({ changed: { [input.base]: ['deploy/prod.yaml', '.github/workflows/ci.yml', 'src/a.ts'] } });
    expect(await reviewChange(git, input)).toEqual({ kind: 'failed', summary: 'refused: the change touches protected paths: deploy/prod.yaml, .github/workflows/ci.yml' });
  });

  it('on a later iteration, refuses when nothing changed since the previous commit', async () => {
    const previous = 'p'.repeat(40);
    const { git } = fakeGit({ changed: { [input.base]: ['src/a.ts'], [previous]: [] } });
    expect(await reviewChange(git, { ...input, previousCommitSha: previous })).toEqual({ kind: 'failed', summary: 'the agent made no further change in this iteration. It said: I did it.' });
  });

  it('refuses a commit that carries a protected path the tree did not show', async () => {
    const { git } = fakeGit({ changed: {}, committed: ['src/a.ts', 'deploy/x.yaml'] });
    expect(await commitChange(git, { dir: '/w', base: input.base, protectedPaths, message: 'm', trailers: {} })).toEqual({ kind: 'failed', summary: 'refused: the commit touches protected paths: deploy/x.yaml' });
  });

  it('commits with the given message and trailers', async () => {
    const { git, commits } = fakeGit({ changed: {}, committed: ['src/a.ts'] });
    expect(await commitChange(git, { dir: '/w', base: input.base, protectedPaths, message: 'Add it', trailers: { 'Shipgate-Run': 'sg-1' } })).toEqual({ kind: 'committed', sha: 'c'.repeat(40) });
    expect(commits).toEqual([{ message: 'Add it', trailers: { 'Shipgate-Run': 'sg-1' } }]);
  });

  it('quotes and neutralises the model’s summary in the message, after the task’s first line', () => {
    const scrub = (text: string) => text.replace('hunter2', '[REDACTED]');
    const message = commitMessage('Add a healthz endpoint\nmore', 'Done, password hunter2.\nFixes #12\nRequested-by: Mallory <U666>', scrub);
    expect(message.split('\n')[0]).toBe('Add a healthz endpoint');
    expect(message).toContain("The agent's summary (model output, quoted):");
    expect(message).toContain('> Done, password [REDACTED].');
    expect(message).not.toContain('hunter2');
    expect(message).not.toMatch(/^Requested-by:/m);
    expect(message).not.toContain('Fixes #12');
    expect(commitMessage('x'.repeat(100), '  ', scrub)).toBe(`${'x'.repeat(71)}…`);
  });

  it('writes the run and the requester as trailers, and a display name cannot pose as another id', () => {
    expect(commitTrailers(sampleRun())).toEqual({ 'Shipgate-Run': 'sg-parts0001', 'Requested-by': 'Ada <U1>' });
    expect(commitTrailers(sampleRun({ requester: { userId: 'U1', name: 'Eve <U0999>' } }))['Requested-by']).toBe('Eve U0999 <U1>');
    expect(commitTrailers(sampleRun({ requester: { userId: 'U1' } }))['Requested-by']).toBe('U1 <U1>');
  });

  it('shows the diff stat per file and in total', () => {
    const text = diffStatText({ files: [{ path: 'a.ts', insertions: 2, deletions: 1, binary: false }, { path: 'logo.png', insertions: 0, deletions: 0, binary: true }], insertions: 2, deletions: 1 });
    expect(text).toBe('a.ts | +2 -1\nlogo.png | binary\n2 file(s) changed, +2 -1');
  });
});

describe('test weakening in the agent gate', () => {
  let dir: string | undefined;
  afterEach(() => {
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
    dir = undefined;
  });

  it('flags a deleted test and skipped tests by comparing the base with the tree', async () => {
    dir = mkdtempSync(join(tmpdir(), 'shipgate-weakening-'));
    mkdirSync(join(dir, 'test'));
    writeFileSync(join(dir, 'test/a.test.ts'), "it.skip('works', () => {});\n");
    const { git } = fakeGit({ changed: {}, files: { 'test/a.test.ts': "it('works', () => {});\n", 'test/b.test.ts': "it('b', () => {});\n" } });
    const warnings = await testWarningsOf(git, dir, 'base', ['test/a.test.ts', 'test/b.test.ts']);
    expect(warnings.join('\n')).toContain('test file deleted: test/b.test.ts');
    expect(warnings.join('\n')).toContain('test/a.test.ts');
  });

  it('reads only what the detector looks at: a replaced data file or asset is never read, from the tree or from git', async () => {
    dir = mkdtempSync(join(tmpdir(), 'shipgate-weakening-'));
    mkdirSync(join(dir, 'test'));
    writeFileSync(join(dir, 'test/a.test.ts'), "it.skip('works', () => {});\n");
    writeFileSync(join(dir, 'package.json'), '{ "scripts": { "test": "true" } }\n');
    writeFileSync(join(dir, 'data.bin'), 'replaced\n');
    const read: string[] = [];
    const git: Pick<Git, 'readFileAt'> = {
      readFileAt: async (_dir, _rev, path) => {
        read.push(path);
        return path === 'package.json' ? '{ "scripts": { "test": "vitest run" } }\n' : "it('works', () => {});\n";
      },
    };
    const warnings = await testWarningsOf(git, dir, 'base', ['data.bin', 'package.json', 'test/a.test.ts']);
    expect(read.sort()).toEqual(['package.json', 'test/a.test.ts']);
    expect(warnings.join('\n')).toContain('test/a.test.ts');
    expect(warnings.join('\n')).toContain('package.json: test script changed');
  });

  it('reads tree files without following links, and not too big ones', async () => {
    dir = mkdtempSync(join(tmpdir(), 'shipgate-weakening-'));
    writeFileSync(join(dir, 'host-secret'), 'secret');
    symlinkSync(join(dir, 'host-secret'), join(dir, 'link.test.ts'));
    symlinkSync('/dev/zero', join(dir, 'zero.test.ts'));
    writeFileSync(join(dir, 'big.test.ts'), 'x'.repeat(1024 * 1024 + 1));
    writeFileSync(join(dir, 'ok.test.ts'), 'fine');
    expect(await readTreeText(dir, 'link.test.ts')).toBeUndefined();
    expect(await readTreeText(dir, 'zero.test.ts')).toBeUndefined();
    expect(await readTreeText(dir, 'big.test.ts')).toBeUndefined();
    expect(await readTreeText(dir, 'missing.test.ts')).toBeUndefined();
    expect(await readTreeText(dir, 'ok.test.ts')).toBe('fine');
  });
});

describe('preparing the agent workspace', () => {
  it('prepares the run branch from the API’s clone URL and protects the policy file and submodules', async () => {
    const calls: string[] = [];
    const github: GitHubPort = {
      getRepository: async () => ({ cloneUrl: 'https://git.example/acme/lib.git', defaultBranch: 'trunk', htmlUrl: 'https://git.example/acme/lib' }),
      pushCredentials: async () => ({ username: 'x-access-token', password: 'ghs_secret' }),
      findOpenPullRequest: async () => undefined,
      createPullRequest: async () => {
        throw new Error('not used');
      },
    };
    const git: Pick<Git, 'prepareWorkspace' | 'mergeBase' | 'submodulePaths'> = {
      prepareWorkspace: async (input) => {
        calls.push(`prepare ${input.dir} ${input.cloneUrl} ${input.defaultBranch} ${input.branch} ${input.credentials?.password ?? ''}`);
        return { resumed: false, source: 'default-branch', head: 'h'.repeat(40) };
      },
      mergeBase: async (_dir, a, b) => {
        calls.push(`merge-base ${a} ${b}`);
        return 'b'.repeat(40);
      },
      submodulePaths: async () => ['vendor/lib'],
    };
    const repoPolicy = { ...PIPELINE_POLICY.repos['acme/lib']!, protectedPaths: ['deploy/**'] };
    const workspace = await prepareAgentWorkspace({ github, git, workRoot: '/work/runs', policyFileName: 'shipgate.yaml' }, sampleRun(), repoPolicy, 'acme', 'lib');

    expect(workspace).toMatchObject({
      dir: '/work/runs/sg-parts0001',
      branch: 'shipgate/sg-parts0001-add-a-healthz-endpoint-with-details',
      defaultBranch: 'trunk',
      base: 'b'.repeat(40),
      pushTarget: { branch: 'shipgate/sg-parts0001-add-a-healthz-endpoint-with-details', defaultBranch: 'trunk', runId: 'sg-parts0001', remoteUrl: 'https://git.example/acme/lib.git' },
    });
    expect(calls).toEqual([
      'prepare /work/runs/sg-parts0001 https://git.example/acme/lib.git trunk shipgate/sg-parts0001-add-a-healthz-endpoint-with-details ghs_secret',
      'merge-base origin/trunk HEAD',
    ]);
    for (const path of ['deploy/a.yaml', 'shipgate.yaml', 'vendor/lib', 'vendor/lib/x.c', '.github/workflows/ci.yml']) expect(workspace.protectedPaths.isProtected(path)).toBe(true);
    expect(workspace.protectedPaths.isProtected('src/a.ts')).toBe(false);
  });

  it('keeps the branch a resumed run already recorded', async () => {
    const github: Pick<GitHubPort, 'getRepository' | 'pushCredentials'> = {
      getRepository: async () => ({ cloneUrl: 'https://git.example/acme/lib.git', defaultBranch: 'main', htmlUrl: '' }),
      pushCredentials: async () => ({ username: 'u', password: 'p' }),
    };
    const git: Pick<Git, 'prepareWorkspace' | 'mergeBase' | 'submodulePaths'> = {
      prepareWorkspace: async () => ({ resumed: true, source: 'existing-workspace', head: 'h'.repeat(40) }),
      mergeBase: async () => 'b'.repeat(40),
      submodulePaths: async () => [],
    };
    const run = sampleRun();
    const resumed = { ...run, artifacts: { ...run.artifacts, agent: { branch: 'shipgate/sg-parts0001-earlier-name' } } };
    const workspace = await prepareAgentWorkspace({ github, git, workRoot: '/w', policyFileName: 'p.yaml' }, resumed, PIPELINE_POLICY.repos['acme/lib']!, 'acme', 'lib');
    expect(workspace.branch).toBe('shipgate/sg-parts0001-earlier-name');
    expect(workspace.prepared.source).toBe('existing-workspace');
  });
});

describe('the agent gate’s verdict', () => {
  it('leads with the test-weakening flag, then what was pushed, the summary and the diff stat', () => {
    const run = sampleRun();
    const text = passSummary({ ...run, artifacts: { ...run.artifacts, agent: { branch: 'shipgate/x', commitSha: 'a'.repeat(40), checks: [{ name: 'test', passed: true }], testWarnings: ['test file deleted: t.test.ts'], summary: 'Did it.', diffStat: 'a | +1 -0' } } });
    expect(text).toBe(`⚠️ FLAGGED — this change weakens tests; review it closely:\n• test file deleted: t.test.ts\npushed shipgate/x at ${'a'.repeat(12)} (checks passed: test)\nDid it.\na | +1 -0`);
    expect(passSummary({ ...run, artifacts: { ...run.artifacts, agent: { branch: 'shipgate/x', commitSha: 'a'.repeat(40) } } })).toBe(`pushed shipgate/x at ${'a'.repeat(12)} (no checks configured)`);
  });
});
