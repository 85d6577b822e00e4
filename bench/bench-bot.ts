import { loadConfig, type Config } from '../src/config/config.js';

/**
 * shipgate's settings for the ack benchmark (bench/ack-bench.ts), which runs its web and worker
 * roles in processes of their own (bench/ack-server-process.ts) against the fake Slack Web API.
 */

export const SIGNING_SECRET = 'bench-signing-secret-0123456789abcdef';
export const BOT_TOKEN = 'xoxb-bench-token-not-real';

/**
 * An open repository: anyone may request a run from any channel. The burst sends 200 commands
 * from 40 users (5 each), the warm-up 60 from 40 others, all still active while the burst is
 * measured, so the active-run limits are raised well above that.
 */
export const BENCH_POLICY = `
command: /ship
repos:
  acme/docs: {}
limits: { activeRunsPerUser: 20, activeRuns: 1000 }
`;

export function benchPolicy(redisUrl: string): Config['policy'] {
  return loadConfig({ REDIS_URL: redisUrl, LOG_LEVEL: 'silent' }, { readFile: () => BENCH_POLICY }).policy;
}

/** The environment of one role: both roles share the prefix and the audit key (one chain). */
export function benchBotConfig(options: { redisUrl: string; prefix: string; slackApiUrl: string; auditKey: string; role: 'web' | 'worker' }): Config {
  return loadConfig(
    {
      REDIS_URL: options.redisUrl,
      SHIPGATE_REDIS_PREFIX: options.prefix,
      SHIPGATE_ROLE: options.role,
      PORT: '0',
      SLACK_BOT_TOKEN: BOT_TOKEN,
      SLACK_SIGNING_SECRET: SIGNING_SECRET,
      SLACK_API_URL: options.slackApiUrl,
      SHIPGATE_AUDIT_KEY: options.auditKey,
      LOG_LEVEL: 'silent',
    },
    { readFile: () => BENCH_POLICY },
  );
}
