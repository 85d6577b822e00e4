import type { IncomingMessage, ServerResponse } from 'node:http';
import { DiscordAPIError, REST } from '@discordjs/rest';
import { Routes } from 'discord-api-types/v10';
import { z } from 'zod';
import type { Logger } from '../../log.js';
import type { Metrics } from '../../metrics.js';
import type { ActionEvent, ChatHandlers, ChatPort, CommandReply } from '../../ports/chat.js';
import type { HttpRoute } from '../../ports/http.js';
import { escapeMarkdown } from './discord-markdown.js';
import { NO_PINGS, nonceOf, toDiscordContent, toDiscordMessage, encodeCustomId } from './discord-message.js';
import {
  InteractionKind,
  interactionSchema,
  mapAction,
  mapCommand,
  REASON_INPUT_ID,
  REASON_MODAL_PREFIX,
  type Interaction,
} from './discord-interactions.js';
import { channelSnowflake, createDiscordPrincipals } from './discord-principals.js';
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

// Interaction response types (https://discord.com/developers/docs/interactions/receiving-and-responding#interaction-response-object-interaction-callback-type).
const PONG = 1;
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
}

export interface DiscordChat {
  port: ChatPort;
  routes: HttpRoute[];
  start(handlers: ChatHandlers): Promise<void>;
  /** Waits for the interaction work still running (follow-ups) and stops the REST client's timers. */
  stop(): Promise<void>;
}

const messageSchema = z.object({ id: z.string(), channel_id: z.string().optional() });
const channelSchema = z.object({ id: z.string(), guild_id: z.string().optional() });

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
    return card;
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
      const body = toDiscordMessage(view);
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
        rest.patch(Routes.channelMessage(where.channel, where.message), { body: toDiscordMessage(view) }),
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
    async findMessageByKey() {
      // Discord does not return a message's nonce when reading history, so an interrupted post
      // cannot be found by its key. It need not be: postMessage sends the same nonce with
      // enforce_nonce, and Discord answers a repeat (within its nonce window of minutes) with the
      // message that landed, so the outbox's second post is that first message.
      return undefined;
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
    },
    async stop() {
      handlers = undefined;
      await Promise.allSettled([...inFlight]);
      rest.clearHashSweeper();
      rest.clearHandlerSweeper();
    },
  };
}
