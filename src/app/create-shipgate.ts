import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import type { GateSteps } from '../../workers/gates/gate-step.js';
import { workspaceDir } from '../../workers/gates/agent/workspace.js';
import type { AuditLog } from '../audit/audit-log.js';
import { secretValues, type Config } from '../config/config.js';
import { createGit } from '../git/git.js';
import type { Logger } from '../log.js';
import { createMetrics, type Metrics } from '../metrics.js';
import type { SandboxPort } from '../ports/sandbox.js';
import { createCancellation, type Cancellation } from '../queue/cancellation.js';
import type { Queues } from '../queue/queues.js';
import { createScrubber, type Scrubber } from '../security/scrubber.js';
import type { RunStore } from '../store/run-store.js';
import { buildChat, checkPolicyIds } from './build-chat.js';
import { buildGates, type GateTuning } from './build-gates.js';
import { resolveServerBinary } from '../adapters/kubernetes-mcp/server-binary.js';
import { buildKubernetes } from './build-kubernetes.js';
import { createLocalForge } from '../adapters/local-forge/local-forge.js';
import { seedSampleRepositories } from '../adapters/local-forge/sample-repository.js';
import { localRepos } from '../config/policy.js';
import { buildSandbox } from './build-sandbox.js';
import { buildStores } from './build-stores.js';
import { collectRunMetrics } from './collect-metrics.js';
import { openConnections, redisReady, waitForRedis } from './connections.js';
import { resolveAuditKey } from './resolve-audit-key.js';
import { serveHttp, type HttpService } from './serve-http.js';
import { describeSetup, setupFields, type SetupSummary } from './setup-summary.js';
import { createWebRole } from './web-role.js';
import { createWorkerRole, type WorkerRole } from './worker-role.js';
import { wakeRunsOnGitHubEvent } from './wake-runs.js';

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
  /** Gate implementations; they take the place of the built ones, and a gate without one stays pending as "not configured". */
  steps?: GateSteps;
  /** Console chat streams (default stdin/stdout). */
  console?: { input: Readable; output: Writable };
  /** Run worker concurrency per process. */
  concurrency?: number;
  /** Card update spacing; SPEC §10 asks for at least 3 s. */
  cardUpdateIntervalMs?: number;
  /**
   * Chat writes per second across every worker (default 10: SPEC §10, zero 429s). Exists for the
   * memory benchmark (bench/deploy-bench.ts), which posts 1,000 cards and does not measure pacing.
   */
  chatWritesPerSecond?: number;
  /**
   * Whether Kubernetes informer events wake the runs that follow the changed object (default true).
   * `false` exists only for the benchmark's polling baseline (bench/deploy-bench.ts): the informer
   * caches stay fresh, but only the deploy gates' fallback poll moves a run.
   */
  kubernetesWakeUps?: boolean;
  /** Where run workspaces are cloned (default: <tmpdir>/shipgate-workspaces). */
  workRoot?: string;
  /** Where repository code runs (default: from the policy's `sandbox`). */
  sandbox?: SandboxPort;
  /** Retry pacing for outside APIs; tests shrink the waits. */
  tuning?: GateTuning;
}

export interface Shipgate {
  start(): Promise<void>;
  stop(): Promise<void>;
  /** The bound HTTP port (useful with PORT=0). */
  port(): number;
  /** The bound metrics port when METRICS_PORT is set (useful with METRICS_PORT=0); undefined otherwise. */
  metricsPort(): number | undefined;
  /** What is configured and what is not, and which variable would configure it (logged at start). */
  setup: SetupSummary;
  /** Resolves when the console chat's input closes (never in Slack mode). */
  closed: Promise<void>;
  store: RunStore;
  audit: AuditLog;
  queues: Queues;
  metrics: Metrics;
  scrubber: Scrubber;
}

/**
 * The composition root: wires shipgate from its configuration, adapters at the
 * edge, logic in the middle; each piece is built in its own module here. Roles
 * (SPEC §8): `web` takes chat input and serves the adapters' HTTP routes,
 * `worker` runs the queues, `all` does both. All shared state lives in Redis,
 * so any number of either can run side by side.
 */
/**
 * How long a shutdown waits for the Slack and GitHub requests already in flight (Slack wants an
 * answer within 3 s anyway); a client that holds its request open longer is cut.
 */
const ROUTE_DRAIN_MS = 5_000;

export function createShipgate(options: ShipgateOptions): Shipgate {
  const { config, log } = options;
  const clock = options.clock ?? (() => new Date());
  const prefix = config.redisPrefix;
  const runsWeb = config.role !== 'worker';
  const runsWorker = config.role !== 'web';

  const metrics = createMetrics();
  const chat = buildChat({ config, log, metrics, console: options.console });
  checkPolicyIds(config, [chat.port.principals]);
  // Before any connection is opened: a key problem stops the start-up with a ConfigError.
  const auditKey = resolveAuditKey(config.auditKey, log);

  const connections = openConnections({ url: config.redisUrl, subscribe: runsWorker, log });
  // Every text that leaves the worker goes through this (SPEC §4); tokens minted at run time are added to it.
  const scrubber = options.scrubber ?? createScrubber(secretValues(config));
  const scrub = scrubber.scrub;
  const stores = buildStores({
    connections,
    prefix,
    clock,
    auditKey,
    auditCheckpointEvery: config.auditCheckpointEvery,
    log,
    scrub,
    chatWritesPerSecond: options.chatWritesPerSecond,
  });
  collectRunMetrics({ metrics, queues: stores.queues, store: stores.store });

  const sandbox = options.sandbox ?? buildSandbox(config.policy, config.hostPath, log);
  const git = createGit({ log, path: config.hostPath });
  const workRoot = options.workRoot ?? join(tmpdir(), 'shipgate-workspaces');
  // Only workers evaluate gates and run the informers; a web replica never talks to the cluster.
  const local = localRepos(config.policy);
  // Local mode (SPEC §8): repositories with a path: are served on this machine instead of by GitHub.
  const localForge =
    Object.keys(local).length === 0
      ? undefined
      : createLocalForge({
          repos: local,
          git,
          store: stores.localForge,
          sandbox,
          scrub,
          log: log.child({ component: 'local-forge' }),
          clock,
          workRoot,
          ciTimeoutMs: options.tuning?.checkTimeoutMs,
          onCiFinished: (repo, sha) =>
            wakeRunsOnGitHubEvent({ index: stores.index, store: stores.store, pokes: stores.pokes, queues: stores.queues, log })({
              kind: 'checks',
              repo,
              headSha: sha,
              deliveryId: `local-ci.${sha}`,
            }),
        });
  const cluster = runsWorker ? buildKubernetes(config, log, scrub) : undefined;
  const kubernetes = cluster?.kubernetes;
  const gates = buildGates({
    config,
    log,
    metrics,
    clock,
    scrubber,
    etagCache: stores.etagCache,
    requiredChecksCache: stores.requiredChecksCache,
    chat: chat.port,
    git,
    sandbox,
    followUps: stores.followUps,
    conversations: stores.conversations,
    index: stores.index,
    claims: stores.claims,
    promotionQueue: stores.promotionQueue,
    approvals: stores.approvals,
    audit: stores.audit,
    queues: stores.queues,
    workRoot,
    kubernetes,
    clusterDiagnosis: cluster?.diagnosis,
    localForge,
    tuning: options.tuning,
    injected: options.steps,
  });

  const setup = describeSetup({
    config,
    cluster: runsWorker ? kubernetes !== undefined : undefined,
    sandbox,
    diagnosisServer: cluster === undefined ? undefined : resolveServerBinary(),
  });

  let http: HttpService | undefined;
  let metricsHttp: HttpService | undefined;
  // Set the moment stop() is called (a signal), before anything else: /readyz answers 503 from then on.
  let draining = false;
  let cancellation: Cancellation | undefined;
  let worker: WorkerRole | undefined;
  let starting: Promise<void> | undefined;
  let stopping: Promise<void> | undefined;

  return {
    store: stores.store,
    audit: stores.audit,
    queues: stores.queues,
    metrics,
    scrubber,
    setup,
    closed: chat.closed ?? new Promise<void>(() => undefined),
    port: () => http?.port ?? config.port,
    metricsPort: () => metricsHttp?.port ?? config.metricsPort,

    start() {
      starting ??= startOnce();
      return starting;
    },

    async stop() {
      draining = true;
      // A stop during start (a signal) waits for it: closing what start is still opening races it.
      await starting?.catch(() => undefined);
      stopping ??= stopOnce();
      return stopping;
    },
  };

  async function startOnce(): Promise<void> {
    log.info(setupFields(setup), 'configuration summary');
    await waitForRedis(connections.redis, config.redisUrl);
    // The queues' own connections too: a stop right after start must not close one mid-handshake.
    await Promise.all([stores.queues.runs.waitUntilReady(), stores.queues.chat.waitUntilReady()]);
    cancellation = await createCancellation({
      publisher: connections.redis,
      subscriber: connections.subscriber,
      prefix,
    });
    if (runsWorker) {
      // The sample repository of local mode, on first start (SPEC §8): a newcomer brings only a model key.
      await seedSampleRepositories(local, git, log);
      worker = createWorkerRole({
        policy: config.policy,
        stores,
        chat: chat.port,
        steps: gates.steps,
        notConfigured: gates.notConfigured,
        sandbox,
        cancellation,
        // A finished run's working copy is no longer needed, nor its place in the Kubernetes wake-up index,
        // nor in any promotion queue (leaving one wakes the next run there).
        onRunEnded: async (run) => {
          await stores.promotionQueue.leaveAll(run.id);
          await stores.index.unlinkKubernetes(run.id);
          await stores.conversations.clear(run.id);
          await git.removeWorkspace(workspaceDir(workRoot, run.id));
        },
        redis: connections.redis,
        bullmq: connections.bullmq,
        prefix,
        clock,
        log,
        metrics,
        scrub,
        concurrency: options.concurrency,
        cardUpdateIntervalMs: options.cardUpdateIntervalMs,
        kubernetes,
        kubernetesWakeUps: options.kubernetesWakeUps,
      });
      await worker.start();
    }
    const web = runsWeb
      ? createWebRole({
          policy: config.policy,
          redis: connections.redis,
          prefix,
          stores,
          chat,
          cancellation,
          githubWebhookSecret: config.github.webhookSecret,
          mergeClicks: localForge,
          clock,
          log,
          metrics,
          scrub,
        })
      : undefined;
    const ready = () => redisReady(connections.redis);
    const isDraining = () => draining;
    // PORT: the web role's routes; every role answers /healthz and /readyz there, and /metrics unless
    // METRICS_PORT gives metrics a port of their own (with health and readiness, so a worker can be
    // scraped and probed there and nothing else of it needs to be reachable).
    http = await serveHttp({
      routes: web?.routes ?? [],
      ready,
      draining: isDraining,
      metrics: config.metricsPort === undefined ? metrics : undefined,
      log,
      port: config.port,
    });
    if (config.metricsPort !== undefined) {
      metricsHttp = await serveHttp({
        routes: [],
        ready,
        draining: isDraining,
        metrics,
        log,
        port: config.metricsPort,
      });
    }
    await web?.start();
    log.info(
      { role: config.role, chat: config.chat.kind, port: http.port, metricsPort: metricsHttp?.port },
      'shipgate started',
    );
  }

  async function stopOnce(): Promise<void> {
    log.info('shipgate stopping');
    // Stop taking work first: /readyz has answered 503 since stop() was called and the routes refuse
    // new requests; the ones in flight finish. The servers keep listening until the end, so /healthz
    // stays 200 (and metrics scrapable) while in-flight jobs finish (BullMQ waits for them on close).
    try {
      await http?.settle(ROUTE_DRAIN_MS);
      await chat.stop();
      await worker?.close();
      await localForge?.idle();
      await stores.queues.close();
      await cancellation?.close();
      // Every append of this process is done now: record the head outside Redis (SPEC §7).
      await stores.audit.close();
      await connections.close();
      await git.close();
    } finally {
      await Promise.all([http?.close(), metricsHttp?.close()]);
    }
    log.info('shipgate stopped');
  }
}
