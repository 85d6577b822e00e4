import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Readable, Writable } from 'node:stream';
import { Worker } from 'bullmq';
import { createRunActions } from '../commands/run-actions.js';
import { createFollowUpHandler } from '../commands/follow-up.js';
import { createShipCommand } from '../commands/ship-command.js';
import { createChatProcessor } from '../workers/chat-processor.js';
import type { GateSteps } from '../workers/gates/gate-step.js';
import { createRunProcessor, failRun } from '../workers/run-processor.js';
import { createAgentStep } from '../workers/gates/agent/agent-step.js';
import { workspaceDir } from '../workers/gates/agent/workspace.js';
import { createCiStep } from '../workers/gates/ci/ci-step.js';
import { createMergeStep } from '../workers/gates/merge/merge-step.js';
import { createPrStep } from '../workers/gates/pr/pr-step.js';
import { createAnthropicModel } from './adapters/anthropic/anthropic-model.js';
import { createGitHubRest } from './adapters/github/github-rest.js';
import { createGit } from './git/git.js';
import { createBubblewrapSandbox } from './adapters/sandbox/bubblewrap-sandbox.js';
import { createUnsandboxed } from './adapters/sandbox/unsandboxed.js';
import { SandboxUnavailableError, type SandboxPort } from './ports/sandbox.js';
import { createConsoleChat, type ConsoleChat } from './adapters/console/console-chat.js';
import { createSlackChat, type SlackChat } from './adapters/slack/slack-chat.js';
import { loadOrCreateLocalAuditKey, type LocalAuditKey } from './audit/audit-key.js';
import { createAuditLog, type AuditLog } from './audit/audit-log.js';
import { ConfigError, secretValues, type AuditKeySource, type Config } from './config/config.js';
import { cachedGroups } from './domain/group-cache.js';
import { groupsOf, policyIdProblems } from './domain/principals.js';
import { ACTIVE_RUN_STATES } from './domain/run.js';
import { githubWebhookRoute, type GitHubEvent } from './http/github-webhooks.js';
import { createHttpServer } from './http/server.js';
import type { Logger } from './log.js';
import { createMetrics, type Metrics } from './metrics.js';
import type { ChatHandlers, ChatPort, CommandReply } from './ports/chat.js';
import type { HttpRoute } from './ports/http.js';
import { createCancellation } from './queue/cancellation.js';
import { CHAT_QUEUE, RUN_QUEUE, createQueues, settleInit, type AdvanceJob, type ChatJob, type Queues } from './queue/queues.js';
import { bullConnection, createRedis, type Redis } from './redis.js';
import { mapRichText } from './render/view.js';
import { createScrubber, type Scrubber } from './security/scrubber.js';
import { createEtagCache } from './store/etag-cache.js';
import { createFollowUps } from './store/follow-ups.js';
import { createPokes } from './store/pokes.js';
import { createTtlCache } from './store/ttl-cache.js';
import { createWriteLimiter } from './store/write-limiter.js';
import { createRunIndex, type RunIndexKey } from './store/run-index.js';
import { createRunStore, type RunStore } from './store/run-store.js';

export interface ShipgateOptions {
  config: Config;
  /** Build it with `createLogger({ …, scrub: scrubber.scrub })` and pass the same `scrubber`, so logs lose the configured secrets too. */
  log: Logger;
  /**
   * The one secret scrubber of the process (SPEC §4); default: one built from the configuration's
   * secrets. Pass it when the logger was built with it (src/main.ts), so both learn minted tokens.
   */
  scrubber?: Scrubber;
  clock?: () => Date;
  /** Gate implementations; a gate without one stays pending as "not configured". */
  steps?: GateSteps;
  /** Console chat streams (default stdin/stdout). */
  console?: { input: Readable; output: Writable };
  /** Run worker concurrency per process. */
  concurrency?: number;
  /** Card update spacing; SPEC §10 asks for at least 3 s. */
  cardUpdateIntervalMs?: number;
  /** Where run workspaces are cloned (default: <tmpdir>/shipgate-workspaces). */
  workRoot?: string;
  /** Where repository code runs (default: from the policy's `sandbox`). */
  sandbox?: SandboxPort;
  /** Retry pacing for outside APIs; tests shrink the waits. */
  tuning?: {
    githubRetryAfterBaseMs?: number;
    githubLimiterId?: string;
    modelMaxRetries?: number;
    checkTimeoutMs?: number;
    /** First re-check of CI and merge (default 5 s and 15 s); polling is the fallback when webhooks are missed. */
    firstPollMs?: number;
  };
}

export interface Shipgate {
  start(): Promise<void>;
  stop(): Promise<void>;
  /** The bound HTTP port (useful with PORT=0). */
  port(): number;
  /** Resolves when the console chat's input closes (never in Slack mode). */
  closed: Promise<void>;
  store: RunStore;
  audit: AuditLog;
  queues: Queues;
  metrics: Metrics;
  scrubber: Scrubber;
}

/**
 * A job whose worker was killed is re-run once its lock expires. Locks are
 * renewed every lockDuration/2 while a job runs, so a shorter lock only
 * shortens recovery after a crash (default 30 s) without cutting live jobs short.
 */
const RECOVERY = { lockDuration: 15_000, stalledInterval: 5_000 } as const;

async function waitForRedis(redis: Redis, url: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      if ((await redis.ping()) === 'PONG') return;
    } catch {
      // retried below until the deadline
    }
    if (Date.now() > deadline) {
      const where = url.replace(/\/\/[^@/]*@/, '//***@');
      throw new ConfigError([
        `REDIS_URL: no Redis answers at ${where}. Fix: start one (redis-server, or docker compose up -d redis) or point REDIS_URL at yours.`,
      ]);
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

/**
 * The audit chain's key: SHIPGATE_AUDIT_KEY, or in local mode the key file,
 * generated on first start (config only names the file; the I/O is here).
 */
function resolveAuditKey(source: AuditKeySource, log: Logger): Buffer {
  if (source.kind === 'env') return source.key;
  let local: LocalAuditKey;
  try {
    local = loadOrCreateLocalAuditKey(source.path);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new ConfigError([
      `SHIPGATE_AUDIT_KEY: is unset and the local audit key cannot be used (${reason}). Fix: set SHIPGATE_AUDIT_KEY, or repair ${source.path} (deleting it makes a new key, and the existing audit log then fails verification)`,
    ]);
  }
  if (local.created) log.warn({ path: local.path }, 'SHIPGATE_AUDIT_KEY is unset: generated a local audit key');
  else log.info({ path: local.path }, 'SHIPGATE_AUDIT_KEY is unset: using the local audit key');
  if (local.readableByOthers) log.warn({ path: local.path }, 'the local audit key file is readable by other users: chmod 600 it');
  return local.key;
}

/**
 * Wires shipgate from its configuration: adapters at the edge, logic in the
 * middle. Roles (SPEC §8): `web` takes chat input and serves HTTP, `worker`
 * runs the queues, `all` does both. All shared state lives in Redis, so any
 * number of either can run side by side.
 */
export function createShipgate(options: ShipgateOptions): Shipgate {
  const { config, log } = options;
  const clock = options.clock ?? (() => new Date());
  const prefix = config.redisPrefix;
  const runsWeb = config.role !== 'worker';
  const runsWorker = config.role !== 'web';

  if (config.chat.kind === 'console' && config.role !== 'all') {
    throw new ConfigError([
      `SHIPGATE_ROLE: the console chat needs role all (got ${config.role}). Fix: set SLACK_BOT_TOKEN for split roles, or unset SHIPGATE_ROLE.`,
    ]);
  }

  // Before any connection is opened: a key problem stops the start-up with a ConfigError.
  const auditKey = resolveAuditKey(config.auditKey, log);

  const metrics = createMetrics();
  let slack: SlackChat | undefined;
  let consoleChat: ConsoleChat | undefined;
  let chat: ChatPort;
  if (config.chat.kind === 'console') {
    consoleChat = createConsoleChat({
      input: options.console?.input ?? process.stdin,
      output: options.console?.output ?? process.stdout,
      command: config.policy.command,
    });
    chat = consoleChat.port;
  } else {
    slack = createSlackChat({
      botToken: config.slack?.botToken ?? '',
      signingSecret: config.slack?.signingSecret,
      appToken: config.chat.kind === 'slack-socket' ? config.chat.appToken : undefined,
      apiUrl: config.slack?.apiUrl,
      command: config.policy.command,
      log,
      metrics,
    });
    chat = slack.port;
  }

  // Policy ids are opaque to the policy schema: the configured chat says which are its own (SPEC §2).
  const idProblems = policyIdProblems(config.policy, [chat.principals]);
  if (idProblems.length > 0) {
    throw new ConfigError(idProblems.map((line) => `${config.policyPath} → ${line}. See shipgate.example.yaml for the file's shape.`));
  }

  const redis = createRedis(config.redisUrl, 'command');
  const subscriber = runsWorker ? createRedis(config.redisUrl, 'blocking') : undefined;
  // BullMQ objects get options, not a client: each owns and closes its own connections.
  const bullmq = bullConnection(config.redisUrl);
  for (const [name, client] of Object.entries({ redis, subscriber })) {
    client?.on('error', (error: Error) => log.warn({ connection: name, err: error }, 'redis connection error'));
  }

  // Every text that leaves the worker goes through this (SPEC §4); tokens minted at run time are added to it.
  const scrubber = options.scrubber ?? createScrubber(secretValues(config));
  const scrub = scrubber.scrub;

  const audit = createAuditLog({ redis, prefix, clock, key: auditKey, log, checkpointEvery: config.auditCheckpointEvery, scrub });
  const queues = createQueues({ connection: bullmq, prefix });
  const store = createRunStore({
    redis,
    prefix,
    clock,
    onChanged: async ({ after }) => queues.refreshCard(after.id, after.version),
  });

  const index = createRunIndex({ redis, prefix });
  const followUps = createFollowUps({ redis, prefix });
  const pokes = createPokes({ redis, prefix });

  // Repository code (checks) runs only here; `none` only when the policy says so in as many words.
  const sandbox = options.sandbox ?? (config.policy.sandbox === 'none' ? createUnsandboxed() : createBubblewrapSandbox({ workerUid: process.getuid?.() ?? 0, onCleanupError: (err: unknown) => log.warn({ err }, 'sandbox: a scratch copy could not be removed (start-up sweeps it)') }));

  // The real gates, when their outside systems are configured; otherwise those gates stay "not configured".
  const git = createGit({ log });
  const workRoot = options.workRoot ?? join(tmpdir(), 'shipgate-workspaces');
  const githubAuth =
    config.github.app !== undefined
      ? { kind: 'app' as const, appId: config.github.app.appId, privateKey: config.github.app.privateKey, installationId: config.github.app.installationId }
      : config.github.token !== undefined
        ? { kind: 'token' as const, token: config.github.token }
        : undefined;
  const modelConfigured = config.anthropic.apiKey !== undefined || config.anthropic.baseUrl !== undefined;
  const steps: GateSteps = { ...options.steps };
  if (githubAuth !== undefined && modelConfigured) {
    const github = createGitHubRest({
      apiUrl: config.github.apiUrl,
      auth: githubAuth,
      log,
      metrics,
      retry: { retryAfterBaseMs: options.tuning?.githubRetryAfterBaseMs },
      limiterId: options.tuning?.githubLimiterId,
      // Shared by every worker, so a poll by any of them can be a 304 (SPEC §10).
      etagCache: createEtagCache({ redis, prefix }),
      scrub,
      onSecret: (secret) => scrubber.add(secret),
    });
    const model = createAnthropicModel({ apiKey: config.anthropic.apiKey, baseUrl: config.anthropic.baseUrl, log, metrics, maxRetries: options.tuning?.modelMaxRetries, scrub });
    // TRUST BOUNDARY (issue 7): the agent step and git (src/git/git.ts, src/agent/check-runner.ts) are
    // being rewritten; they are to take `scrub` for check output and commit text (quotedForCommit).
    steps.agent ??= createAgentStep({
      policy: config.policy,
      policyFileName: basename(config.policyPath),
      github,
      git,
      model,
      modelId: config.anthropic.model,
      workRoot,
      clock,
      checkTimeoutMs: options.tuning?.checkTimeoutMs,
      followUps,
      sandbox,
      scrub,
    });
    steps.pr ??= createPrStep({ github, chat, scrub });
    steps.ci ??= createCiStep({
      policy: config.policy,
      github,
      index,
      clock,
      firstPollMs: options.tuning?.firstPollMs,
      requiredChecksCache: createTtlCache({ redis, prefix, ttlSeconds: 600 }),
      followUps,
      scrub,
    });
    steps.merge ??= createMergeStep({ github, clock, firstPollMs: options.tuning?.firstPollMs });
  }

  const groups = cachedGroups(groupsOf([chat.principals]), { ttlMs: 60_000, now: () => clock().getTime() });
  const workers: Worker[] = [];
  let server: Server | undefined;
  let cancellationClose: (() => Promise<void>) | undefined;
  let boundPort = config.port;

  metrics.onCollect(async (set) => {
    for (const [name, queue] of [
      [RUN_QUEUE, queues.runs],
      [CHAT_QUEUE, queues.chat],
    ] as const) {
      const counts = await queue.getJobCounts('waiting', 'active', 'delayed', 'failed');
      for (const [state, value] of Object.entries(counts)) set.queueDepth(name, state, value);
    }
    const active = await store.listActive();
    for (const state of ACTIVE_RUN_STATES) set.activeRuns(state, active.filter((r) => r.state === state).length);
  });

  /** A GitHub event about a commit or PR we watch: look at the run now instead of at its next poll. */
  async function onGitHubEvent(event: GitHubEvent): Promise<void> {
    const keys: RunIndexKey[] = [{ kind: 'commit', repo: event.repo, sha: event.headSha }];
    if (event.kind === 'pull_request') keys.push({ kind: 'pull', repo: event.repo, number: event.number });
    const runIds = new Set((await Promise.all(keys.map((key) => index.find(key)))).flat());
    for (const runId of runIds) {
      const run = await store.get(runId);
      if (run === undefined || (run.state !== 'waiting' && run.state !== 'running')) continue;
      // If the gate is being evaluated right now, the poke makes it look again as soon as it ends pending.
      await pokes.poke(runId);
      if (run.state === 'waiting') await queues.wakeRun(runId, run.jobSeq);
      log.info({ runId, event: event.kind, deliveryId: event.deliveryId }, 'webhook woke the run');
    }
  }

  // A finished run's working copy is no longer needed.
  const onRunEnded = async (run: { id: string }): Promise<void> => git.removeWorkspace(workspaceDir(workRoot, run.id));

  async function recoverRuns(): Promise<void> {
    // Insurance against a crash between recording a run's next job and adding it: make sure every
    // run that should have a job has one. Adding an existing job id is a no-op.
    for (const run of await store.listActive()) {
      if (run.state === 'queued' || run.state === 'running' || run.state === 'cancelling') {
        // wakeRun also retries a job BullMQ failed for good (e.g. stalled twice).
        await queues.wakeRun(run.id, run.jobSeq);
      }
    }
  }

  return {
    store,
    audit,
    queues,
    metrics,
    scrubber,
    closed: consoleChat?.closed ?? new Promise<void>(() => undefined),
    port: () => boundPort,

    async start() {
      await waitForRedis(redis, config.redisUrl);
      const cancellation = await createCancellation({ publisher: redis, subscriber, prefix });
      cancellationClose = () => cancellation.close();

      if (runsWorker) {
        try {
          await sandbox.probe();
        } catch (error) {
          if (error instanceof SandboxUnavailableError) throw new ConfigError([`sandbox: ${error.message}.`]);
          throw error;
        }
        if (!sandbox.isolated) log.warn({ sandbox: sandbox.kind }, 'checks run UNSANDBOXED (policy sandbox: none): repository code runs as the worker');
        const runProcessor = createRunProcessor({
          store,
          audit,
          queues,
          steps,
          cancellation,
          clock,
          log,
          metrics,
          pokes,
          onRunEnded,
          maxRunMinutes: config.policy.budgets.maxRunMinutes,
          scrub,
        });
        const runWorker = new Worker<AdvanceJob>(RUN_QUEUE, runProcessor, {
          connection: bullmq,
          prefix: `${prefix}:bull`,
          concurrency: options.concurrency ?? 8,
          ...RECOVERY,
        });
        runWorker.on('failed', (job, error) => {
          if (job === undefined) return;
          log.warn({ runId: job.data.runId, attempt: job.attemptsMade, err: error }, 'run job failed');
          // A job that will not be retried (attempts used up, or stalled twice, which BullMQ fails
          // without counting an attempt) must still end its run.
          job
            .getState()
            .then(async (state) => {
              if (state === 'failed') await failRun({ store, audit, queues, clock, log, onRunEnded, scrub }, job.data.runId, `internal error after retries: ${error.message}`);
            })
            .catch((err: unknown) => log.error({ runId: job.data.runId, err }, 'could not record run failure'));
        });
        const chatProcessor = createChatProcessor({ chat, store, redis, prefix, log, updateIntervalMs: options.cardUpdateIntervalMs,
          index,
          command: config.policy.command,
          unsandboxedChecks: !sandbox.isolated,
          scrub,
          // Stay well under Slack's per-workspace write limits (SPEC §10: zero 429s under a burst).
          writes: createWriteLimiter({ redis, prefix, perSecond: 10 }),
        });
        const chatWorker = new Worker<ChatJob>(CHAT_QUEUE, chatProcessor, {
          connection: bullmq,
          prefix: `${prefix}:bull`,
          concurrency: 4,
          ...RECOVERY,
        });
        chatWorker.on('failed', (job, error) => {
          log.warn({ runId: job?.data.runId, kind: job?.data.kind, attempt: job?.attemptsMade, err: error }, 'chat job failed');
        });
        for (const worker of [runWorker, chatWorker]) {
          worker.on('error', (error) => log.error({ err: error }, 'worker error'));
        }
        workers.push(runWorker, chatWorker);
        await recoverRuns();
      }

      // Ephemeral answers (run status, the audit trail) quote gate summaries: scrubbed like every other chat write.
      const scrubbed =
        <E>(handle: (event: E) => Promise<CommandReply>) =>
        async (event: E): Promise<CommandReply> => {
          const reply = await handle(event);
          return reply.ephemeral === undefined ? reply : { ...reply, ephemeral: mapRichText(reply.ephemeral, scrub) };
        };
      const handlers: ChatHandlers = {
        onCommand: scrubbed(createShipCommand({ policy: config.policy, store, audit, queues, cancellation, groups, clock, log, metrics })),
        onAction: scrubbed(createRunActions({ policy: config.policy, store, audit, queues, cancellation, groups, clock, log })),
        onMention: scrubbed(createFollowUpHandler({ store, audit, queues, followUps, index, command: config.policy.command, log })),
      };

      // The web role serves what its adapters declare; a worker serves health, readiness and metrics only.
      const routes: HttpRoute[] = [];
      if (runsWeb) {
        routes.push(...(slack?.routes ?? []));
        if (config.github.webhookSecret !== undefined) routes.push(githubWebhookRoute({ secret: config.github.webhookSecret, log, onEvent: onGitHubEvent }));
      }
      server = createHttpServer({
        routes,
        ready: async () => {
          // Answer from the connection state first: while Redis is down a PING waits through
          // maxRetriesPerRequest reconnect attempts, whose backoff grows to 5 s each.
          if (redis.status !== 'ready') return false;
          const timeout = new Promise<'timeout'>((resolve) => setTimeout(resolve, 1_000, 'timeout').unref());
          return (await Promise.race([redis.ping(), timeout])) === 'PONG';
        },
        metrics,
        log,
      });
      server.listen(config.port);
      await once(server, 'listening');
      const address = server.address();
      boundPort = typeof address === 'object' && address !== null ? (address satisfies AddressInfo).port : config.port;

      if (runsWeb) {
        await slack?.start(handlers);
        await consoleChat?.start(handlers);
      }
      log.info({ role: config.role, chat: config.chat.kind, port: boundPort }, 'shipgate started');
    },

    async stop() {
      log.info('shipgate stopping');
      // Stop taking work first, then let in-flight jobs finish (BullMQ waits for them on close).
      if (server !== undefined) {
        const closing = once(server, 'close');
        server.close();
        server.closeIdleConnections();
        await closing;
      }
      await slack?.stop();
      await consoleChat?.stop();
      await settleInit(workers);
      await Promise.all(workers.map((worker) => worker.close()));
      await queues.close();
      await cancellationClose?.();
      // Every append of this process is done now: record the head outside Redis (SPEC §7).
      await audit.close();
      await Promise.all([redis.quit(), subscriber?.quit()]);
      await git.close();
      log.info('shipgate stopped');
    },
  };
}
