import type { PrincipalDirectory } from '../../domain/principals.js';

/** Slack user ids start with U or W, user-group ids with S, channel ids with C, G or D. */
const USER = /^[UW][A-Z0-9]{2,}$/;
const GROUP = /^S[A-Z0-9]{2,}$/;
const CHANNEL = /^[CGD][A-Z0-9]{2,}$/;

/** The ids Slack owns (SPEC §2: policy names Slack users, user groups and channels by their ids). */
export function createSlackPrincipals(
  groupMembers: (groupId: string) => Promise<readonly string[]>,
): PrincipalDirectory {
  return {
    platform: 'Slack',
    describe: {
      principal: 'a Slack user id (U…/W…) or user-group id (S…)',
      channel: 'a Slack channel id (C…/G…/D…)',
    },
    owns: (id, as) => (as === 'channel' ? CHANNEL.test(id) : USER.test(id) || GROUP.test(id)),
    isGroup: (id) => GROUP.test(id),
    groupMembers,
  };
}
