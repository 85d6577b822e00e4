import { createHash, randomBytes } from 'node:crypto';
import type { AuditLog } from '../src/audit/audit-log.js';
import type { Policy } from '../src/config/policy.js';
import {
  activeRunLimitReason,
  authoriseCancel,
  authoriseRunRequest,
  authoriseView,
  unknownRunReason,
  visibleRuns,
} from '../src/domain/authorise.js';
import { parseCommand } from '../src/domain/command.js';
import { withVouchedGroups, type Groups } from '../src/domain/principals.js';
import { cannotContinue, currentGate, isTerminal, newRun, requestCancellation, retryRun, type Run } from '../src/domain/run.js';
import type { Logger } from '../src/log.js';
import type { Metrics } from '../src/metrics.js';
import type { CommandEvent, CommandReply, PrincipalId } from '../src/ports/chat.js';
import type { Cancellation } from '../src/queue/cancellation.js';
import type { Queues } from '../src/queue/queues.js';
import { renderHelp, renderRunStatus, renderStatusList } from '../src/render/card.js';
import { code, plainText, rich, type RichText } from '../src/render/view.js';
import { ActiveRunLimitError, type RunStore } from '../src/store/run-store.js';

export interface ShipCommandDeps {
  policy: Policy;
  store: RunStore;
  audit: AuditLog;
  queues: Queues;
  cancellation: Cancellation;
  /** Which principals are groups and who is in them (the chat adapters'; cached). */
  groups: Groups;
  clock: () => Date;
  log: Logger;
  metrics?: Metrics | undefined;
  newRunId?: () => string;
}

const RUN_ID_ALPHABET = '0123456789abcdefghijklmnopqrstuvwxyz';

/**
 * Run ids: `sg-` and 8 characters of [0-9a-z], short enough to type, distinct from words in a task.
 * Random bytes are drawn 4 KiB ahead, 8 per id: one call into the CSPRNG per 512 ids instead of one
 * per id (it showed in the ack path's profile).
 */
export function runIdGenerator(): () => string {
  let pool = Buffer.alloc(0);
  let at = 0;
  return () => {
    if (at + 8 > pool.length) {
      pool = randomBytes(4096);
      at = 0;
    }
    let id = 'sg-';
    for (let i = 0; i < 8; i++) id += RUN_ID_ALPHABET[(pool[at + i] ?? 0) % 36] ?? '0';
    at += 8;
    return id;
  };
}

/**
 * The `/ship` command (SPEC §2). It only parses, authorises, writes to Redis
 * and enqueues; every chat post happens later in the chat worker, so the
 * adapter can ack well within Slack's 3 s.
 */
export function createShipCommand(deps: ShipCommandDeps): (event: CommandEvent) => Promise<CommandReply> {
  const { policy, store, audit, queues, clock } = deps;
  const newRunId = deps.newRunId ?? runIdGenerator();

  async function refuse(event: CommandEvent, reason: RichText, data: Record<string, unknown> = {}): Promise<CommandReply> {
    await audit.append({
      type: 'command.refused',
      actor: event.userId,
      data: { channel: event.channelId, text: event.text, reason: plainText(reason), ...data },
      key: `refused.${event.deliveryId}`,
    });
    deps.log.info({ userId: event.userId, channel: event.channelId, reason }, 'command refused');
    return { ephemeral: reason };
  }

  /** A run that would exceed the policy's active-run limits: refused, saying which limit and how to make room. */
  function refuseOverLimit(
    event: CommandEvent,
    refusal: ActiveRunLimitError['refusal'],
    data: Record<string, unknown>,
    requester: PrincipalId = event.userId,
  ): Promise<CommandReply> {
    if (refusal.reason === 'user-limit') {
      const limit = policy.limits.activeRunsPerUser;
      const hit = { kind: 'per-user', limit, activeRunIds: refusal.activeRunIds, for: requester === event.userId ? undefined : requester } as const;
      const reason = activeRunLimitReason(hit, policy.command);
      return refuse(event, reason, { ...data, limit: 'activeRunsPerUser', max: limit, activeRuns: refusal.activeRunIds });
    }
    const limit = policy.limits.activeRuns;
    const reason = activeRunLimitReason({ kind: 'global', limit, active: refusal.active }, policy.command);
    return refuse(event, reason, { ...data, limit: 'activeRuns', max: limit, active: refusal.active });
  }

  /**
   * The run, if it exists and the asker may see it (SPEC §6); otherwise undefined, and the caller
   * answers as for an unknown id. A refused look at an existing run is audited on that run.
   */
  async function findRun(event: CommandEvent, runId: string): Promise<Run | undefined> {
    const run = await store.get(runId);
    if (run === undefined) return undefined;
    const audience = { repo: run.repo, requesterId: run.requester.userId, channelId: run.chat.channel };
    const decision = await authoriseView(policy, audience, { userId: event.userId, channelId: event.channelId }, withVouchedGroups(deps.groups, event.userId, event.groups));
    if (decision.allowed) return run;
    await audit.append({
      type: 'command.refused',
      actor: event.userId,
      runId: run.id,
      data: { channel: event.channelId, text: event.text, reason: plainText(decision.reason) },
      key: `refused.${event.deliveryId}`,
    });
    deps.log.info({ userId: event.userId, channel: event.channelId, runId: run.id }, 'run hidden from asker');
    return undefined;
  }

  const unknownRun = (runId: string): CommandReply => ({ ephemeral: unknownRunReason(runId, policy.command) });

  async function startRun(event: CommandEvent, repo: string, task: string): Promise<CommandReply> {
    const decision = await authoriseRunRequest(policy, { repo, channelId: event.channelId, userId: event.userId }, withVouchedGroups(deps.groups, event.userId, event.groups));
    if (!decision.allowed) return refuse(event, decision.reason, { repo });

    const run = newRun(policy, {
      id: newRunId(),
      repo,
      task,
      requester: { userId: event.userId, name: event.userName },
      channel: event.channelId,
      now: clock(),
    });
    // The run, its indexes, its card job and its first job in one Redis script: the one round trip
    // before the ack, and no later step whose loss could leave a run without its card or its job.
    const created = await store.create(run, `command.${event.deliveryId}`, policy.limits, [queues.cardJob(run.id, run.version), queues.runJob(run.id, run.jobSeq)]);
    if (!created.created && created.reason !== 'duplicate') return refuseOverLimit(event, created, { repo });
    if (!created.created) {
      // A redelivery of a command we already took: its run and jobs were stored together, so
      // there is nothing to finish; the answer needs only the run's id.
      deps.log.info({ runId: created.runId, deliveryId: event.deliveryId }, 'duplicate command delivery');
      return { ephemeral: rich`Run ${created.runId} is already queued for this request.` };
    }
    // Its audit events (requested, queued) are written by the worker from the stored run, keyed, so
    // none is lost and the ack waits for none.
    deps.metrics?.runRequested();
    deps.log.info({ runId: run.id, repo, requester: event.userId }, 'run requested');
    return { ephemeral: rich`Queued run ${run.id} on ${repo}. Follow it in the thread of the card in this channel.` };
  }

  async function cancel(event: CommandEvent, runId: string): Promise<CommandReply> {
    const run = await findRun(event, runId);
    if (run === undefined) return unknownRun(runId);
    const decision = await authoriseCancel(policy, { repo: run.repo, requesterId: run.requester.userId }, event.userId, withVouchedGroups(deps.groups, event.userId, event.groups));
    if (!decision.allowed) return refuse(event, decision.reason, { runId });
    return requestCancel(deps, run, event.userId);
  }

  async function retry(event: CommandEvent, runId: string): Promise<CommandReply> {
    const run = await findRun(event, runId);
    if (run === undefined) return unknownRun(runId);
    if (run.state !== 'failed') {
      return { ephemeral: rich`Run ${runId} is ${run.state}; only a failed run can be retried.` };
    }
    const decision = await authoriseCancel(policy, { repo: run.repo, requesterId: run.requester.userId }, event.userId, withVouchedGroups(deps.groups, event.userId, event.groups), 'retry');
    if (!decision.allowed) return refuse(event, decision.reason, { runId });
    let change: Awaited<ReturnType<typeof store.update>>;
    try {
      // Active again, the run counts against the limits as a new one would (SPEC §1).
      change = await store.update(runId, retryRun, { limits: policy.limits });
    } catch (error) {
      if (!(error instanceof ActiveRunLimitError)) throw error;
      return refuseOverLimit(event, error.refusal, { runId }, run.requester.userId);
    }
    if (change === undefined || change.before === change.after) return { ephemeral: rich`Run ${runId} is no longer failed.` };
    await audit.append({ type: 'run.retried', actor: event.userId, runId, data: { fromGate: currentGate(change.after)?.name ?? null }, key: `${runId}.retried.${change.after.jobSeq}` });
    await queues.scheduleRun(runId, change.after.jobSeq);
    return { ephemeral: rich`Retrying run ${runId} from gate ${currentGate(change.after)?.name ?? 'the start'}.` };
  }

  async function status(event: CommandEvent, runId: string | undefined): Promise<CommandReply> {
    if (runId !== undefined) {
      const run = await findRun(event, runId);
      if (run === undefined) return unknownRun(runId);
      const positions = await queues.queuePositions();
      return { ephemeral: renderRunStatus(run, positions.get(run.id)) };
    }
    const [positions, active] = await Promise.all([queues.queuePositions(), store.listActive()]);
    const runs = await visibleRuns(policy, active, { userId: event.userId, channelId: event.channelId }, withVouchedGroups(deps.groups, event.userId, event.groups));
    return { ephemeral: renderStatusList(runs.map((run) => ({ run, queuePosition: positions.get(run.id) }))) };
  }

  // Reading, verifying and exporting the log takes longer than Slack's 3 s: the chat worker does it
  // and answers in the run's thread. The request id comes from the delivery, so a redelivered command
  // adds nothing, while asking again later gives a fresh export.
  async function auditSummary(event: CommandEvent, runId: string): Promise<CommandReply> {
    const run = await findRun(event, runId);
    if (run === undefined) return unknownRun(runId);
    const request = createHash('sha256').update(event.deliveryId).digest('hex').slice(0, 16);
    await queues.evidence({ runId: run.id, request, requestedBy: event.userId, channel: event.channelId });
    deps.log.info({ runId: run.id, by: event.userId, request }, 'evidence requested');
    return { ephemeral: rich`Audit trail of ${run.id}: the evidence summary and its JSON Lines export are on their way to the run's thread.` };
  }

  /**
   * `/ship clear`: cancels the caller's own runs that cannot continue (waiting at a gate that is not
   * configured here, e.g. after a restart without the credentials they need); `clear all`, every
   * active run of theirs. Each goes through the same cancel as `/ship cancel` (audited, confirmed in
   * its thread once its work stopped).
   */
  async function clear(event: CommandEvent, all: boolean): Promise<CommandReply> {
    const mine = (await store.listActive()).filter((run) => run.requester.userId === event.userId && run.state !== 'cancelling');
    const stuck = all ? mine : mine.filter(cannotContinue);
    if (stuck.length === 0)
      return {
        ephemeral: all
          ? rich`You have no active runs.`
          : rich`None of your runs is stuck at a gate that is not configured. ${code(`${policy.command} clear all`)} cancels every active run of yours.`,
      };
    const cleared: string[] = [];
    for (const run of stuck) {
      await requestCancel(deps, run, event.userId);
      cleared.push(run.id);
    }
    deps.log.info({ by: event.userId, runs: cleared, all }, 'runs cleared');
    return { ephemeral: rich`Cancelling ${String(cleared.length)} run${cleared.length === 1 ? '' : 's'}: ${cleared.join(', ')}. Each thread confirms once its work has stopped.` };
  }

  return async function handleShip(event) {
    const channelDefaultRepo = policy.channels[event.channelId]?.defaultRepo;
    const parsed = parseCommand(event.text, { command: policy.command, channelDefaultRepo });
    switch (parsed.kind) {
      case 'help':
        return { ephemeral: renderHelp(policy.command) };
      case 'error':
        return refuse(event, parsed.message);
      case 'status':
        return status(event, parsed.runId);
      case 'cancel':
        return cancel(event, parsed.runId);
      case 'retry':
        return retry(event, parsed.runId);
      case 'audit':
        return auditSummary(event, parsed.runId);
      case 'clear':
        return clear(event, parsed.all);
      case 'run':
        return startRun(event, parsed.repo, parsed.task);
    }
  };
}

/**
 * Records the cancel request and wakes the work. Shared by the command and the
 * Cancel button. The confirmation is posted by the worker once the run's work
 * has actually stopped (SPEC §2), not here.
 */
export async function requestCancel(
  deps: Pick<ShipCommandDeps, 'store' | 'audit' | 'queues' | 'cancellation' | 'clock' | 'log'>,
  run: Run,
  userId: string,
): Promise<CommandReply> {
  if (isTerminal(run.state)) return { ephemeral: rich`Run ${run.id} has already ended (${run.state}).` };
  if (run.state === 'cancelling') return { ephemeral: rich`Run ${run.id} is already being cancelled.` };
  const change = await deps.store.update(run.id, (latest) => requestCancellation(latest, userId, deps.clock()));
  if (change === undefined || change.before === change.after) {
    return { ephemeral: rich`Run ${run.id} has already ended or is being cancelled.` };
  }
  await deps.audit.append({ type: 'run.cancel_requested', actor: userId, runId: run.id, data: { state: change.before.state }, key: `${run.id}.cancel_requested` });
  await deps.cancellation.publish(run.id);
  await deps.queues.wakeRun(run.id, change.after.jobSeq);
  deps.log.info({ runId: run.id, by: userId }, 'cancel requested');
  return { ephemeral: rich`Cancelling run ${run.id}. The thread will confirm once its work has stopped.` };
}
