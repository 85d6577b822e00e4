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
import type { GateAuditType, GateContext } from '../gate-step.js';
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

function setUp(model: ModelPort, sandbox: SandboxPort) {
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
  const step = createAgentStep({ policy, policyFileName: 'shipgate.yaml', github, git, model, modelId: 'claude-sonnet-4-6', workRoot, clock: () => new Date(), sandbox, scrub: (text) => text });
  const run = newRun(policy, { id: 'sg-agentst1', repo: 'acme/shop', task: 'add a /healthz endpoint', requester: { userId: 'UALICE', name: 'Alice <UCEO>' }, channel: 'CSHOP', now: new Date() });
  let stored: Run = run;
  const audits: Array<{ type: GateAuditType; data: Record<string, unknown> }> = [];
  const ctx: GateContext = {
    run,
    gate: run.gates[0]!,
    signal: new AbortController().signal,
    log: createLogger({ level: 'silent', destination: new PassThrough() }),
    record: async (change) => (stored = { ...stored, ...change(stored) }),
    reply: async () => undefined,
    audit: async (type, data) => {
      audits.push({ type, data });
    },
  };
  return { bare, step, ctx, audits, stored: () => stored };
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
