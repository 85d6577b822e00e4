import type { Policy } from '../config/policy.js';
import { channel, code, joinRich, principal, rich, type RichText } from '../render/view.js';
import type { Groups } from './principals.js';

/**
 * Who may do what (SPEC §2, §6). Pure apart from the group lookup, which is
 * passed in: the chat adapters say which ids are groups (Slack user groups,
 * Discord roles) and who is in them.
 */

export type Decision = { allowed: true } | { allowed: false; reason: RichText };

/** True when `userId` is listed directly or belongs to a listed group. */
export async function isPrincipal(userId: string, principals: readonly string[], groups: Groups): Promise<boolean> {
  if (principals.includes(userId)) return true;
  for (const listed of principals) {
    if (groups.isGroup(listed) && (await groups.members(listed)).includes(userId)) return true;
  }
  return false;
}

export async function authoriseRunRequest(
  policy: Policy,
  request: { repo: string; channelId: string; userId: string },
  groups: Groups,
): Promise<Decision> {
  const repoPolicy = policy.repos[request.repo];
  if (repoPolicy === undefined) {
    const allowed = Object.keys(policy.repos).sort().join(', ');
    return {
      allowed: false,
      reason: rich`${request.repo} is not a repository shipgate may change. Allowed here: ${allowed}. To add one, ask your platform team to list it under ${code('repos')} in shipgate.yaml.`,
    };
  }
  if (repoPolicy.channels !== undefined && !repoPolicy.channels.includes(request.channelId)) {
    const where = joinRich(
      repoPolicy.channels.map((c) => [channel(c)]),
      ', ',
    );
    return { allowed: false, reason: rich`Runs on ${request.repo} can only be requested in ${where}. Ask there.` };
  }
  if (repoPolicy.requesters !== undefined && !(await isPrincipal(request.userId, repoPolicy.requesters, groups))) {
    return {
      allowed: false,
      reason: rich`You are not allowed to request runs on ${request.repo}. Ask your platform team to add you (or a user group you are in) to its ${code('requesters')} in shipgate.yaml.`,
    };
  }
  return { allowed: true };
}

/** Everyone who may approve a production promotion of the repository (any stage with an approval). */
export function approversFor(policy: Policy, repo: string): string[] {
  const pipelineName = policy.repos[repo]?.pipeline;
  const pipeline = pipelineName === undefined ? undefined : policy.pipelines[pipelineName];
  return (pipeline?.stages ?? []).flatMap((stage) => stage.approval?.approvers ?? []);
}

/** The requester or an approver of the repository may cancel a run (and retry it: `verb` names which, for the refusal). */
export async function authoriseCancel(
  policy: Policy,
  run: { repo: string; requesterId: string },
  userId: string,
  groups: Groups,
  verb: 'cancel' | 'retry' = 'cancel',
): Promise<Decision> {
  if (userId === run.requesterId) return { allowed: true };
  if (await isPrincipal(userId, approversFor(policy, run.repo), groups)) return { allowed: true };
  return {
    allowed: false,
    reason: rich`Only the requester (${principal(run.requesterId)}) or an approver of ${run.repo} can ${verb} this run.`,
  };
}

/** What decides who may see a run: who asked for it, on which repository, in which channel. */
export interface RunAudience {
  repo: string;
  requesterId: string;
  channelId: string;
}

/**
 * Who may see a run through `/ship status` and `/ship audit` (SPEC §6): its requester, the
 * repository's `requesters` and the approvers named in its pipeline (users or members of listed
 * user groups), and anyone asking in the run's own channel. A repository without `requesters`
 * adds nobody: being allowed to request runs does not make other people's runs visible. The checks
 * that need no group lookup come first, so a requester sees their runs even while the lookup fails.
 */
export async function authoriseView(
  policy: Policy,
  run: RunAudience,
  viewer: { userId: string; channelId: string },
  groups: Groups,
): Promise<Decision> {
  if (viewer.userId === run.requesterId || viewer.channelId === run.channelId) return { allowed: true };
  const principals = [...(policy.repos[run.repo]?.requesters ?? []), ...approversFor(policy, run.repo)];
  if (await isPrincipal(viewer.userId, principals, groups)) return { allowed: true };
  return {
    allowed: false,
    reason: rich`not the requester, a requester or approver of ${run.repo}, and not in the run's channel`,
  };
}

/** The runs `viewer` may see, in their order (see authoriseView). */
export async function visibleRuns<T extends { repo: string; requester: { userId: string }; chat: { channel: string } }>(
  policy: Policy,
  runs: readonly T[],
  viewer: { userId: string; channelId: string },
  groups: Groups,
): Promise<T[]> {
  const decisions = await Promise.all(
    runs.map((run) =>
      authoriseView(policy, { repo: run.repo, requesterId: run.requester.userId, channelId: run.chat.channel }, viewer, groups),
    ),
  );
  return runs.filter((_, index) => decisions[index]?.allowed === true);
}

/** The answer for a run id that does not exist or that the asker may not see: the same words, so neither is told apart. */
export function unknownRunReason(runId: string, command: string): RichText {
  return rich`There is no run ${runId} that you can see. ${code(`${command} status`)} lists the active runs you can see.`;
}

/** Which active-run limit (SPEC §1, policy `limits`) a new run would exceed. */
export type ActiveRunLimitHit =
  /** `for`: the person whose limit it is, when not the one asking (a retry by an approver); their runs are not listed. */
  | { kind: 'per-user'; limit: number; activeRunIds: readonly string[]; for?: string | undefined }
  | { kind: 'global'; limit: number; active: number };

const LISTED_RUN_IDS = 10;

/** The refusal for a run request over an active-run limit: what the limit is, where it is set, and what to do. */
export function activeRunLimitReason(hit: ActiveRunLimitHit, command: string): RichText {
  if (hit.kind === 'per-user' && hit.for !== undefined) {
    const runs = hit.activeRunIds.length === 1 ? 'run' : 'runs';
    return rich`The requester (${principal(hit.for)}) already has ${hit.activeRunIds.length} active ${runs}; the limit is ${hit.limit} (policy limits.activeRunsPerUser). This run can be retried once one of theirs has ended.`;
  }
  if (hit.kind === 'per-user') {
    const ids = hit.activeRunIds.slice(0, LISTED_RUN_IDS).join(', ');
    const more = hit.activeRunIds.length > LISTED_RUN_IDS ? `, and ${hit.activeRunIds.length - LISTED_RUN_IDS} more` : '';
    const runs = hit.activeRunIds.length === 1 ? 'run' : 'runs';
    return rich`You already have ${hit.activeRunIds.length} active ${runs} (${ids}${more}); the limit is ${hit.limit} (policy limits.activeRunsPerUser). Cancel one with ${code(`${command} cancel <run-id>`)} or wait until one ends.`;
  }
  return rich`shipgate already has ${hit.active} active runs; the limit is ${hit.limit} (policy limits.activeRuns). Try again once some have ended, or ask your platform team to raise the limit.`;
}
