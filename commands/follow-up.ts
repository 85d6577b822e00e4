import type { AuditLog } from '../src/audit/audit-log.js';
import { currentGate, FOLLOW_UP_REWINDABLE, isStopping, rewindForFollowUp, type Run } from '../src/domain/run.js';
import type { Logger } from '../src/log.js';
import type { CommandReply, MentionEvent } from '../src/ports/chat.js';
import { code, principal, rich } from '../src/render/view.js';
import type { Queues } from '../src/queue/queues.js';
import type { FollowUps } from '../src/store/follow-ups.js';
import type { RunIndex } from '../src/store/run-index.js';
import type { RunStore } from '../src/store/run-store.js';

export interface FollowUpDeps {
  store: RunStore;
  audit: AuditLog;
  queues: Queues;
  followUps: FollowUps;
  index: RunIndex;
  command: string;
  log: Logger;
}

/**
 * A mention of the bot in a run's thread (SPEC §2): the requester's
 * instruction for the agent's next iteration on the same branch, never a new
 * run. Bots never get here (the adapters drop their messages).
 */
export function createFollowUpHandler(deps: FollowUpDeps): (event: MentionEvent) => Promise<CommandReply> {
  async function findRun(event: MentionEvent): Promise<Run | undefined> {
    if (event.runId !== undefined) return deps.store.get(event.runId);
    if (event.thread === undefined) return undefined;
    const [runId] = await deps.index.find({ kind: 'thread', channel: event.channelId, message: event.thread });
    return runId === undefined ? undefined : deps.store.get(runId);
  }

  return async function handleMention(event) {
    const run = await findRun(event);
    if (run === undefined) {
      return { ephemeral: rich`Mention me inside a run's thread to give its agent an instruction. To start a run, use ${code(`${deps.command} <owner/repo> <task…>`)}.` };
    }
    if (isStopping(run)) {
      return { ephemeral: rich`Run ${run.id} has ended (${run.state}); start a new one with ${code(deps.command)}.` };
    }
    if (event.userId !== run.requester.userId) {
      await deps.audit.append({ type: 'command.refused', actor: event.userId, runId: run.id, data: { reason: 'follow-up from someone other than the requester' }, key: `followup.refused.${event.deliveryId}` });
      return { ephemeral: rich`Only the requester (${principal(run.requester.userId)}) can instruct this run's agent.` };
    }
    const text = event.text.trim();
    if (text === '') return { ephemeral: rich`Say what the agent should do, e.g. "@shipgate also add a test".` };
    const gate = currentGate(run);
    if (gate === undefined || (gate.name !== 'agent' && !FOLLOW_UP_REWINDABLE.has(gate.name))) {
      return { ephemeral: rich`The change of run ${run.id} is already merged; start a new run for further changes.` };
    }
    const added = await deps.followUps.add(run.id, { text, by: event.userId, deliveryId: event.deliveryId });
    if (!added) return {};
    await deps.audit.append({ type: 'run.follow_up', actor: event.userId, runId: run.id, data: { text }, key: `followup.${event.deliveryId}` });
    deps.log.info({ runId: run.id, gate: gate.name }, 'follow-up queued');

    if (gate.name === 'agent') return { ephemeral: rich`Queued for the agent of run ${run.id}; it reads it before committing.` };
    // Past the agent: start another iteration on the same branch now.
    const change = await deps.store.update(run.id, rewindForFollowUp);
    if (change !== undefined && change.before !== change.after) await deps.queues.scheduleRun(run.id, change.after.jobSeq);
    return { ephemeral: rich`The agent of run ${run.id} will work on it now, on the same branch and pull request.` };
  };
}
