import { authoriseCancel } from '../src/domain/authorise.js';
import { withVouchedGroups } from '../src/domain/principals.js';
import type { ActionEvent, CommandReply } from '../src/ports/chat.js';
import { APPROVE_ACTION_ID, REJECT_ACTION_ID } from '../src/render/approval.js';
import { CANCEL_ACTION_ID, MERGE_ACTION_ID } from '../src/render/card.js';
import { plainText, rich, type RichText } from '../src/render/view.js';
import { requestCancel, type ShipCommandDeps } from './ship-command.js';


/** The same collaborators as the /ship command, minus what only starting a run needs; and the approval buttons' handler. */
export type RunActionDeps = Omit<ShipCommandDeps, 'metrics' | 'newRunId'> & {
  approvalClicks?: ((event: ActionEvent) => Promise<CommandReply>) | undefined;
  /** Local mode's Merge button (commands/merge-action.ts), where a repository merges on a click. */
  mergeClicks?: ((event: ActionEvent) => Promise<CommandReply>) | undefined;
};

/**
 * Buttons on the run card. Same rules as the commands: authorise, record,
 * enqueue; a refused click is answered only to the clicker and audited.
 */
export function createRunActions(deps: RunActionDeps): (event: ActionEvent) => Promise<CommandReply> {
  async function refuse(event: ActionEvent, runId: string, reason: RichText): Promise<CommandReply> {
    await deps.audit.append({
      type: 'action.refused',
      actor: event.userId,
      runId,
      data: { action: event.actionId, reason: plainText(reason) },
      key: `action.refused.${event.deliveryId}`,
    });
    deps.log.info({ runId, userId: event.userId, action: event.actionId }, 'action refused');
    return { ephemeral: reason };
  }

  /**
   * Every button's value starts with its run's id. A click counts only where the run's card and
   * thread are: the same button shown or replayed in another channel (where other people, or other
   * roles, see it) is refused.
   */
  async function elsewhere(event: ActionEvent): Promise<CommandReply | undefined> {
    const runId = event.value.split('|')[0] ?? '';
    const run = runId === '' ? undefined : await deps.store.get(runId);
    if (run === undefined || run.chat.channel === event.channelId) return undefined;
    return refuse(event, run.id, rich`This button belongs to run ${run.id}, which lives in another channel; use the buttons on its card or in its thread there.`);
  }

  return async function handleAction(event) {
    const refused = await elsewhere(event);
    if (refused !== undefined) return refused;
    if ((event.actionId === APPROVE_ACTION_ID || event.actionId === REJECT_ACTION_ID) && deps.approvalClicks !== undefined) return deps.approvalClicks(event);
    if (event.actionId === MERGE_ACTION_ID && deps.mergeClicks !== undefined) return deps.mergeClicks(event);
    if (event.actionId !== CANCEL_ACTION_ID) {
      deps.log.warn({ action: event.actionId }, 'unknown action ignored');
      return { ephemeral: rich`This button is not known to this version of shipgate.` };
    }
    const run = await deps.store.get(event.value);
    if (run === undefined) return { ephemeral: rich`There is no run ${event.value}.` };
    const decision = await authoriseCancel(deps.policy, { repo: run.repo, requesterId: run.requester.userId }, event.userId, withVouchedGroups(deps.groups, event.userId, event.groups));
    if (!decision.allowed) return refuse(event, run.id, decision.reason);
    return requestCancel(deps, run, event.userId);
  };
}
