import type { Policy } from '../config/policy.js';

/**
 * Principals (users and groups) and channels are opaque ids to shipgate: the
 * chat adapter that delivered them owns their format (SPEC §2: Slack's
 * `U…`/`S…`/`C…`, Discord's `discord:<snowflake>`). The policy names them the
 * same way, and this module asks the configured adapters which ids they own,
 * which of them are groups and who is in a group.
 */

/** The part of a chat adapter that knows its ids (`ChatPort.principals`). */
export interface PrincipalDirectory {
  /** The chat's name, for messages: `Slack`. */
  platform: string;
  /** The ids it owns, in words, for a policy error: `a Slack user id (U…/W…) or user-group id (S…)`. */
  describe: { principal: string; channel: string };
  /** Whether `id` is a user or group id (`as: 'principal'`) or a channel id of this chat. Pure, no I/O. */
  owns(id: string, as: 'principal' | 'channel'): boolean;
  /** Whether a principal id this chat owns names a group (whose members `groupMembers` lists). Pure. */
  isGroup(id: string): boolean;
  groupMembers(groupId: string): Promise<readonly string[]>;
}

/** What authorisation needs to know about the principals a policy lists. */
export interface Groups {
  isGroup(id: string): boolean;
  members(groupId: string): Promise<readonly string[]>;
}

/** The groups of every configured chat: each id is asked of the adapter that owns it. */
export function groupsOf(directories: readonly PrincipalDirectory[]): Groups {
  const owner = (id: string) =>
    directories.find((directory) => directory.owns(id, 'principal') && directory.isGroup(id));
  return {
    isGroup: (id) => owner(id) !== undefined,
    members: async (groupId) => (await owner(groupId)?.groupMembers(groupId)) ?? [],
  };
}

/**
 * `groups` plus what the chat vouched for at one event (`CommandEvent.groups`: Discord's member
 * roles): a vouched group counts `userId` among its members, whatever its listed members are.
 */
export function withVouchedGroups(groups: Groups, userId: string, vouched: readonly string[] | undefined): Groups {
  if (vouched === undefined || vouched.length === 0) return groups;
  return {
    isGroup: (id) => groups.isGroup(id),
    members: async (groupId) => {
      const listed = await groups.members(groupId);
      return vouched.includes(groupId) && !listed.includes(userId) ? [...listed, userId] : listed;
    },
  };
}

/**
 * Every user, group and channel id in the policy that no configured chat
 * owns, as `<key path>: <what it must be>` lines for a start-up error (the
 * policy schema only checks that ids are words; their shape is the chat's).
 */
export function policyIdProblems(policy: Policy, directories: readonly PrincipalDirectory[]): string[] {
  const problems: string[] = [];
  const expect = (as: 'principal' | 'channel', path: Array<string | number>, id: string) => {
    if (directories.some((directory) => directory.owns(id, as))) return;
    const shapes = directories.map((directory) => directory.describe[as]);
    const what = shapes.length === 0 ? 'an id of a configured chat (none is configured)' : shapes.join(', or ');
    problems.push(`${path.join('.')}: must be ${what}; "${id}" is not`);
  };
  for (const id of Object.keys(policy.channels)) expect('channel', ['channels', id], id);
  for (const [repo, settings] of Object.entries(policy.repos)) {
    settings.channels?.forEach((id, index) => expect('channel', ['repos', repo, 'channels', index], id));
    settings.requesters?.forEach((id, index) => expect('principal', ['repos', repo, 'requesters', index], id));
  }
  for (const [name, pipeline] of Object.entries(policy.pipelines)) {
    pipeline.stages.forEach((stage, stageIndex) =>
      stage.approval?.approvers.forEach((id, index) =>
        expect('principal', ['pipelines', name, 'stages', stageIndex, 'approval', 'approvers', index], id),
      ),
    );
  }
  return problems;
}
