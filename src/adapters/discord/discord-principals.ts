import type { PrincipalDirectory } from '../../domain/principals.js';

/**
 * The ids Discord owns (SPEC §2, §6): users `discord:<snowflake>`, roles `discord:role:<snowflake>`,
 * channels `discord:<snowflake>` — prefixed, so that they can never be mistaken for a Slack id
 * when both chats are configured.
 */
export const DISCORD_PREFIX = 'discord:';
const SNOWFLAKE = '\\d{15,21}';
const USER = new RegExp(`^discord:${SNOWFLAKE}$`);
const ROLE = new RegExp(`^discord:role:${SNOWFLAKE}$`);

export const discordUser = (id: string): string => `${DISCORD_PREFIX}${id}`;
export const discordRole = (id: string): string => `${DISCORD_PREFIX}role:${id}`;
export const discordChannel = (id: string): string => `${DISCORD_PREFIX}${id}`;

/** The snowflake of a `discord:<id>` channel reference; undefined for anything else. */
export function channelSnowflake(ref: string): string | undefined {
  return USER.test(ref) ? ref.slice(DISCORD_PREFIX.length) : undefined;
}

/**
 * Role members are not listed by this directory: Discord lists a guild's members only with the
 * privileged GUILD_MEMBERS intent, and the interaction itself says which roles the person has
 * (`member.roles`, fresh on every interaction). The adapter puts those roles on each event
 * (`CommandEvent.groups`, `ActionEvent.groups`), and authorisation counts them there.
 */
export function createDiscordPrincipals(): PrincipalDirectory {
  return {
    platform: 'Discord',
    describe: {
      principal: 'a Discord user id (discord:<snowflake>) or role id (discord:role:<snowflake>)',
      channel: 'a Discord channel id (discord:<snowflake>)',
    },
    owns: (id, as) => (as === 'channel' ? USER.test(id) : USER.test(id) || ROLE.test(id)),
    isGroup: (id) => ROLE.test(id),
    groupMembers: async () => [],
  };
}
