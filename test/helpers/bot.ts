import { PassThrough } from 'node:stream';
import { inject } from 'vitest';
import { createShipgate, type Shipgate, type ShipgateOptions } from '../../src/app/create-shipgate.js';
import { loadConfig, secretValues, type Config } from '../../src/config/config.js';
import { createLogger } from '../../src/log.js';
import { TEST_AUDIT_KEY } from './audit-key.js';
import { createScrubber } from '../../src/security/scrubber.js';
import { testPrefix } from './ids.js';
import { startSlackServer, type SlackServer } from './slack-server.js';
import { startDiscordServer, type DiscordServer } from './discord-server.js';
import { testKeys, type TestKeys } from './discord-requests.js';

export const SIGNING_SECRET = 'test-signing-secret-0123456789abcdef';
export const BOT_TOKEN = 'xoxb-test-token-not-real';

/** The policy most integration tests use: a restricted repo, an open one, a channel default. */
export const TEST_POLICY = `
command: /ship
channels:
  CDEFAULT: { defaultRepo: acme/docs }
repos:
  acme/shop:
    channels: [CSHOP]
    requesters: [UALICE, SDEVS]
    checks: { test: npm test }
    pipeline: shop
  acme/docs: {}
pipelines:
  shop:
    stages:
      - name: prod
        kargoStage: prod
        approval: { approvers: [UAPPROVER] }
`;

export const DISCORD_TOKEN = 'discord-test-bot-token-not-real';
export const DISCORD_APP_ID = '1290000000000000001';

/** Which chat the bot talks to: Slack (the default), Discord, or both at once. */
export type TestChat = 'slack' | 'discord' | 'both';

export interface TestBot {
  app: Shipgate;
  slack: SlackServer;
  /** The fake Discord REST API and the key that signs interactions (chat `discord` or `both`). */
  discord: { server: DiscordServer; keys: TestKeys; interactionsUrl: string } | undefined;
  config: Config;
  /** http://127.0.0.1:<port>/slack/events */
  eventsUrl: string;
  baseUrl: string;
  stop(): Promise<void>;
}

export function testEnv(slack: SlackServer, prefix: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    REDIS_URL: inject('redisUrl'),
    SHIPGATE_REDIS_PREFIX: prefix,
    PORT: '0',
    SLACK_BOT_TOKEN: BOT_TOKEN,
    SLACK_SIGNING_SECRET: SIGNING_SECRET,
    SLACK_API_URL: slack.apiUrl,
    SHIPGATE_AUDIT_KEY: TEST_AUDIT_KEY,
    LOG_LEVEL: 'silent',
    ...extra,
  };
}

/** DISCORD_* for a bot pointed at the fake Discord API. */
export function discordEnv(discord: DiscordServer, keys: TestKeys): Record<string, string> {
  return { DISCORD_PUBLIC_KEY: keys.publicKeyHex, DISCORD_BOT_TOKEN: DISCORD_TOKEN, DISCORD_APPLICATION_ID: DISCORD_APP_ID, DISCORD_API_URL: discord.apiUrl };
}

/**
 * Starts shipgate in-process pointed at fresh fakes: Slack HTTP mode by default; `chat: 'discord'`
 * for Discord interactions only (the Slack fake then just stays silent), `'both'` for both chats.
 */
export async function startTestBot(
  options: { policy?: string; name?: string; env?: Record<string, string>; chat?: TestChat; discordRateLimitEvery?: number } & Partial<Omit<ShipgateOptions, 'config' | 'log'>> = {},
): Promise<TestBot> {
  const slack = await startSlackServer({ token: BOT_TOKEN });
  slack.setUserGroup('SDEVS', ['UBOB']);
  const prefix = testPrefix(options.name ?? 'bot');
  const chat = options.chat ?? 'slack';
  const discordServer = chat === 'slack' ? undefined : await startDiscordServer({ token: DISCORD_TOKEN, applicationId: DISCORD_APP_ID, rateLimitEvery: options.discordRateLimitEvery });
  const keys = discordServer === undefined ? undefined : testKeys();
  const env = testEnv(slack, prefix, { ...(discordServer === undefined || keys === undefined ? {} : discordEnv(discordServer, keys)), ...options.env });
  if (chat === 'discord') {
    delete env['SLACK_BOT_TOKEN'];
    delete env['SLACK_SIGNING_SECRET'];
  }
  const config = loadConfig(env, { readFile: () => options.policy ?? TEST_POLICY });
  // Wired as src/main.ts wires it: one scrubber for the logger and the app.
  const scrubber = createScrubber(secretValues(config));
  // SHIPGATE_TEST_LOG=1 streams the in-process bot's debug log to stderr, for reading a failing test.
  const verbose = process.env['SHIPGATE_TEST_LOG'] === '1';
  const log = createLogger({ level: verbose ? 'debug' : 'silent', destination: verbose ? process.stderr : new PassThrough(), scrub: scrubber.scrub });
  const { chat: _chat, discordRateLimitEvery: _every, policy: _policy, name: _name, env: _env, ...shipgateOptions } = options;
  const app = createShipgate({ scrubber, ...shipgateOptions, config, log });
  await app.start();
  const baseUrl = `http://127.0.0.1:${app.port()}`;
  return {
    app,
    slack,
    discord: discordServer === undefined || keys === undefined ? undefined : { server: discordServer, keys, interactionsUrl: `${baseUrl}/discord/interactions` },
    config,
    baseUrl,
    eventsUrl: `${baseUrl}/slack/events`,
    async stop() {
      await app.stop();
      await slack.close();
      await discordServer?.close();
    },
  };
}
