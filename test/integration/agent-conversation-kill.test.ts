import { execFileSync } from 'node:child_process';
import { chmodSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { isTerminal } from '../../src/domain/run.js';
import { startAnthropicServer, toolResultsOf, type ModelRequest } from '../helpers/anthropic-server.js';
import { eventually } from '../helpers/eventually.js';
import {
  addHealthz,
  editorTurn,
  localWorld,
  modelAsked,
  processScope,
  saysDone,
  shipFromConsole,
  sigkill,
} from '../helpers/kill-world.js';

/**
 * Issue 14: SIGKILL mid-conversation. The scripted model holds its answer to the agent's second
 * request; the worker is killed while it waits, and the next process — on "another machine" (its
 * own temp dir, so no workspace of the first) — continues the stored conversation: its first request
 * is the one the dead worker was waiting on, carrying the earlier turn, no earlier turn's request is
 * sent again, and the pull request has the edits of both sides of the kill. Real processes in local
 * mode (the local forge, the real sandbox), real Redis.
 */

const scope = processScope();

// Applies only on top of the first edit: on a tree without it, it fails.
const addReady = editorTurn('t2', {
  command: 'str_replace',
  path: '/repo/src/app.js',
  old_str: "  '/healthz': () => ({ status: 200, body: { ok: true } }),\n",
  new_str:
    "  '/healthz': () => ({ status: 200, body: { ok: true } }),\n  '/ready': () => ({ status: 200, body: { ready: true } }),\n",
});

function messagesOf(request: ModelRequest | undefined): string {
  return JSON.stringify(request?.params.messages ?? []);
}

describe('SIGKILL mid-conversation', { timeout: 240_000 }, () => {
  it('the next process continues the conversation: no earlier turn resent, both edits in the pull request', async () => {
    const model = await startAnthropicServer({ apiKey: 'sk-ant-scripted' });
    scope.defer(() => model.close());
    const server = model;
    // The second answer is held for minutes: the kill lands while the bot waits for it.
    model.script(
      addHealthz,
      { ...addReady, delayMs: 600_000 },
      addReady,
      saysDone('Added GET /healthz and GET /ready.'),
    );
    const { env, policy, prefix, redis, store } = localWorld(scope, 'conversation-kill', model);
    // Each process its own temp dir, so its own work root: the second never sees the first's workspace.
    const onMachine = () => {
      const dir = scope.tempDir('machine');
      // As /tmp is: the sandbox's files under it are read by the sandboxed user too.
      chmodSync(dir, 0o755);
      return { ...env, TMPDIR: dir };
    };

    const first = scope.spawn(onMachine());
    const runId = await shipFromConsole(first);
    await modelAsked(model, 2, 'the held second request', 90_000);
    // The first turn was stored before the second request went out.
    expect(await redis.exists(`${prefix}:agent-conversation:${runId}:agent`)).toBe(1);

    await sigkill(first);
    const beforeKill = server.requests.length;
    expect(beforeKill).toBe(2);

    scope.spawn(onMachine());
    // Until the pull request is open, or the run went wrong in a way the assertions below explain.
    await eventually(
      async () => {
        const now = await store.get(runId);
        const settled =
          now?.gates.find((g) => g.name === 'pr')?.state === 'passed' ||
          now?.gates.find((g) => g.name === 'agent')?.state === 'failed' ||
          (now !== undefined && isTerminal(now.state)) ||
          server.unexpected.length > 0;
        return settled ? true : undefined;
      },
      'the pull request opened by the next process',
      180_000,
    );

    const requests = server.requests.filter((request): request is ModelRequest => request.params !== undefined);
    expect(requests).toHaveLength(server.requests.length);
    const [opening, held, ...after] = requests;
    expect(opening?.params.messages).toHaveLength(1);
    // The resumed request is the one the dead worker waited on: the opening, the first edit and its result.
    expect(after).toHaveLength(2);
    expect(messagesOf(after[0])).toBe(messagesOf(held));
    expect(after[0]?.params.messages).toHaveLength(3);
    // No earlier turn's request was sent again: every later request carries the earlier turns.
    expect(after.every((request) => request.params.messages.length >= 3)).toBe(true);
    // The edit that builds on the first one applied on the new machine's tree.
    expect(after[1] === undefined ? [] : toolResultsOf(after[1])).toEqual([
      expect.objectContaining({ tool_use_id: 't2', is_error: false }),
    ]);
    expect(server.remaining()).toBe(0);
    expect(server.unexpected).toEqual([]);

    const run = await store.get(runId);
    expect(run?.gates.find((g) => g.name === 'pr')?.state).toBe('passed');
    // One turn before the kill, two after: the turn budget was not reset.
    expect(run?.artifacts.agent?.turns).toBe(3);
    const branch = run?.artifacts.agent?.branch ?? '';
    const bare = join(dirname(policy), 'repos/shop.git');
    const app = execFileSync('git', ['--git-dir', bare, 'show', `refs/heads/${branch}:src/app.js`]).toString();
    expect(app).toContain("'/healthz'");
    expect(app).toContain("'/ready'");
    // Pushed: nothing left to resume.
    expect(await redis.exists(`${prefix}:agent-conversation:${runId}:agent`)).toBe(0);
  });
});
