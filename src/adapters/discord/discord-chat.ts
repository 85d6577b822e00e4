import type { IncomingMessage, ServerResponse } from 'node:http';
import { DiscordAPIError, REST } from '@discordjs/rest';
import { Routes } from 'discord-api-types/v10';
import { z } from 'zod';
import type { Logger } from '../../log.js';
import type { Metrics } from '../../metrics.js';
import type { ActionEvent, ChatHandlers, ChatPort, CommandReply, MentionEvent } from '../../ports/chat.js';
import type { HttpRoute } from '../../ports/http.js';
import { startDiscordGateway, type DiscordGateway, type GatewayMessage } from './discord-gateway.js';
import { escapeMarkdown } from './discord-markdown.js';
import { createMentionAnswers } from './mention-answers.js';
import {
  FOOTER,
  keyFooter,
  NO_PINGS,
  nonceOf,
  toDiscordContent,
  toDiscordMessage,
  encodeCustomId,
  withFooter,
} from './discord-message.js';
import {
  flattenDiscordText,
  InteractionKind,
  interactionSchema,
  mapAction,
  mapCommand,
  REASON_INPUT_ID,
  REASON_MODAL_PREFIX,
  THREAD_TYPES,
  type Interaction,
} from './discord-interactions.js';
import { channelSnowflake, createDiscordPrincipals, discordChannel, discordUser } from './discord-principals.js';
import { discordPublicKey, verifyDiscordSignature } from './discord-signature.js';

/** Where Discord delivers interactions (the application's Interactions Endpoint URL). */
export const DISCORD_INTERACTIONS_PATH = '/discord/interactions';
/** Discord waits 3 s for the first answer to a click; a modal can only be that first answer. */
const CLICK_DEADLINE_MS = 2_500;
/** Interaction tokens stay valid 15 minutes; a little less, so a follow-up never races the expiry. */
const TOKEN_LIFETIME_MS = 14 * 60_000;
/** Interactions are small JSON; anything bigger is not Discord. */
const MAX_BODY_BYTES = 256 * 1024;
/** Discord's error code for "a thread has already been created for this message". */
const THREAD_ALREADY_CREATED = 160004;
/** A week: threads of runs that wait on an approval stay open for the approvers. */
const THREAD_ARCHIVE_MINUTES = 10080;
/** Discord's error code for "unknown channel" (a thread never created, or deleted). */
const UNKNOWN_CHANNEL = 10003;
/**
 * How far back findMessageByKey reads (Discord's page of at most 100; 50 covers a run's thread
 * between a crash and the retry). Older posts are not found, and are then repeated under the same
 * nonce, which Discord still dedupes within its nonce window.
 */
const FIND_WINDOW = 50;
/** Threads remembered as a run's or not (gateway mentions); beyond this the oldest are forgotten. */
const THREAD_CACHE = 1000;
/** Public answers one person's mentions get per thread per minute; the requester's real follow-ups need far fewer. */
const MENTION_ANSWERS_PER_MINUTE = 3;
/** What a button or modal outside a server is answered: runs live in a server's channels. */
const OUTSIDE_SERVER =
  'shipgate works in server channels only: use the buttons on the run’s card or in its thread.';

// Interaction response types (https://discord.com/developers/docs/interactions/receiving-and-responding#interaction-response-object-interaction-callback-type).
const PONG = 1;
const CHANNEL_MESSAGE = 4;
const DEFERRED_CHANNEL_MESSAGE = 5;
const DEFERRED_UPDATE_MESSAGE = 6;
const AUTOCOMPLETE_RESULT = 8;
const MODAL = 9;
const EPHEMERAL = 64;

export interface DiscordChatOptions {
  publicKey: string;
  botToken: string;
  applicationId: string;
  /** REST base with its version, e.g. https://discord.com/api/v10. */
  apiUrl: string;
  command: string;
  log: Logger;
  metrics?: Metrics | undefined;
  /** Seconds since epoch (signature freshness); tests move it. */
  nowSeconds?: (() => number) | undefined;
  /** @discordjs/rest retries of a failed request (5xx, timeouts); 429s are waited out apart from these. */
  retries?: number | undefined;
  /** DISCORD_GATEWAY=1: connect to the Gateway on start, for mentions of the bot in a run's thread. */
  gateway?: boolean | undefined;
}

export interface DiscordChat {
  port: ChatPort;
  routes: HttpRoute[];
  start(handlers: ChatHandlers): Promise<void>;
  /** Waits for the interaction work still running (follow-ups) and stops the REST client's timers. */
  stop(): Promise<void>;
}

const messageSchema = z.object({ id: z.string(), channel_id: z.string().optional() });
const channelSchema = z.object({
  id: z.string(),
  type: z.number().int().optional(),
  guild_id: z.string().optional(),
  parent_id: z.string().nullish(),
  owner_id: z.string().optional(),
});
/** A message as GET /channels/{id}/messages lists it: only what findMessageByKey compares. */
const listedMessageSchema = z.object({
  id: z.string(),
  author: z.object({ id: z.string() }),
  webhook_id: z.string().nullish(),
  embeds: z.array(z.object({ footer: z.object({ text: z.string() }).optional() })).default([]),
});
/** GET /users/@me: the bot's own user, the only author whose key footers count. */
const selfSchema = z.object({ id: z.string() });

/** `https://discord.com/api/v10` → @discordjs/rest's `api` and `version` options. */
export function restBase(apiUrl: string): { api: string; version: string } {
  const match = /^(.*)\/v(\d+)\/?$/.exec(apiUrl);
  if (match === null) throw new Error(`DISCORD_API_URL must end with the API version (/v10): ${apiUrl}`);
  return { api: match[1] ?? '', version: match[2] ?? '10' };
}

function readBody(req: IncomingMessage): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size <= MAX_BODY_BYTES) chunks.push(chunk);
    });
    req.on('end', () => resolve(size > MAX_BODY_BYTES ? undefined : Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function reply(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function header(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

function parseJson(body: Buffer): unknown {
  try {
    return JSON.parse(body.toString('utf8'));
  } catch {
    return undefined;
  }
}

/** Splits a port message ref: a thread reply is `<thread>/<message>`, the card `<message>` in its channel. */
function located(channel: string, ref: string): { channel: string; message: string } {
  const slash = ref.indexOf('/');
  return slash < 0 ? { channel, message: ref } : { channel: ref.slice(0, slash), message: ref.slice(slash + 1) };
}

/**
 * The Discord adapter (SPEC §2): interactions over signed HTTP in, @discordjs/rest out (its
 * bucket queues wait out rate limits and 429s). Channel refs are `discord:<channel id>`; the card
 * is a channel message whose thread (started from it, so the thread's id is the card's id) holds
 * the gate replies.
 *
 * Ephemeral messages exist on Discord only as answers to an interaction. The port's
 * `postEphemeral` therefore answers through the latest interaction of that person in that channel
 * while its token is valid (15 minutes) and otherwise sends nothing (a log line says so): a DM
 * would reach people outside the channel's context, which is worse than silence for a refusal.
 * Answers to commands and clicks themselves always go through their own interaction.
 */
export function createDiscordChat(options: DiscordChatOptions): DiscordChat {
  const key = discordPublicKey(options.publicKey);
  const { api, version } = restBase(options.apiUrl);
  const rest = new REST({ api, version, retries: options.retries ?? 3 }).setToken(options.botToken);
  const nowSeconds = options.nowSeconds ?? (() => Math.floor(Date.now() / 1000));
  const appId = options.applicationId;
  const log = options.log.child({ component: 'discord' });

  /** Threads known to exist (created here or found existing); a miss only costs one create call. */
  const threads = new Set<string>();
  /**
   * Gateway mentions: thread id → the channel it was started in when it is a thread this bot started
   * (a run's card thread), or null when it is not. Filled by ensureThread and by one channel read.
   */
  const threadParents = new Map<string, string | null>();
  /** Public answers to mentions, bounded per person and thread (see mention-answers.ts). */
  const mentionAnswers = createMentionAnswers({ max: MENTION_ANSWERS_PER_MINUTE, windowMs: 60_000, capacity: THREAD_CACHE });
  /** The guild of each channel seen, for permalinks. */
  const guilds = new Map<string, string>();
  /** The latest interaction token per `<channel>|<user>`, for postEphemeral. */
  const tokens = new Map<string, { token: string; until: number }>();
  /** Interaction work that outlives its HTTP answer (follow-ups); stop() waits for it. */
  const inFlight = new Set<Promise<void>>();

  async function call<T>(method: string, work: () => Promise<T>): Promise<T> {
    try {
      const result = await work();
      options.metrics?.externalCall('discord', 'ok');
      return result;
    } catch (error) {
      options.metrics?.externalCall('discord', 'error');
      log.warn({ method, err: error }, 'discord call failed');
      throw error;
    }
  }

  /** The bot's own user id, read once (GET /users/@me) and kept; a failed read is tried again next time. */
  let selfUserId: string | undefined;
  async function selfId(): Promise<string> {
    selfUserId ??= selfSchema.parse(await call('users.me', () => rest.get(Routes.user('@me')))).id;
    return selfUserId;
  }

  function snowflake(channel: string): string {
    const id = channelSnowflake(channel);
    if (id === undefined) throw new Error(`not a Discord channel reference: ${channel}`);
    return id;
  }

  /** Starts the card's thread once; Discord answers 160004 when it exists, which is as good. */
  async function ensureThread(channel: string, card: string, name: string | undefined): Promise<string> {
    if (threads.has(card)) return card;
    try {
      await call('threads.create', () =>
        rest.post(Routes.threads(channel, card), {
          body: {
            name: (name ?? 'shipgate run').slice(0, 100) || 'shipgate run',
            auto_archive_duration: THREAD_ARCHIVE_MINUTES,
          },
        }),
      );
    } catch (error) {
      if (!(error instanceof DiscordAPIError && error.code === THREAD_ALREADY_CREATED)) throw error;
    }
    threads.add(card);
    rememberThread(card, channel);
    return card;
  }

  function rememberThread(thread: string, parent: string | null): void {
    if (threadParents.size >= THREAD_CACHE) {
      const oldest = threadParents.keys().next().value;
      if (oldest !== undefined) threadParents.delete(oldest);
    }
    threadParents.set(thread, parent);
  }

  async function sendMessage(
    channel: string,
    body: Record<string, unknown>,
    key: string,
    files?: { name: string; data: Buffer }[],
  ): Promise<string> {
    // The nonce with enforce_nonce makes a repeated post (an outbox retry after a lost answer)
    // return the first message instead of a second one.
    const raw = await call('messages.create', () =>
      rest.post(Routes.channelMessages(channel), {
        body: { ...body, nonce: nonceOf(key), enforce_nonce: true },
        files,
      }),
    );
    return messageSchema.parse(raw).id;
  }

  async function followUp(token: string, content: string): Promise<void> {
    await call('webhooks.followUp', () =>
      rest.post(Routes.webhook(appId, token), {
        auth: false,
        body: { content, flags: EPHEMERAL, allowed_mentions: NO_PINGS },
      }),
    );
  }

  async function editOriginal(token: string, content: string): Promise<void> {
    await call('webhooks.editOriginal', () =>
      rest.patch(Routes.webhookMessage(appId, token, '@original'), {
        auth: false,
        body: { content, allowed_mentions: NO_PINGS },
      }),
    );
  }

  function remember(interaction: Interaction, channelId: string, userId: string): void {
    tokens.set(`${channelId}|${userId}`, { token: interaction.token, until: Date.now() + TOKEN_LIFETIME_MS });
    const guild = interaction.guild_id;
    const place = interaction.channel?.id ?? interaction.channel_id;
    if (guild !== undefined && place !== undefined) guilds.set(place, guild);
    if (guild !== undefined && interaction.channel?.parent_id != null) guilds.set(interaction.channel.parent_id, guild);
    // Forget expired tokens now and then so the map stays the size of the active people.
    if (tokens.size > 1000) for (const [k, v] of tokens) if (v.until < Date.now()) tokens.delete(k);
  }

  function background(work: () => Promise<void>): void {
    const running = work()
      .catch((error: unknown) => log.error({ err: error }, 'interaction follow-up failed'))
      .finally(() => inFlight.delete(running));
    inFlight.add(running);
  }

  const port: ChatPort = {
    async postMessage({ channel, thread, view, key }) {
      const parent = snowflake(channel);
      // The key goes into the footer too: it is what findMessageByKey can read back (the nonce is not).
      const body = withFooter(toDiscordMessage(view), keyFooter(key));
      if (thread === undefined) {
        const id = await sendMessage(parent, { ...body }, key);
        // The thread starts with the card, named after it, so the channel shows where the run talks.
        await ensureThread(parent, id, view.blocks.find((block) => block.type === 'header')?.text ?? view.text);
        return { ref: id };
      }
      const threadId = await ensureThread(parent, located(channel, thread).message, undefined);
      return { ref: `${threadId}/${await sendMessage(threadId, { ...body }, key)}` };
    },
    async updateMessage({ channel, ref, view }) {
      const where = located(snowflake(channel), ref);
      await call('messages.edit', () =>
        // An edit replaces the embed and its footer. The key's marker is only ever looked for while a
        // post's reference is unknown, which is before anything can edit it, so the plain footer does.
        rest.patch(Routes.channelMessage(where.channel, where.message), {
          body: withFooter(toDiscordMessage(view), FOOTER),
        }),
      );
    },
    async postEphemeral({ channel, user, text }) {
      const remembered = tokens.get(`${channel}|${user}`);
      if (remembered === undefined || remembered.until < Date.now()) {
        log.info(
          { channel, user },
          'ephemeral message dropped: no recent interaction of that person in that channel to answer through',
        );
        return;
      }
      await followUp(remembered.token, toDiscordContent(text));
    },
    async findMessageByKey({ channel, thread, key }) {
      // Discord never returns a message's nonce on a read, so the post is recognised by the footer
      // postMessage wrote (keyFooter), among the bot's recent messages where it would be.
      const parent = snowflake(channel);
      const where = thread === undefined ? parent : located(channel, thread).message;
      let raw: unknown;
      try {
        raw = await call('messages.list', () =>
          rest.get(Routes.channelMessages(where), { query: new URLSearchParams({ limit: String(FIND_WINDOW) }) }),
        );
      } catch (error) {
        // The card's thread was never started (the post died first): nothing can be in it.
        if (thread !== undefined && error instanceof DiscordAPIError && error.code === UNKNOWN_CHANNEL) return undefined;
        throw error;
      }
      const footer = keyFooter(key);
      const author = await selfId();
      // Only this bot's own messages count: another bot or a webhook in the channel can write any footer,
      // and a forged one found here would make the outbox adopt it as the card and never post the real one.
      // Discord lists newest first; should the key ever be on two messages, the first one posted is the one.
      const found = z
        .array(listedMessageSchema)
        .parse(raw)
        .filter(
          (message) =>
            message.author.id === author &&
            message.webhook_id == null &&
            message.embeds.some((embed) => embed.footer?.text === footer),
        )
        .at(-1);
      if (found === undefined) return undefined;
      return { ref: thread === undefined ? found.id : `${where}/${found.id}` };
    },
    async uploadFile({ channel, thread, filename, title, content, key }) {
      const threadId = await ensureThread(snowflake(channel), located(channel, thread).message, undefined);
      const id = await sendMessage(
        threadId,
        {
          content: escapeMarkdown(title).slice(0, 2000),
          allowed_mentions: NO_PINGS,
          attachments: [{ id: 0, filename }],
        },
        key,
        [{ name: filename, data: Buffer.from(content, 'utf8') }],
      );
      return { ref: `${threadId}/${id}` };
    },
    async permalink({ channel, ref }) {
      const parent = snowflake(channel);
      let guild = guilds.get(parent);
      if (guild === undefined) {
        const raw = await call('channels.get', () => rest.get(Routes.channel(parent)));
        guild = channelSchema.parse(raw).guild_id;
        if (guild === undefined) return undefined;
        guilds.set(parent, guild);
      }
      const where = located(parent, ref);
      return `https://discord.com/channels/${guild}/${where.channel}/${where.message}`;
    },
    principals: createDiscordPrincipals(),
  };

  let handlers: ChatHandlers | undefined;

  /** A /ship: deferred at once (Discord's 3 s), the handler's answer then replaces "thinking…". */
  function onCommand(res: ServerResponse, interaction: Interaction, active: ChatHandlers): void {
    const mapping = mapCommand(interaction, options.command);
    reply(res, 200, { type: DEFERRED_CHANNEL_MESSAGE, data: { flags: EPHEMERAL } });
    background(async () => {
      if (mapping.kind === 'refuse') {
        await editOriginal(interaction.token, escapeMarkdown(mapping.text));
        return;
      }
      remember(interaction, mapping.event.channelId, mapping.event.userId);
      let answer: CommandReply;
      try {
        if (mapping.kind === 'command') answer = await active.onCommand(mapping.event);
        else if (active.onMention === undefined)
          answer = { ephemeral: [{ kind: 'text', text: 'Follow-ups are not available in this build.' }] };
        else answer = await active.onMention(mapping.event);
      } catch (error) {
        log.error({ err: error }, 'command handler failed');
        answer = {
          ephemeral: [
            {
              kind: 'text',
              text: `shipgate hit an internal error. Check ${options.command} status to see whether your run started before trying again.`,
            },
          ],
        };
      }
      // The deferred answer must be resolved either way, or Discord shows "thinking…" until it times out.
      await editOriginal(
        interaction.token,
        answer.ephemeral === undefined ? 'Done.' : toDiscordContent(answer.ephemeral),
      );
    });
  }

  /** A click (or a reason modal's submit): answered within the 3 s, the ephemeral refusal as a follow-up. */
  async function onAction(res: ServerResponse, interaction: Interaction, active: ChatHandlers): Promise<void> {
    // Outside a server there is no run channel and no member roles to judge the click by.
    if (interaction.guild_id === undefined) {
      reply(res, 200, {
        type: CHANNEL_MESSAGE,
        data: { content: OUTSIDE_SERVER, flags: EPHEMERAL, allowed_mentions: NO_PINGS },
      });
      log.info({ type: interaction.type }, 'interaction outside a server refused');
      return;
    }
    const event = mapAction(interaction);
    if (event === undefined) {
      reply(res, 200, { type: DEFERRED_UPDATE_MESSAGE });
      log.warn({ type: interaction.type }, 'unreadable component interaction ignored');
      return;
    }
    remember(interaction, event.channelId, event.userId);
    const work = active.onAction(event).catch((error: unknown): CommandReply => {
      log.error({ err: error, action: event.actionId }, 'action handler failed');
      return {
        ephemeral: [{ kind: 'text', text: 'shipgate hit an internal error with this click; please try again.' }],
      };
    });
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((resolve) => {
      timer = setTimeout(() => resolve('late'), CLICK_DEADLINE_MS);
    });
    const first = await Promise.race([work, late]);
    clearTimeout(timer);
    if (first !== 'late' && first.askReason !== undefined && interaction.type === InteractionKind.component) {
      const customId = encodeCustomId(event.actionId, event.value);
      if (customId !== undefined) {
        reply(res, 200, {
          type: MODAL,
          data: {
            custom_id: `${REASON_MODAL_PREFIX}${customId}`,
            title: first.askReason.title.slice(0, 45) || 'Reason',
            components: [
              {
                type: 1,
                components: [
                  {
                    type: 4,
                    custom_id: REASON_INPUT_ID,
                    style: 2,
                    label: first.askReason.label.slice(0, 45) || 'Reason',
                    required: false,
                    max_length: 2000,
                  },
                ],
              },
            ],
          },
        });
        return;
      }
    }
    reply(res, 200, { type: DEFERRED_UPDATE_MESSAGE });
    background(async () => {
      let answer = await work;
      // Too late for a modal (or no room to carry the click): decide without a reason rather than not at all.
      if (answer.askReason !== undefined)
        answer = await active.onAction({ ...event, reason: '' } satisfies ActionEvent);
      if (answer.ephemeral !== undefined) await followUp(interaction.token, toDiscordContent(answer.ephemeral));
    });
  }

  /**
   * The channel a thread was started in, when the thread is one this bot started (a run's card
   * thread); undefined for any other channel. One channel read per thread, then remembered.
   */
  async function runThreadParent(channelId: string, botUserId: string): Promise<string | undefined> {
    const known = threadParents.get(channelId);
    if (known !== undefined) return known ?? undefined;
    let parent: string | null = null;
    try {
      const channel = channelSchema.parse(await call('channels.get', () => rest.get(Routes.channel(channelId))));
      if (
        channel.type !== undefined &&
        THREAD_TYPES.includes(channel.type) &&
        channel.owner_id === botUserId &&
        channel.parent_id != null
      )
        parent = channel.parent_id;
      if (channel.guild_id !== undefined && parent !== null) guilds.set(parent, channel.guild_id);
    } catch (error) {
      // Gone: not a thread shipgate can act in, for good.
      if (error instanceof DiscordAPIError && error.status === 404) {
        log.info({ err: error, channel: channelId }, 'mention in an unknown channel ignored');
        rememberThread(channelId, null);
        return undefined;
      }
      // Anything else (no access yet, an outage, a 429 past the retries, a malformed answer) may change:
      // not remembered, so the next mention there asks again instead of being ignored until a restart.
      log.warn({ err: error, channel: channelId }, 'mention ignored: its channel could not be read');
      return undefined;
    }
    rememberThread(channelId, parent);
    return parent ?? undefined;
  }

  /**
   * A MESSAGE_CREATE from the Gateway: a person's message in a run's thread that mentions the bot
   * becomes a follow-up (SPEC §2), as a Slack thread mention does. Everything else is ignored:
   * bots and webhooks (shipgate's own posts included, so it never answers itself), DMs, other
   * channels, and messages that do not mention the bot. Who may instruct the run is the follow-up
   * handler's decision (the requester only), so a refusal is audited there like on Slack.
   *
   * The answer is a reply to the mention in the thread: Discord has ephemeral messages only as
   * answers to interactions, and the mention itself is public in that thread.
   */
  async function onGatewayMessage(message: GatewayMessage, botUserId: string): Promise<void> {
    if (message.guild_id === undefined) return;
    if (message.author.bot === true || message.webhook_id != null || message.author.id === botUserId) return;
    if (!message.mentions.some((user) => user.id === botUserId)) return;
    const active = handlers;
    if (active?.onMention === undefined) return;
    const parent = await runThreadParent(message.channel_id, botUserId);
    if (parent === undefined) {
      log.debug({ channel: message.channel_id }, 'mention outside a run thread ignored');
      return;
    }
    const mention = new RegExp(`<@!?${botUserId}>`, 'g');
    const said = flattenDiscordText(message.content.replace(mention, ' '));
    const event: MentionEvent = {
      text: said.text,
      mentions: said.mentions.filter((id) => id !== discordUser(botUserId)),
      userId: discordUser(message.author.id),
      channelId: discordChannel(parent),
      // The thread was started from the card, so its id is the card's reference.
      thread: message.channel_id,
      message: `${message.channel_id}/${message.id}`,
      deliveryId: `discord.message.${message.id}`,
    };
    let answer: CommandReply;
    try {
      answer = await active.onMention(event);
    } catch (error) {
      log.error({ err: error, message: message.id }, 'mention handler failed');
      answer = { ephemeral: [{ kind: 'text', text: 'shipgate hit an internal error with this message; please try again.' }] };
    }
    if (answer.ephemeral === undefined) return;
    if (!mentionAnswers.take(message.channel_id, message.author.id)) {
      log.info(
        { channel: message.channel_id, user: message.author.id },
        'mention answer not sent: that person had enough answers in this thread for now',
      );
      return;
    }
    await sendMessage(
      message.channel_id,
      {
        content: toDiscordContent(answer.ephemeral),
        allowed_mentions: NO_PINGS,
        message_reference: { message_id: message.id, fail_if_not_exists: false },
      },
      // One answer per mention, whichever replica's Gateway session delivered it.
      `mention.${message.id}`,
    );
  }

  let gateway: DiscordGateway | undefined;

  async function listener(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readBody(req);
    if (body === undefined) {
      reply(res, 413, { error: 'body too large' });
      return;
    }
    const check = verifyDiscordSignature({
      key,
      signature: header(req, 'x-signature-ed25519'),
      timestamp: header(req, 'x-signature-timestamp'),
      body,
      nowSeconds: nowSeconds(),
    });
    if (!check.ok) {
      log.warn({ reason: check.reason }, 'interaction refused: signature');
      reply(res, 401, { error: 'invalid request signature' });
      return;
    }
    const parsed = interactionSchema.safeParse(parseJson(body));
    if (!parsed.success) {
      reply(res, 400, { error: 'not an interaction' });
      return;
    }
    const interaction = parsed.data;
    if (interaction.type === InteractionKind.ping) {
      reply(res, 200, { type: PONG });
      return;
    }
    const active = handlers;
    if (active === undefined) {
      // Not started yet (or stopping): Discord shows the person that the app did not answer.
      reply(res, 503, { error: 'not ready' });
      return;
    }
    switch (interaction.type) {
      case InteractionKind.command:
        onCommand(res, interaction, active);
        return;
      case InteractionKind.component:
      case InteractionKind.modalSubmit:
        await onAction(res, interaction, active);
        return;
      case InteractionKind.autocomplete:
        reply(res, 200, { type: AUTOCOMPLETE_RESULT, data: { choices: [] } });
        return;
      default:
        reply(res, 400, { error: `unsupported interaction type ${interaction.type}` });
    }
  }

  return {
    port,
    routes: [
      {
        method: 'POST',
        path: DISCORD_INTERACTIONS_PATH,
        listener: (req, res) => {
          listener(req, res).catch((error: unknown) => {
            log.error({ err: error }, 'interaction failed');
            if (!res.headersSent) reply(res, 500, { error: 'internal error' });
          });
        },
      },
    ],
    async start(next) {
      handlers = next;
      if (options.gateway === true && gateway === undefined) {
        gateway = startDiscordGateway({
          rest,
          token: options.botToken,
          log,
          // Tracked like interaction follow-ups, so stop() waits for a mention being answered.
          onMessage: async (message, botUserId) => background(() => onGatewayMessage(message, botUserId)),
        });
      }
    },
    async stop() {
      handlers = undefined;
      const open = gateway;
      gateway = undefined;
      await open?.stop();
      await Promise.allSettled([...inFlight]);
      rest.clearHashSweeper();
      rest.clearHandlerSweeper();
    },
  };
}
