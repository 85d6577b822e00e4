import type { Policy } from '../config/policy.js';

/**
 * Who may do what (SPEC §2, §6). Pure apart from the group lookup, which is
 * passed in so that Slack user groups (S…) work the same as user ids.
 */

export type Decision = { allowed: true } | { allowed: false; reason: string };

export type GroupMembers = (groupId: string) => Promise<readonly string[]>;

/** True when `userId` is listed directly or belongs to a listed user group. */
export async function isPrincipal(userId: string, principals: readonly string[], groupMembers: GroupMembers): Promise<boolean> {
  if (principals.includes(userId)) return true;
  for (const principal of principals) {
    if (principal.startsWith('S') && (await groupMembers(principal)).includes(userId)) return true;
  }
  return false;
}

export async function authoriseRunRequest(
  policy: Policy,
  request: { repo: string; channelId: string; userId: string },
  groupMembers: GroupMembers,
): Promise<Decision> {
  const repoPolicy = policy.repos[request.repo];
  if (repoPolicy === undefined) {
    const allowed = Object.keys(policy.repos).sort().join(', ');
    return {
      allowed: false,
      reason: `${request.repo} is not a repository shipgate may change. Allowed here: ${allowed}. To add one, ask your platform team to list it under \`repos\` in shipgate.yaml.`,
    };
  }
  if (repoPolicy.channels !== undefined && !repoPolicy.channels.includes(request.channelId)) {
    const where = repoPolicy.channels.map((c) => `<#${c}>`).join(', ');
    return { allowed: false, reason: `Runs on ${request.repo} can only be requested in ${where}. Ask there.` };
  }
  if (repoPolicy.requesters !== undefined && !(await isPrincipal(request.userId, repoPolicy.requesters, groupMembers))) {
    return {
      allowed: false,
      reason: `You are not allowed to request runs on ${request.repo}. Ask your platform team to add you (or a user group you are in) to its \`requesters\` in shipgate.yaml.`,
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

/** The requester or an approver of the repository may cancel a run. */
export async function authoriseCancel(
  policy: Policy,
  run: { repo: string; requesterId: string },
  userId: string,
  groupMembers: GroupMembers,
): Promise<Decision> {
  if (userId === run.requesterId) return { allowed: true };
  if (await isPrincipal(userId, approversFor(policy, run.repo), groupMembers)) return { allowed: true };
  return {
    allowed: false,
    reason: `Only the requester (<@${run.requesterId}>) or an approver of ${run.repo} can cancel this run.`,
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
  groupMembers: GroupMembers,
): Promise<Decision> {
  if (viewer.userId === run.requesterId || viewer.channelId === run.channelId) return { allowed: true };
  const principals = [...(policy.repos[run.repo]?.requesters ?? []), ...approversFor(policy, run.repo)];
  if (await isPrincipal(viewer.userId, principals, groupMembers)) return { allowed: true };
  return {
    allowed: false,
    reason: `not the requester, a requester or approver of ${run.repo}, and not in the run's channel`,
  };
}

/** The runs `viewer` may see, in their order (see authoriseView). */
export async function visibleRuns<T extends { repo: string; requester: { userId: string }; chat: { channel: string } }>(
  policy: Policy,
  runs: readonly T[],
  viewer: { userId: string; channelId: string },
  groupMembers: GroupMembers,
): Promise<T[]> {
  const decisions = await Promise.all(
    runs.map((run) =>
      authoriseView(policy, { repo: run.repo, requesterId: run.requester.userId, channelId: run.chat.channel }, viewer, groupMembers),
    ),
  );
  return runs.filter((_, index) => decisions[index]?.allowed === true);
}

/** The answer for a run id that does not exist or that the asker may not see: the same words, so neither is told apart. */
export function unknownRunReason(runId: string, command: string): string {
  return `There is no run ${runId} that you can see. \`${command} status\` lists the active runs you can see.`;
}

/** Which active-run limit (SPEC §1, policy `limits`) a new run would exceed. */
export type ActiveRunLimitHit =
  | { kind: 'per-user'; limit: number; activeRunIds: readonly string[] }
  | { kind: 'global'; limit: number; active: number };

const LISTED_RUN_IDS = 10;

/** The refusal for a run request over an active-run limit: what the limit is, where it is set, and what to do. */
export function activeRunLimitReason(hit: ActiveRunLimitHit, command: string): string {
  if (hit.kind === 'per-user') {
    const ids = hit.activeRunIds.slice(0, LISTED_RUN_IDS).join(', ');
    const more = hit.activeRunIds.length > LISTED_RUN_IDS ? `, and ${hit.activeRunIds.length - LISTED_RUN_IDS} more` : '';
    const runs = hit.activeRunIds.length === 1 ? 'run' : 'runs';
    return `You already have ${hit.activeRunIds.length} active ${runs} (${ids}${more}); the limit is ${hit.limit} (policy limits.activeRunsPerUser). Cancel one with \`${command} cancel &lt;run-id&gt;\` or wait until one ends.`;
  }
  return `shipgate already has ${hit.active} active runs; the limit is ${hit.limit} (policy limits.activeRuns). Try again once some have ended, or ask your platform team to raise the limit.`;
}
