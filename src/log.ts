import { pino, type DestinationStream, type Logger } from 'pino';

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

/** Secret-looking strings that may hide inside free text (error messages, URLs). */
const SECRET_PATTERN = /\b(xox[abposr]-[A-Za-z0-9-]+|xapp-[A-Za-z0-9-]+|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|sk-ant-[A-Za-z0-9_-]+)/g;

export function scrubSecrets(text: string): string {
  return text.replace(SECRET_PATTERN, '[REDACTED]');
}

export function createLogger(options: { level: string; destination?: DestinationStream }): Logger {
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
        streamWrite: (line) => scrubSecrets(line),
        // Error messages from SDKs sometimes echo a token back; scrub the message text too.
        logMethod(args, method) {
          const scrubbed = args.map((arg) => (typeof arg === 'string' ? scrubSecrets(arg) : arg));
          method.apply(this, scrubbed as Parameters<typeof method>);
        },
      },
      serializers: {
        err: (error: unknown) => {
          const serialized = pino.stdSerializers.err(error instanceof Error ? error : new Error(String(error)));
          return { ...serialized, message: scrubSecrets(serialized.message), stack: scrubSecrets(serialized.stack) };
        },
      },
    },
    options.destination,
  );
}
