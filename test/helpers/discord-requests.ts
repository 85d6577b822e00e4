import { generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { z } from 'zod';
import type { DiscordServer } from './discord-server.js';

/**
 * Sends interactions to the bot the way Discord does (SPEC §9): JSON bodies signed with the
 * application's Ed25519 key (`X-Signature-Ed25519` over `X-Signature-Timestamp` + body), shaped
 * like https://discord.com/developers/docs/interactions/receiving-and-responding#interaction-object
 * (only the fields Discord always sends, plus the ones the test needs). Each interaction's id and
 * token come from the fake Discord server, so the bot's follow-ups to that token are accepted there.
 */

export interface TestKeys {
  privateKey: KeyObject;
  /** The public key as the developer portal shows it (hex), for DISCORD_PUBLIC_KEY. */
  publicKeyHex: string;
}

export function testKeys(): TestKeys {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  // The raw key is the last 32 bytes of its SPKI DER form.
  const publicKeyHex = publicKey.export({ format: 'der', type: 'spki' }).subarray(-32).toString('hex');
  return { privateKey, publicKeyHex };
}

export function signInteraction(keys: TestKeys, timestamp: string, body: string): string {
  return sign(null, Buffer.from(timestamp + body, 'utf8'), keys.privateKey).toString('hex');
}

export interface InteractionResult {
  status: number;
  json: unknown;
  elapsedMs: number;
}

const callbackSchema = z.object({ type: z.number().int(), data: z.record(z.string(), z.unknown()).optional() });

/** The interaction callback as Discord would read it, or undefined when the answer is not one. */
export function callbackOf(result: InteractionResult): z.infer<typeof callbackSchema> | undefined {
  const parsed = callbackSchema.safeParse(result.json);
  return parsed.success ? parsed.data : undefined;
}

export async function sendInteraction(
  url: string,
  keys: TestKeys,
  body: string,
  options: { timestamp?: string; signature?: string | null } = {},
): Promise<InteractionResult> {
  const timestamp = options.timestamp ?? String(Math.floor(Date.now() / 1000));
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    'user-agent': 'Discord-Interactions/1.0 (+https://discord.com)',
    'x-signature-timestamp': timestamp,
  };
  const signature = options.signature === undefined ? signInteraction(keys, timestamp, body) : options.signature;
  if (signature !== null) headers['x-signature-ed25519'] = signature;
  const started = Date.now();
  const res = await fetch(url, { method: 'POST', headers, body });
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, json, elapsedMs: Date.now() - started };
}

export interface Actor {
  userId: string;
  username?: string;
  roles?: string[];
}

export interface Where {
  channelId: string;
  /** Set when the interaction happens in a thread of `channelId` (a button on a thread reply). */
  threadId?: string | undefined;
  /** A direct message with the bot: no guild, the person as `user` instead of `member` (channel type 1). */
  dm?: boolean | undefined;
}

function base(discord: DiscordServer, applicationId: string, type: number, actor: Actor, where: Where) {
  const { id, token } = discord.newInteraction();
  const inThread = where.threadId !== undefined;
  if (where.dm === true) {
    // Discord's DM interaction: no guild_id, no member, `user` and a DM channel.
    return {
      id,
      token,
      type,
      version: 1,
      application_id: applicationId,
      channel_id: where.channelId,
      channel: { id: where.channelId, type: 1, recipients: [] },
      user: {
        id: actor.userId,
        username: actor.username ?? `user${actor.userId.slice(-4)}`,
        global_name: null,
        discriminator: '0',
        avatar: null,
      },
      app_permissions: '2248473465835073',
      locale: 'en-US',
      entitlements: [],
      authorizing_integration_owners: { '1': actor.userId },
      context: 1,
      attachment_size_limit: 10485760,
    };
  }
  return {
    id,
    token,
    type,
    version: 1,
    application_id: applicationId,
    guild_id: discord.guildId,
    guild: { id: discord.guildId, locale: 'en-US', features: [] },
    channel_id: where.threadId ?? where.channelId,
    channel: inThread
      ? { id: where.threadId, type: 11, parent_id: where.channelId, guild_id: discord.guildId }
      : { id: where.channelId, type: 0, guild_id: discord.guildId },
    member: {
      user: {
        id: actor.userId,
        username: actor.username ?? `user${actor.userId.slice(-4)}`,
        global_name: null,
        discriminator: '0',
        avatar: null,
      },
      roles: actor.roles ?? [],
      nick: null,
      joined_at: '2024-01-01T00:00:00.000000+00:00',
      permissions: '2248473465835073',
      deaf: false,
      mute: false,
      flags: 0,
    },
    app_permissions: '2248473465835073',
    locale: 'en-US',
    guild_locale: 'en-US',
    entitlements: [],
    authorizing_integration_owners: { '0': discord.guildId },
    context: 0,
    attachment_size_limit: 10485760,
  };
}

/** `/ship <sub> option:value…` as an APPLICATION_COMMAND interaction body. */
export function slashCommand(
  discord: DiscordServer,
  applicationId: string,
  actor: Actor,
  where: Where,
  sub: string,
  options: Record<string, string | boolean> = {},
): { body: string; token: string } {
  const interaction = {
    ...base(discord, applicationId, 2, actor, where),
    data: {
      id: '1300000000000000999',
      name: 'ship',
      type: 1,
      options: [
        {
          name: sub,
          type: 1,
          options: Object.entries(options).map(([name, value]) => ({
            name,
            type: typeof value === 'boolean' ? 5 : 3,
            value,
          })),
        },
      ],
    },
  };
  return { body: JSON.stringify(interaction), token: interaction.token };
}

/** The bot's message a component or modal interaction comes from, as Discord sends it along. */
function clickedMessage(discord: DiscordServer, where: Where, messageId: string) {
  return {
    id: messageId,
    channel_id: where.threadId ?? where.channelId,
    type: 0,
    content: '',
    author: { id: discord.botUserId, username: 'shipgate', bot: true },
  };
}

/** A button click (MESSAGE_COMPONENT) on `messageId`. */
export function buttonClick(
  discord: DiscordServer,
  applicationId: string,
  actor: Actor,
  where: Where,
  messageId: string,
  customId: string,
): { body: string; token: string } {
  const interaction = {
    ...base(discord, applicationId, 3, actor, where),
    message: clickedMessage(discord, where, messageId),
    data: { custom_id: customId, component_type: 2 },
  };
  return { body: JSON.stringify(interaction), token: interaction.token };
}

/** The reason modal's submit (MODAL_SUBMIT) for a click on `messageId`. */
export function modalSubmit(
  discord: DiscordServer,
  applicationId: string,
  actor: Actor,
  where: Where,
  messageId: string,
  customId: string,
  reason: string,
): { body: string; token: string } {
  const interaction = {
    ...base(discord, applicationId, 5, actor, where),
    message: clickedMessage(discord, where, messageId),
    data: {
      custom_id: customId,
      components: [{ type: 1, components: [{ type: 4, custom_id: 'reason', value: reason }] }],
    },
  };
  return { body: JSON.stringify(interaction), token: interaction.token };
}
