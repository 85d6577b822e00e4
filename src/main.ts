import { createShipgate, type Shipgate } from './app/create-shipgate.js';
import { ConfigError, loadConfig, secretValues } from './config/config.js';
import { startDevRedisIfNeeded } from './dev-redis.js';
import { createLogger } from './log.js';
import { createScrubber } from './security/scrubber.js';

/**
 * Entry point: configuration is read and validated once, here; a bad value
 * stops the process with a message naming the key and the fix.
 */
async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig(process.env);
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`${error.message}\n`);
      process.exit(78); // EX_CONFIG
    }
    throw error;
  }
  // One scrubber for logs and every other sink, so a token minted later is scrubbed from logs too.
  const scrubber = createScrubber(secretValues(config));
  // In console mode stdout is the chat; logs go to stderr so the conversation stays readable.
  const log = createLogger({ level: config.logLevel, destination: config.chat.kind === 'console' ? process.stderr : process.stdout, scrub: scrubber.scrub });
  // The console chat is for trying shipgate out: on a machine without Redis, bring a private one.
  const devRedis = config.chat.kind === 'console' && config.redisUrlIsDefault ? await startDevRedisIfNeeded(config.redisUrl) : undefined;
  if (devRedis !== undefined) {
    log.warn({ redisAddress: new URL(devRedis.url).host }, 'no Redis at the default address: started a private redis-server; runs vanish when shipgate stops');
    config = { ...config, redisUrl: devRedis.url };
  }
  let app: Shipgate;
  try {
    app = createShipgate({ config, log, scrubber });
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`${error.message}\n`);
      process.exit(78);
    }
    throw error;
  }

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutdown requested');
    // BullMQ's Worker.close() can hang after a Redis outage (taskforcesh/bullmq#4656): do not hang with it.
    setTimeout(() => {
      log.error('shutdown did not finish in 25 s; exiting');
      process.exit(1);
    }, 25_000).unref();
    app.stop().then(
      () => {
        devRedis?.stop();
        process.exit(0);
      },
      (error: unknown) => {
        log.error({ err: error }, 'unclean shutdown');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));

  try {
    await app.start();
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`${error.message}\n`);
      process.exit(78);
    }
    throw error;
  }
  if (config.chat.kind === 'console') {
    await app.closed;
    stop('console closed');
  }
}

await main();
