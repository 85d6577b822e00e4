import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll } from 'vitest';
import { startAnthropicServer, type AnthropicServer } from './anthropic-server.js';
import { DISCORD_APP_ID, SIGNING_SECRET, startTestBot, type TestBot, type TestChat } from './bot.js';
import { callbackOf, sendInteraction, slashCommand } from './discord-requests.js';
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
  /**
   * Sends `/ship <text>` as UALICE in CSHOP (on Discord: `/ship run` as DISCORD_ALICE in
   * DISCORD_SHOP, the first word as `repo` when it is one) and returns the run id.
   */
  ship(text?: string): Promise<string>;
  /** Fails the test on any unexpected request to a fake, then stops everything. */
  stop(): Promise<string[]>;
}

/** The Discord side of a world with `chat: 'discord'`: a guild channel and its people (snowflakes). */
export const DISCORD_SHOP = '1310000000000000100';
export const DISCORD_ALICE = '1310000000000000201';
export const DISCORD_BOB = '1310000000000000202';
export const DISCORD_APPROVER = '1310000000000000203';
export const DISCORD_APPROVERS_ROLE = '1310000000000000301';

/** The answer that replaced a deferred command's "thinking…" (the edit of @original for `token`). */
export async function discordAnswer(bot: TestBot, token: string, timeoutMs = 10_000): Promise<string> {
  const server = bot.discord?.server;
  if (server === undefined) throw new Error('not a Discord bot');
  const call = await server.waitFor((s) => s.webhookCalls.find((c) => c.token === token && c.kind === 'edit-original'), timeoutMs, 'the deferred answer');
  return call.body.content ?? '';
}

/** `/ship <sub> …` on Discord: the deferred ack (checked: type 5, ephemeral, within 3 s) and then the answer. */
export async function discordShip(
  bot: TestBot,
  sub: string,
  options: Record<string, string | boolean>,
  actor: { userId: string; roles?: string[] } = { userId: DISCORD_ALICE },
  channelId = DISCORD_SHOP,
): Promise<{ answer: string; ackMs: number }> {
  const discord = bot.discord;
  if (discord === undefined) throw new Error('not a Discord bot');
  const { body, token } = slashCommand(discord.server, DISCORD_APP_ID, actor, { channelId }, sub, options);
  const result = await sendInteraction(discord.interactionsUrl, discord.keys, body);
  const callback = callbackOf(result);
  if (result.status !== 200 || callback?.type !== 5 || callback.data?.['flags'] !== 64) throw new Error(`not a deferred ephemeral ack: ${result.status} ${JSON.stringify(result.json)}`);
  if (result.elapsedMs >= 3_000) throw new Error(`ack took ${result.elapsedMs} ms`);
  return { answer: await discordAnswer(bot, token), ackMs: result.elapsedMs };
}

/** The fake GitHub serving acme/shop from the bare repository `bare`: a PR's head is whatever the repository's branch really points at. */
export async function startShopGitHub(bare: string): Promise<GitHubServer> {
  const github = await startGitHubServer({
    token: GITHUB_TOKEN,
    resolveHeadSha: (_repo, branch) => {
      try {
        return gitIn(bare, 'rev-parse', `refs/heads/${branch}`);
      } catch {
        return undefined;
      }
    },
  });
  github.setRepository('acme/shop', { cloneUrl: `file://${bare}`, defaultBranch: 'main' });
  return github;
}

export async function startWorld(options: {
  name: string;
  policy: string;
  files: Record<string, string>;
  tuning?: ShipgateOptions['tuning'];
  env?: Record<string, string>;
  /** Which chat the people use (default Slack). */
  chat?: TestChat;
  /** Discord only: every n-th REST call answered 429 first. */
  discordRateLimitEvery?: number;
}): Promise<World> {
  const bare = seedRepository(options.files);
  const model = await startAnthropicServer({ apiKey: ANTHROPIC_KEY });
  const github = await startShopGitHub(bare);
  const workRoot = tempFolder('shipgate-work-');
  const bot = await startTestBot({
    name: options.name,
    policy: options.policy,
    chat: options.chat,
    discordRateLimitEvery: options.discordRateLimitEvery,
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
  bot.discord?.server.addChannel(DISCORD_SHOP, 'shop');
  return {
    bot,
    model,
    github,
    bare,
    async ship(text = 'acme/shop add a /healthz endpoint') {
      if (options.chat === 'discord') {
        const [first = '', ...rest] = text.split(' ');
        const named = /^[\w.-]+\/[\w.-]+$/.test(first);
        const { answer } = await discordShip(bot, 'run', named ? { repo: first, task: rest.join(' ') } : { task: text });
        const id = /sg-[a-z0-9]{8}/.exec(answer)?.[0];
        if (id === undefined) throw new Error(`no run id: ${answer}`);
        return id;
      }
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
        ...(bot.discord?.server.unexpected ?? []).map((u) => `discord: ${u.method} ${u.path} ${u.reason}`),
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
