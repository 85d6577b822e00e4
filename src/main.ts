import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { createShipgate, type Shipgate } from './app/create-shipgate.js';
import { setupText } from './app/setup-summary.js';
import { ConfigError, loadConfig, secretValues } from './config/config.js';
import { startDevRedisIfNeeded } from './dev-redis.js';
import { createLogger } from './log.js';
import { createScrubber } from './security/scrubber.js';

/**
 * Entry point: configuration is read and validated once, here; a bad value
 * stops the process with a message naming the key and the fix.
 */
async function main(): Promise<void> {
  let envFile: string | undefined;
  let config;
  try {
    envFile = loadEnvFile();
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
  const log = createLogger({
    level: config.logLevel,
    destination: config.chat.kind === 'console' ? process.stderr : process.stdout,
    scrub: scrubber.scrub,
  });
  if (envFile !== undefined) log.info({ envFile }, 'environment file read');
  // The console chat is for trying shipgate out: on a machine without Redis, bring a private one.
  const devRedis =
    config.chat.kind === 'console' && config.redisUrlIsDefault
      ? await startDevRedisIfNeeded(config.redisUrl)
      : undefined;
  if (devRedis !== undefined) {
    log.warn(
      { redisAddress: new URL(devRedis.url).host },
      'no Redis at the default address: started a private redis-server; runs vanish when shipgate stops',
    );
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

  // In the console, the person at the terminal reads what is set up (the log line says the same on stderr).
  if (config.chat.kind === 'console') process.stdout.write(`${setupText(app.setup, envFile)}\n`);

  let stopping = false;
  process.on('unhandledRejection', (reason) => {
    // Closing a Redis connection whose handshake is still in flight makes BullMQ re-emit the aborted
    // handshake on an emitter without listeners (see settleInit in src/queue/queues.ts). Once shutdown
    // has begun that is expected and harmless; anything else is a bug and stops the process.
    if (stopping && reason instanceof Error && reason.message === 'Connection is closed.') {
      log.debug({ err: reason }, 'redis connection closed during shutdown');
      return;
    }
    log.fatal({ err: reason }, 'unhandled rejection');
    process.exit(1);
  });
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

/**
 * `npm start` reads `.env` in the working directory when there is one (SHIPGATE_ENV_FILE names
 * another file). Node's own parser; a variable already in the environment wins over the file.
 * Returns the absolute path of the file read, if any.
 */
function loadEnvFile(): string | undefined {
  const named = process.env.SHIPGATE_ENV_FILE;
  const path = resolve(named === undefined || named.trim() === '' ? '.env' : named.trim());
  if (!existsSync(path)) {
    if (named !== undefined && named.trim() !== '')
      throw new ConfigError([
        `SHIPGATE_ENV_FILE: there is no file ${path}. Fix: point it at your environment file, or unset it to read ./.env when present`,
      ]);
    return undefined;
  }
  try {
    process.loadEnvFile(path);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new ConfigError([
      `SHIPGATE_ENV_FILE: cannot read the environment file ${path} (${reason}). Fix: make it readable KEY=value lines (see .env.example)`,
    ]);
  }
  return path;
}

await main();
