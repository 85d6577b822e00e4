import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { isTerminal } from '../../src/domain/run.js';
import { createRunStore } from '../../src/store/run-store.js';
import {
  startAnthropicServer,
  toolResultsOf,
  type AnthropicServer,
  type ModelRequest,
} from '../helpers/anthropic-server.js';
import { eventually } from '../helpers/eventually.js';
import { testPrefix } from '../helpers/ids.js';
import { killAll, removePolicyFile, spawnShipgate, writePolicyFile, type ShipgateProcess } from '../helpers/process.js';

/**
 * Issue 14: SIGKILL mid-conversation. The scripted model holds its answer to the agent's second
 * request; the worker is killed while it waits, and the next process — on "another machine" (its
 * own temp dir, so no workspace of the first) — continues the stored conversation: its first request
 * is the one the dead worker was waiting on, carrying the earlier turn, no earlier turn's request is
 * sent again, and the pull request has the edits of both sides of the kill. Real processes in local
 * mode (the local forge, the real sandbox), real Redis.
 */

const DEMO_POLICY =
  'repos:\n  demo/shop:\n    path: ./repos/shop.git\n    sample: true\n    checks: { test: node --test }\n    ci: { test: node --test }\n';
const processes: ShipgateProcess[] = [];
const policies: string[] = [];
const folders: string[] = [];
let model: AnthropicServer | undefined;
let redis: Redis | undefined;

afterEach(async () => {
  await killAll(processes.splice(0));
  for (const path of policies.splice(0)) removePolicyFile(path);
  for (const dir of folders.splice(0)) rmSync(dir, { recursive: true, force: true });
  await model?.close();
  model = undefined;
  redis?.disconnect();
});

const editor = (id: string, input: Record<string, string>) => ({
  content: [{ type: 'tool_use' as const, id, name: 'str_replace_based_edit_tool', input }],
});
const addHealthz = editor('t1', {
  command: 'str_replace',
  path: '/repo/src/app.js',
  old_str: "  '/products':",
  new_str: "  '/healthz': () => ({ status: 200, body: { ok: true } }),\n  '/products':",
});
// Applies only on top of the first edit: on a tree without it, it fails.
const addReady = editor('t2', {
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
    model = await startAnthropicServer({ apiKey: 'sk-ant-scripted' });
    const server = model;
    // The second answer is held for minutes: the kill lands while the bot waits for it.
    model.script(addHealthz, { ...addReady, delayMs: 600_000 }, addReady, {
      content: [{ type: 'text', text: 'Added GET /healthz and GET /ready.' }],
    });
    const policy = writePolicyFile(DEMO_POLICY);
    policies.push(policy);
    const prefix = testPrefix('conversation-kill');
    const env = (machine: string) => ({
      REDIS_URL: inject('redisUrl'),
      PORT: '0',
      SHIPGATE_CONFIG: policy,
      SHIPGATE_REDIS_PREFIX: prefix,
      ANTHROPIC_BASE_URL: server.baseUrl,
      ANTHROPIC_API_KEY: 'sk-ant-scripted',
      // Each process its own temp dir, so its own work root: the second never sees the first's workspace.
      TMPDIR: machine,
    });
    const machine = () => {
      const dir = mkdtempSync(join(tmpdir(), 'shipgate-machine-'));
      folders.push(dir);
      // As /tmp is: the sandbox's files under it are read by the sandboxed user too.
      chmodSync(dir, 0o755);
      return dir;
    };

    const first = spawnShipgate(env(machine()));
    processes.push(first);
    await first.waitForOutput(/console chat — you are ULOCAL/, 60_000);
    first.child.stdin.write('/ship demo/shop add a /healthz endpoint\n');
    const runId = (await first.waitForOutput(/Queued run (sg-[a-z0-9]{8})/, 30_000))[1] ?? '';
    await eventually(async () => (server.requests.length >= 2 ? true : undefined), 'the held second request', 90_000);
    redis = new Redis(inject('redisUrl'));
    // The first turn was stored before the second request went out.
    expect(await redis.exists(`${prefix}:agent-conversation:${runId}:agent`)).toBe(1);

    first.child.kill('SIGKILL');
    await first.exited;
    const beforeKill = server.requests.length;
    expect(beforeKill).toBe(2);

    const second = spawnShipgate(env(machine()));
    processes.push(second);
    const store = createRunStore({ redis, prefix, clock: () => new Date() });
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
