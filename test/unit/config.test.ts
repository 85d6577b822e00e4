import { describe, expect, it } from 'vitest';
import { ConfigError, loadAuditCliConfig, loadConfig, parsePolicy, type Config } from '../../src/config/config.js';

/**
 * SPEC §3: secrets and endpoints from the environment, policy from YAML, both
 * validated once at start-up; a bad value stops the process with a message
 * that names the key and how to fix it.
 */

const MINIMAL_POLICY = 'repos:\n  acme/shop: {}\n';

/** A valid SHIPGATE_AUDIT_KEY (64 hex digits); Slack mode needs one. */
const AUDIT_KEY = '0123456789abcdef'.repeat(4);

function load(env: Record<string, string>, policy = MINIMAL_POLICY): Config {
  return loadConfig(env, { readFile: () => policy, cwd: '/srv/shipgate' });
}

/** The ConfigError `run` throws; fails the test when it throws nothing or something else. */
function configError(run: () => unknown): ConfigError {
  try {
    run();
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
  throw new Error('expected a ConfigError, but the configuration was accepted');
}

function policyError(yaml: string): string {
  return configError(() => parsePolicy(yaml, 'shipgate.yaml')).message;
}

describe('loadConfig: defaults', () => {
  it('starts in console mode with documented defaults when only a policy exists', () => {
    const seen: string[] = [];
    const config = loadConfig(
      {},
      {
        readFile: (path) => {
          seen.push(path);
          return MINIMAL_POLICY;
        },
        cwd: '/srv/shipgate',
      },
    );
    expect(config.redisUrl).toBe('redis://127.0.0.1:6379');
    expect(config.port).toBe(3000);
    // Unset: /metrics stays on PORT (SPEC §3); the Kubernetes manifests set it.
    expect(config.metricsPort).toBeUndefined();
    expect(config.role).toBe('all');
    expect(config.logLevel).toBe('info');
    expect(config.chat).toEqual({ kind: 'console' });
    expect(config.slack).toBeUndefined();
    expect(config.github.apiUrl).toBe('https://api.github.com');
    // SHIPGATE_CONFIG defaults to ./shipgate.yaml, relative to the working directory.
    expect(seen).toEqual(['/srv/shipgate/shipgate.yaml']);
    expect(config.policyPath).toBe('/srv/shipgate/shipgate.yaml');
    expect(config.policy.command).toBe('/ship');
    expect(Object.keys(config.policy.repos)).toEqual(['acme/shop']);
  });

  it('reads the policy from SHIPGATE_CONFIG and takes PORT, REDIS_URL and SHIPGATE_ROLE from the environment', () => {
    const seen: string[] = [];
    const config = loadConfig(
      {
        SHIPGATE_CONFIG: 'conf/policy.yaml',
        PORT: '8080',
        REDIS_URL: 'rediss://cache.internal:6380/2',
        SHIPGATE_ROLE: 'worker',
      },
      {
        readFile: (path) => {
          seen.push(path);
          return MINIMAL_POLICY;
        },
        cwd: '/srv/shipgate',
      },
    );
    expect(seen).toEqual(['/srv/shipgate/conf/policy.yaml']);
    expect(config.port).toBe(8080);
    expect(config.redisUrl).toBe('rediss://cache.internal:6380/2');
    expect(config.role).toBe('worker');
  });

  it('takes METRICS_PORT, a port of its own for /metrics (0 picks a free one, like PORT=0)', () => {
    expect(load({ METRICS_PORT: '9464' }).metricsPort).toBe(9464);
    expect(load({ METRICS_PORT: '' }).metricsPort).toBeUndefined();
    expect(load({ PORT: '0', METRICS_PORT: '0' }).metricsPort).toBe(0);
  });

  it('treats blank Slack variables as unset (console mode)', () => {
    expect(load({ SLACK_BOT_TOKEN: '  ', SLACK_SIGNING_SECRET: '' }).chat).toEqual({ kind: 'console' });
  });
});

describe('loadConfig: the host PATH', () => {
  it('keeps only absolute entries, so git and bash are never found in the directory a command runs in', () => {
    expect(load({ PATH: '/usr/local/bin::.:bin:/usr/bin' }).hostPath).toBe('/usr/local/bin:/usr/bin');
    expect(load({ PATH: '.' }).hostPath).toBeUndefined();
  });
});

describe('loadConfig: Slack mode', () => {
  it('uses HTTP mode with a bot token and signing secret', () => {
    const config = load({
      SLACK_BOT_TOKEN: 'xoxb-1-2',
      SLACK_SIGNING_SECRET: 'shh',
      SLACK_API_URL: 'http://127.0.0.1:9/api/',
      SHIPGATE_AUDIT_KEY: AUDIT_KEY,
    });
    expect(config.chat).toEqual({ kind: 'slack-http' });
    expect(config.slack).toEqual({ botToken: 'xoxb-1-2', signingSecret: 'shh', apiUrl: 'http://127.0.0.1:9/api/' });
  });

  it('uses Socket Mode when SLACK_APP_TOKEN is set, without needing a signing secret', () => {
    const config = load({
      SLACK_BOT_TOKEN: 'xoxb-1-2',
      SLACK_APP_TOKEN: 'xapp-1-A1-2-abc',
      SHIPGATE_AUDIT_KEY: AUDIT_KEY,
    });
    expect(config.chat).toEqual({ kind: 'slack-socket', appToken: 'xapp-1-A1-2-abc' });
    expect(config.slack?.botToken).toBe('xoxb-1-2');
  });
});

describe('loadConfig: the audit key (SHIPGATE_AUDIT_KEY)', () => {
  const slack = { SLACK_BOT_TOKEN: 'xoxb-1-2', SLACK_SIGNING_SECRET: 'shh' };

  it('is required outside local mode, naming the key and how to make one', () => {
    for (const env of [slack, { SLACK_BOT_TOKEN: 'xoxb-1-2', SLACK_APP_TOKEN: 'xapp-1-A1-2-abc' }]) {
      const error = configError(() => load(env));
      const line = error.problems.find((problem) => problem.startsWith('SHIPGATE_AUDIT_KEY:'));
      expect(line, error.message).toBeDefined();
      expect(line).toContain('is required outside local mode');
      expect(line).toContain('Fix:');
      expect(line).toContain('openssl rand -hex 32');
    }
  });

  it.each([
    ['short text', 'changeme'],
    ['31 characters', 'k'.repeat(31)],
    ['hex of only 16 bytes', 'ab'.repeat(16)],
  ])('rejects a too-short key (%s), naming SHIPGATE_AUDIT_KEY and the fix, without echoing it', (_case, value) => {
    for (const env of [{ ...slack, SHIPGATE_AUDIT_KEY: value }, { SHIPGATE_AUDIT_KEY: value }]) {
      const error = configError(() => load(env));
      const line = error.problems.find((problem) => problem.startsWith('SHIPGATE_AUDIT_KEY:'));
      expect(line, error.message).toBeDefined();
      expect(line).toMatch(/at least 32 bytes/);
      expect(line).toContain('Fix: set it to a secret of at least 32 bytes');
      expect(error.message).not.toContain(value);
    }
  });

  it('decodes 64 hex digits and takes other text of 32+ bytes as is', () => {
    expect(load({ ...slack, SHIPGATE_AUDIT_KEY: AUDIT_KEY }).auditKey).toEqual({
      kind: 'env',
      key: Buffer.from(AUDIT_KEY, 'hex'),
    });
    const text = 'a passphrase of more than 32 characters';
    expect(load({ ...slack, SHIPGATE_AUDIT_KEY: text }).auditKey).toEqual({ kind: 'env', key: Buffer.from(text) });
  });

  it('in local mode without a key names the key file under the working directory (the app creates it)', () => {
    expect(load({}).auditKey).toEqual({ kind: 'generate-local', path: '/srv/shipgate/.shipgate/audit.key' });
    expect(load({ SHIPGATE_AUDIT_KEY: AUDIT_KEY }).auditKey).toEqual({
      kind: 'env',
      key: Buffer.from(AUDIT_KEY, 'hex'),
    });
  });

  it('checkpoints every 100 events unless SHIPGATE_AUDIT_CHECKPOINT_EVERY says otherwise', () => {
    expect(load({}).auditCheckpointEvery).toBe(100);
    expect(load({ SHIPGATE_AUDIT_CHECKPOINT_EVERY: '25' }).auditCheckpointEvery).toBe(25);
    const error = configError(() => load({ SHIPGATE_AUDIT_CHECKPOINT_EVERY: '0' }));
    expect(error.problems[0]).toMatch(/^SHIPGATE_AUDIT_CHECKPOINT_EVERY: .*Fix: set it to a whole number/);
  });

  it('the audit CLI reads the same rules without needing the policy file', () => {
    expect(loadAuditCliConfig({ SHIPGATE_REDIS_PREFIX: 'x', SHIPGATE_AUDIT_KEY: AUDIT_KEY })).toEqual({
      redisUrl: 'redis://127.0.0.1:6379',
      redisPrefix: 'x',
      auditKey: { kind: 'env', key: Buffer.from(AUDIT_KEY, 'hex') },
    });
    expect(loadAuditCliConfig({}, { cwd: '/srv/shipgate' }).auditKey).toEqual({
      kind: 'generate-local',
      path: '/srv/shipgate/.shipgate/audit.key',
    });
    expect(() => loadAuditCliConfig(slack)).toThrow(/SHIPGATE_AUDIT_KEY: is required outside local mode/);
  });
});

describe('loadConfig: every environment error names the key and a fix', () => {
  it.each([
    ['REDIS_URL not a redis URL', { REDIS_URL: 'http://x' }, 'REDIS_URL', 'redis://'],
    ['PORT not a number', { PORT: 'eighty' }, 'PORT', 'between 1 and 65535'],
    ['PORT out of range', { PORT: '70000' }, 'PORT', 'between 1 and 65535'],
    ['METRICS_PORT not a number', { METRICS_PORT: 'metrics' }, 'METRICS_PORT', 'between 1 and 65535'],
    ['METRICS_PORT the same as PORT', { PORT: '9464', METRICS_PORT: '9464' }, 'METRICS_PORT', 'other than PORT'],
    ['METRICS_PORT the same as the default PORT', { METRICS_PORT: '3000' }, 'METRICS_PORT', 'unset it to serve /metrics on PORT'],
    ['a bot token without a signing secret', { SLACK_BOT_TOKEN: 'xoxb-1-2' }, 'SLACK_SIGNING_SECRET', 'Signing Secret'],
    ['a signing secret without a bot token', { SLACK_SIGNING_SECRET: 'shh' }, 'SLACK_BOT_TOKEN', 'xoxb-'],
    [
      'an app token that is not xapp-',
      { SLACK_BOT_TOKEN: 'xoxb-1-2', SLACK_APP_TOKEN: 'xoxb-3-4' },
      'SLACK_APP_TOKEN',
      'xapp-',
    ],
    ['SLACK_API_URL not a URL', { SLACK_API_URL: 'slack' }, 'SLACK_API_URL', 'https://slack.com/api/'],
    ['an unknown role', { SHIPGATE_ROLE: 'both' }, 'SHIPGATE_ROLE', 'all, web or worker'],
    ['an unknown log level', { LOG_LEVEL: 'verbose' }, 'LOG_LEVEL', 'fatal, error, warn, info'],
    [
      'a GitHub App id without its key',
      { GITHUB_APP_ID: '123' },
      'GITHUB_APP_PRIVATE_KEY',
      'together with GITHUB_APP_ID',
    ],
    [
      'a non-numeric GitHub App id',
      { GITHUB_APP_ID: 'my-app', GITHUB_APP_PRIVATE_KEY: 'pem' },
      'GITHUB_APP_ID',
      'numeric App ID',
    ],
    ['a Redis prefix with a colon', { SHIPGATE_REDIS_PREFIX: 'ship:gate' }, 'SHIPGATE_REDIS_PREFIX', 'letters, digits'],
  ])('%s', (_case, env, key, fix) => {
    const error = configError(() => load(env));
    expect(error.message).toContain('shipgate cannot start');
    const line = error.problems.find((problem) => problem.startsWith(`${key}:`));
    expect(line, error.message).toBeDefined();
    expect(line).toContain('Fix:');
    expect(line).toContain(fix);
  });

  it('reports every bad variable at once, not one per restart', () => {
    const error = configError(() => load({ REDIS_URL: 'http://x', PORT: '-1', LOG_LEVEL: 'loud' }));
    expect(error.problems.map((problem) => problem.split(':')[0]).sort()).toEqual(['LOG_LEVEL', 'PORT', 'REDIS_URL']);
  });

  it('names SHIPGATE_CONFIG and the path when the policy file cannot be read', () => {
    const error = configError(() =>
      loadConfig(
        { SHIPGATE_CONFIG: 'missing.yaml' },
        {
          readFile: () => {
            throw new Error('ENOENT');
          },
          cwd: '/srv/shipgate',
        },
      ),
    );
    expect(error.message).toContain('SHIPGATE_CONFIG');
    expect(error.message).toContain('/srv/shipgate/missing.yaml');
    expect(error.message).toMatch(/create it|point it at/);
  });

  it('names the policy file and the YAML path of a policy problem', () => {
    const error = configError(() => load({}, 'repos:\n  acme/shop: { pipeline: shop }\n'));
    expect(error.message).toContain('/srv/shipgate/shipgate.yaml');
    expect(error.message).toContain('repos.acme/shop.pipeline');
  });
});

describe('parsePolicy', () => {
  it('fills budget defaults, and keeps the defaults a partial budgets section leaves out', () => {
    expect(parsePolicy(MINIMAL_POLICY, 'p').budgets).toEqual({
      maxAgentTurns: 40,
      maxCiIterations: 3,
      maxDeployIterations: 1,
      maxTokensPerRun: 2_000_000,
      maxCostUsdPerRun: 10,
      maxRunMinutes: 240,
    });
    expect(
      parsePolicy(`${MINIMAL_POLICY}budgets: { maxCiIterations: 5, maxCostUsdPerRun: 2.5 }\n`, 'p').budgets,
    ).toEqual({
      maxAgentTurns: 40,
      maxCiIterations: 5,
      maxDeployIterations: 1,
      maxTokensPerRun: 2_000_000,
      maxCostUsdPerRun: 2.5,
      maxRunMinutes: 240,
    });
  });

  it('rejects a negative or fractional budget, naming it', () => {
    expect(policyError(`${MINIMAL_POLICY}budgets: { maxAgentTurns: 2.5 }\n`)).toContain('budgets.maxAgentTurns');
    expect(policyError(`${MINIMAL_POLICY}budgets: { maxCostUsdPerRun: -1 }\n`)).toContain('budgets.maxCostUsdPerRun');
  });

  it.each([
    ['30s', 30_000],
    ['90m', 5_400_000],
    ['24h', 86_400_000],
    ['2d', 172_800_000],
  ])('parses expiresAfter %s to %i ms', (text, ms) => {
    const policy = parsePolicy(
      `repos:\n  acme/shop: { pipeline: shop }\npipelines:\n  shop:\n    stages:\n      - { name: prod, kargoStage: prod, approval: { approvers: [U0999], expiresAfter: ${text} } }\n`,
      'p',
    );
    expect(policy.pipelines['shop']?.stages[0]?.approval?.expiresAfter).toBe(ms);
  });

  it('defaults an approval to one approver, no self-approval and 24 h expiry', () => {
    const policy = parsePolicy(
      'repos:\n  acme/shop: { pipeline: shop }\npipelines:\n  shop:\n    stages:\n      - { name: prod, kargoStage: prod, approval: { approvers: [S0777] } }\n',
      'p',
    );
    expect(policy.pipelines['shop']?.stages[0]?.approval).toEqual({
      approvers: ['S0777'],
      minApprovals: 1,
      allowSelfApproval: false,
      expiresAfter: 86_400_000,
    });
    expect(policy.pipelines['shop']?.argocdNamespace).toBe('argocd');
  });

  it('rejects a duration without a unit, naming the path and the accepted form', () => {
    const message = policyError(
      'repos:\n  acme/shop: { pipeline: shop }\npipelines:\n  shop:\n    stages:\n      - { name: prod, kargoStage: prod, approval: { approvers: [U0999], expiresAfter: 1 week } }\n',
    );
    expect(message).toContain('pipelines.shop.stages.0.approval.expiresAfter');
    expect(message).toContain('30m, 24h or 2d');
  });

  it('accepts the example from SPEC §3', () => {
    const policy = parsePolicy(
      `repos:
  acme/shop:
    channels: [C0123ABCD]
    requesters: [U0123, S0456]
    checks:
      lint: npm run lint
      test: npm test
    protectedPaths: ["deploy/**"]
    pipeline: shop
pipelines:
  shop:
    kargo: { project: shop, warehouse: shop, match: commit }
    argocdNamespace: argocd
    stages:
      - { name: dev,     kargoStage: dev,     argocdApps: [shop-dev] }
      - { name: staging, kargoStage: staging, argocdApps: [shop-staging] }
      - name: prod
        kargoStage: prod
        argocdApps: [shop-prod]
        approval: { approvers: [U0999, S0777], minApprovals: 1, allowSelfApproval: false, expiresAfter: 24h }
        goldenSignals: { errorRatio: { query: "rate(x[5m])", max: 0.01 }, latencyP95: { query: "histogram_quantile(0.95, y)", maxSeconds: 0.5 } }
budgets: { maxAgentTurns: 40, maxCiIterations: 3, maxTokensPerRun: 2000000, maxCostUsdPerRun: 10, maxRunMinutes: 240 }
`,
      'p',
    );
    expect(policy.repos['acme/shop']?.requesters).toEqual(['U0123', 'S0456']);
    expect(policy.pipelines['shop']?.stages.map((stage) => stage.name)).toEqual(['dev', 'staging', 'prod']);
  });

  it('only lets a channel default to a listed repository', () => {
    const message = policyError('channels:\n  CDOCS: { defaultRepo: acme/docs }\nrepos:\n  acme/shop: {}\n');
    expect(message).toContain('channels.CDOCS.defaultRepo');
    expect(message).toContain('acme/docs');
    expect(message).toContain('not listed under repos');
    expect(
      parsePolicy('channels:\n  CDOCS: { defaultRepo: acme/shop }\nrepos:\n  acme/shop: {}\n', 'p').channels,
    ).toEqual({
      CDOCS: { defaultRepo: 'acme/shop' },
    });
  });

  it('rejects a stage name used twice in one pipeline, naming the second one', () => {
    const message = policyError(
      'repos:\n  acme/shop: { pipeline: shop }\npipelines:\n  shop:\n    stages:\n      - { name: dev, kargoStage: dev }\n      - { name: dev, kargoStage: dev2 }\n',
    );
    expect(message).toContain('pipelines.shop.stages.1.name');
    expect(message).toContain('"dev" appears twice');
  });

  it('rejects a repository naming a pipeline that is not defined', () => {
    const message = policyError('repos:\n  acme/shop: { pipeline: shopp }\npipelines:\n  shop: {}\n');
    expect(message).toContain('repos.acme/shop.pipeline');
    expect(message).toContain('"shopp", which is not defined under pipelines');
  });

  it.each([
    [
      'a requester id with a space in it (the shape of an id is the chat adapter\'s to check: principals.test.ts)',
      'repos:\n  acme/shop: { requesters: ["U0123 U0456"] }\n',
      'repos.acme/shop.requesters.0',
      'without spaces',
    ],
    [
      'an approval with no approvers',
      'repos:\n  acme/shop: { pipeline: shop }\npipelines:\n  shop:\n    stages:\n      - { name: prod, kargoStage: prod, approval: { approvers: [] } }\n',
      'pipelines.shop.stages.0.approval.approvers',
      'at least one approver',
    ],
  ])('rejects %s', (_case, yaml, path, hint) => {
    const message = policyError(yaml);
    expect(message).toContain(path);
    expect(message).toContain(hint);
  });

  it.each([
    ['an unknown top-level key', `${MINIMAL_POLICY}budget: { maxAgentTurns: 5 }\n`, '"budget"'],
    ['an unknown repository key', 'repos:\n  acme/shop: { protected_paths: ["deploy/**"] }\n', 'repos.acme/shop'],
    [
      'an unknown stage key',
      'repos:\n  acme/shop: { pipeline: shop }\npipelines:\n  shop:\n    stages:\n      - { name: dev, kargoStage: dev, argoApps: [x] }\n',
      'pipelines.shop.stages.0',
    ],
  ])('rejects %s instead of silently ignoring it', (_case, yaml, where) => {
    const message = policyError(yaml);
    expect(message).toContain(where);
    expect(message).toMatch(/Unrecognized key/i);
  });

  it('asks for at least one repository', () => {
    expect(policyError('repos: {}\n')).toContain('repos: list at least one repository');
  });

  it('reports broken YAML with its position', () => {
    const message = policyError('repos: [\n');
    expect(message).toContain('shipgate.yaml: is not valid YAML');
    expect(message).toMatch(/line \d+/);
  });

  it('takes a custom slash command name and rejects one without the slash', () => {
    expect(parsePolicy(`command: /deploy\n${MINIMAL_POLICY}`, 'p').command).toBe('/deploy');
    const message = policyError(`command: deploy\n${MINIMAL_POLICY}`);
    expect(message).toContain('command');
    expect(message).toContain('like /ship');
  });
});

describe('deploy pipeline policy', () => {
  const pipeline = (stage: string) => `repos:\n  acme/shop: { pipeline: shop }\npipelines:\n  shop:\n    kargo: { project: shop, warehouse: shop }\n    stages:\n      - ${stage}\n`;
  const problems = (text: string): string => {
    try {
      parsePolicy(text, 'p');
      return '';
    } catch (error) {
      return error instanceof ConfigError ? error.problems.join('\n') : String(error);
    }
  };

  it('a stage behind an approval is the bot’s to promote: the default there, and `promote: auto` is refused', () => {
    const approval = 'approval: { approvers: [U0999] }';
    expect(parsePolicy(pipeline(`{ name: prod, kargoStage: prod, ${approval} }`), 'p').pipelines['shop']?.stages[0]?.promote).toBe('bot');
    expect(parsePolicy(pipeline('{ name: dev, kargoStage: dev }'), 'p').pipelines['shop']?.stages[0]?.promote).toBe('auto');
    expect(problems(pipeline(`{ name: prod, kargoStage: prod, promote: auto, ${approval} }`))).toMatch(/promote.*behind an approval/);
  });

  it('refuses empty goldenSignals, stage names that cannot be label values, and image tag patterns without the commit', () => {
    expect(problems(pipeline('{ name: dev, kargoStage: dev, goldenSignals: {} }'))).toMatch(/errorRatio or latencyP95/);
    expect(problems(pipeline(`{ name: ${'a'.repeat(64)}, kargoStage: dev }`))).toMatch(/at most 63/);
    expect(problems(pipeline('{ name: dev-, kargoStage: dev }'))).toMatch(/not ending in -/);
    expect(problems(pipeline('{ name: dev, kargoStage: dev }').replace('warehouse: shop', 'warehouse: shop, match: image, tagPatterns: [latest]'))).toMatch(/\{sha\}/);
    expect(problems(pipeline('{ name: dev, kargoStage: dev }').replace('warehouse: shop', 'warehouse: shop, match: image, tagPatterns: ["{sha:4}"]'))).toMatch(/7 ≤ N ≤ 40/);
  });

  it('stages listing goldenSignals need PROMETHEUS_URL', () => {
    const text = pipeline('{ name: dev, kargoStage: dev, goldenSignals: { errorRatio: { query: "up", max: 0.01 } } }');
    expect(() => loadConfig({}, { readFile: () => text })).toThrow(/PROMETHEUS_URL: the policy's stages shop\/dev list goldenSignals/);
    expect(loadConfig({ PROMETHEUS_URL: 'http://127.0.0.1:9090' }, { readFile: () => text }).prometheusUrl).toBe('http://127.0.0.1:9090');
  });
});

describe('local repositories (path:)', () => {
  it('resolves path: against the policy file, not the working directory', () => {
    const config = loadConfig({ SHIPGATE_CONFIG: 'conf/shipgate.yaml', SHIPGATE_AUDIT_KEY: AUDIT_KEY }, { cwd: '/srv/shipgate', readFile: () => 'repos:\n  demo/shop:\n    path: ./repos/shop.git\n    ci: { test: node --test }\n' });
    expect(config.policy.repos['demo/shop']?.path).toBe('/srv/shipgate/conf/repos/shop.git');
  });

  it('refuses ci:, merge: and sample: on a repository without a path:, naming the key', () => {
    expect(policyError('repos:\n  acme/shop:\n    ci: { test: npm test }\n')).toMatch(/repos\.acme\/shop\.ci.*applies only to a local repository: add path:/);
    expect(policyError('repos:\n  acme/shop:\n    merge: { requireApproval: true }\n')).toMatch(/repos\.acme\/shop\.merge/);
  });
});
