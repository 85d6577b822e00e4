import { z } from 'zod';
import type { ActionEvent, CommandEvent, MentionEvent } from '../../ports/chat.js';
import { decodeCustomId } from './discord-message.js';
import { discordChannel, discordRole, discordUser } from './discord-principals.js';

/**
 * Discord interactions → the chat port's events, pure. Only the fields used are read from
 * Discord's payloads (https://discord.com/developers/docs/interactions/receiving-and-responding#interaction-object),
 * parsed with zod at the boundary.
 */

export const InteractionKind = { ping: 1, command: 2, component: 3, autocomplete: 4, modalSubmit: 5 } as const;
/** Thread channel types (announcement, public, private): a run lives in the thread's parent channel. */
export const THREAD_TYPES: readonly number[] = [10, 11, 12];

const userSchema = z.object({ id: z.string(), username: z.string().optional(), global_name: z.string().nullish() });

interface CommandOption {
  name: string;
  type: number;
  value?: string | number | boolean | undefined;
  options?: CommandOption[] | undefined;
}
const optionSchema: z.ZodType<CommandOption> = z.lazy(() =>
  z.object({
    name: z.string(),
    type: z.number().int(),
    value: z.union([z.string(), z.number(), z.boolean()]).optional(),
    options: z.array(optionSchema).optional(),
  }),
);

export const interactionSchema = z.object({
  id: z.string(),
  type: z.number().int(),
  token: z.string(),
  guild_id: z.string().optional(),
  channel_id: z.string().optional(),
  channel: z.object({ id: z.string(), type: z.number().int(), parent_id: z.string().nullish() }).optional(),
  member: z.object({ user: userSchema, roles: z.array(z.string()).default([]), nick: z.string().nullish() }).optional(),
  user: userSchema.optional(),
  data: z.unknown().optional(),
  message: z.object({ id: z.string(), channel_id: z.string().optional() }).optional(),
});
export type Interaction = z.infer<typeof interactionSchema>;

const commandDataSchema = z.object({ name: z.string(), options: z.array(optionSchema).optional() });
const componentDataSchema = z.object({ custom_id: z.string() });
const modalDataSchema = z.object({
  custom_id: z.string(),
  components: z
    .array(
      z.object({ components: z.array(z.object({ custom_id: z.string(), value: z.string().nullish() })).default([]) }),
    )
    .default([]),
});

/** Who acted: the guild member (with roles) or, in a DM, the user. */
export function actorOf(
  interaction: Interaction,
): { userId: string; userName: string | undefined; groups: string[] } | undefined {
  const user = interaction.member?.user ?? interaction.user;
  if (user === undefined) return undefined;
  return {
    userId: discordUser(user.id),
    userName: interaction.member?.nick ?? user.global_name ?? user.username,
    groups: (interaction.member?.roles ?? []).map(discordRole),
  };
}

/** Where the interaction happened: the channel, or the parent channel and the thread when it was in a thread. */
export function placeOf(interaction: Interaction): { channel: string; thread: string | undefined } | undefined {
  const channel = interaction.channel;
  if (channel !== undefined && THREAD_TYPES.includes(channel.type) && channel.parent_id != null)
    return { channel: channel.parent_id, thread: channel.id };
  const id = channel?.id ?? interaction.channel_id;
  return id === undefined ? undefined : { channel: id, thread: undefined };
}

/** Discord writes mentions typed into an option as `<@id>`, `<@&id>`, `<#id>`: handlers get plain text. */
export function flattenDiscordText(text: string): { text: string; mentions: string[] } {
  const mentions: string[] = [];
  const flat = text
    .replace(/<@!?(\d+)>/g, (_m, id: string) => {
      if (!mentions.includes(discordUser(id))) mentions.push(discordUser(id));
      return `@${id}`;
    })
    .replace(/<@&(\d+)>/g, (_m, id: string) => `@role:${id}`)
    .replace(/<#(\d+)>/g, (_m, id: string) => `#${id}`)
    .replace(/<a?(:\w+:)\d+>/g, (_m, emoji: string) => emoji)
    .replace(/<t:(\d+)(?::[a-zA-Z])?>/g, (_m, seconds: string) => new Date(Number(seconds) * 1000).toISOString());
  return { text: flat.trim(), mentions };
}

function optionText(options: readonly CommandOption[] | undefined, name: string): string | undefined {
  const value = options?.find((option) => option.name === name)?.value;
  return value === undefined ? undefined : String(value);
}

/** The `/ship` sub-commands (registered by src/cli/discord-register.ts, see discord-commands.ts). */
export type CommandMapping =
  | { kind: 'command'; event: CommandEvent }
  | { kind: 'mention'; event: MentionEvent }
  | { kind: 'refuse'; text: string };

/**
 * An APPLICATION_COMMAND → the event the shared handlers take. Sub-commands and options become
 * the text the command parser (src/domain/command.ts) reads: `run task:… repo:acme/shop` is
 * `acme/shop …`; `status run:sg-…` is `status sg-…`; `reply run:… text:…` is a follow-up for that
 * run (a MentionEvent with `runId`, as the console sends it).
 */
export function mapCommand(interaction: Interaction, command: string): CommandMapping {
  const data = commandDataSchema.safeParse(interaction.data);
  const actor = actorOf(interaction);
  const place = placeOf(interaction);
  if (!data.success || actor === undefined)
    return { kind: 'refuse', text: 'shipgate could not read this command from Discord; please try again.' };
  if (interaction.guild_id === undefined || place === undefined)
    return { kind: 'refuse', text: `Use \`${command}\` in a server channel: runs live in a channel and its threads.` };
  const sub = data.data.options?.find((option) => option.type === 1);
  const options = sub?.options;
  const name = sub?.name ?? '';
  const deliveryId = `discord.${interaction.id}`;
  const base = {
    command,
    userId: actor.userId,
    userName: actor.userName,
    groups: actor.groups,
    channelId: discordChannel(place.channel),
    deliveryId,
  };
  const run = optionText(options, 'run');
  let text: string;
  switch (name) {
    case 'run': {
      const task = flattenDiscordText(optionText(options, 'task') ?? '').text;
      text = [optionText(options, 'repo')?.trim(), task].filter((part) => part !== undefined && part !== '').join(' ');
      break;
    }
    case 'status':
      text = run === undefined ? 'status' : `status ${run.trim()}`;
      break;
    case 'cancel':
    case 'retry':
    case 'audit':
      text = `${name} ${run?.trim() ?? ''}`.trim();
      break;
    case 'clear':
      text = options?.find((option) => option.name === 'all')?.value === true ? 'clear all' : 'clear';
      break;
    case 'reply': {
      const said = flattenDiscordText(optionText(options, 'text') ?? '');
      return {
        kind: 'mention',
        event: {
          text: said.text,
          mentions: said.mentions,
          userId: actor.userId,
          channelId: base.channelId,
          thread: undefined,
          message: interaction.id,
          deliveryId,
          runId: run?.trim() ?? '',
        },
      };
    }
    default:
      text = 'help';
  }
  return { kind: 'command', event: { ...base, text } };
}

/** A button's message as the chat port names it: the card is `<id>`, a reply in its thread `<thread>/<id>`. */
function messageRef(interaction: Interaction, place: { thread: string | undefined }): string | undefined {
  const id = interaction.message?.id;
  if (id === undefined) return undefined;
  return place.thread === undefined ? id : `${place.thread}/${id}`;
}

/** A MESSAGE_COMPONENT (a button click), or a MODAL_SUBMIT carrying the reason a click asked for. */
export function mapAction(interaction: Interaction): ActionEvent | undefined {
  const actor = actorOf(interaction);
  const place = placeOf(interaction);
  if (actor === undefined || place === undefined) return undefined;
  const common = {
    userId: actor.userId,
    userName: actor.userName,
    groups: actor.groups,
    channelId: discordChannel(place.channel),
    message: messageRef(interaction, place),
    deliveryId: `discord.${interaction.id}`,
  };
  if (interaction.type === InteractionKind.component) {
    const data = componentDataSchema.safeParse(interaction.data);
    const decoded = data.success ? decodeCustomId(data.data.custom_id) : undefined;
    return decoded === undefined ? undefined : { ...decoded, ...common };
  }
  if (interaction.type === InteractionKind.modalSubmit) {
    const data = modalDataSchema.safeParse(interaction.data);
    if (!data.success || !data.data.custom_id.startsWith(REASON_MODAL_PREFIX)) return undefined;
    const decoded = decodeCustomId(data.data.custom_id.slice(REASON_MODAL_PREFIX.length));
    if (decoded === undefined) return undefined;
    const reason =
      data.data.components.flatMap((row) => row.components).find((input) => input.custom_id === REASON_INPUT_ID)
        ?.value ?? '';
    return { ...decoded, ...common, reason: reason.trim() };
  }
  return undefined;
}

/** A reason modal's custom_id is this prefix and the button's custom_id (≤ 93 characters). */
export const REASON_MODAL_PREFIX = 'r:';
export const REASON_INPUT_ID = 'reason';
