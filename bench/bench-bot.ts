import { randomBytes } from 'node:crypto';
import { PassThrough } from 'node:stream';
import { createShipgate, type Shipgate } from '../src/app/create-shipgate.js';
import { loadConfig, type Config } from '../src/config/config.js';
import { createLogger } from '../src/log.js';
import { startSlackServer, type SlackServer } from '../test/helpers/slack-server.js';

/**
 * shipgate in-process in Slack HTTP mode against the fake Slack Web API, like
 * test/helpers/bot.ts but without vitest (that helper reads the Redis URL via
 * vitest's inject()).
 */

export const SIGNING_SECRET = 'bench-signing-secret-0123456789abcdef';
export const BOT_TOKEN = 'xoxb-bench-token-not-real';

/**
 * An open repository: anyone may request a run from any channel. The burst sends 200 commands
 * from 40 users (5 each, 6 for the users of the 5 warm-up runs), all still active while it is
 * measured, so the active-run limits are raised well above that.
 */
export const BENCH_POLICY = `
command: /ship
repos:
  acme/docs: {}
limits: { activeRunsPerUser: 20, activeRuns: 1000 }
`;

export interface BenchBot {
  app: Shipgate;
  slack: SlackServer;
  config: Config;
  eventsUrl: string;
  stop(): Promise<void>;
}

export function benchPolicy(redisUrl: string): Config['policy'] {
  return loadConfig({ REDIS_URL: redisUrl, LOG_LEVEL: 'silent' }, { readFile: () => BENCH_POLICY }).policy;
}

export async function startBenchBot(redisUrl: string, prefix: string): Promise<BenchBot> {
  const slack = await startSlackServer({ token: BOT_TOKEN });
  const env = {
    REDIS_URL: redisUrl,
    SHIPGATE_REDIS_PREFIX: prefix,
    PORT: '0',
    SLACK_BOT_TOKEN: BOT_TOKEN,
    SLACK_SIGNING_SECRET: SIGNING_SECRET,
    SLACK_API_URL: slack.apiUrl,
    // A fresh prefix per bench run, so a fresh audit key is fine.
    SHIPGATE_AUDIT_KEY: randomBytes(32).toString('hex'),
    LOG_LEVEL: 'silent',
  };
  let app: Shipgate | undefined;
  try {
    const config = loadConfig(env, { readFile: () => BENCH_POLICY });
    const log = createLogger({ level: 'silent', destination: new PassThrough() });
    // Default card update interval (3 s) and write limiter (10/s): the production settings under test.
    app = createShipgate({ config, log });
    const started = app;
    await started.start();
    return {
      app: started,
      slack,
      config,
      eventsUrl: `http://127.0.0.1:${started.port()}/slack/events`,
      async stop() {
        await started.stop();
        await slack.close();
      },
    };
  } catch (error) {
    await app?.stop().catch(() => undefined);
    await slack.close();
    throw error;
  }
}
