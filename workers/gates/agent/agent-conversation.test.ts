import type Anthropic from '@anthropic-ai/sdk';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { DIAGNOSIS_MAX_TURNS } from '../../../src/agent/diagnose.js';
import type { DiagnosisOpener } from '../../../src/agent/diagnosis-tools.js';
import { parsePolicy } from '../../../src/config/config.js';
import type { Policy } from '../../../src/config/policy.js';
import { newRun, type Run } from '../../../src/domain/run.js';
import { createGit } from '../../../src/git/git.js';
import { createLogger } from '../../../src/log.js';
import type { GitHubPort } from '../../../src/ports/github.js';
import type { ModelPort, ModelRequest } from '../../../src/ports/model.js';
import type { SandboxPort } from '../../../src/ports/sandbox.js';
import type { AgentConversations, TreeEntry } from '../../../src/store/agent-conversation-store.js';
import type { FollowUps } from '../../../src/store/follow-ups.js';
import { createMemoryAgentConversations, storedAgentRecord } from '../../../test/helpers/memory-agent-conversations.js';
import { gitIn, seedRepository } from '../../../test/helpers/world.js';
import type { GateContext } from '../gate-step.js';
import { createAgentStep } from './agent-step.js';

/**
 * Issue 14: the agent's conversation is kept after every turn, so a step that runs again after its
 * worker died continues it — the earlier turns are not sent again, the files they edited are there
 * (on the old workspace or a fresh clone elsewhere), and the budgets go on counting. In-memory model,
 * sandbox and conversation store; real git against a bare repository; "a worker" is a step over its
 * own work root, and "its death" an error thrown where the kill would land.
 */

const policyOf = (budgets: string) =>
  parsePolicy(`repos:\n  acme/shop:\n    checks: { test: "npm test" }\nbudgets: { ${budgets} }\n`, 'test');
const POLICY = policyOf(
  'maxAgentTurns: 10, maxCiIterations: 3, maxTokensPerRun: 100000, maxCostUsdPerRun: 5, maxRunMinutes: 60',
);
const RUN_ID = 'sg-convers1';

const cleanup: Array<() => void> = [];
afterEach(() => {
  for (const fn of cleanup.splice(0)) fn();
});

class WorkerDied extends Error {
  override name = 'WorkerDied';
}

function message(content: Anthropic.ContentBlock[], stop: Anthropic.StopReason): Anthropic.Message {
  return {
    id: 'msg_1',
    type: 'message',
    role: 'assistant',
    model: 'claude-sonnet-4-6',
    content,
    stop_reason: stop,
    stop_sequence: null,
    usage: {
      input_tokens: 100,
      output_tokens: 20,
      cache_creation_input_tokens: 0,
      cache_read_input_tokens: 0,
      server_tool_use: null,
      service_tier: null,
    },
  } as Anthropic.Message;
}
const call = (id: string, name: string, input: Record<string, string>) =>
  message([{ type: 'tool_use', id, name, input } as Anthropic.ToolUseBlock], 'tool_use');
const edit = (id: string, input: Record<string, string>) => call(id, 'str_replace_based_edit_tool', input);
const say = (text: string) => message([{ type: 'text', text, citations: null }], 'end_turn');
const DIE = 'die' as const;

/** A scripted model: each call answers the next entry; `DIE` is the worker dying while it waits. */
function scriptedModel(answers: Array<Anthropic.Message | typeof DIE>): ModelPort & { requests: ModelRequest[] } {
  const requests: ModelRequest[] = [];
  return {
    requests,
    async createMessage(request) {
      requests.push(structuredClone(request));
      const next = answers.shift();
      if (next === undefined) throw new Error('the model was called more often than scripted');
      if (next === DIE) throw new WorkerDied('the worker died while the model answered');
      return next;
    },
  };
}

/** Answers checks from a table (exit codes, or `DIE` for the worker dying during the check), running nothing. */
function sandboxOf(outcomes: Array<number | typeof DIE>): SandboxPort {
  return {
    kind: 'fake',
    isolated: true,
    probe: async () => undefined,
    async run() {
      const next = outcomes.shift() ?? 0;
      if (next === DIE) throw new WorkerDied('the worker died during the checks');
      return {
        exitCode: next,
        signal: null,
        timedOut: false,
        output: next === 0 ? 'ok\n' : 'FAIL\n',
        outputBytes: 3,
        durationMs: 1,
      };
    },
  };
}

const ADD_HEALTHZ = {
  command: 'str_replace',
  path: '/repo/src/server.js',
  old_str: "'hello'",
  new_str: "'hello', '/healthz': () => 'ok'",
};
// Only applies on top of ADD_HEALTHZ: a turn that sees a tree without it fails.
const ADD_READY = {
  command: 'str_replace',
  path: '/repo/src/server.js',
  old_str: "'/healthz': () => 'ok'",
  new_str: "'/healthz': () => 'ok', '/ready': () => 'yes'",
};

/** One repository, one run record and one conversation store, shared by the workers a test starts. */
function world(options: { policy?: Policy; prepare?: (run: Run) => Run } = {}) {
  const policy = options.policy ?? POLICY;
  const bare = seedRepository({
    'src/server.js': "module.exports = { '/': () => 'hello' };\n",
    '.github/workflows/ci.yml': 'on: push\n',
  });
  cleanup.push(() => rmSync(dirname(bare), { recursive: true, force: true }));
  const git = createGit();
  cleanup.push(() => void git.close());
  const github: GitHubPort = {
    getRepository: async () => ({
      cloneUrl: `file://${bare}`,
      defaultBranch: 'main',
      htmlUrl: 'https://github.test/acme/shop',
    }),
    findOpenPullRequest: async () => undefined,
    createPullRequest: async () => {
      throw new Error('the agent gate never opens PRs');
    },
    pushCredentials: async () => ({ username: 'x-access-token', password: 'not-needed-for-file-urls' }),
  };
  const conversations = createMemoryAgentConversations();
  const fresh = newRun(policy, {
    id: RUN_ID,
    repo: 'acme/shop',
    task: 'add a /healthz endpoint',
    requester: { userId: 'UALICE' },
    channel: 'CSHOP',
    now: new Date(),
  });
  let stored: Run = options.prepare?.(fresh) ?? fresh;
  const logs: string[] = [];

  /** A worker: its own work root (a fresh machine) unless it is given the previous one's. */
  function worker(
    model: ModelPort,
    sandbox: SandboxPort,
    extra: {
      workRoot?: string;
      store?: AgentConversations;
      maxBytes?: number;
      diagnosis?: DiagnosisOpener;
      maxCheckRounds?: number;
      followUps?: FollowUps;
    } = {},
  ) {
    const workRoot = extra.workRoot ?? mkdtempSync(join(tmpdir(), 'shipgate-conversation-'));
    cleanup.push(() => rmSync(workRoot, { recursive: true, force: true }));
    const destination = new PassThrough();
    destination.on('data', (chunk: Buffer) => logs.push(...chunk.toString().split('\n').filter(Boolean)));
    const step = createAgentStep({
      policy,
      policyFileName: 'shipgate.yaml',
      github,
      git,
      model,
      modelId: 'claude-sonnet-4-6',
      workRoot,
      clock: () => new Date(),
      sandbox,
      scrub: (text) => text,
      conversations: extra.store ?? conversations,
      conversationMaxBytes: extra.maxBytes,
      diagnosis: extra.diagnosis,
      maxCheckRounds: extra.maxCheckRounds,
      followUps: extra.followUps,
    });
    // As the run processor does: the step sees the run as stored now.
    const run = stored;
    const ctx: GateContext = {
      run,
      gate: run.gates[0]!,
      signal: new AbortController().signal,
      log: createLogger({ level: 'info', destination }),
      record: async (change) => (stored = { ...stored, ...change(stored) }),
      reply: async () => undefined,
      audit: async () => undefined,
    };
    return { run: () => step.run(ctx), workRoot, tree: join(workRoot, RUN_ID) };
  }

  return {
    bare,
    conversations,
    worker,
    stored: () => stored,
    logged: (msg: string) => logs.some((line) => line.includes(`"msg":"${msg}`)),
    head: () => gitIn(bare, 'rev-parse', 'main'),
    branchFile: (path: string) => gitIn(bare, 'show', `refs/heads/${stored.artifacts.agent?.branch ?? ''}:${path}`),
  };
}

/** The messages of a request as the model got them, without the moving cache breakpoint. */
const messagesOf = (request: ModelRequest | undefined) =>
  JSON.parse(
    JSON.stringify(request?.messages ?? []).replace(/,"cache_control":\{"type":"ephemeral"\}/g, ''),
  ) as unknown;
const lastResults = (request: ModelRequest | undefined) => {
  const last = request?.messages.at(-1);
  return typeof last?.content === 'string' ? [] : (last?.content ?? []).filter((block) => block.type === 'tool_result');
};

describe('the agent conversation kept per turn', () => {
  it('a worker on another machine continues the conversation: earlier turns not sent again, their edits in the tree, the spend carried', async () => {
    const w = world();
    const first = scriptedModel([edit('t1', ADD_HEALTHZ), DIE]);
    await expect(w.worker(first, sandboxOf([0])).run()).rejects.toThrow(WorkerDied);
    expect(w.stored().artifacts.agent?.turns).toBe(1);

    const second = scriptedModel([edit('t2', ADD_READY), say('Added /healthz and /ready.')]);
    const resumed = w.worker(second, sandboxOf([0]));
    expect((await resumed.run()).kind).toBe('passed');

    // The first request of the new worker is the one the dead worker was waiting on, nothing earlier.
    expect(messagesOf(second.requests[0])).toEqual(messagesOf(first.requests[1]));
    expect(second.requests.every((request) => request.messages.length >= 3)).toBe(true);
    // The edit made before the death was in the fresh clone: the edit that builds on it applied.
    expect(lastResults(second.requests[1])).toEqual([expect.objectContaining({ tool_use_id: 't2', is_error: false })]);
    expect(w.branchFile('src/server.js')).toContain("'/healthz': () => 'ok', '/ready': () => 'yes'");
    expect(w.stored().artifacts.agent?.turns).toBe(3);
    expect(w.stored().usage.inputTokens).toBe(300);
    expect(w.logged('agent conversation resumed')).toBe(true);
    // Pushed: the iteration is over and its conversation gone.
    expect(w.conversations.raw.size).toBe(0);
  });

  it('on the old workspace, an edit of a turn that was never stored is undone before the turn is asked again', async () => {
    const w = world();
    const inner = w.conversations;
    let saves = 0;
    // The worker dies after the second turn's edit ran, before that turn was stored.
    const dying: AgentConversations = {
      load: (runId, key) => inner.load(runId, key),
      clear: (runId, phase) => inner.clear(runId, phase),
      async save(runId, conversation) {
        saves += 1;
        if (saves === 2) throw new WorkerDied('the worker died before the turn was stored');
        await inner.save(runId, conversation);
      },
    };
    // The second turn changes the file the first turn edited and creates one no stored turn knows.
    const secondTurn = () =>
      message(
        [
          { type: 'tool_use', id: 't2', name: 'str_replace_based_edit_tool', input: ADD_READY },
          {
            type: 'tool_use',
            id: 't3',
            name: 'str_replace_based_edit_tool',
            input: { command: 'create', path: '/repo/src/ready.js', file_text: "module.exports = () => 'yes';\n" },
          },
        ] as Anthropic.ToolUseBlock[],
        'tool_use',
      );
    const first = w.worker(scriptedModel([edit('t1', ADD_HEALTHZ), secondTurn()]), sandboxOf([0]), { store: dying });
    await expect(first.run()).rejects.toThrow(WorkerDied);
    expect(readFileSync(join(first.tree, 'src/server.js'), 'utf8')).toContain('/ready');
    expect(existsSync(join(first.tree, 'src/ready.js'))).toBe(true);

    const second = scriptedModel([secondTurn(), say('Added both.')]);
    expect((await w.worker(second, sandboxOf([0]), { workRoot: first.workRoot }).run()).kind).toBe('passed');
    expect(second.requests[0]?.messages).toHaveLength(3);
    // Asked again on the tree its messages describe, the same edits apply once, the file is new again.
    const results = lastResults(second.requests[1]);
    expect(results).toEqual([
      expect.objectContaining({ tool_use_id: 't2', is_error: false }),
      expect.objectContaining({
        tool_use_id: 't3',
        is_error: false,
        content: expect.stringContaining('File created successfully') as unknown,
      }),
    ]);
    expect(w.branchFile('src/server.js').split("'/ready'")).toHaveLength(2);
    expect(w.branchFile('src/ready.js')).toBe("module.exports = () => 'yes';");
  });

  it('a restart does not reset the turn budget', async () => {
    // Two turns in all: one before the death and one after; without the carried spend a third would be allowed.
    const w = world({
      policy: policyOf(
        'maxAgentTurns: 2, maxCiIterations: 3, maxTokensPerRun: 100000, maxCostUsdPerRun: 5, maxRunMinutes: 60',
      ),
    });
    await expect(w.worker(scriptedModel([edit('t1', ADD_HEALTHZ), DIE]), sandboxOf([0])).run()).rejects.toThrow(
      WorkerDied,
    );
    const second = scriptedModel([edit('t2', ADD_READY), say('Done.')]);
    await expect(w.worker(second, sandboxOf([0])).run()).rejects.toThrow(/all 2 turns/);
    expect(second.requests).toHaveLength(1);
    // A budget stop ends the iteration for good: nothing left to resume.
    expect(w.conversations.raw.size).toBe(0);
  });

  it('a death during the checks after the final answer: the restarted step asks the model nothing and runs the checks', async () => {
    const w = world();
    await expect(
      w.worker(scriptedModel([edit('t1', ADD_HEALTHZ), say('Added /healthz.')]), sandboxOf([DIE])).run(),
    ).rejects.toThrow(/WorkerDied/);
    const second = scriptedModel([]);
    const outcome = await w.worker(second, sandboxOf([0])).run();
    expect(outcome.kind).toBe('passed');
    expect(second.requests).toHaveLength(0);
    expect(w.stored().artifacts.agent?.summary).toBe('Added /healthz.');
    expect(w.branchFile('src/server.js')).toContain("'/healthz'");
  });

  it('the check round is carried: a resumed second round is the last one', async () => {
    const w = world();
    const first = scriptedModel([edit('t1', ADD_HEALTHZ), say('v1'), edit('t2', ADD_READY), DIE]);
    await expect(w.worker(first, sandboxOf([1]), { maxCheckRounds: 2 }).run()).rejects.toThrow(WorkerDied);
    const second = scriptedModel([say('v2')]);
    const outcome = await w.worker(second, sandboxOf([1]), { maxCheckRounds: 2 }).run();
    expect(outcome).toMatchObject({ kind: 'failed', summary: expect.stringMatching(/after 2 rounds/) as unknown });
    expect(second.requests).toHaveLength(1);
  });

  it('a record of another iteration or another base commit is never resumed', async () => {
    for (const stale of [{ iteration: '2' }, { head: 'f'.repeat(40) }]) {
      const w = world();
      const record = storedAgentRecord(w.head(), [
        { path: 'src/planted.js', base64: Buffer.from('planted\n').toString('base64') },
      ]);
      await w.conversations.save(RUN_ID, { ...record, ...stale });
      const model = scriptedModel([edit('t1', ADD_HEALTHZ), say('Done.')]);
      const worker = w.worker(model, sandboxOf([0]));
      expect((await worker.run()).kind).toBe('passed');
      expect(model.requests[0]?.messages).toHaveLength(1);
      expect(w.logged('stored agent conversation is of another iteration')).toBe(true);
      expect(gitIn(w.bare, 'ls-tree', '-r', '--name-only', w.stored().artifacts.agent?.commitSha ?? '')).not.toContain(
        'planted',
      );
    }
  });

  it('a stored snapshot with a path the editor could not write is refused whole, and nothing of it is written', async () => {
    const text = (value: string) => Buffer.from(value).toString('base64');
    const hostile: TreeEntry[][] = [
      [{ path: '../escaped.js', base64: text('outside\n') }],
      [{ path: '.github/workflows/ci.yml', base64: text('on: push\njobs: { pwn: {} }\n') }],
      [{ path: '.git/hooks/pre-commit', base64: text('#!/bin/sh\n') }],
      [{ path: '/src/absolute.js', base64: text('x\n') }],
      [{ path: 'src/../../escaped.js', deleted: true }],
      // Paths the tree cannot take as plain files (hostile review M3): under a file, a directory, both at once.
      [{ path: 'src/server.js/inner.js', base64: text('x\n') }],
      [{ path: 'src', base64: text('x\n') }],
      [
        { path: 'src/twice.js', base64: text('a\n') },
        { path: 'src/twice.js/b.js', base64: text('b\n') },
      ],
    ];
    for (const entries of hostile) {
      const w = world();
      // A harmless entry first: it must not be written either.
      const tree = [{ path: 'src/planted.js', base64: text('planted\n') }, ...entries];
      await w.conversations.save(RUN_ID, storedAgentRecord(w.head(), tree));
      const model = scriptedModel([edit('t1', ADD_HEALTHZ), say('Done.')]);
      const worker = w.worker(model, sandboxOf([0]));
      expect((await worker.run()).kind, JSON.stringify(entries)).toBe('passed');
      expect(model.requests[0]?.messages).toHaveLength(1);
      expect(w.logged('stored agent conversation not resumed')).toBe(true);
      expect(existsSync(join(worker.workRoot, 'escaped.js'))).toBe(false);
      expect(existsSync(join(dirname(worker.workRoot), 'escaped.js'))).toBe(false);
      const committed = gitIn(w.bare, 'ls-tree', '-r', '--name-only', w.stored().artifacts.agent?.commitSha ?? '');
      expect(committed).not.toContain('planted');
      expect(committed).not.toContain('absolute');
      expect(w.branchFile('.github/workflows/ci.yml')).toBe('on: push');
    }
  });

  it('a conversation over the size cap is not kept, and a restart begins the iteration again', async () => {
    const w = world();
    await expect(
      w.worker(scriptedModel([edit('t1', ADD_HEALTHZ), DIE]), sandboxOf([0]), { maxBytes: 200 }).run(),
    ).rejects.toThrow(WorkerDied);
    expect(w.conversations.raw.size).toBe(0);
    expect(w.logged('agent conversation not kept')).toBe(true);
    const second = scriptedModel([edit('t1', ADD_HEALTHZ), say('Done.')]);
    expect((await w.worker(second, sandboxOf([0])).run()).kind).toBe('passed');
    expect(second.requests[0]?.messages).toHaveLength(1);
  });

  it("a record that claims more turns but less spend does not reset the run's cost: the budget stays spent", async () => {
    // The run has spent its whole cost budget; the record says more turns and nothing spent.
    const w = world({
      prepare: (run) => ({
        ...run,
        artifacts: { agent: { turns: 3 } },
        usage: { ...run.usage, inputTokens: 4000, costUsd: 5 },
      }),
    });
    const record = storedAgentRecord(w.head(), []);
    await w.conversations.save(RUN_ID, { ...record, spend: { ...record.spend, turns: 4 } });
    const model = scriptedModel([say('Done.')]);
    await expect(w.worker(model, sandboxOf([0])).run()).rejects.toThrow(/over its budget of \$5/);
    expect(model.requests).toHaveLength(0);
    expect(w.stored().usage).toMatchObject({ inputTokens: 4000, costUsd: 5 });
  });

  it('follow-ups a record claims but the thread does not have neither hide a real one nor get it acknowledged unseen', async () => {
    const w = world();
    const pending = ['please also add /ready'];
    const acknowledged: number[] = [];
    const followUps: FollowUps = {
      add: async () => true,
      pending: async () => [...pending],
      acknowledge: async (_runId, count) => {
        acknowledged.push(count);
      },
    };
    const record = storedAgentRecord(w.head(), []);
    await w.conversations.save(RUN_ID, { ...record, followUps: ['forged one', 'forged two'] });
    const model = scriptedModel([edit('t1', ADD_HEALTHZ), say('v1'), say('Done, /ready too.')]);
    expect((await w.worker(model, sandboxOf([0]), { followUps }).run()).kind).toBe('passed');
    expect(JSON.stringify(model.requests.at(-1)?.messages)).toContain('please also add /ready');
    expect(acknowledged).toEqual([1]);
  });
});

describe('the diagnosis conversation kept per turn', () => {
  const FEEDBACK =
    'Your change was merged and deployed, and a deploy gate went red.\n<deploy_failure>\nDeploy gate stage:dev failed.\n</deploy_failure>';
  const redRun = (run: Run): Run => ({
    ...run,
    artifacts: {
      agent: { feedback: FEEDBACK, turns: 2 },
      deploy: {
        iterations: 1,
        fingerprints: ['fp'],
        mergedBranches: [`shipgate/${RUN_ID}-add-a-healthz-endpoint`],
        redGate: { fix: 1, stage: 'dev', namespace: 'shop-dev', objects: [] },
      },
    },
  });

  function fakeDiagnosis(): DiagnosisOpener & { reads: number } {
    const state = { reads: 0 };
    return Object.assign(state, {
      async open() {
        return {
          clusterUnavailable: undefined,
          close: async () => undefined,
          provider: {
            name: 'diagnosis',
            tools: [
              {
                name: 'pods_log',
                description: 'A pod log.',
                input_schema: { type: 'object' as const, properties: { name: { type: 'string' } } },
              },
            ],
            async call() {
              state.reads += 1;
              return {
                content: '<cluster_data>\nError: Cannot find module ./health-check\n</cluster_data>',
                isError: false,
              };
            },
          },
        };
      },
    });
  }

  it('a worker killed mid-diagnosis is followed by one that continues it, its reads counted, and then fixes', async () => {
    const w = world({ prepare: redRun });
    const diagnosis = fakeDiagnosis();
    const first = scriptedModel([call('d1', 'pods_log', { name: 'shop-web-1' }), DIE]);
    await expect(w.worker(first, sandboxOf([0]), { diagnosis }).run()).rejects.toThrow(WorkerDied);
    expect(w.conversations.raw.has(`${RUN_ID}:diagnosis`)).toBe(true);

    const second = scriptedModel([
      say('Found: Cannot find module ./health-check. Fix: correct the require path.'),
      edit('t1', ADD_HEALTHZ),
      say('Fixed.'),
    ]);
    expect((await w.worker(second, sandboxOf([0]), { diagnosis }).run()).kind).toBe('passed');
    expect(messagesOf(second.requests[0])).toEqual(messagesOf(first.requests[1]));
    expect(diagnosis.reads).toBe(1);
    // The reads made before the death are in the thread's account of the diagnosis.
    expect(w.stored().artifacts.deploy?.redGate?.diagnosis).toEqual({
      text: 'Found: Cannot find module ./health-check. Fix: correct the require path.',
      looked: ['pods_log name=shop-web-1'],
    });
    // 2 before, 1 + 1 for the diagnosis, 2 for the fix.
    expect(w.stored().artifacts.agent?.turns).toBe(6);
    expect(w.conversations.raw.size).toBe(0);
  });

  it('a stored diagnosis that claims to have begun later than the run is now gets no wider turn cap', async () => {
    const w = world({
      prepare: redRun,
      policy: policyOf(
        'maxAgentTurns: 40, maxCiIterations: 3, maxTokensPerRun: 1000000, maxCostUsdPerRun: 50, maxRunMinutes: 60',
      ),
    });
    await w.conversations.save(RUN_ID, {
      phase: 'diagnosis',
      fix: 1,
      messages: [{ role: 'user', content: 'The deploy gate of stage dev went red.' }],
      turnsAtStart: 1000,
      spend: {
        turns: 0,
        usage: { inputTokens: 0, outputTokens: 0, cacheReadTokens: 0, cacheWriteTokens: 0, costUsd: 0 },
      },
      savedAt: new Date().toISOString(),
    });
    const diagnosis = fakeDiagnosis();
    const reads = Array.from({ length: DIAGNOSIS_MAX_TURNS }, (_, i) =>
      call(`d${i}`, 'pods_log', { name: `pod-${i}` }),
    );
    const model = scriptedModel([...reads, edit('t1', ADD_HEALTHZ), say('Fixed.')]);
    expect((await w.worker(model, sandboxOf([0]), { diagnosis }).run()).kind).toBe('passed');
    // Its own cap counted from the run's 2 turns, not from the record's 1000.
    expect(diagnosis.reads).toBe(DIAGNOSIS_MAX_TURNS);
    expect(w.stored().artifacts.deploy?.redGate?.diagnosis?.text).toContain(
      `stopped after ${DIAGNOSIS_MAX_TURNS} turns`,
    );
  });
});
