import { generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { loadConfig, secretValues } from '../../src/config/config.js';
import { createScrubber } from '../../src/security/scrubber.js';

/** SPEC §4: every configured secret, and the contents of credential files the bot reads, are known to the scrubber. */

const POLICY = 'repos:\n  acme/shop: {}\n';
const PEM = generateKeyPairSync('rsa', { modulusLength: 2048 })
  .privateKey.export({ type: 'pkcs1', format: 'pem' })
  .toString();

function secretsOf(env: Record<string, string>, files: Record<string, string> = {}): string[] {
  const config = loadConfig(env, {
    cwd: '/srv/shipgate',
    readFile: (path) => {
      if (path === '/srv/shipgate/shipgate.yaml') return POLICY;
      const text = files[path];
      if (text === undefined) throw new Error(`ENOENT: ${path}`);
      return text;
    },
  });
  return secretValues(config);
}

describe('secretValues', () => {
  it('lists every secret of the environment, the Redis password and keys other modules validate', () => {
    const secrets = secretsOf({
      SLACK_BOT_TOKEN: 'xoxb-1-bot-token',
      SLACK_SIGNING_SECRET: 'signing-secret-value',
      SLACK_APP_TOKEN: 'xapp-1-app-token',
      ANTHROPIC_API_KEY: 'sk-ant-api-key-value',
      GITHUB_TOKEN: 'github-token-value',
      GITHUB_APP_ID: '42',
      GITHUB_APP_PRIVATE_KEY: PEM,
      GITHUB_WEBHOOK_SECRET: 'webhook-secret-value',
      REDIS_URL: 'rediss://default:p%40ssw0rd-redis@redis.internal:6380',
      PROMETHEUS_URL: 'https://metrics:prom-password-value@prometheus.internal',
      SHIPGATE_AUDIT_KEY: 'audit-key-value-0123-with-32-bytes-at-least',
      DISCORD_BOT_TOKEN: 'discord-bot-token-value',
      // Validated now (64 hex characters, with the application id beside it); still scrubbed like the token.
      DISCORD_PUBLIC_KEY: '0123456789abcdef'.repeat(4),
      DISCORD_APPLICATION_ID: '1290000000000000001',
      SHIPGATE_MODEL: 'claude-sonnet-4-6',
    });
    expect(secrets).toEqual(
      expect.arrayContaining([
        'xoxb-1-bot-token',
        'signing-secret-value',
        'xapp-1-app-token',
        'sk-ant-api-key-value',
        'github-token-value',
        PEM.trim(),
        'webhook-secret-value',
        'p@ssw0rd-redis',
        'prom-password-value',
        'audit-key-value-0123-with-32-bytes-at-least',
        'discord-bot-token-value',
        '0123456789abcdef'.repeat(4),
      ]),
    );
    expect(secrets).not.toContain('claude-sonnet-4-6');
    expect(secrets).not.toContain('42');
  });

  it('is empty for a configuration without secrets', () => {
    expect(secretsOf({})).toEqual([]);
  });

  it('reads the credentials of every kubeconfig in KUBECONFIG, skipping files that are missing or not kubeconfigs', () => {
    const clientKey = Buffer.from(PEM).toString('base64');
    const kubeconfig = [
      'apiVersion: v1',
      'kind: Config',
      'users:',
      '  - name: sa',
      '    user:',
      '      token: kube-token-value-0123',
      '  - name: cert',
      '    user:',
      '      client-certificate-data: Y2VydGlmaWNhdGU=',
      `      client-key-data: ${clientKey}`,
      '  - name: basic',
      '    user: { username: admin, password: kube-password-value }',
      '  - name: oidc',
      '    user:',
      '      auth-provider: { name: oidc, config: { client-id: shipgate, client-secret: oidc-client-secret, refresh-token: oidc-refresh-token } }',
      '  - name: empty',
      '    user: null',
    ].join('\n');
    const secrets = secretsOf(
      { KUBECONFIG: '/etc/kube/config:/missing/config:/etc/kube/garbage' },
      { '/etc/kube/config': kubeconfig, '/etc/kube/garbage': 'users: 12\n' },
    );
    expect(secrets).toEqual(
      expect.arrayContaining([
        'kube-token-value-0123',
        clientKey,
        PEM,
        'kube-password-value',
        'oidc-client-secret',
        'oidc-refresh-token',
      ]),
    );
    expect(secrets).not.toContain('Y2VydGlmaWNhdGU=');
    expect(secrets).not.toContain('shipgate');
    // The decoded key is scrubbed by its lines too.
    const scrub = createScrubber(secrets).scrub;
    expect(scrub(PEM.split('\n')[4] ?? 'missing')).toBe('[REDACTED]');
  });

  it('does not fail to start over a kubeconfig that is not YAML', () => {
    expect(secretsOf({ KUBECONFIG: '/etc/kube/config' }, { '/etc/kube/config': '{{{ not yaml' })).toEqual([]);
  });
});
