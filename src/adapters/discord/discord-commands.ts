import {
  ApplicationCommandOptionType,
  ApplicationCommandType,
  ApplicationIntegrationType,
  InteractionContextType,
  type RESTPutAPIApplicationCommandsJSONBody,
} from 'discord-api-types/v10';

/**
 * The `/ship` application command as Discord shows it (SPEC §2: the same sub-commands as Slack,
 * options instead of free text): registered by `npm run discord:register`
 * (src/cli/discord-register.ts) and read back by discord-interactions.ts, which turns each
 * sub-command into the text the shared command parser reads.
 */

const RUN_ID = {
  type: ApplicationCommandOptionType.String,
  name: 'run',
  description: 'The run id, e.g. sg-1a2b3c4d',
  min_length: 11,
  max_length: 11,
} as const;

/** The Discord command name for the policy's command (`/ship` → `ship`): lower case, 1–32 characters. */
export function discordCommandName(command: string): string {
  const name = command.replace(/^\//, '').toLowerCase();
  if (!/^[-_a-z0-9]{1,32}$/.test(name))
    throw new Error(`"${command}" cannot be a Discord command name: use 1–32 lower-case letters, digits, - or _`);
  return name;
}

export function shipCommandDefinition(command: string): RESTPutAPIApplicationCommandsJSONBody {
  return [
    {
      type: ApplicationCommandType.ChatInput,
      name: discordCommandName(command),
      description: 'Ask shipgate for a change; it goes through CI, merge and deploy gates like anyone’s',
      // Runs live in a server channel and its threads: no DMs, no user-installed app.
      contexts: [InteractionContextType.Guild],
      integration_types: [ApplicationIntegrationType.GuildInstall],
      options: [
        {
          type: ApplicationCommandOptionType.Subcommand,
          name: 'run',
          description: 'Start a run: the agent makes the change, then the gates decide',
          options: [
            {
              type: ApplicationCommandOptionType.String,
              name: 'task',
              description: 'What to change, in plain words',
              required: true,
              max_length: 4000,
            },
            {
              type: ApplicationCommandOptionType.String,
              name: 'repo',
              description: 'owner/name (optional where the channel has a default repository)',
              max_length: 200,
            },
          ],
        },
        {
          type: ApplicationCommandOptionType.Subcommand,
          name: 'status',
          description: 'Active runs you can see (queue positions included), or one run',
          options: [{ ...RUN_ID, required: false }],
        },
        {
          type: ApplicationCommandOptionType.Subcommand,
          name: 'cancel',
          description: 'Cancel a run; confirmed once the work really stopped',
          options: [{ ...RUN_ID, required: true }],
        },
        {
          type: ApplicationCommandOptionType.Subcommand,
          name: 'retry',
          description: 'Resume a failed run from its failed gate',
          options: [{ ...RUN_ID, required: true }],
        },
        {
          type: ApplicationCommandOptionType.Subcommand,
          name: 'audit',
          description: "A run's evidence and whether the audit chain verifies",
          options: [{ ...RUN_ID, required: true }],
        },
        {
          type: ApplicationCommandOptionType.Subcommand,
          name: 'reply',
          description: "A follow-up instruction for a run's agent (its next iteration, same branch)",
          options: [
            { ...RUN_ID, required: true },
            {
              type: ApplicationCommandOptionType.String,
              name: 'text',
              description: 'What the agent should do next',
              required: true,
              max_length: 4000,
            },
          ],
        },
        {
          type: ApplicationCommandOptionType.Subcommand,
          name: 'clear',
          description: 'Cancel your runs stuck at a gate that is not configured',
          options: [
            {
              type: ApplicationCommandOptionType.Boolean,
              name: 'all',
              description: 'Every active run of yours instead',
            },
          ],
        },
        { type: ApplicationCommandOptionType.Subcommand, name: 'help', description: 'How to use shipgate' },
      ],
    },
  ];
}
