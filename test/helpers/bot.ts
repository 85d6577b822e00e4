import { PassThrough } from 'node:stream';
import { inject } from 'vitest';
import { createShipgate, type Shipgate, type ShipgateOptions } from '../../src/app/create-shipgate.js';
import { loadConfig, secretValues, type Config } from '../../src/config/config.js';
import { createLogger } from '../../src/log.js';
import { TEST_AUDIT_KEY } from './audit-key.js';
import { createScrubber } from '../../src/security/scrubber.js';
import { testPrefix } from './ids.js';
import { startSlackServer, type SlackServer } from './slack-server.js';

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

export interface TestBot {
  app: Shipgate;
  slack: SlackServer;
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

/** Starts shipgate in-process in Slack HTTP mode, pointed at a fresh fake Slack Web API. */
export async function startTestBot(options: { policy?: string; name?: string; env?: Record<string, string> } & Partial<Omit<ShipgateOptions, 'config' | 'log'>> = {}): Promise<TestBot> {
  const slack = await startSlackServer({ token: BOT_TOKEN });
  slack.setUserGroup('SDEVS', ['UBOB']);
  const prefix = testPrefix(options.name ?? 'bot');
  const config = loadConfig(testEnv(slack, prefix, options.env), { readFile: () => options.policy ?? TEST_POLICY });
  // Wired as src/main.ts wires it: one scrubber for the logger and the app.
  const scrubber = createScrubber(secretValues(config));
  // SHIPGATE_TEST_LOG=1 streams the in-process bot's debug log to stderr, for reading a failing test.
  const verbose = process.env['SHIPGATE_TEST_LOG'] === '1';
  const log = createLogger({ level: verbose ? 'debug' : 'silent', destination: verbose ? process.stderr : new PassThrough(), scrub: scrubber.scrub });
  const app = createShipgate({ scrubber, ...options, config, log });
  await app.start();
  const baseUrl = `http://127.0.0.1:${app.port()}`;
  return {
    app,
    slack,
    config,
    baseUrl,
    eventsUrl: `${baseUrl}/slack/events`,
    async stop() {
      await app.stop();
      await slack.close();
    },
  };
}
