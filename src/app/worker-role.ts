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

/** BullMQ's lock and stalled-job settings, the same for the run, chat and maintenance workers. */
export interface RecoverySettings {
  lockDuration: number;
  stalledInterval: number;
  /** Stalls a job survives (BullMQ's default is 1). */
  maxStalledCount: number;
}

/**
 * Crash recovery (issue 14). A killed worker's job comes back once its lock lapses: the lock had
 * 3/4 to all of `lockDuration` left at the kill (see below), and the next stalled check (one per
 * `stalledInterval` across all workers: BullMQ guards it with a shared key) moves the job back
 * to wait, where an idle worker takes it at once. Kill → moving again: 3–5 s (with 15 s / 5 s it
 * was 11–20 s). `npm run bench` measures both.
 *
 * Why a 4 s lock does not cut live jobs short: BullMQ 5.81's lock manager ticks every
 * lockDuration/4 and extends every lock it has not extended for as long, so a lock is renewed
 * about every second (the first time 2 s after the pick-up), one EVALSHA per worker and tick. A
 * live job loses its lock only when its process cannot run that timer (or reach Redis) for 3 s
 * (2 s right after the pick-up). Nothing in a worker holds the event loop that long: git, checks,
 * the sandbox and the model are child processes and sockets; the longest synchronous stretches
 * are a page of 1,000 audit rows hashed (verify, export), a card rendered, a GC pause — tens to a
 * few hundred ms. Redis round trips are well under a millisecond here and a few on a network;
 * a dropped connection is retried after 200 ms, 400 ms, … (src/redis.ts), so a blip of a second
 * or so is absorbed too.
 *
 * When a renewal is missed anyway (a Redis failover, a frozen VM), a second worker may advance the
 * run while the first still does: double work, never a double effect. Each job re-reads the run
 * and stores a verdict only by compare-and-set while it still owns the gate (run-processor.ts: a
 * stale verdict leaves no trace), audit events and replies are keyed, pushes never force, a second
 * pull request for the branch is refused and the open one reused, and the Promotion's
 * look-then-create holds a claim (src/store/claims.ts). What it wastes is a second model
 * conversation, which is why the margins above are seconds and not milliseconds.
 *
 * maxStalledCount: a kill is a stall, and BullMQ counts a job's stalls for its whole life (never
 * reset). Past the count it fails the job on its next pick-up ("job stalled more than allowable
 * limit") without retrying it, and the failure policy ends the run failed. The default, 1, failed
 * a run whose long agent step lived through two crashes; 5 lets a job survive a few crashes or
 * missed renewals, and still stops a poison job that crashes every worker taking it, at the sixth.
 *
 * The worst case, 5 s, also stays well inside the reply order's patience
 * (REPLY_ORDER_PATIENCE_MS, 15 s): a killed reply job is back before the replies behind it
 * give up waiting for it, so a crash does not reorder a thread (with 15 s / 5 s it could take 20 s).
 * The price is small: every worker runs the stalled check script once a second per queue (all but
 * one return at once), and one lock renewal per second while it holds jobs.
 */
export const RECOVERY: RecoverySettings = { lockDuration: 4_000, stalledInterval: 1_000, maxStalledCount: 5 };

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
  /** Lock and stall settings (default RECOVERY); only the recovery benchmark passes others, for its baseline. */
  recovery?: RecoverySettings | undefined;
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
  const recovery = deps.recovery ?? RECOVERY;
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
        ...recovery,
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
        ...recovery,
      });
      chatWorker.on('failed', (job, error) => {
        log.warn(
          { runId: job?.data.runId, kind: job?.data.kind, attempt: job?.attemptsMade, err: error },
          'chat job failed',
        );
      });
      // The periodic reconcile (issue 14): one job per interval across every worker (a BullMQ job
      // scheduler, upserted by each: the same id), which gives every run without a job its job.
      maintenance = new Queue(MAINTENANCE_QUEUE, { connection: bullmq, prefix: `${prefix}:bull` });
      const maintenanceWorker = new Worker(
        MAINTENANCE_QUEUE,
        async () => {
          await recoverRuns({ store, queues });
        },
        { connection: bullmq, prefix: `${prefix}:bull`, concurrency: 1, ...recovery },
      );
      maintenanceWorker.on('failed', (_job, error) => log.warn({ err: error }, 'reconcile of runs failed'));
      // Without a listener BullMQ writes a worker's errors (a lost lock, a Redis error) to the console,
      // past pino's redaction and out of the structured log.
      for (const [queue, worker] of [['runs', runWorker], ['chat', chatWorker], ['maintenance', maintenanceWorker]] as const) {
        worker.on('error', (error) => log.error({ queue, err: error }, 'worker error'));
      }
      maintenance.on('error', (error) => log.error({ queue: 'maintenance', err: error }, 'queue error'));
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
