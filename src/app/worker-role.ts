import { Queue, Worker } from 'bullmq';
import type { RedisOptions } from 'ioredis';
import { createChatProcessor } from '../../workers/chat-processor.js';
import type { GateSteps } from '../../workers/gates/gate-step.js';
import { createRunProcessor, failRun } from '../../workers/run-processor.js';
import type { Policy } from '../config/policy.js';
import type { GateKind, Run } from '../domain/run.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { ChatPort } from '../ports/chat.js';
import type { KubernetesInformers, KubernetesPort } from '../ports/kubernetes.js';
import type { SandboxPort } from '../ports/sandbox.js';
import type { Cancellation } from '../queue/cancellation.js';
import { CHAT_QUEUE, MAINTENANCE_QUEUE, RUN_QUEUE, settleInit, type AdvanceJob, type ChatJob } from '../queue/queues.js';
import type { Redis } from '../redis.js';
import type { Scrub } from '../security/scrubber.js';
import { probeSandbox } from './build-sandbox.js';
import type { Stores } from './build-stores.js';
import { RECONCILE_EVERY_MS, recoverRuns } from './recover-runs.js';
import { runFailurePolicy } from './run-failure-policy.js';
import { wakeRunsOnKubernetesChange } from './wake-runs.js';

/** The chat worker's ceiling on job starts per second (all workers together); see its limiter. */
const CHAT_JOB_STARTS_PER_SECOND = 200;

/**
 * A job whose worker was killed is re-run once its lock expires. Locks are
 * renewed every lockDuration/2 while a job runs, so a shorter lock only
 * shortens recovery after a crash (default 30 s) without cutting live jobs short.
 */
const RECOVERY = { lockDuration: 15_000, stalledInterval: 5_000 } as const;

export interface WorkerRoleDeps {
  policy: Policy;
  stores: Stores;
  chat: ChatPort;
  steps: GateSteps;
  /** The gates without a step and why; logged at start (a run waits at such a gate). */
  notConfigured: Partial<Record<GateKind, string>>;
  sandbox: SandboxPort;
  cancellation: Cancellation;
  /** Clean-up once a run is terminal (its workspace). */
  onRunEnded: (run: Run) => Promise<void>;
  redis: Redis;
  bullmq: RedisOptions;
  prefix: string;
  clock: () => Date;
  log: Logger;
  metrics: Metrics;
  scrub: Scrub;
  /** Run worker concurrency per process (default 8). */
  concurrency?: number | undefined;
  /** Card update spacing; SPEC §10 asks for at least 3 s. */
  cardUpdateIntervalMs?: number | undefined;
  /** The shared Kubernetes informers the deploy gates read, when the policy needs a cluster and one is configured. */
  kubernetes?: (KubernetesInformers & Pick<KubernetesPort, 'get' | 'subscribe'>) | undefined;
  /** false: informer events wake no run (the benchmark's polling baseline only; see ShipgateOptions). */
  kubernetesWakeUps?: boolean | undefined;
}

export interface WorkerRole {
  /** Probes the sandbox (a worker that cannot isolate checks does not start), starts both queues' workers, recovers runs. */
  start(): Promise<void>;
  /** Aborts the steps in flight and hands their jobs back, then closes the workers (in seconds, whatever ran). */
  close(): Promise<void>;
}

/** The worker role (SPEC §8): the run and chat queues' BullMQ workers. */
export function createWorkerRole(deps: WorkerRoleDeps): WorkerRole {
  const { stores, log, clock, scrub, prefix, bullmq, sandbox } = deps;
  const { store, audit, queues } = stores;
  const workers: Worker[] = [];
  let maintenance: Queue | undefined;
  let unsubscribe: (() => void) | undefined;
  // Aborted first thing on close: in-flight steps stop and their jobs go back to the queue (run-processor.ts).
  const shutdown = new AbortController();

  return {
    async start() {
      await probeSandbox(sandbox, log);
      if (Object.keys(deps.notConfigured).length > 0)
        log.info({ notConfigured: deps.notConfigured }, 'gates without a step: runs wait at them');
      const runProcessor = createRunProcessor({
        store,
        audit,
        queues,
        steps: deps.steps,
        cancellation: deps.cancellation,
        clock,
        log,
        metrics: deps.metrics,
        pokes: stores.pokes,
        onRunEnded: deps.onRunEnded,
        maxRunMinutes: deps.policy.budgets.maxRunMinutes,
        scrub,
        notConfigured: deps.notConfigured,
        shutdown: shutdown.signal,
      });
      const runWorker = new Worker<AdvanceJob>(RUN_QUEUE, runProcessor, {
        connection: bullmq,
        prefix: `${prefix}:bull`,
        concurrency: deps.concurrency ?? 8,
        ...RECOVERY,
      });
      const onRunJobFailed = runFailurePolicy({
        log,
        failRun: (runId, reason) =>
          failRun({ store, audit, queues, clock, log, onRunEnded: deps.onRunEnded, scrub }, runId, reason),
      });
      runWorker.on('failed', (job, error) => void onRunJobFailed(job, error));

      const chatProcessor = createChatProcessor({
        chat: deps.chat,
        store,
        outbox: stores.outbox,
        log,
        updateIntervalMs: deps.cardUpdateIntervalMs,
        index: stores.index,
        command: deps.policy.command,
        unsandboxedChecks: !sandbox.isolated,
        scrub,
        writes: { limiter: stores.chatWrites, hold: (ms) => queues.chat.rateLimit(ms) },
        approvals: stores.approvals,
        audit: stores.audit,
        clock: deps.clock,
      });
      const chatWorker = new Worker<ChatJob>(CHAT_QUEUE, chatProcessor, {
        connection: bullmq,
        prefix: `${prefix}:bull`,
        concurrency: 4,
        // BullMQ honours a queue-wide hold (`Queue.rateLimit`, taken when chat writes are over budget)
        // only on workers with a limiter. This one counts job starts, not writes: a ceiling on churn
        // (jobs that wait their turn start again) well above the write budget, so it never binds
        // real writes; the write budget itself is counted by `stores.chatWrites`.
        limiter: { max: CHAT_JOB_STARTS_PER_SECOND, duration: 1_000 },
        ...RECOVERY,
      });
      chatWorker.on('failed', (job, error) => {
        log.warn(
          { runId: job?.data.runId, kind: job?.data.kind, attempt: job?.attemptsMade, err: error },
          'chat job failed',
        );
      });
      for (const worker of [runWorker, chatWorker]) {
        worker.on('error', (error) => log.error({ err: error }, 'worker error'));
      }
      // The periodic reconcile (issue 14): one job per interval across every worker (a BullMQ job
      // scheduler, upserted by each: the same id), which gives every run without a job its job.
      maintenance = new Queue(MAINTENANCE_QUEUE, { connection: bullmq, prefix: `${prefix}:bull` });
      const maintenanceWorker = new Worker(
        MAINTENANCE_QUEUE,
        async () => {
          await recoverRuns({ store, queues });
        },
        { connection: bullmq, prefix: `${prefix}:bull`, concurrency: 1, ...RECOVERY },
      );
      maintenanceWorker.on('failed', (_job, error) => log.warn({ err: error }, 'reconcile of runs failed'));
      workers.push(runWorker, chatWorker, maintenanceWorker);
      // Started means connected: a stop right after start (the console at end of input) must not close
      // a connection whose handshake is still in flight (see settleInit).
      await Promise.all(workers.map((worker) => worker.waitUntilReady()));
      await recoverRuns({ store, queues });
      await maintenance.upsertJobScheduler('reconcile-runs', { every: RECONCILE_EVERY_MS }, { name: 'reconcile-runs', opts: { removeOnComplete: true, removeOnFail: 100 } });
      if (deps.kubernetes !== undefined && deps.kubernetesWakeUps !== false) {
        // Every informer event wakes the runs that follow the object (SPEC §5); the gates re-read the caches.
        unsubscribe = deps.kubernetes.subscribe(
          wakeRunsOnKubernetesChange({
            index: stores.index,
            store,
            pokes: stores.pokes,
            queues,
            log,
            kubernetes: deps.kubernetes,
          }),
        );
      }
      // Not awaited: an unreachable cluster must not hold the worker's start (the informers retry with
      // backoff and log each failure); the deploy gates read whatever the caches hold.
      deps.kubernetes
        ?.start()
        .catch((error: unknown) => log.error({ err: error }, 'kubernetes informers could not start'));
    },

    async close() {
      shutdown.abort(new Error('shipgate is shutting down'));
      unsubscribe?.();
      await deps.kubernetes?.stop();
      await settleInit(workers);
      await Promise.all(workers.map((worker) => worker.close()));
      if (maintenance !== undefined) {
        await settleInit([maintenance]);
        await maintenance.close();
      }
    },
  };
}
