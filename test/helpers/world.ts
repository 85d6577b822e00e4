import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll } from 'vitest';
import { startAnthropicServer, type AnthropicServer } from './anthropic-server.js';
import { SIGNING_SECRET, startTestBot, type TestBot } from './bot.js';
import { startGitHubServer, type GitHubServer } from './github-server.js';
import { sendSlashCommand } from './slack-requests.js';
import type { ShipgateOptions } from '../../src/app/create-shipgate.js';

/**
 * The whole outside world of a run, on loopback: a bare git repository as
 * "GitHub's" remote, a local GitHub REST server that hands out its clone URL,
 * a scripted Anthropic Messages server, a local Slack Web API, and shipgate
 * itself with the real SDKs pointed at them.
 */

export const GITHUB_TOKEN = 'ghp_testtoken0123456789abcdefghijklmnopqrs';
export const ANTHROPIC_KEY = 'sk-ant-test-key-not-real';
export const WEBHOOK_SECRET = 'test-webhook-secret';

/** git with its own identity and no global configuration (the tests' side, not the bot's). */
export function gitIn(cwd: string, ...args: string[]): string {
  return execFileSync('git', ['-c', 'user.name=Seeder', '-c', 'user.email=seed@example.com', ...args], {
    cwd,
    env: { PATH: process.env.PATH ?? '', GIT_CONFIG_NOSYSTEM: '1', GIT_CONFIG_GLOBAL: '/dev/null', HOME: tmpdir() },
  })
    .toString()
    .trim();
}

/** Temp folders made here that no stop() removed yet: removed after the test file. */
const leftovers = new Set<string>();
// Registered when a test file imports this module, so it runs after that file's tests.
afterAll(() => {
  for (const dir of leftovers) rmSync(dir, { recursive: true, force: true });
  leftovers.clear();
});

function tempFolder(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  leftovers.add(dir);
  return dir;
}

function removeFolder(dir: string): void {
  leftovers.delete(dir);
  rmSync(dir, { recursive: true, force: true });
}

/** Removes a repository made by seedRepository (its whole temp folder). */
export function removeRepository(bare: string): void {
  removeFolder(dirname(bare));
}

/** A bare repository on `main` holding `files` (removed by removeRepository, or when the test worker exits). */
export function seedRepository(files: Record<string, string>): string {
  const root = tempFolder('shipgate-world-');
  const bare = join(root, 'shop.git');
  const seed = join(root, 'seed');
  gitIn(root, 'init', '--bare', '--initial-branch=main', bare);
  gitIn(root, 'clone', bare, seed);
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(seed, path)), { recursive: true });
    writeFileSync(join(seed, path), text);
  }
  gitIn(seed, 'add', '-A');
  gitIn(seed, 'commit', '-m', 'initial');
  gitIn(seed, 'push', 'origin', 'main');
  return bare;
}

export function branchesOf(bare: string): string[] {
  return gitIn(bare, 'for-each-ref', '--format=%(refname:short)', 'refs/heads')
    .split('\n')
    .filter((b) => b !== '');
}

export interface World {
  bot: TestBot;
  model: AnthropicServer;
  github: GitHubServer;
  bare: string;
  /** Sends `/ship <text>` as UALICE in CSHOP and returns the run id. */
  ship(text?: string): Promise<string>;
  /** Fails the test on any unexpected request to a fake, then stops everything. */
  stop(): Promise<string[]>;
}

export async function startWorld(options: {
  name: string;
  policy: string;
  files: Record<string, string>;
  tuning?: ShipgateOptions['tuning'];
  env?: Record<string, string>;
}): Promise<World> {
  const bare = seedRepository(options.files);
  const model = await startAnthropicServer({ apiKey: ANTHROPIC_KEY });
  const github = await startGitHubServer({
    token: GITHUB_TOKEN,
    // A PR's head is whatever the bare repository's branch really points at.
    resolveHeadSha: (_repo, branch) => {
      try {
        return gitIn(bare, 'rev-parse', `refs/heads/${branch}`);
      } catch {
        return undefined;
      }
    },
  });
  github.setRepository('acme/shop', { cloneUrl: `file://${bare}`, defaultBranch: 'main' });
  const workRoot = tempFolder('shipgate-work-');
  const bot = await startTestBot({
    name: options.name,
    policy: options.policy,
    env: {
      GITHUB_API_URL: github.apiUrl,
      GITHUB_TOKEN,
      GITHUB_WEBHOOK_SECRET: WEBHOOK_SECRET,
      ANTHROPIC_BASE_URL: model.baseUrl,
      ANTHROPIC_API_KEY: ANTHROPIC_KEY,
      SHIPGATE_MODEL: 'claude-sonnet-4-6',
      ...options.env,
    },
    cardUpdateIntervalMs: 200,
    workRoot,
    tuning: { githubRetryAfterBaseMs: 1, githubLimiterId: `world-${options.name}-${Date.now()}`, modelMaxRetries: 2, ...options.tuning },
  });
  return {
    bot,
    model,
    github,
    bare,
    async ship(text = 'acme/shop add a /healthz endpoint') {
      const result = await sendSlashCommand(bot.eventsUrl, SIGNING_SECRET, { text, user_id: 'UALICE', channel_id: 'CSHOP' });
      const id = /sg-[a-z0-9]{8}/.exec(result.body)?.[0];
      if (id === undefined) throw new Error(`no run id: ${result.body}`);
      return id;
    },
    async stop() {
      const problems = [
        ...model.unexpected.map((u) => `model: ${u.reason}`),
        ...github.unexpected.map((u) => `github: ${u.method} ${u.path}`),
        ...bot.slack.unexpected.map((u) => `slack: ${u.path} ${u.reason}`),
      ];
      await bot.stop();
      await model.close();
      await github.close();
      removeRepository(bare);
      removeFolder(workRoot);
      return problems;
    },
  };
}
