import { DelayedError, type Job } from 'bullmq';
import type { AuditLog } from '../src/audit/audit-log.js';
import {
  applyOutcome,
  completeRun,
  currentGate,
  finishCancellation,
  forceFail,
  isStopping,
  isTerminal,
  markNotConfigured,
  runDeadlineMs,
  startGate,
  type GateKind,
  type GateOutcome,
  withNextJob,
  type Run,
} from '../src/domain/run.js';
import { ExternalOutageError, RefusedError } from '../src/errors.js';
import type { Logger } from '../src/log.js';
import type { Metrics } from '../src/metrics.js';
import type { Cancellation } from '../src/queue/cancellation.js';
import { advanceJobId, RUN_JOB_ATTEMPTS, type AdvanceJob, type Queues } from '../src/queue/queues.js';
import type { Scrub } from '../src/security/scrubber.js';
import type { Pokes } from '../src/store/pokes.js';
import type { RunStore } from '../src/store/run-store.js';
import type { GateAuditType, GateSteps, StepReply } from './gates/gate-step.js';

export const BOT_ACTOR = 'shipgate';

export interface RunProcessorDeps {
  store: RunStore;
  audit: AuditLog;
  queues: Queues;
  steps: GateSteps;
  cancellation: Cancellation;
  clock: () => Date;
  log: Logger;
  metrics?: Metrics | undefined;
  /** budgets.maxRunMinutes: a gate still pending after this fails the run. */
  maxRunMinutes?: number | undefined;
  /** Webhook marks: a pending gate that was poked while it ran re-checks at once. */
  pokes?: Pokes | undefined;
  /** Clean-up once a run is terminal (e.g. removing its workspace); failures are logged, not retried. */
  onRunEnded?: ((run: Run) => Promise<void>) | undefined;
  /**
   * Secret scrubbing of every verdict (summary, feedback for the agent) and forced-end reason before
   * it is audited, posted, stored or handed back to the agent (SPEC §4): steps put check output, CI
   * logs and error messages in them.
   */
  scrub: Scrub;
  /** Why a gate kind has no step here (the composition root's gate table): shown on the card and audited. */
  notConfigured: Partial<Record<GateKind, string>>;
  /**
   * Aborts when this worker is shutting down (SIGTERM): the step in flight is aborted through its
   * signal and the job handed back at once for another worker (or this one after a restart); the
   * steps already resume safely, so no work is lost and the process exits in seconds.
   */
  shutdown?: AbortSignal | undefined;
}

function scrubOutcome(outcome: GateOutcome, scrub: Scrub): GateOutcome {
  return outcome.kind === 'retry-from' ? { ...outcome, summary: scrub(outcome.summary), feedback: scrub(outcome.feedback) } : { ...outcome, summary: scrub(outcome.summary) };
}

/**
 * Advances one run through its gates (SPEC §1). Each job moves the run as far
 * as it can: gates that decide quickly are chained in one job; a gate that is
 * still pending schedules a delayed job instead of holding the worker.
 *
 * Ordering rule for crash safety: the audit event and the thread reply (both
 * keyed, so idempotent) are written before the state change; a worker killed
 * in between redoes the step and re-writes the same keys, which are no-ops.
 */
export function createRunProcessor(deps: RunProcessorDeps): (job: Job<AdvanceJob>, token?: string) => Promise<void> {
  const { store, audit, queues, steps, cancellation, clock } = deps;

  async function cleanUp(run: Run, log: Logger): Promise<void> {
    try {
      await deps.onRunEnded?.(run);
    } catch (error) {
      log.warn({ err: error }, 'clean-up after the run failed');
    }
  }

  async function finalizeCancel(run: Run, log: Logger): Promise<void> {
    const by = run.cancel?.by ?? 'unknown';
    await audit.append({ type: 'run.cancelled', actor: by, runId: run.id, data: { atGate: currentGate(run)?.name ?? null }, key: `${run.id}.cancelled` });
    await queues.reply(run.id, 'ended', { type: 'ended' });
    await store.update(run.id, (latest) => finishCancellation(latest, clock()));
    deps.metrics?.runEnded('cancelled');
    log.info({ by }, 'run cancelled');
    await cleanUp(run, log);
  }

  async function endRun(run: Run, log: Logger): Promise<void> {
    await audit.append({
      type: run.state === 'done' ? 'run.done' : run.state === 'rejected' ? 'run.rejected' : run.state === 'expired' ? 'run.expired' : 'run.failed',
      actor: BOT_ACTOR,
      runId: run.id,
      data: { outcome: run.outcome ?? null },
      key: `${run.id}.ended.${run.jobSeq}`,
    });
    await queues.reply(run.id, `ended.${run.jobSeq}`, { type: 'ended' });
    deps.metrics?.runEnded(run.state);
    log.info({ state: run.state, outcome: run.outcome }, 'run ended');
    await cleanUp(run, log);
  }

  async function evaluate(run: Run, gateName: string, signal: AbortSignal, log: Logger): Promise<GateOutcome> {
    const gate = run.gates.find((g) => g.name === gateName);
    const step = gate === undefined ? undefined : steps[gate.kind];
    if (gate === undefined || step === undefined) throw new Error(`no step for gate ${gateName}`);
    const record = async (change: (latest: Run) => Partial<Pick<Run, 'artifacts' | 'links' | 'usage' | 'activity'>>): Promise<Run> => {
      const stored = await store.update(run.id, (latest) => {
        if (isTerminal(latest.state)) return undefined;
        const given = change(latest);
        // Activity is what the card shows "now": it quotes outside systems (Kargo, Argo CD, Prometheus), so it is scrubbed like a verdict.
        const patch = given.activity === undefined ? given : { ...given, activity: deps.scrub(given.activity) };
        // Unchanged polls must not bump the run (and so the card) on every look.
        const same = Object.entries(patch).every(([key, value]) => JSON.stringify(value) === JSON.stringify(latest[key as keyof Run]));
        return same ? undefined : { ...latest, ...patch };
      });
      if (stored === undefined) throw new Error(`run ${run.id} disappeared`);
      return stored.after;
    };
    const auditEvent = async (type: GateAuditType, data: Record<string, unknown>, discriminator: string, options?: { once?: boolean }): Promise<void> => {
      // The gate's attempt is part of the key: a retried or rewound gate records its own evidence, while a
      // crash-redelivery within one attempt records it once.
      const scope = options?.once === true ? 'once' : (gate.startedAt ?? 'unstarted');
      await audit.append({ type, actor: BOT_ACTOR, runId: run.id, data: { gate: gateName, ...data }, key: `${run.id}.${gateName}.${scope}.${type}.${discriminator}` });
    };
    const reply = async (discriminator: string, content: StepReply): Promise<void> => {
      // The model's words about cluster text: scrubbed like every verdict before the chat sees them.
      await queues.reply(run.id, `${gateName}.${discriminator}`, { ...content, text: deps.scrub(content.text), looked: content.looked.map((line) => deps.scrub(line)) });
    };
    try {
      return scrubOutcome(await step.run({ run, gate, signal, log: log.child({ gate: gateName }), record, audit: auditEvent, reply }), deps.scrub);
    } catch (error) {
      if (error instanceof RefusedError) return scrubOutcome({ kind: 'failed', summary: error.message }, deps.scrub);
      throw error;
    }
  }

  /**
   * A run waiting at a gate this build cannot evaluate still has a time limit (budgets are hard
   * limits, SPEC §1): one delayed job at its deadline ends it then — or, when a newer build with the
   * gate's step picked the job up by then, evaluates the gate as usual.
   */
  async function waitNotConfigured(run: Run, gateName: string): Promise<void> {
    if (deps.maxRunMinutes === undefined) return;
    const left = runDeadlineMs(run, deps.maxRunMinutes, clock().getTime()) - clock().getTime();
    if (left <= 0) {
      await failRun(deps, run.id, `the run passed its time limit of ${deps.maxRunMinutes} minutes (budgets.maxRunMinutes) while ${gateName} was not configured`);
      return;
    }
    const change = await store.update(run.id, (latest) => (isStopping(latest) || latest.jobSeq !== run.jobSeq || currentGate(latest)?.name !== gateName ? undefined : withNextJob(latest)), { silent: true });
    if (change !== undefined && change.before !== change.after) await queues.scheduleRun(run.id, change.after.jobSeq, left);
  }

  /**
   * Gives the job back to the queue, due now, without spending one of its attempts: BullMQ's way for
   * a processor to end a job it did not finish (moveToDelayed + DelayedError).
   */
  async function handBack(job: Job<AdvanceJob>, token: string | undefined, log: Logger): Promise<never> {
    try {
      await job.moveToDelayed(Date.now(), token);
      log.info('shutting down: run job handed back');
    } catch (error) {
      // The lock is gone (another worker has the job already) or Redis is: either way this worker
      // must not record a failure against the run; the job stalls back or is someone else's.
      log.warn({ err: error }, 'shutting down: the run job could not be handed back; it stalls back to the queue');
    }
    throw new DelayedError();
  }

  return async function processAdvance(job, token) {
    const { runId } = job.data;
    const log = deps.log.child({ runId, jobId: job.id });
    const initial = await store.get(runId);
    if (initial === undefined) {
      log.warn('job for an unknown run ignored');
      return;
    }
    if (job.id !== advanceJobId(runId, initial.jobSeq)) {
      // A newer job superseded this one. If this worker died between recording the newer job and
      // adding it to the queue, it would be missing: make sure it exists (an add with an existing id is a no-op).
      if (!isTerminal(initial.state)) await queues.scheduleRun(runId, initial.jobSeq, 1_000);
      log.info({ current: advanceJobId(runId, initial.jobSeq) }, 'superseded run job');
      return;
    }
    // The command that created the run answered Slack without touching the audit chain; record the
    // request here, from the stored run (keyed: the first job of the run writes it once).
    if (initial.jobSeq === 0) {
      await audit.append({
        type: 'run.requested',
        actor: initial.requester.userId,
        runId,
        data: { repo: initial.repo, task: initial.task, channel: initial.chat.channel, gates: initial.gates.map((g) => g.name), at: initial.createdAt },
        key: `${runId}.requested`,
      });
      await audit.append({ type: 'run.queued', actor: BOT_ACTOR, runId, data: {}, key: `${runId}.queued` });
    }
    const ownSeq = initial.jobSeq;
    /** True while the run still has `gateName` as its current gate and this job's sequence. */
    const owns = (run: Run, gateName: string): boolean => run.jobSeq === ownSeq && currentGate(run)?.name === gateName;
    const registration = cancellation.register(runId);
    const shutdown = deps.shutdown;
    const shuttingDown = (): boolean => shutdown?.aborted === true;
    // A step stops on either: the run's cancel, or this worker's shutdown.
    const signal = shutdown === undefined ? registration.signal : AbortSignal.any([registration.signal, shutdown]);
    try {
      for (;;) {
        // Between gates: a verdict the last step reached is stored; the next gate is another worker's.
        if (shuttingDown()) return await handBack(job, token, log);
        const run = await store.get(runId);
        if (run === undefined) return;
        if (isTerminal(run.state)) {
          // A worker may have died between storing the end and writing its audit event and reply;
          // both are keyed, so doing it again is a no-op when it did not.
          if (run.state !== 'cancelled') await endRun(run, log);
          return;
        }
        // Someone moved the run on (a retry or a follow-up scheduled a newer job): that job owns it now.
        if (job.id !== advanceJobId(runId, run.jobSeq)) {
          log.info('run job superseded while running');
          return;
        }
        if (run.state === 'cancelling') {
          await finalizeCancel(run, log);
          return;
        }
        const gate = currentGate(run);
        if (gate === undefined) {
          const done = await store.update(runId, (latest) => (isStopping(latest) ? undefined : completeRun(latest)));
          if (done?.after.state === 'done') await endRun(done.after, log);
          continue;
        }
        if (steps[gate.kind] === undefined) {
          if (gate.notConfigured !== true) {
            // The gate table names a reason for every kind without a step; a step removed from it by hand still says so.
            const reason = deps.notConfigured[gate.kind] ?? 'no step is wired for this gate';
            await audit.append({ type: 'gate.not_configured', actor: BOT_ACTOR, runId, data: { gate: gate.name, reason }, key: `${runId}.${gate.name}.not_configured` });
            await store.update(runId, (latest) => (isStopping(latest) ? undefined : markNotConfigured(latest, gate.name, reason)));
            log.warn({ gate: gate.name }, 'gate not configured; run waits there');
            // Look once more: a cancel that landed meanwhile must be finished by this job.
            continue;
          }
          await waitNotConfigured(run, gate.name);
          return;
        }
        let started = run;
        if (gate.state === 'pending') {
          // Keyed by the version it starts from: a retry after a crash before the update re-uses the key.
          await audit.append({ type: 'gate.started', actor: BOT_ACTOR, runId, data: { gate: gate.name }, key: `${runId}.${gate.name}.started.${run.version}` });
          const change = await store.update(runId, (latest) =>
            isStopping(latest) || !owns(latest, gate.name) ? undefined : startGate(latest, gate.name, clock()),
          );
          if (change === undefined || change.after.state !== 'running') continue;
          started = change.after;
        }
        const attemptKey = started.gates.find((g) => g.name === gate.name)?.startedAt ?? '';
        const timer = deps.metrics?.gateTimer(gate.kind);
        let outcome: GateOutcome;
        try {
          outcome = await evaluate(started, gate.name, signal, log);
        } catch (error) {
          // A step stopped by the run's cancel throws on its way out (a forge call's CancelledError):
          // not the step's failure nor an outage, so no failed attempt and no BullMQ backoff before
          // the cancel is finished — look at the run again now, it is cancelling.
          if (registration.signal.aborted && !shuttingDown()) {
            const latest = await store.get(runId);
            if (latest === undefined || isStopping(latest)) continue;
          }
          throw error;
        }
        if (registration.signal.aborted) continue;
        // The run may have moved on while the step ran (a follow-up rewound it, a retry took over):
        // then this verdict is stale and must leave no trace, not even an audit event or a reply.
        const now = await store.get(runId);
        if (now === undefined || !owns(now, gate.name)) continue;

        if (outcome.kind !== 'pending') {
          timer?.(outcome.kind);
          const key = `${gate.name}.${attemptKey}.${outcome.kind}`;
          await audit.append({
            type: outcome.kind === 'retry-from' ? 'gate.sent_back' : `gate.${outcome.kind}`,
            actor: BOT_ACTOR,
            runId,
            data: { gate: gate.name, summary: outcome.summary, ...(outcome.kind === 'retry-from' ? { backTo: outcome.gate } : {}) },
            key: `${runId}.${key}`,
          });
          await queues.reply(runId, key, { type: 'gate', gate: gate.name, outcome: outcome.kind, summary: outcome.summary });
        }
        const change = await store.update(runId, (latest) => {
          if (isStopping(latest) || currentGate(latest)?.name !== gate.name) return undefined;
          const applied = applyOutcome(latest, gate.name, outcome, clock());
          // A pending gate is looked at again by a new (delayed) job.
          return outcome.kind === 'pending' ? withNextJob(applied) : applied;
        });
        if (change === undefined || change.before === change.after) continue;
        log.info({ gate: gate.name, outcome: outcome.kind }, `gate ${outcome.kind}`);
        if (outcome.kind === 'pending' && deps.maxRunMinutes !== undefined && clock().getTime() > runDeadlineMs(change.after, deps.maxRunMinutes, clock().getTime())) {
          // Budgets are hard limits (SPEC §1): a run does not wait forever for CI or a merge.
          await failRun(deps, runId, `the run passed its time limit of ${deps.maxRunMinutes} minutes (budgets.maxRunMinutes) while ${gate.name} was still pending`);
          return;
        }
        if (outcome.kind === 'pending') {
          const poked = (await deps.pokes?.take(runId)) === true;
          await queues.scheduleRun(runId, change.after.jobSeq, poked ? 0 : outcome.recheckAfterMs);
          return;
        }
        if (isTerminal(change.after.state)) {
          await endRun(change.after, log);
          return;
        }
      }
    } catch (error) {
      if (error instanceof DelayedError) throw error;
      // An error of a step aborted by the shutdown (the model call, a check) is not the step's failure.
      if (shuttingDown()) return await handBack(job, token, log);
      await announceRetry(job, error, log);
      throw error;
    } finally {
      registration.release();
    }
  };

  /**
   * An outside system out of reach (GitHub, the model, …): BullMQ tries the job again with backoff.
   * Say so where people look — the card's activity and one thread reply per attempt, "retrying (n of
   * m): <reason>" — instead of leaving the card silent while the log fills. Keyed by the run's job and
   * the attempt, so a redelivery posts nothing new. Best effort: it must never hide the real error.
   */
  async function announceRetry(job: Job<AdvanceJob>, error: unknown, log: Logger): Promise<void> {
    if (!(error instanceof ExternalOutageError)) return;
    const attempts = job.opts.attempts ?? RUN_JOB_ATTEMPTS;
    const next = job.attemptsMade + 2; // attemptsMade counts the finished tries; this one is attemptsMade + 1
    if (next > attempts) return; // the last try: the failure policy ends the run with the reason
    try {
      const run = await store.get(job.data.runId);
      const gate = run === undefined ? undefined : currentGate(run);
      if (run === undefined || gate === undefined || isStopping(run)) return;
      const reason = deps.scrub(error.message).slice(0, 300);
      await queues.reply(run.id, `retrying.${run.jobSeq}.${next}`, { type: 'retrying', gate: gate.name, attempt: next, of: attempts, reason });
      await store.update(run.id, (latest) => (isTerminal(latest.state) ? undefined : { ...latest, activity: `retrying (${next} of ${attempts}): ${reason}` }));
      log.warn({ gate: gate.name, attempt: next, of: attempts, reason }, 'outside system out of reach; the job will try again');
    } catch (announceError) {
      log.warn({ err: announceError }, 'could not announce the retry');
    }
  }
}

/**
 * Ends a run as failed from outside its normal flow (retries used up, time
 * limit): the run must still reach a terminal state (SPEC §10) with the
 * reason in the thread. Audit event and reply come first, keyed, so a crash
 * in between leaves nothing half-done.
 */
export async function failRun(
  deps: Pick<RunProcessorDeps, 'store' | 'audit' | 'queues' | 'clock' | 'log' | 'onRunEnded' | 'scrub'>,
  runId: string,
  reason: string,
): Promise<void> {
  const outcome = deps.scrub(reason);
  const run = await deps.store.get(runId);
  if (run === undefined || isTerminal(run.state)) return;
  const key = `${runId}.forced-end.${run.jobSeq}`;
  await deps.audit.append({ type: 'run.failed', actor: BOT_ACTOR, runId, data: { reason: outcome }, key });
  await deps.queues.reply(runId, `forced-end.${run.jobSeq}`, { type: 'ended' });
  const change = await deps.store.update(runId, (latest) => forceFail(latest, outcome, deps.clock()));
  if (change === undefined || change.before === change.after) return;
  deps.log.error({ runId, outcome }, 'run failed');
  await deps.onRunEnded?.(change.after).catch((error: unknown) => deps.log.warn({ runId, err: error }, 'clean-up after the run failed'));
}
