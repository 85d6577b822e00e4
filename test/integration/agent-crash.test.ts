import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { createAnthropicModel } from '../../src/adapters/anthropic/anthropic-model.js';
import { createGitHubRest } from '../../src/adapters/github/github-rest.js';
import { parsePolicy } from '../../src/config/config.js';
import { createGit, type Git } from '../../src/git/git.js';
import { createLogger } from '../../src/log.js';
import type { ChatPort } from '../../src/ports/chat.js';
import type { GitHubPort } from '../../src/ports/github.js';
import { createBubblewrapSandbox } from '../../src/adapters/sandbox/bubblewrap-sandbox.js';
import { createAgentStep } from '../../workers/gates/agent/agent-step.js';
import { createPrStep } from '../../workers/gates/pr/pr-step.js';
import { startAnthropicServer, type AnthropicServer } from '../helpers/anthropic-server.js';
import { SIGNING_SECRET, startTestBot, type TestBot } from '../helpers/bot.js';
import { eventually } from '../helpers/eventually.js';
import { startGitHubServer, type GitHubServer } from '../helpers/github-server.js';
import { sendSlashCommand } from '../helpers/slack-requests.js';

/**
 * Issue 3: a worker that dies right after any side effect (clone, commit,
 * push, PR) is retried by the queue; the retry must converge on exactly one
 * branch, one pull request and one reply per gate.
 */

const POLICY_TEXT = `
repos:
  acme/shop:
    checks: { test: test -f src/health.js }
`;

function git(cwd: string, ...args: string[]): string {
  return execFileSync('git', ['-c', 'user.name=Seeder', '-c', 'user.email=seed@example.com', ...args], {
    cwd,
    env: { PATH: process.env.PATH ?? '', GIT_CONFIG_NOSYSTEM: '1', GIT_CONFIG_GLOBAL: '/dev/null', HOME: tmpdir() },
  })
    .toString()
    .trim();
}

function seed(): string {
  const root = tempFolder('shipgate-crash-');
  const bare = join(root, 'shop.git');
  git(root, 'init', '--bare', '--initial-branch=main', bare);
  git(root, 'clone', bare, join(root, 'seed'));
  mkdirSync(join(root, 'seed/src'));
  writeFileSync(join(root, 'seed/src/server.js'), 'module.exports = {};\n');
  git(join(root, 'seed'), 'add', '-A');
  git(join(root, 'seed'), 'commit', '-m', 'initial');
  git(join(root, 'seed'), 'push', 'origin', 'main');
  return bare;
}

type CrashPoint = 'prepareWorkspace' | 'commitAll' | 'push' | 'createPullRequest';

/** Delegates to the real git layer, dying once right after the named operation completed. */
function crashingGit(real: Git, point: CrashPoint, crashed: { done: boolean }): Git {
  const dieAfter = async <T>(name: CrashPoint, work: Promise<T>): Promise<T> => {
    const result = await work;
    if (name === point && !crashed.done) {
      crashed.done = true;
      throw new Error(`simulated worker death right after ${name}`);
    }
    return result;
  };
  return {
    local: real.local,
    prepareWorkspace: (input) => dieAfter('prepareWorkspace', real.prepareWorkspace(input)),
    changedFiles: (dir, base) => real.changedFiles(dir, base),
    diffStat: (dir, base) => real.diffStat(dir, base),
    submodulePaths: (dir, rev) => real.submodulePaths(dir, rev),
    commitAll: (input) => dieAfter('commitAll', real.commitAll(input)),
    push: (input) => dieAfter('push', real.push(input)),
    headSha: (dir) => real.headSha(dir),
    readFileAt: (dir, rev, path) => real.readFileAt(dir, rev, path),
    restorePaths: (dir, rev, paths) => real.restorePaths(dir, rev, paths),
    mergeBase: (dir, a, b) => real.mergeBase(dir, a, b),
    committedFiles: (dir, from, to) => real.committedFiles(dir, from, to),
    currentBranch: (dir) => real.currentBranch(dir),
    removeWorkspace: (dir) => real.removeWorkspace(dir),
    close: () => real.close(),
  };
}

function crashingGitHub(real: GitHubPort, point: CrashPoint, crashed: { done: boolean }): GitHubPort {
  return {
    getRepository: (owner, repo) => real.getRepository(owner, repo),
    findOpenPullRequest: (owner, repo, branch) => real.findOpenPullRequest(owner, repo, branch),
    pushCredentials: (owner, repo) => real.pushCredentials(owner, repo),
    async createPullRequest(input) {
      const pr = await real.createPullRequest(input);
      if (point === 'createPullRequest' && !crashed.done) {
        crashed.done = true;
        throw new Error('simulated worker death right after opening the PR');
      }
      return pr;
    },
  };
}

let cleanup: Array<() => Promise<void>> = [];
/** The temp folders this file made (the seeded repository, the work roots), removed after each test. */
const folders: string[] = [];
afterEach(async () => {
  for (const fn of cleanup.reverse()) await fn();
  cleanup = [];
  for (const dir of folders.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function tempFolder(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  folders.push(dir);
  return dir;
}

describe('a worker dying after each side effect of the agent and pr gates', () => {
  it.each<CrashPoint>(['prepareWorkspace', 'commitAll', 'push', 'createPullRequest'])(
    'after %s: one branch, one PR, one reply per gate',
    async (point) => {
      const bare = seed();
      const model: AnthropicServer = await startAnthropicServer();
      const github: GitHubServer = await startGitHubServer({
        resolveHeadSha: (_repo, branch) => {
          try {
            return git(bare, 'rev-parse', `refs/heads/${branch}`);
          } catch {
            return undefined;
          }
        },
      });
      github.setRepository('acme/shop', { cloneUrl: `file://${bare}`, defaultBranch: 'main' });
      // Idempotent on purpose: a retried agent run sees the same answers and writes the same file.
      const answer = (request: { params: { messages: unknown[] } }) =>
        request.params.messages.length === 1
          ? { content: [{ type: 'tool_use' as const, id: 'c1', name: 'str_replace_based_edit_tool', input: { command: 'create', path: '/repo/src/health.js', file_text: "module.exports = () => 'ok';\n" } }] }
          : { content: [{ type: 'text' as const, text: 'Added src/health.js.' }] };
      model.script(...Array.from({ length: 8 }, () => answer));

      const log = createLogger({ level: 'silent', destination: new PassThrough() });
      const policy = parsePolicy(POLICY_TEXT, 'test');
      const crashed = { done: false };
      const realGit = createGit({ log });
      const gitPort = crashingGit(realGit, point, crashed);
      const githubPort = crashingGitHub(
        createGitHubRest({ apiUrl: github.apiUrl, auth: { kind: 'token', token: 'ghp_crash' }, log, retry: { retryAfterBaseMs: 1 }, limiterId: `crash-${point}-${Date.now()}` }),
        point,
        crashed,
      );
      const chatLinks: Pick<ChatPort, 'permalink'> = { permalink: async () => undefined };
      const steps = {
        agent: createAgentStep({
          policy,
          policyFileName: 'shipgate.yaml',
          github: githubPort,
          git: gitPort,
          model: createAnthropicModel({ apiKey: 'k', baseUrl: model.baseUrl, log, maxRetries: 0 }),
          modelId: 'claude-sonnet-4-6',
          workRoot: tempFolder('shipgate-crash-work-'),
          clock: () => new Date(),
          sandbox: createBubblewrapSandbox({ workerUid: process.getuid?.() ?? 0 }),
          scrub: (text) => text,
        }),
        pr: createPrStep({ github: githubPort, chat: chatLinks, scrub: (text) => text }),
      };
      const bot: TestBot = await startTestBot({ name: `crash-${point}`, policy: POLICY_TEXT, steps, cardUpdateIntervalMs: 200 });
      cleanup.push(
        async () => bot.stop(),
        async () => model.close(),
        async () => github.close(),
        async () => realGit.close(),
      );

      const ack = await sendSlashCommand(bot.eventsUrl, SIGNING_SECRET, { text: 'acme/shop add a health module', user_id: 'UALICE', channel_id: 'CSHOP' });
      const runId = /sg-[a-z0-9]{8}/.exec(ack.body)?.[0] ?? '';
      await eventually(async () => (await bot.app.store.get(runId))?.gates[1]?.state === 'passed', `pr gate passed after a death after ${point}`, 30_000);
      expect(crashed.done).toBe(true);

      const branches = git(bare, 'for-each-ref', '--format=%(refname:short)', 'refs/heads').split('\n');
      expect(branches.sort()).toEqual(['main', `shipgate/${runId}-add-a-health-module`].sort());
      expect(git(bare, 'rev-list', '--count', `main..shipgate/${runId}-add-a-health-module`)).toBe('1');
      expect(github.pulls('acme/shop')).toHaveLength(1);

      await new Promise((r) => setTimeout(r, 500));
      const replies = bot.slack.messages('CSHOP').filter((m) => m.thread_ts !== undefined && m.thread_ts !== m.ts);
      const about = (gate: string) => replies.filter((m) => (m.text ?? '').startsWith(`${gate} `));
      expect(about('agent')).toHaveLength(1);
      expect(about('pr')).toHaveLength(1);
      expect(bot.slack.unexpected).toEqual([]);
      expect(github.unexpected).toEqual([]);
      expect(model.unexpected).toEqual([]);
    },
    60_000,
  );
});
