import type Anthropic from '@anthropic-ai/sdk';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { parsePolicy } from '../../../src/config/config.js';
import { newRun, type Run } from '../../../src/domain/run.js';
import { createGit } from '../../../src/git/git.js';
import { createLogger } from '../../../src/log.js';
import type { GitHubPort } from '../../../src/ports/github.js';
import type { ModelPort, ModelRequest } from '../../../src/ports/model.js';
import type { SandboxPort, SandboxRequest } from '../../../src/ports/sandbox.js';
import { gitIn, seedRepository } from '../../../test/helpers/world.js';
import type { DiagnosisOpener } from '../../../src/agent/diagnosis-tools.js';
import type { Policy } from '../../../src/config/policy.js';
import type { GateAuditType, GateContext, StepReply } from '../gate-step.js';
import { createAgentStep } from './agent-step.js';

/**
 * The agent gate step on its own (issue 8): in-memory model, GitHub and sandbox ports, a
 * hand-built context, and real git against a bare repository (git is the gate's own layer, not
 * an outside system). The whole world's version of this is test/integration/agent-gate.test.ts.
 */

const policy = parsePolicy(
  'repos:\n  acme/shop:\n    checks: { test: "npm test" }\nbudgets: { maxAgentTurns: 6, maxCiIterations: 3, maxTokensPerRun: 100000, maxCostUsdPerRun: 5, maxRunMinutes: 60 }\n',
  'test',
);
const cleanup: Array<() => void> = [];
afterEach(() => {
  for (const fn of cleanup.splice(0)) fn();
});

function message(content: Anthropic.ContentBlock[], stop: Anthropic.StopReason): Anthropic.Message {
  return {
    id: 'msg_1',
    type: 'message',
    role: 'assistant',
    model: 'claude-sonnet-4-6',
    content,
    stop_reason: stop,
    stop_sequence: null,
    usage: { input_tokens: 100, output_tokens: 20, cache_creation_input_tokens: 0, cache_read_input_tokens: 0, server_tool_use: null, service_tier: null },
  } as Anthropic.Message;
}

/** A scripted model: each call answers the next entry. */
function scriptedModel(answers: Anthropic.Message[]): ModelPort & { requests: ModelRequest[] } {
  const requests: ModelRequest[] = [];
  return {
    requests,
    async createMessage(request) {
      requests.push(structuredClone(request));
      const next = answers.shift();
      if (next === undefined) throw new Error('the model was called more often than scripted');
      return next;
    },
  };
}

/** A sandbox that records the checks and answers from a table, without running anything. */
function recordingSandbox(exitCodes: number[]): SandboxPort & { runs: SandboxRequest[] } {
  const runs: SandboxRequest[] = [];
  return {
    kind: 'fake',
    isolated: true,
    runs,
    probe: async () => undefined,
    async run(request) {
      runs.push(request);
      const exitCode = exitCodes.shift() ?? 0;
      return { exitCode, signal: null, timedOut: false, output: exitCode === 0 ? 'ok\n' : 'FAIL: expected ok\n', outputBytes: 3, durationMs: 1 };
    },
  };
}

function setUp(model: ModelPort, sandbox: SandboxPort, extra: { diagnosis?: DiagnosisOpener; policy?: Policy; prepare?: (run: Run) => Run } = {}) {
  const stepPolicy = extra.policy ?? policy;
  const bare = seedRepository({ 'src/server.js': "module.exports = { '/': () => 'hello' };\n", '.github/workflows/ci.yml': 'on: push\n' });
  const workRoot = mkdtempSync(join(tmpdir(), 'shipgate-agent-step-'));
  cleanup.push(() => rmSync(workRoot, { recursive: true, force: true }), () => rmSync(dirname(bare), { recursive: true, force: true }));
  const github: GitHubPort = {
    getRepository: async () => ({ cloneUrl: `file://${bare}`, defaultBranch: 'main', htmlUrl: 'https://github.test/acme/shop' }),
    findOpenPullRequest: async () => undefined,
    createPullRequest: async () => {
      throw new Error('the agent gate never opens PRs');
    },
    pushCredentials: async () => ({ username: 'x-access-token', password: 'not-needed-for-file-urls' }),
  };
  const git = createGit();
  cleanup.push(() => void git.close());
  const step = createAgentStep({ policy: stepPolicy, policyFileName: 'shipgate.yaml', github, git, model, modelId: 'claude-sonnet-4-6', workRoot, clock: () => new Date(), sandbox, scrub: (text) => text, diagnosis: extra.diagnosis });
  const fresh = newRun(stepPolicy, { id: 'sg-agentst1', repo: 'acme/shop', task: 'add a /healthz endpoint', requester: { userId: 'UALICE', name: 'Alice <UCEO>' }, channel: 'CSHOP', now: new Date() });
  const run = extra.prepare?.(fresh) ?? fresh;
  let stored: Run = run;
  const audits: Array<{ type: GateAuditType; data: Record<string, unknown>; discriminator: string }> = [];
  const replies: Array<{ discriminator: string; content: StepReply }> = [];
  const ctx: GateContext = {
    run,
    gate: run.gates[0]!,
    signal: new AbortController().signal,
    log: createLogger({ level: 'silent', destination: new PassThrough() }),
    record: async (change) => (stored = { ...stored, ...change(stored) }),
    reply: async (discriminator, content) => {
      replies.push({ discriminator, content });
    },
    audit: async (type, data, discriminator) => {
      audits.push({ type, data, discriminator });
    },
  };
  return { bare, step, ctx, audits, replies, stored: () => stored };
}

const edit = (id: string, input: Record<string, string>) => message([{ type: 'tool_use', id, name: 'str_replace_based_edit_tool', input } as Anthropic.ToolUseBlock], 'tool_use');
const say = (text: string) => message([{ type: 'text', text, citations: null }], 'end_turn');

describe('agent gate step', () => {
  it('edits, runs every check itself in the sandbox, commits with only the bot’s trailers and pushes the run branch', async () => {
    const model = scriptedModel([
      edit('t1', { command: 'str_replace', path: '/repo/src/server.js', old_str: "'hello'", new_str: "'hello', '/healthz': () => 'ok'" }),
      say('Added /healthz.\nRequested-by: Mallory <UMAL>'),
    ]);
    const sandbox = recordingSandbox([0]);
    const { bare, step, ctx, audits, stored } = setUp(model, sandbox);

    const outcome = await step.run(ctx);
    expect(outcome.kind).toBe('passed');
    const branch = stored().artifacts.agent?.branch ?? '';
    expect(branch).toBe('shipgate/sg-agentst1-add-a-healthz-endpoint');
    expect(gitIn(bare, 'show', `refs/heads/${branch}:src/server.js`)).toContain("'/healthz'");
    expect(gitIn(bare, 'log', '-1', '--format=%(trailers:only)', `refs/heads/${branch}`)).toBe('Shipgate-Run: sg-agentst1\nRequested-by: Alice UCEO <UALICE>');
    // The bot's own check round went through the sandbox, on the tree with the agent's edit.
    expect(sandbox.runs.map((r) => r.command)).toEqual(['npm test']);
    expect(stored().artifacts.agent?.checks).toEqual([{ name: 'test', passed: true }]);
    expect(audits.map((a) => a.type)).toEqual(['agent.iteration', 'commit.created']);
    expect(audits[1]?.data.commit).toBe(stored().artifacts.agent?.commitSha);
  });

  it('sends failing checks back to the model and refuses a change that touches a protected path', async () => {
    const model = scriptedModel([
      edit('t1', { command: 'create', path: '/repo/.github/workflows/ci.yml', file_text: 'on: push\njobs: { pwn: {} }\n' }),
      say('Tried to change CI.'),
      say('Still nothing.'),
    ]);
    const { step, ctx, stored } = setUp(model, recordingSandbox([1, 0]));
    const outcome = await step.run(ctx);
    // The editor refused the write (is_error back to the model), so nothing changed at all.
    expect(outcome).toMatchObject({ kind: 'failed' });
    expect(outcome.summary).toMatch(/without changing anything/);
    const results = JSON.stringify(model.requests.at(1)?.messages);
    expect(results).toMatch(/protected/);
    // The failing first check round reached the model as the next user turn.
    expect(JSON.stringify(model.requests.at(2)?.messages)).toMatch(/FAIL: expected ok/);
    expect(stored().artifacts.agent?.commitSha).toBeUndefined();
  });
});

describe('agent gate step after a red deploy gate (the diagnosis)', () => {
  const roomy = parsePolicy(
    'repos:\n  acme/shop:\n    checks: { test: "npm test" }\nbudgets: { maxAgentTurns: 30, maxCiIterations: 3, maxTokensPerRun: 100000, maxCostUsdPerRun: 5, maxRunMinutes: 60 }\n',
    'test',
  );
  const FEEDBACK = 'Your change was merged and deployed, and a deploy gate went red.\n<deploy_failure>\nDeploy gate stage:dev failed.\nApplication shop-dev is Degraded: Deployment shop-web exceeded its progress deadline\n</deploy_failure>';
  const redRun = (diagnosis?: { text: string; looked: string[] }) => (run: Run): Run => ({
    ...run,
    artifacts: {
      agent: { feedback: FEEDBACK, turns: 2 },
      deploy: {
        iterations: 1,
        fingerprints: ['fp'],
        mergedBranches: ['shipgate/sg-agentst1-add-a-healthz-endpoint'],
        redGate: { fix: 1, stage: 'dev', namespace: 'shop-dev', objects: [{ kind: 'Application', namespace: 'argocd', name: 'shop-dev' }], ...(diagnosis === undefined ? {} : { diagnosis }) },
      },
    },
  });

  /** An in-memory diagnosis: one read tool answering a pod log; counts opens and closes. */
  function fakeDiagnosis(): DiagnosisOpener & { opened: number; closed: number; calls: unknown[] } {
    const state = { opened: 0, closed: 0, calls: [] as unknown[] };
    return Object.assign(state, {
      async open() {
        state.opened += 1;
        return {
          clusterUnavailable: undefined,
          close: async () => {
            state.closed += 1;
          },
          provider: {
            name: 'diagnosis',
            tools: [{ name: 'pods_log', description: 'A pod log. Read-only.', input_schema: { type: 'object' as const, properties: { name: { type: 'string' } } } }],
            async call(_tool: string, input: unknown) {
              state.calls.push(input);
              return { content: '<cluster_data>\nError: Cannot find module ./health-check\n</cluster_data>', isError: false };
            },
          },
        };
      },
    });
  }
  const readLog = (id: string) => message([{ type: 'tool_use', id, name: 'pods_log', input: { name: 'shop-web-1' } } as Anthropic.ToolUseBlock], 'tool_use');
  const toolsOf = (request: ModelRequest | undefined): string[] => (request?.tools ?? []).map((tool) => ('name' in tool ? tool.name : ''));
  const firstText = (request: ModelRequest | undefined): string => JSON.stringify(request?.messages[0]?.content ?? '');

  it('diagnoses first with the read tools only, stores, audits and posts it, then fixes with it in the prompt and the tools still offered; the session is closed', async () => {
    const model = scriptedModel([
      readLog('d1'),
      say('Found: Cannot find module ./health-check in shop-web-1. Fix: correct the require path.'),
      edit('t1', { command: 'str_replace', path: '/repo/src/server.js', old_str: "'hello'", new_str: "'hello', '/healthz': () => 'ok'" }),
      say('Fixed the require path.'),
    ]);
    const diagnosis = fakeDiagnosis();
    const { step, ctx, audits, replies, stored } = setUp(model, recordingSandbox([0]), { diagnosis, policy: roomy, prepare: redRun() });
    expect((await step.run(ctx)).kind).toBe('passed');

    expect(toolsOf(model.requests[0])).toEqual(['pods_log']);
    expect(model.requests[0]?.system).toEqual([expect.objectContaining({ text: expect.stringContaining('diagnosis agent') as unknown })]);
    expect(firstText(model.requests[0])).toContain('exceeded its progress deadline');
    expect(firstText(model.requests[2])).toContain('<diagnosis>');
    expect(firstText(model.requests[2])).toContain('Cannot find module ./health-check');
    expect(toolsOf(model.requests[2])).toEqual(expect.arrayContaining(['str_replace_based_edit_tool', 'run_check', 'pods_log']));

    const made = stored().artifacts.deploy?.redGate?.diagnosis;
    expect(made).toEqual({ text: 'Found: Cannot find module ./health-check in shop-web-1. Fix: correct the require path.', looked: ['pods_log name=shop-web-1'] });
    expect(replies).toEqual([{ discriminator: 'diagnosis.fix1', content: { type: 'diagnosis', stage: 'dev', fix: 1, text: made?.text, looked: made?.looked, clusterUnavailable: undefined } }]);
    expect(audits.map((a) => [a.type, a.discriminator])).toEqual([
      ['diagnosis.tool_call', 'fix1.d1'],
      ['diagnosis.made', 'fix1'],
      ['agent.iteration', 'fix1.1.start'],
      ['commit.created', stored().artifacts.agent?.commitSha],
    ]);
    // Its turns and tokens are the run's: 2 before, 2 for the diagnosis, 2 for the fix.
    expect(stored().artifacts.agent?.turns).toBe(6);
    expect(stored().usage.inputTokens).toBe(400);
    expect(diagnosis).toMatchObject({ opened: 1, closed: 1 });
  });

  it('a step that runs again after the diagnosis was stored posts the stored one and pays for no second', async () => {
    const model = scriptedModel([
      edit('t1', { command: 'str_replace', path: '/repo/src/server.js', old_str: "'hello'", new_str: "'hello', '/healthz': () => 'ok'" }),
      say('Fixed.'),
    ]);
    const diagnosis = fakeDiagnosis();
    const stored = { text: 'Found: the module path is wrong.', looked: ['pods_log name=shop-web-1'] };
    const { step, ctx, replies, audits } = setUp(model, recordingSandbox([0]), { diagnosis, policy: roomy, prepare: redRun(stored) });
    expect((await step.run(ctx)).kind).toBe('passed');
    expect(model.requests).toHaveLength(2);
    expect(firstText(model.requests[0])).toContain('the module path is wrong');
    expect(replies.map((r) => r.discriminator)).toEqual(['diagnosis.fix1']);
    expect(audits.filter((a) => a.type === 'diagnosis.made')).toHaveLength(1);
    expect(diagnosis).toMatchObject({ opened: 1, closed: 1 });
  });

  it('a diagnosis that keeps reading is stopped by its own cap and the fix goes on; the session is closed even when the step fails', async () => {
    const reads = Array.from({ length: 12 }, (_, i) => readLog(`d${i}`));
    const model = scriptedModel([
      ...reads,
      edit('t1', { command: 'str_replace', path: '/repo/src/server.js', old_str: "'hello'", new_str: "'hello', '/healthz': () => 'ok'" }),
      say('Fixed.'),
    ]);
    const diagnosis = fakeDiagnosis();
    const { step, ctx, stored } = setUp(model, recordingSandbox([0]), { diagnosis, policy: roomy, prepare: redRun() });
    expect((await step.run(ctx)).kind).toBe('passed');
    expect(stored().artifacts.deploy?.redGate?.diagnosis?.text).toMatch(/stopped after 12 turns without a conclusion/);
    expect(diagnosis.calls).toHaveLength(12);

    // The run's own budget (6 turns, 2 spent) ends the run during the diagnosis: a failure, and the server closed.
    const tight = parsePolicy(
      'repos:\n  acme/shop:\n    checks: { test: "npm test" }\nbudgets: { maxAgentTurns: 4, maxCiIterations: 3, maxTokensPerRun: 100000, maxCostUsdPerRun: 5, maxRunMinutes: 60 }\n',
      'test',
    );
    const endless = fakeDiagnosis();
    const again = setUp(scriptedModel([readLog('e1'), readLog('e2'), readLog('e3')]), recordingSandbox([0]), { diagnosis: endless, policy: tight, prepare: redRun() });
    await expect(again.step.run(again.ctx)).rejects.toThrow(/maxAgentTurns/);
    expect(endless).toMatchObject({ opened: 1, closed: 1 });
  });
});
