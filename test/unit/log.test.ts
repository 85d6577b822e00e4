import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { createLogger, scrubSecrets, type Logger } from '../../src/log.js';

/** SPEC §8: structured JSON logs (pino), secrets redacted. */

const lineSchema = z.looseObject({ level: z.string(), msg: z.string(), service: z.string() });

const GITHUB_TOKEN = `ghp_${'A1b2C3d4E5'.repeat(3)}abcdef`; // ghp_ + 36 characters
const SLACK_TOKEN = 'xoxb-123-abc';

function capture(level = 'info'): { log: Logger; lines: () => z.infer<typeof lineSchema>[]; raw: () => string } {
  const destination = new PassThrough();
  let raw = '';
  destination.on('data', (chunk: Buffer) => {
    raw += chunk.toString();
  });
  const log = createLogger({ level, destination });
  return {
    log,
    raw: () => raw,
    lines: () =>
      raw
        .split('\n')
        .filter((line) => line !== '')
        .map((line) => lineSchema.parse(JSON.parse(line))),
  };
}

/** pino writes synchronously to the stream; the PassThrough emits 'data' on the next tick. */
const flushed = () => new Promise((resolve) => setImmediate(resolve));

describe('createLogger', () => {
  it('writes one JSON object per line with a textual level and the service name', async () => {
    const out = capture();
    out.log.info({ runId: 'sg-1a2b3c4d' }, 'run requested');
    out.log.debug('not at info level');
    await flushed();
    const lines = out.lines();
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: 'info', msg: 'run requested', service: 'shipgate', runId: 'sg-1a2b3c4d' });
  });

  it('redacts tokens in config-like objects and authorization headers', async () => {
    const out = capture();
    out.log.info(
      {
        token: 'xoxb-111-secret-top',
        slack: {
          botToken: 'xoxb-222-secret-nested',
          signingSecret: 'signing-secret-value',
          appToken: 'xapp-1-A1-secret',
        },
        anthropic: { apiKey: 'sk-ant-api03-secretkey' },
        github: { privateKey: '-----BEGIN RSA PRIVATE KEY-----abc', webhookSecret: 'hook-secret-value' },
        headers: { authorization: 'Bearer ghp_bearer-secret' },
        request: { headers: { authorization: 'token gho_request-secret' } },
        repo: 'acme/shop',
      },
      'config loaded',
    );
    await flushed();
    const raw = out.raw();
    for (const secret of [
      'xoxb-111-secret-top',
      'xoxb-222-secret-nested',
      'signing-secret-value',
      'xapp-1-A1-secret',
      'sk-ant-api03-secretkey',
      'BEGIN RSA PRIVATE KEY',
      'hook-secret-value',
      'ghp_bearer-secret',
      'gho_request-secret',
    ]) {
      expect(raw).not.toContain(secret);
    }
    const [line] = out.lines();
    expect(line).toMatchObject({
      token: '[REDACTED]',
      slack: { botToken: '[REDACTED]', signingSecret: '[REDACTED]', appToken: '[REDACTED]' },
      headers: { authorization: '[REDACTED]' },
      request: { headers: { authorization: '[REDACTED]' } },
      // Non-secret fields survive: redaction must not blind the logs.
      repo: 'acme/shop',
      msg: 'config loaded',
    });
  });

  it('scrubs tokens that an error echoes in its message and stack', async () => {
    const out = capture();
    const error = new Error(
      `An API error occurred: invalid_auth for ${SLACK_TOKEN} (GitHub said bad credentials for ${GITHUB_TOKEN})`,
    );
    out.log.error({ err: error, runId: 'sg-1a2b3c4d' }, 'slack call failed');
    await flushed();
    const raw = out.raw();
    expect(raw).not.toContain(SLACK_TOKEN);
    expect(raw).not.toContain(GITHUB_TOKEN);
    const errSchema = z.object({ err: z.object({ type: z.string(), message: z.string(), stack: z.string() }) });
    const { err } = errSchema.parse(out.lines()[0]);
    expect(err.type).toBe('Error');
    expect(err.message).toBe(
      'An API error occurred: invalid_auth for [REDACTED] (GitHub said bad credentials for [REDACTED])',
    );
    // The stack still points at the code, only the secret is gone.
    expect(err.stack).toContain('[REDACTED]');
    expect(err.stack).toContain('log.test.ts');
  });

  it('scrubs tokens inside the cause of an error', async () => {
    const out = capture();
    const error = new Error('posting the card failed', { cause: new Error(`token ${SLACK_TOKEN} revoked`) });
    out.log.warn({ err: error }, 'chat job failed');
    await flushed();
    expect(out.raw()).not.toContain(SLACK_TOKEN);
    expect(out.raw()).toContain('posting the card failed');
  });

  it('scrubs tokens in the message text and its interpolated arguments', async () => {
    const out = capture();
    out.log.warn(`retrying with ${SLACK_TOKEN}`);
    out.log.warn(
      { runId: 'sg-1a2b3c4d' },
      'clone of %s failed',
      `https://x-access-token:${GITHUB_TOKEN}@github.com/acme/shop.git`,
    );
    await flushed();
    expect(out.raw()).not.toContain(SLACK_TOKEN);
    expect(out.raw()).not.toContain(GITHUB_TOKEN);
    expect(out.lines().map((line) => line.msg)).toEqual([
      'retrying with [REDACTED]',
      'clone of https://x-access-token:[REDACTED]@github.com/acme/shop.git failed',
    ]);
  });
});

describe('scrubSecrets', () => {
  it.each([
    ['xoxb-123-abc', '[REDACTED]'],
    ['xoxp-1-2-3', '[REDACTED]'],
    ['xapp-1-A0-123-abc', '[REDACTED]'],
    [GITHUB_TOKEN, '[REDACTED]'],
    [`github_pat_${'a'.repeat(30)}`, '[REDACTED]'],
    ['sk-ant-api03-abc_DEF-123', '[REDACTED]'],
  ])('hides %s', (secret, expected) => {
    expect(scrubSecrets(`before ${secret} after`)).toBe(`before ${expected} after`);
  });

  it('leaves ordinary text alone', () => {
    const text = 'run sg-1a2b3c4d on acme/shop: ghp is short for GitHub personal; xox is a game';
    expect(scrubSecrets(text)).toBe(text);
  });
});
