import { pino, type DestinationStream, type Logger } from 'pino';
import { scrubTokenPatterns, type Scrub } from './security/scrubber.js';

export type { Logger } from 'pino';

/**
 * Paths pino censors wherever they appear in log metadata. Tokens travel in
 * headers and config objects; the list errs on the side of hiding too much.
 */
const REDACT_PATHS = [
  'token',
  '*.token',
  'botToken',
  '*.botToken',
  'appToken',
  '*.appToken',
  'signingSecret',
  '*.signingSecret',
  'apiKey',
  '*.apiKey',
  'privateKey',
  '*.privateKey',
  'webhookSecret',
  '*.webhookSecret',
  'password',
  '*.password',
  'authorization',
  '*.authorization',
  '*.headers.authorization',
  '*.headers["x-slack-signature"]',
  // The audit chain's HMAC key (config.auditKey) and REDIS_URL, which may carry a password.
  'auditKey',
  '*.auditKey',
  'redisUrl',
  '*.redisUrl',
];

/**
 * Secret-looking strings that may hide inside free text (error messages, URLs): the token patterns
 * of src/security/scrubber.ts, without the configured values (which only the composition root knows).
 */
export function scrubSecrets(text: string): string {
  return scrubTokenPatterns(text);
}

export interface LoggerOptions {
  level: string;
  destination?: DestinationStream;
  /**
   * Scrubs every written line, message string and error text. Pass the scrubber built from the
   * configuration (`scrubber.scrub`) so configured secret values go too; default: token patterns only.
   */
  scrub?: Scrub | undefined;
}

export function createLogger(options: LoggerOptions): Logger {
  const scrub = options.scrub ?? scrubSecrets;
  return pino(
    {
      level: options.level,
      base: { service: 'shipgate' },
      redact: { paths: REDACT_PATHS, censor: '[REDACTED]' },
      formatters: {
        level: (label) => ({ level: label }),
      },
      hooks: {
        // Last line of defence: whatever path a secret took into the record, it does not reach the output.
        streamWrite: (line) => scrub(line),
        // Error messages from SDKs sometimes echo a token back; scrub the message text too.
        logMethod(args, method) {
          const scrubbed = args.map((arg) => (typeof arg === 'string' ? scrub(arg) : arg));
          method.apply(this, scrubbed as Parameters<typeof method>);
        },
      },
      serializers: {
        err: (error: unknown) => {
          const serialized = pino.stdSerializers.err(error instanceof Error ? error : new Error(String(error)));
          return { ...serialized, message: scrub(serialized.message), stack: scrub(serialized.stack) };
        },
      },
    },
    options.destination,
  );
}
