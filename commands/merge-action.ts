import type { AuditLog } from '../src/audit/audit-log.js';
import type { Policy } from '../src/config/policy.js';
import { isPrincipal } from '../src/domain/authorise.js';
import { currentGate, type Run } from '../src/domain/run.js';
import { withVouchedGroups, type Groups } from '../src/domain/principals.js';
import type { Logger } from '../src/log.js';
import type { ActionEvent, CommandReply } from '../src/ports/chat.js';
import type { MergeClickPort } from '../src/ports/github.js';
import type { Queues } from '../src/queue/queues.js';
import { code, plainText, principal, rich, type RichText } from '../src/render/view.js';
import type { Pokes } from '../src/store/pokes.js';
import type { RunStore } from '../src/store/run-store.js';

export interface MergeActionDeps {
  policy: Policy;
  store: Pick<RunStore, 'get'>;
  audit: Pick<AuditLog, 'append'>;
  queues: Pick<Queues, 'wakeRun'>;
  pokes: Pick<Pokes, 'poke'>;
  groups: Groups;
  forge: MergeClickPort;
  log: Logger;
}

/**
 * The Merge button of local mode (SPEC §8: `merge: { requireApproval: true }`): four eyes, like the
 * production approval. The requester may not press it; anyone else who may request runs on the
 * repository may. The click only records who clicked (in the forge) and wakes the run: the merge
 * gate merges, fast-forward only, when it next looks and CI is still green. Refusals are answered
 * to the clicker alone and audited.
 */
export function createMergeAction(deps: MergeActionDeps): (event: ActionEvent) => Promise<CommandReply> {
  async function refuse(event: ActionEvent, run: Run | undefined, reason: RichText): Promise<CommandReply> {
    await deps.audit.append({
      type: 'action.refused',
      actor: event.userId,
      runId: run?.id ?? event.value,
      data: { action: event.actionId, reason: plainText(reason) },
      key: `action.refused.${event.deliveryId}`,
    });
    deps.log.info({ runId: run?.id, userId: event.userId }, 'merge click refused');
    return { ephemeral: reason };
  }

  return async function handleMerge(event) {
    const run = await deps.store.get(event.value);
    if (run === undefined) return { ephemeral: rich`There is no run ${event.value}.` };
    const number = run.artifacts.pr?.number;
    if (!deps.forge.mergesOnClick(run.repo) || number === undefined)
      return refuse(
        event,
        run,
        rich`${run.repo} does not merge on a click: its pull requests merge by the repository's own rules.`,
      );
    if (currentGate(run)?.kind !== 'merge' || run.artifacts.merge?.awaitingClick !== true)
      return refuse(event, run, rich`Run ${run.id} is not waiting for a Merge click now (it is ${run.state}).`);
    if (event.userId === run.requester.userId)
      return refuse(
        event,
        run,
        rich`You requested run ${run.id}, so someone else must merge it (${code('merge: { requireApproval: true }')} in shipgate.yaml): four eyes.`,
      );
    const requesters = deps.policy.repos[run.repo]?.requesters;
    if (requesters !== undefined && !(await isPrincipal(event.userId, requesters, withVouchedGroups(deps.groups, event.userId, event.groups))))
      return refuse(event, run, rich`Only people who may request runs on ${run.repo} may merge its changes.`);

    const sha = run.artifacts.agent?.commitSha;
    if (sha === undefined) return refuse(event, run, rich`Run ${run.id} has no pushed commit to merge.`);
    const outcome = await deps.forge.approveMerge(run.repo, number, event.userId, sha);
    if (outcome === 'moved')
      return refuse(event, run, rich`Pull request #${String(number)} moved on since this card showed it; look at the new change and click again when it is ready.`);
    if (outcome === 'already')
      return {
        ephemeral: rich`Pull request #${String(number)} already has its Merge click for this commit; it merges once CI is green.`,
      };
    if (outcome !== 'approved')
      return refuse(
        event,
        run,
        rich`Pull request #${String(number)} of run ${run.id} is not open for a merge any more.`,
      );
    await deps.audit.append({
      type: 'merge.approved',
      actor: event.userId,
      runId: run.id,
      data: {
        pr: number,
        commit: sha,
        requester: run.requester.userId,
        ...(event.userName === undefined ? {} : { userName: event.userName }),
      },
      key: `${run.id}.merge.approved.${String(number)}.${sha}`,
    });
    // Poke, then wake: the merge gate merges when it looks (see wake-runs.ts for the order).
    await deps.pokes.poke(run.id);
    const latest = await deps.store.get(run.id);
    if (latest?.state === 'waiting') await deps.queues.wakeRun(run.id, latest.jobSeq);
    deps.log.info({ runId: run.id, pr: number, by: event.userId }, 'merge click recorded');
    return {
      ephemeral: rich`Merging #${String(number)} of run ${run.id} for ${principal(run.requester.userId)}; the thread says when it is merged.`,
    };
  };
}
