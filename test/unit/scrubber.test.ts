import { mapMessageView } from '../../src/render/view.js';
import { generateKeyPairSync } from 'node:crypto';
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { scrubModelRequest } from '../../src/adapters/anthropic/anthropic-model.js';
import { scrubFailureDetails } from '../../workers/gates/ci/failure-report.js';
import { createLogger } from '../../src/log.js';
import {
  createScrubber,
  MIN_SECRET_LENGTH,
  REDACTED,
  scrubTokenPatterns,
  secretForms,
} from '../../src/security/scrubber.js';

/** SPEC §4: configured secrets and common token shapes never leave the worker. */

// Token-shaped values are assembled at run time so that no scanner mistakes this file for a leak.
const fake = (prefix: string, length: number, alphabet = 'aB3dE5gH7jK9mN1pQ') =>
  prefix + alphabet.repeat(Math.ceil(length / alphabet.length)).slice(0, length);

const PEM = generateKeyPairSync('rsa', { modulusLength: 2048 })
  .privateKey.export({ type: 'pkcs8', format: 'pem' })
  .toString();
const PEM_LINES = PEM.trim().split('\n');
const PEM_BODY = PEM_LINES.slice(1, -1);

describe('token patterns', () => {
  const b64url = (value: string) => Buffer.from(value).toString('base64url');
  const jwt = `${b64url('{"alg":"RS256","kid":"k1"}')}.${b64url('{"iss":"kubernetes/serviceaccount","sub":"system:serviceaccount:shop:default"}')}.${fake('', 86)}`;

  it.each([
    ['Slack bot token', fake('xoxb-1234567890-', 24)],
    ['Slack user token', fake('xoxp-1234-5678-', 32)],
    ['Slack short token', 'xoxb-123-abc'],
    ['Slack refresh token', fake('xoxe.xoxp-1-', 40)],
    ['Slack app token', fake('xapp-1-A0123-', 30)],
    ['GitHub classic token', fake('ghp_', 36)],
    ['GitHub OAuth token', fake('gho_', 36)],
    ['GitHub user-to-server token', fake('ghu_', 36)],
    ['GitHub installation token', fake('ghs_', 36)],
    ['GitHub refresh token', fake('ghr_', 36)],
    ['GitHub fine-grained token', fake('github_pat_11ABCDEFG0_', 59)],
    ['Anthropic key', fake('sk-ant-api03-', 40)],
    ['AWS access key id', 'AKIAIOSFODNN7EXAMPLE'],
    ['AWS temporary key id', 'ASIAIOSFODNN7EXAMPLE'],
    ['JWT / Kubernetes service-account token', jwt],
    ['Discord bot token', `${b64url('123456789012345678')}.GaBcDe.${fake('', 38)}`],
    ['npm token', fake('npm_', 36)],
  ])('hides a %s', (_name, token) => {
    expect(scrubTokenPatterns(`before ${token} after`)).toBe(`before ${REDACTED} after`);
    expect(scrubTokenPatterns(`"${token}"`)).toBe(`"${REDACTED}"`);
  });

  it('hides Slack and Discord webhook URLs but keeps their host', () => {
    const slack = `https://hooks.slack.com/services/T0000000/B0000000/${fake('', 24)}`;
    const discord = `https://discord.com/api/webhooks/123456789012345678/${fake('', 68)}`;
    expect(scrubTokenPatterns(`post to ${slack} now`)).toBe(`post to https://hooks.slack.com/services/${REDACTED} now`);
    expect(scrubTokenPatterns(discord)).toBe(`https://discord.com/api/webhooks/123456789012345678/${REDACTED}`);
  });

  it('hides Authorization headers whatever the scheme, keeping the header and the scheme', () => {
    expect(scrubTokenPatterns('Authorization: Bearer abc.def-123_XYZ')).toBe(`Authorization: Bearer ${REDACTED}`);
    expect(scrubTokenPatterns('authorization: Basic dXNlcjpwYXNzd29yZA==')).toBe(`authorization: Basic ${REDACTED}`);
    expect(scrubTokenPatterns('curl -H "Authorization: token 0123456789abcdef0123456789abcdef01234567" …')).toBe(
      `curl -H "Authorization: token ${REDACTED}" …`,
    );
    expect(scrubTokenPatterns('{"authorization":"Bot MTIzNDU2.abc.defghijk"}')).toBe(
      `{"authorization":"Bot ${REDACTED}"}`,
    );
    expect(scrubTokenPatterns('Proxy-Authorization: Basic c2VjcmV0OnNlY3JldA==')).toBe(
      `Proxy-Authorization: Basic ${REDACTED}`,
    );
    expect(scrubTokenPatterns('sent Bearer 9f8e7d6c5b4a39281706abcdef')).toBe(`sent Bearer ${REDACTED}`);
  });

  it('hides the password of URL userinfo and keeps the user', () => {
    expect(scrubTokenPatterns('clone https://x-access-token:s3cr3t-value@github.com/acme/shop.git')).toBe(
      `clone https://x-access-token:${REDACTED}@github.com/acme/shop.git`,
    );
    expect(scrubTokenPatterns('REDIS_URL=rediss://:hunter2hunter2@redis.internal:6380/0')).toBe(
      `REDIS_URL=rediss://:${REDACTED}@redis.internal:6380/0`,
    );
    expect(scrubTokenPatterns('amqp://user:p%40ss@broker')).toBe(`amqp://user:${REDACTED}@broker`);
  });

  it('hides PEM private key blocks, also when a window cut off their beginning or end', () => {
    expect(scrubTokenPatterns(`key:\n${PEM}done`)).toBe(`key:\n${REDACTED}\ndone`);
    expect(scrubTokenPatterns(JSON.stringify({ key: PEM }))).toBe(`{"key":"${REDACTED}\\n"}`);
    const head = PEM_LINES.slice(0, 8).join('\n');
    expect(scrubTokenPatterns(`${head}\n`)).not.toContain(PEM_BODY[3]);
    const tail = PEM_LINES.slice(-6).join('\n');
    expect(scrubTokenPatterns(`${tail}\nnext line`)).toBe(`${REDACTED}\nnext line`);
    const ec =
      '-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBYrnm0123456789abcdefABCDEFghijkl\n-----END EC PRIVATE KEY-----';
    expect(scrubTokenPatterns(ec)).toBe(REDACTED);
  });

  it('hides AWS secret keys named as such', () => {
    expect(scrubTokenPatterns('aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY')).toBe(
      `aws_secret_access_key = ${REDACTED}`,
    );
  });

  it('leaves git shas, ordinary code and prose alone', () => {
    const text = [
      'commit 0123456789abcdef0123456789abcdef01234567 (HEAD -> shipgate/sg-1a2b3c4d-add-healthz)',
      'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
      'const url = `https://${user}:${password}@${host}/db`;',
      'headers: { authorization: `Bearer ${token}` }, // and the bearer token goes here',
      "const auth = { authorization: 'Basic ' + encode(user) };",
      'postgres://user:password@localhost/db and redis://:<password>@host and http://u:${PASS}@h',
      'ssh://git@github.com:22/acme/shop.git, git@github.com:acme/shop.git, mail alice@example.com',
      'run sg-1a2b3c4d on acme/shop: ghp is short for GitHub personal; xox is a game; sk-ant- prefixes keys',
      'import { createScrubber } from "./security/scrubber.js"; export const AKIA_PREFIX = "AKIA";',
      'MyVeryLongComponentNameXYZ.styles.somethingVeryLongPropertyNameHere1234',
      'node_modules/.pnpm/@octokit+rest@22.0.1/node_modules/@octokit/rest/dist/index.js:12:5',
      '-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----',
      'the bearer of bad news; Bearer realm="api"; [REDACTED] stays as it is',
    ].join('\n');
    expect(scrubTokenPatterns(text)).toBe(text);
  });

  it('takes linear time on large hostile inputs (no catastrophic backtracking)', () => {
    const b64 = Buffer.alloc(750_000, 7).toString('base64');
    const inputs = [
      b64, // one 1 MB base64 line, as in a data URI
      b64.match(/.{1,64}/g)?.join('\n') ?? '', // 15,000 key-like lines and no END
      `${b64.match(/.{1,64}/g)?.join('\n') ?? ''}\n-----END PRIVATE KEY-----`,
      'a.'.repeat(500_000), // word starts that look like a URL scheme
      'https://'.repeat(100_000),
      `-----BEGIN PRIVATE KEY-----\n${'A'.repeat(1_000_000)}`,
      `Authorization: Bearer ${'x'.repeat(1_000_000)}`,
      'eyJ'.repeat(300_000),
    ];
    const scrubber = createScrubber([PEM, 'configured-secret-value']);
    const started = performance.now();
    for (const input of inputs) scrubber.scrub(input);
    expect(performance.now() - started).toBeLessThan(5_000);
  });

  it('is idempotent', () => {
    const text = `x ${fake('ghp_', 36)} https://u:${fake('', 20)}@h Authorization: Bearer ${fake('', 30)}`;
    const once = scrubTokenPatterns(text);
    expect(scrubTokenPatterns(once)).toBe(once);
  });
});

describe('createScrubber', () => {
  it('removes configured values wherever they appear, and their URL-encoded and JSON-escaped forms', () => {
    const secret = 'test-webhook/secret "42"';
    const scrubber = createScrubber([secret]);
    expect(
      scrubber.scrub(`echo ${secret}; curl ?s=${encodeURIComponent(secret)}; ${JSON.stringify({ s: secret })}`),
    ).toBe(`echo ${REDACTED}; curl ?s=${REDACTED}; {"s":"${REDACTED}"}`);
  });

  it('removes a multi-line PEM key whole, by each body line and by its body on one line', () => {
    const scrubber = createScrubber([PEM]);
    expect(scrubber.scrub(PEM)).not.toMatch(/[A-Za-z0-9+/]{16}/);
    // A window that starts mid-key, or a log that prints one line of it.
    const cut = PEM_BODY.slice(4, 9).join('\n');
    expect(scrubber.scrub(`…${cut}\nok`)).toBe(`…${Array(5).fill(REDACTED).join('\n')}\nok`);
    expect(scrubber.scrub(`line: ${PEM_BODY[7] ?? ''}.`)).toBe(`line: ${REDACTED}.`);
    expect(scrubber.scrub(PEM_BODY.join(''))).toBe(REDACTED);
    // As an env file writes it: newlines escaped.
    const escaped = PEM.trim().replaceAll('\n', '\\n');
    expect(createScrubber([escaped]).scrub(`GITHUB_APP_PRIVATE_KEY="${escaped}"`)).not.toContain(PEM_BODY[2]);
    expect(secretForms(PEM)).not.toContain('-----BEGIN PRIVATE KEY-----');
  });

  it('removes the longest secret first, so one that contains another goes whole', () => {
    const scrubber = createScrubber(['abcdefgh', 'abcdefgh-and-more']);
    expect(scrubber.scrub('x abcdefgh-and-more y abcdefgh z')).toBe(`x ${REDACTED} y ${REDACTED} z`);
  });

  it(`ignores values shorter than ${MIN_SECRET_LENGTH} characters, which would redact ordinary words`, () => {
    const scrubber = createScrubber(['redis', 'admin', '', '   ']);
    expect(scrubber.scrub('redis admin password')).toBe('redis admin password');
  });

  it('learns secrets at run time', () => {
    const scrubber = createScrubber([]);
    const minted = 'v1.0123456789abcdef0123456789abcdef01234567';
    expect(scrubber.scrub(`token ${minted}`)).toBe(`token ${minted}`);
    scrubber.add(minted);
    scrubber.add(minted);
    expect(scrubber.scrub(`token ${minted}`)).toBe(`token ${REDACTED}`);
  });

  it('treats configured values literally (regex characters in a secret)', () => {
    const scrubber = createScrubber(['a.b*c+d?(e)[f]{g}|h^$\\']);
    expect(scrubber.scrub('x a.b*c+d?(e)[f]{g}|h^$\\ y aXbbbcd')).toBe(`x ${REDACTED} y aXbbbcd`);
  });

  it('applies the token patterns too, and leaves a git sha alone', () => {
    const scrubber = createScrubber(['configured-secret-value']);
    const sha = '0123456789abcdef0123456789abcdef01234567';
    expect(scrubber.scrub(`configured-secret-value ${fake('ghs_', 36)} ${sha}`)).toBe(`${REDACTED} ${REDACTED} ${sha}`);
  });

  it('finds a secret split across two chunks only once they are joined', () => {
    const secret = 'split-across-chunks-secret';
    const scrubber = createScrubber([secret]);
    const chunks = ['output: split-across-', 'chunks-secret\n'];
    // Chunk by chunk the halves are unrecognisable: this is why sinks scrub joined text.
    expect(chunks.map((chunk) => scrubber.scrub(chunk)).join('')).toContain(secret);
    expect(scrubber.scrub(chunks.join(''))).toBe(`output: ${REDACTED}\n`);
  });
});

describe('the logger with the scrubber', () => {
  it('drops configured values from messages, metadata and errors; the default still drops token patterns', async () => {
    const secret = 'configured-webhook-secret';
    const destination = new PassThrough();
    let raw = '';
    destination.on('data', (chunk: Buffer) => (raw += chunk.toString()));
    const scrubber = createScrubber([secret, PEM]);
    const log = createLogger({ level: 'info', destination, scrub: scrubber.scrub });
    log.info({ detail: `got ${secret}`, key: PEM }, `echo ${secret}`);
    log.error({ err: new Error(`failed with ${secret}`) }, 'boom');
    scrubber.add('minted-later-token-value');
    log.info('push with minted-later-token-value');
    const plain = createLogger({ level: 'info', destination });
    plain.info(`token ${fake('ghp_', 36)}`);
    await new Promise((resolve) => setImmediate(resolve));
    expect(raw).not.toContain(secret);
    expect(raw).not.toContain(PEM_BODY[5]);
    expect(raw).not.toContain('minted-later-token-value');
    expect(raw).not.toContain('ghp_');
    expect(raw.match(/\[REDACTED\]/g)?.length).toBeGreaterThanOrEqual(5);
  });
});

describe('the sinks', () => {
  const secret = 'configured-sink-secret';
  const scrub = createScrubber([secret]).scrub;

  it('scrubs the user turns and tool results sent to the model, not the model’s own turns', () => {
    const request = scrubModelRequest(
      {
        model: 'claude-sonnet-4-6',
        max_tokens: 100,
        system: 'system prompt',
        messages: [
          { role: 'user', content: `task ${secret}` },
          { role: 'assistant', content: [{ type: 'tool_use', id: 't1', name: 'run_check', input: { name: secret } }] },
          {
            role: 'user',
            content: [
              { type: 'tool_result', tool_use_id: 't1', content: `output ${secret}` },
              {
                type: 'tool_result',
                tool_use_id: 't2',
                content: [{ type: 'text', text: `more ${secret}`, cache_control: { type: 'ephemeral' } }],
              },
              { type: 'text', text: `follow-up ${secret}` },
            ],
          },
        ],
      },
      scrub,
    );
    const sent = JSON.stringify(request.messages.filter((m) => m.role === 'user'));
    expect(sent).not.toContain(secret);
    expect(sent).toContain('"cache_control":{"type":"ephemeral"}');
    expect(JSON.stringify(request.messages[1])).toContain(secret);
  });

  it('scrubs every text of a chat message', () => {
    const view = mapMessageView(
      {
        text: `fallback ${secret}`,
        blocks: [
          { type: 'header', text: secret },
          { type: 'section', text: [{ kind: 'text', text: secret }, { kind: 'link', url: `https://x.io/?t=${secret}`, label: secret }] },
          { type: 'fields', fields: [[{ kind: 'code', text: secret }]] },
          { type: 'context', text: [{ kind: 'bold', text: secret }, { kind: 'mention', principal: secret }] },
          { type: 'divider' },
          { type: 'actions', buttons: [{ actionId: 'shipgate.cancel', label: secret, value: 'sg-1a2b3c4d' }] },
        ],
      },
      scrub,
    );
    expect(JSON.stringify(view)).not.toContain(secret);
    expect(JSON.stringify(view)).toContain('shipgate.cancel');
  });

  it('scrubs CI failure details whole, before the reports cut them into lines', () => {
    const [detail] = scrubFailureDetails(
      [
        {
          source: 'check',
          name: 'test',
          conclusion: 'failure',
          checkRunId: 1,
          detailsUrl: null,
          appSlug: 'github-actions',
          title: `title ${secret}`,
          summary: null,
          infrastructure: false,
          annotations: [
            { path: 'a.js', startLine: 1, endLine: 1, level: 'failure', message: `m ${secret}`, title: null },
          ],
          logTail: `${'x'.repeat(5000)} ${secret}\nlast line`,
        },
      ],
      scrub,
    );
    expect(JSON.stringify(detail)).not.toContain(secret);
    expect(detail?.logTail?.endsWith('[REDACTED]\nlast line')).toBe(true);
  });
});
