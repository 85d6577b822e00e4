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
