import { readFileSync } from 'node:fs';
import { delimiter, dirname, isAbsolute, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { parseAuditKey } from '../audit/audit-key.js';
import { policySchema, type Policy } from './policy.js';

/**
 * Start-up configuration: secrets and endpoints from the environment, policy
 * from the YAML file named by SHIPGATE_CONFIG (SPEC §3). Validated once; the
 * rest of the code receives the typed result and never reads process.env.
 */

export class ConfigError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(`shipgate cannot start, the configuration is invalid:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

/** How to fix each environment key, shown next to the complaint. */
const ENV_FIXES: Record<string, string> = {
  REDIS_URL: 'set it to a redis:// or rediss:// URL, e.g. redis://127.0.0.1:6379',
  PORT: 'set it to a TCP port number between 1 and 65535',
  METRICS_PORT:
    'set it to a TCP port number between 1 and 65535 other than PORT (e.g. 9464), or unset it to serve /metrics on PORT',
  SLACK_BOT_TOKEN: 'set it to the Bot User OAuth Token (xoxb-…) from the Slack app settings',
  SLACK_SIGNING_SECRET: "set it to the Signing Secret from the Slack app's Basic Information page",
  SLACK_APP_TOKEN: 'set it to an app-level token (xapp-…) with connections:write, or unset it for HTTP mode',
  SLACK_API_URL: 'set it to the Web API base URL ending in /api/, e.g. https://slack.com/api/',
  DISCORD_PUBLIC_KEY: "set it to the Public Key (64 hex characters) from the Discord application's General Information page",
  DISCORD_BOT_TOKEN: "set it to the bot token from the Discord application's Bot page",
  DISCORD_APPLICATION_ID: "set it to the Application ID (a numeric snowflake) from the Discord application's General Information page",
  DISCORD_API_URL: 'set it to the REST base URL with its version, e.g. https://discord.com/api/v10',
  DISCORD_GUILD_ID: 'set it to the numeric id of the server to register /ship in (instant), or unset it to register globally',
  DISCORD_GATEWAY:
    "set it to 1 to take mentions of the bot in a run's thread as follow-ups (the web role connects to Discord's Gateway; needs DISCORD_BOT_TOKEN and the other DISCORD_* keys), or to 0 or unset for `/ship reply` only",
  SHIPGATE_MODEL: 'set it to a Claude model id, e.g. claude-sonnet-4-6',
  GITHUB_API_URL: 'set it to the REST base URL, e.g. https://api.github.com or https://ghe.example.com/api/v3',
  GITHUB_APP_ID: 'set it to the numeric App ID, together with GITHUB_APP_PRIVATE_KEY',
  GITHUB_APP_PRIVATE_KEY: "set it to the App's PEM private key, together with GITHUB_APP_ID",
  GITHUB_APP_INSTALLATION_ID: 'set it to the numeric installation id, or unset it',
  PROMETHEUS_URL: 'set it to the Prometheus base URL, e.g. http://prometheus:9090, or unset it',
  KARGO_URL: "set it to the Kargo UI's base URL, e.g. https://kargo.example.com, or unset it (threads then carry no Kargo links)",
  ARGOCD_URL: "set it to the Argo CD UI's base URL, e.g. https://argocd.example.com, or unset it (threads then carry no Argo CD links)",
  SHIPGATE_CONFIG: 'point it at the policy file (default ./shipgate.yaml)',
  SHIPGATE_ROLE: 'use all, web or worker',
  SHIPGATE_REDIS_PREFIX: 'use letters, digits, - and _ only',
  SHIPGATE_AUDIT_KEY:
    'set it to a secret of at least 32 bytes, e.g. the output of `openssl rand -hex 32`, kept outside Redis (a secret manager); every shipgate process and `npm run audit-log` need the same value',
  SHIPGATE_AUDIT_CHECKPOINT_EVERY: 'set it to a whole number of events of at least 1 (default 100), or unset it',
  LOG_LEVEL: 'use one of fatal, error, warn, info, debug, trace, silent',
};

const optionalText = z
  .string()
  .optional()
  .transform((value) => (value === undefined || value.trim() === '' ? undefined : value.trim()));

const optionalUrl = optionalText.pipe(z.url({ message: 'must be an absolute URL' }).optional());

const envSchema = z
  .object({
    REDIS_URL: z
      .string()
      .default('redis://127.0.0.1:6379')
      .pipe(z.url().regex(/^rediss?:\/\//, 'must start with redis:// or rediss://')),
    PORT: z.coerce.number().int().min(0).max(65535).default(3000),
    // Unset: /metrics stays on PORT (SPEC §3). Set: /metrics moves here (with /healthz and /readyz),
    // off the port the Slack/GitHub ingress reaches.
    METRICS_PORT: z.coerce.number().int().min(0).max(65535).optional(),
    SLACK_BOT_TOKEN: optionalText,
    SLACK_SIGNING_SECRET: optionalText,
    SLACK_APP_TOKEN: optionalText.pipe(z.string().startsWith('xapp-', 'must start with xapp-').optional()),
    SLACK_API_URL: optionalUrl,
    DISCORD_PUBLIC_KEY: optionalText.pipe(z.string().regex(/^[0-9a-fA-F]{64}$/, 'must be 64 hex characters (an Ed25519 public key)').optional()),
    DISCORD_BOT_TOKEN: optionalText,
    DISCORD_APPLICATION_ID: optionalText.pipe(z.string().regex(/^\d{5,20}$/, 'must be a numeric snowflake').optional()),
    // Read by `npm run discord:register` only: a guild command is usable at once, a global one everywhere.
    DISCORD_GUILD_ID: optionalText.pipe(z.string().regex(/^\d{5,20}$/, 'must be a numeric snowflake').optional()),
    // Thread mentions need a Gateway connection (the interactions endpoint never sees messages).
    DISCORD_GATEWAY: optionalText.pipe(z.enum(['0', '1'], { message: 'must be 1 or 0' }).optional()),
    DISCORD_API_URL: optionalText.pipe(
      z
        .url({ message: 'must be an absolute URL' })
        .regex(/\/v\d+\/?$/, 'must end with the API version, e.g. /api/v10')
        .default('https://discord.com/api/v10'),
    ),
    ANTHROPIC_API_KEY: optionalText,
    ANTHROPIC_BASE_URL: optionalUrl,
    SHIPGATE_MODEL: z.string().min(1).default('claude-sonnet-4-6'),
    GITHUB_TOKEN: optionalText,
    GITHUB_APP_ID: optionalText.pipe(z.string().regex(/^\d+$/, 'must be a number').optional()),
    GITHUB_APP_PRIVATE_KEY: optionalText,
    GITHUB_APP_INSTALLATION_ID: optionalText.pipe(z.string().regex(/^\d+$/, 'must be a number').optional()),
    GITHUB_API_URL: z.url().default('https://api.github.com'),
    GITHUB_WEBHOOK_SECRET: optionalText,
    KUBECONFIG: optionalText,
    PROMETHEUS_URL: optionalUrl,
    KARGO_URL: optionalUrl,
    ARGOCD_URL: optionalUrl,
    SHIPGATE_CONFIG: z.string().min(1).default('./shipgate.yaml'),
    SHIPGATE_ROLE: z.enum(['all', 'web', 'worker']).default('all'),
    SHIPGATE_REDIS_PREFIX: z
      .string()
      .regex(/^[A-Za-z0-9_-]+$/)
      .default('shipgate'),
    SHIPGATE_AUDIT_KEY: optionalText
      .superRefine((value, ctx) => {
        const parsed = value === undefined ? undefined : parseAuditKey(value);
        // The reason never quotes the value: it is a secret.
        if (parsed?.ok === false) ctx.addIssue({ code: 'custom', message: parsed.reason });
      })
      .transform((value) => {
        const parsed = value === undefined ? undefined : parseAuditKey(value);
        return parsed?.ok === true ? parsed.key : undefined;
      }),
    SHIPGATE_AUDIT_CHECKPOINT_EVERY: z.coerce.number().int().min(1).max(1_000_000).default(100),
    LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  })
  .superRefine((env, ctx) => {
    // 0 asks the system for a free port, so two zeros are two different ports.
    if (env.METRICS_PORT !== undefined && env.METRICS_PORT !== 0 && env.METRICS_PORT === env.PORT) {
      ctx.addIssue({
        code: 'custom',
        path: ['METRICS_PORT'],
        message: `is the same port as PORT (${env.PORT}); metrics get a port of their own so that the Slack/GitHub ingress never reaches them`,
      });
    }
    if (env.SLACK_BOT_TOKEN !== undefined && env.SLACK_APP_TOKEN === undefined && env.SLACK_SIGNING_SECRET === undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['SLACK_SIGNING_SECRET'],
        message: 'is required when SLACK_BOT_TOKEN is set (HTTP mode verifies every request with it)',
      });
    }
    if ((env.SLACK_SIGNING_SECRET !== undefined || env.SLACK_APP_TOKEN !== undefined) && env.SLACK_BOT_TOKEN === undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['SLACK_BOT_TOKEN'],
        message: 'is required when SLACK_SIGNING_SECRET or SLACK_APP_TOKEN is set',
      });
    }
    // Discord is configured by its three credentials together: a part of them is a typo, not a choice.
    const discordKeys = ['DISCORD_PUBLIC_KEY', 'DISCORD_BOT_TOKEN', 'DISCORD_APPLICATION_ID'] as const;
    const discordSet = discordKeys.filter((key) => env[key] !== undefined);
    if (discordSet.length > 0) {
      for (const key of discordKeys.filter((k) => env[k] === undefined)) {
        ctx.addIssue({ code: 'custom', path: [key], message: `is required when ${discordSet.join(' and ')} ${discordSet.length === 1 ? 'is' : 'are'} set (Discord needs all three)` });
      }
    }
    if (env.DISCORD_GATEWAY === '1' && discordSet.length === 0) {
      ctx.addIssue({ code: 'custom', path: ['DISCORD_GATEWAY'], message: 'is 1, but Discord is not configured (DISCORD_PUBLIC_KEY, DISCORD_BOT_TOKEN, DISCORD_APPLICATION_ID)' });
    }
    if (env.DISCORD_BOT_TOKEN !== undefined && env.SLACK_BOT_TOKEN === undefined && env.SHIPGATE_AUDIT_KEY === undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['SHIPGATE_AUDIT_KEY'],
        message: 'is required outside local mode (DISCORD_BOT_TOKEN is set): it keys the audit chain, so that whoever can write to Redis cannot rewrite the log undetected',
      });
    }
    if (env.SLACK_BOT_TOKEN !== undefined && env.SHIPGATE_AUDIT_KEY === undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['SHIPGATE_AUDIT_KEY'],
        message: 'is required outside local mode (SLACK_BOT_TOKEN is set): it keys the audit chain, so that whoever can write to Redis cannot rewrite the log undetected',
      });
    }
    if ((env.GITHUB_APP_ID === undefined) !== (env.GITHUB_APP_PRIVATE_KEY === undefined)) {
      ctx.addIssue({
        code: 'custom',
        path: [env.GITHUB_APP_ID === undefined ? 'GITHUB_APP_ID' : 'GITHUB_APP_PRIVATE_KEY'],
        message: 'GitHub App credentials need both GITHUB_APP_ID and GITHUB_APP_PRIVATE_KEY',
      });
    }
  });

/**
 * The primary chat: Slack when configured, else Discord, else the console. Discord configured beside
 * Slack is `Config.discord` and runs too (SPEC §2: both platforms at once); build-chat builds both.
 */
export type ChatMode = { kind: 'slack-http' } | { kind: 'slack-socket'; appToken: string } | { kind: 'discord' } | { kind: 'console' };

export interface DiscordConfig {
  /** The application's Ed25519 public key, hex (interactions are verified with it). */
  publicKey: string;
  botToken: string;
  applicationId: string;
  /** REST base with its version, e.g. https://discord.com/api/v10. */
  apiUrl: string;
  /** DISCORD_GUILD_ID: where `npm run discord:register` puts the command (unset: globally). */
  guildId: string | undefined;
  /** DISCORD_GATEWAY=1: the web role connects to the Gateway for thread mentions. */
  gateway: boolean;
}

/**
 * Where the audit chain's HMAC key comes from: SHIPGATE_AUDIT_KEY, or, in
 * local mode (console chat) without it, a file the composition root reads or
 * generates on first start (loadConfig itself does no file I/O for it).
 */
export type AuditKeySource = { kind: 'env'; key: Buffer } | { kind: 'generate-local'; path: string };

/** Where local mode keeps its generated audit key, relative to the working directory. */
export const LOCAL_AUDIT_KEY_PATH = '.shipgate/audit.key';

export interface Config {
  redisUrl: string;
  /** True when REDIS_URL was not set: the console chat may then start a private redis-server. */
  redisUrlIsDefault: boolean;
  redisPrefix: string;
  port: number;
  /**
   * METRICS_PORT: when set, /metrics is served there only (beside /healthz and /readyz), never on
   * PORT; when unset, PORT serves /metrics as well.
   */
  metricsPort: number | undefined;
  role: 'all' | 'web' | 'worker';
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  chat: ChatMode;
  slack: { botToken: string; signingSecret: string | undefined; apiUrl: string | undefined } | undefined;
  /** Discord's credentials when all three are set (validated together). */
  discord: DiscordConfig | undefined;
  anthropic: { apiKey: string | undefined; baseUrl: string | undefined; model: string };
  github: {
    apiUrl: string;
    token: string | undefined;
    app: { appId: string; privateKey: string; installationId: string | undefined } | undefined;
    webhookSecret: string | undefined;
  };
  kubeconfig: string | undefined;
  prometheusUrl: string | undefined;
  /** The Kargo and Argo CD UIs, for links in threads and on the card (SPEC §2); links are left out without them. */
  kargoUrl: string | undefined;
  argocdUrl: string | undefined;
  /** The process's PATH: where git and bubblewrap are found (commands inside the sandbox get a fixed one). */
  hostPath: string | undefined;
  /** HOME, for `~/.kube/config` when KUBECONFIG is unset. */
  homeDir: string | undefined;
  /** KUBERNETES_SERVICE_HOST/PORT: set by Kubernetes in every pod (in-cluster configuration). */
  kubernetesService: { host: string; port: string } | undefined;
  auditKey: AuditKeySource;
  /** Log an `audit checkpoint` line every this many events (SHIPGATE_AUDIT_CHECKPOINT_EVERY). */
  auditCheckpointEvery: number;
  policyPath: string;
  policy: Policy;
  /** Every secret value the configuration holds or points at, for the scrubber (see `secretValues`). */
  secrets: readonly string[];
}

/** What the audit CLI needs: the same environment rules as the bot, without the policy file. */
export interface AuditCliConfig {
  redisUrl: string;
  redisPrefix: string;
  auditKey: AuditKeySource;
}

function formatIssues(issues: readonly z.core.$ZodIssue[], describe: (path: string) => string): string[] {
  return issues.map((issue) => {
    const path = issue.path.map(String).join('.');
    // A bad record key (e.g. a repo named "shop" instead of "acme/shop") says why the key is wrong.
    const message = issue.code === 'invalid_key' ? `the key ${issue.issues.map((inner) => inner.message).join('; ')}` : issue.message;
    return describe(path) ? `${path}: ${message}. ${describe(path)}` : `${path || '(root)'}: ${message}`;
  });
}

export interface LoadConfigOptions {
  readFile?: (path: string) => string;
  cwd?: string;
}

/** Parses and validates the policy YAML text; throws ConfigError naming the key. */
export function parsePolicy(text: string, source: string): Policy {
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new ConfigError([`${source}: is not valid YAML (${reason}). Fix the syntax at the position given.`]);
  }
  const result = policySchema.safeParse(raw ?? {});
  if (!result.success) {
    throw new ConfigError(
      formatIssues(result.error.issues, () => '').map((line) => `${source} → ${line}. See shipgate.example.yaml for the file's shape.`),
    );
  }
  return result.data;
}

function parseEnv(env: NodeJS.ProcessEnv): { e: z.infer<typeof envSchema>; present: Record<string, string | undefined> } {
  // `KEY=` in an env file means "not set": drop empty values so defaults apply.
  const present = Object.fromEntries(Object.entries(env).filter(([, value]) => value !== undefined && value.trim() !== ''));
  const parsed = envSchema.safeParse(present);
  if (!parsed.success) {
    throw new ConfigError(formatIssues(parsed.error.issues, (key) => (ENV_FIXES[key] ? `Fix: ${ENV_FIXES[key]}` : '')));
  }
  return { e: parsed.data, present };
}

function auditKeySource(e: z.infer<typeof envSchema>, cwd: string): AuditKeySource {
  // The schema already refused a missing key outside local mode.
  return e.SHIPGATE_AUDIT_KEY !== undefined ? { kind: 'env', key: e.SHIPGATE_AUDIT_KEY } : { kind: 'generate-local', path: resolve(cwd, LOCAL_AUDIT_KEY_PATH) };
}

/** The audit CLI's configuration: validated by the same schema as the bot's, so it reads what the bot wrote. */
export function loadAuditCliConfig(env: NodeJS.ProcessEnv = process.env, options: Pick<LoadConfigOptions, 'cwd'> = {}): AuditCliConfig {
  const { e } = parseEnv(env);
  return { redisUrl: e.REDIS_URL, redisPrefix: e.SHIPGATE_REDIS_PREFIX, auditKey: auditKeySource(e, options.cwd ?? process.cwd()) };
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env, options: LoadConfigOptions = {}): Config {
  const { e, present } = parseEnv(env);
  const cwd = options.cwd ?? process.cwd();
  const policyPath = resolve(cwd, e.SHIPGATE_CONFIG);
  const readFile = options.readFile ?? ((path: string) => readFileSync(path, 'utf8'));
  let text: string;
  try {
    text = readFile(policyPath);
  } catch {
    throw new ConfigError([
      `SHIPGATE_CONFIG: cannot read the policy file ${policyPath}. Fix: create it (see shipgate.example.yaml) or ${ENV_FIXES.SHIPGATE_CONFIG}`,
    ]);
  }
  const parsed = parsePolicy(text, policyPath);
  // A local repository's path is relative to the policy file, wherever the bot was started from.
  const policy = {
    ...parsed,
    repos: Object.fromEntries(
      Object.entries(parsed.repos).map(([name, repo]) => [name, repo.path === undefined ? repo : { ...repo, path: resolve(dirname(policyPath), repo.path) }]),
    ),
  };
  const withSignals = Object.entries(policy.pipelines).flatMap(([name, pipeline]) =>
    pipeline.stages.filter((stage) => stage.goldenSignals !== undefined).map((stage) => `${name}/${stage.name}`),
  );
  if (withSignals.length > 0 && e.PROMETHEUS_URL === undefined) {
    // A stage that asks for golden signals must never pass without them.
    throw new ConfigError([
      `PROMETHEUS_URL: the policy's stages ${withSignals.join(', ')} list goldenSignals, which are PromQL queries. Fix: ${ENV_FIXES.PROMETHEUS_URL}, or remove goldenSignals from those stages`,
    ]);
  }

  const discord: DiscordConfig | undefined =
    e.DISCORD_PUBLIC_KEY !== undefined && e.DISCORD_BOT_TOKEN !== undefined && e.DISCORD_APPLICATION_ID !== undefined
      ? { publicKey: e.DISCORD_PUBLIC_KEY, botToken: e.DISCORD_BOT_TOKEN, applicationId: e.DISCORD_APPLICATION_ID, apiUrl: e.DISCORD_API_URL, guildId: e.DISCORD_GUILD_ID, gateway: e.DISCORD_GATEWAY === '1' }
      : undefined;
  const chat: ChatMode =
    e.SLACK_BOT_TOKEN === undefined
      ? discord === undefined
        ? { kind: 'console' }
        : { kind: 'discord' }
      : e.SLACK_APP_TOKEN !== undefined
        ? { kind: 'slack-socket', appToken: e.SLACK_APP_TOKEN }
        : { kind: 'slack-http' };

  return {
    redisUrl: e.REDIS_URL,
    redisUrlIsDefault: present.REDIS_URL === undefined,
    redisPrefix: e.SHIPGATE_REDIS_PREFIX,
    port: e.PORT,
    metricsPort: e.METRICS_PORT,
    role: e.SHIPGATE_ROLE,
    logLevel: e.LOG_LEVEL,
    chat,
    slack:
      e.SLACK_BOT_TOKEN === undefined
        ? undefined
        : { botToken: e.SLACK_BOT_TOKEN, signingSecret: e.SLACK_SIGNING_SECRET, apiUrl: e.SLACK_API_URL },
    discord,
    anthropic: { apiKey: e.ANTHROPIC_API_KEY, baseUrl: e.ANTHROPIC_BASE_URL, model: e.SHIPGATE_MODEL },
    github: {
      apiUrl: e.GITHUB_API_URL,
      token: e.GITHUB_TOKEN,
      app:
        e.GITHUB_APP_ID !== undefined && e.GITHUB_APP_PRIVATE_KEY !== undefined
          ? { appId: e.GITHUB_APP_ID, privateKey: e.GITHUB_APP_PRIVATE_KEY, installationId: e.GITHUB_APP_INSTALLATION_ID }
          : undefined,
      webhookSecret: e.GITHUB_WEBHOOK_SECRET,
    },
    kubeconfig: e.KUBECONFIG,
    prometheusUrl: e.PROMETHEUS_URL,
    kargoUrl: e.KARGO_URL,
    argocdUrl: e.ARGOCD_URL,
    // Absolute entries only: a relative one ('', '.') would find `git` or `bash` in whatever directory a
    // command runs in, and the workspace tree is written by the model.
    hostPath: present.PATH?.split(delimiter).filter((entry) => isAbsolute(entry)).join(delimiter) || undefined,
    homeDir: present.HOME,
    kubernetesService:
      present.KUBERNETES_SERVICE_HOST !== undefined && present.KUBERNETES_SERVICE_PORT !== undefined
        ? { host: present.KUBERNETES_SERVICE_HOST, port: present.KUBERNETES_SERVICE_PORT }
        : undefined,
    auditKey: auditKeySource(e, cwd),
    auditCheckpointEvery: e.SHIPGATE_AUDIT_CHECKPOINT_EVERY,
    policyPath,
    policy,
    secrets: collectSecrets(present, e.KUBECONFIG, (path) => readFile(resolve(options.cwd ?? process.cwd(), path))),
  };
}

/**
 * Every secret the configuration holds (SPEC §4: scrubbed from whatever leaves the worker): the
 * tokens and keys from the environment, passwords inside its URLs, and the credentials in the
 * kubeconfig the bot reads. Pass it to `createScrubber` (src/security/scrubber.ts).
 */
export function secretValues(config: Pick<Config, 'secrets'>): string[] {
  return [...config.secrets];
}

/** Secret environment keys; read from the raw map so keys another module validates (SHIPGATE_AUDIT_KEY, Discord) count too. */
const SECRET_ENV_KEYS = [
  'SLACK_BOT_TOKEN',
  'SLACK_SIGNING_SECRET',
  'SLACK_APP_TOKEN',
  'ANTHROPIC_API_KEY',
  'GITHUB_TOKEN',
  'GITHUB_APP_PRIVATE_KEY',
  'GITHUB_WEBHOOK_SECRET',
  'SHIPGATE_AUDIT_KEY',
  'DISCORD_BOT_TOKEN',
  'DISCORD_PUBLIC_KEY',
] as const;

/** Endpoints that may carry a password in their userinfo (`rediss://:password@host`). */
const URL_ENV_KEYS = ['REDIS_URL', 'SLACK_API_URL', 'DISCORD_API_URL', 'ANTHROPIC_BASE_URL', 'GITHUB_API_URL', 'PROMETHEUS_URL'] as const;

/** The credential fields of a kubeconfig's users (only those; everything else is left unchecked). */
const kubeconfigSchema = z.looseObject({
  users: z
    .array(
      z.looseObject({
        user: z
          .looseObject({
            token: z.string().optional(),
            password: z.string().optional(),
            'client-key-data': z.string().optional(),
            'auth-provider': z.looseObject({ config: z.record(z.string(), z.unknown()).nullish() }).nullish(),
          })
          .nullish(),
      }),
    )
    .nullish(),
});

const AUTH_PROVIDER_SECRETS = ['access-token', 'refresh-token', 'id-token', 'client-secret'];

function urlPassword(value: string): string | undefined {
  try {
    const password = new URL(value).password;
    return password === '' ? undefined : decodeURIComponent(password);
  } catch {
    return undefined;
  }
}

/** Credentials in the kubeconfig file(s); a file that is missing or not a kubeconfig holds none. */
function kubeconfigSecrets(paths: string, readFile: (path: string) => string): string[] {
  const found: string[] = [];
  // KUBECONFIG is a list, like PATH.
  for (const path of paths.split(delimiter).filter((p) => p !== '')) {
    let raw: unknown;
    try {
      raw = parseYaml(readFile(path));
    } catch {
      continue;
    }
    const parsed = kubeconfigSchema.safeParse(raw);
    if (!parsed.success) continue;
    for (const { user } of parsed.data.users ?? []) {
      if (user === null || user === undefined) continue;
      const keyData = user['client-key-data'];
      found.push(...[user.token, user.password, keyData].filter((v): v is string => v !== undefined));
      // The key as it appears once decoded (a PEM block, scrubbed by its lines too).
      if (keyData !== undefined) found.push(Buffer.from(keyData, 'base64').toString('utf8'));
      const providerConfig = user['auth-provider']?.config ?? {};
      for (const name of AUTH_PROVIDER_SECRETS) {
        const value = providerConfig[name];
        if (typeof value === 'string') found.push(value);
      }
    }
  }
  return found;
}

function collectSecrets(env: Record<string, string | undefined>, kubeconfig: string | undefined, readFile: (path: string) => string): string[] {
  const values = [
    ...SECRET_ENV_KEYS.map((key) => env[key]?.trim()),
    ...URL_ENV_KEYS.map((key) => (env[key] === undefined ? undefined : urlPassword(env[key]))),
    ...(kubeconfig === undefined ? [] : kubeconfigSecrets(kubeconfig, readFile)),
  ];
  return [...new Set(values.filter((v): v is string => v !== undefined && v !== ''))];
}
