import { App, HTTPReceiver, LogLevel, SocketModeReceiver, type Logger as SlackLogger } from '@slack/bolt';
import { z } from 'zod';
import type { Logger } from '../../log.js';
import type { Metrics } from '../../metrics.js';
import type { ActionEvent, ChatHandlers, ChatPort, CommandReply } from '../../ports/chat.js';
import type { HttpRoute } from '../../ports/http.js';
import { toBlockKit } from './block-kit.js';
import { escapeMrkdwn, readIncoming, toMrkdwn } from './mrkdwn.js';
import { createSlackPrincipals } from './slack-principals.js';

/** Metadata event type under which shipgate stores a message's idempotency key. */
export const MESSAGE_KEY_EVENT = 'shipgate_message';
/** Slack needs an answer within 3 s; answer "busy" before that rather than time out silently. */
const ACK_DEADLINE_MS = 2_500;
/** Bounded search for an interrupted post: recent history only. */
const FIND_PAGES = 3;
/** Where Slack delivers commands, clicks and events in HTTP mode (the app's Request URL). */
export const SLACK_EVENTS_PATH = '/slack/events';

export interface SlackChatOptions {
  botToken: string;
  signingSecret: string | undefined;
  appToken: string | undefined;
  apiUrl: string | undefined;
  command: string;
  log: Logger;
  metrics?: Metrics | undefined;
}

export interface SlackChat {
  port: ChatPort;
  /** The endpoints to mount on the web role's server: `POST /slack/events` in HTTP mode, none in Socket Mode. */
  routes: HttpRoute[];
  /** Wires the handlers; in Socket Mode also opens the connection. */
  start(handlers: ChatHandlers): Promise<void>;
  stop(): Promise<void>;
}

function boltLogger(log: Logger): SlackLogger {
  let level: LogLevel = LogLevel.INFO;
  const child = log.child({ component: 'slack' });
  const text = (parts: unknown[]) => parts.map((p) => (typeof p === 'string' ? p : JSON.stringify(p))).join(' ');
  return {
    debug: (...parts) => child.debug({ detail: text(parts) }, 'bolt debug'),
    info: (...parts) => child.info({ detail: text(parts) }, 'bolt info'),
    warn: (...parts) => child.warn({ detail: text(parts) }, 'bolt warning'),
    error: (...parts) => child.error({ detail: text(parts) }, 'bolt error'),
    setLevel: (next) => {
      level = next;
    },
    getLevel: () => level,
    setName: () => undefined,
  };
}

// Only the fields we use, from Slack's payloads (SPEC: parse at the boundary).
const slashCommandSchema = z.object({
  command: z.string(),
  text: z.string(),
  user_id: z.string(),
  user_name: z.string().optional(),
  channel_id: z.string(),
  trigger_id: z.string(),
});

const blockActionSchema = z.object({
  user: z.object({ id: z.string(), name: z.string().optional(), username: z.string().optional() }),
  trigger_id: z.string().optional(),
  channel: z.object({ id: z.string() }).optional(),
  container: z.object({ channel_id: z.string().optional(), message_ts: z.string().optional() }).optional(),
  actions: z.array(z.object({ action_id: z.string(), value: z.string().optional(), action_ts: z.string() })).min(1),
});

/** The modal that asks for a reason (CommandReply.askReason); its private metadata carries the click back. */
export const REASON_VIEW_ID = 'shipgate.reason';
const REASON_BLOCK = 'reason';
const REASON_INPUT = 'reason_input';
const reasonMetadataSchema = z.object({
  actionId: z.string(),
  value: z.string(),
  channelId: z.string(),
  message: z.string().optional(),
  deliveryId: z.string(),
});
const viewSubmissionSchema = z.object({
  user: z.object({ id: z.string(), name: z.string().optional(), username: z.string().optional() }),
  view: z.object({
    private_metadata: z.string(),
    state: z.object({
      values: z.record(z.string(), z.record(z.string(), z.object({ value: z.string().nullable().optional() }))),
    }),
  }),
});
const subteamChangedSchema = z.object({ subteam_id: z.string() });

// An Events API envelope and its app_mention event; `user` is absent on some bot posts.
const eventEnvelopeSchema = z.object({ event_id: z.string().min(1) });
const appMentionSchema = z.object({
  text: z.string().default(''),
  user: z.string().optional(),
  channel: z.string(),
  thread_ts: z.string().optional(),
  ts: z.string(),
  bot_id: z.string().optional(),
  subtype: z.string().optional(),
});

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/**
 * Removes the leading `<@U…>` (or `<@U…|name>`) that addressed the bot. With
 * the bot's id unknown (auth.test failed) any leading user mention goes, since
 * an app_mention event is by definition addressed to this bot.
 */
export function stripLeadingMention(text: string, botUserId: string | undefined): string {
  const match = /^\s*<@([A-Z0-9]+)(?:\|[^>]*)?>[\s:,]*/.exec(text);
  if (match === null || (botUserId !== undefined && match[1] !== botUserId)) return text.trim();
  return text.slice(match[0].length).trim();
}

const postResultSchema = z.object({ ts: z.string() });
const historySchema = z.object({
  messages: z
    .array(
      z.object({
        ts: z.string(),
        bot_id: z.string().optional(),
        metadata: z.object({ event_type: z.string(), event_payload: z.record(z.string(), z.unknown()).optional() }).optional(),
      }),
    )
    .default([]),
  response_metadata: z.object({ next_cursor: z.string().optional() }).optional(),
});
const permalinkSchema = z.object({ permalink: z.string().optional() });
/** auth.test: the bot's own id, which every message it posts carries as `bot_id`. */
const selfSchema = z.object({ bot_id: z.string() });
const groupUsersSchema = z.object({ users: z.array(z.string()).default([]) });
/** files.uploadV2 answers with each files.completeUploadExternal result; the file id is in there. */
const uploadResultSchema = z.object({ files: z.array(z.object({ files: z.array(z.object({ id: z.string() })).default([]) })).default([]) });

/**
 * The Slack adapter (SPEC §2): Bolt over signed HTTP (or Socket Mode) for
 * input, Bolt's WebClient for output. Handlers see only the chat port types.
 */
export function createSlackChat(options: SlackChatOptions): SlackChat {
  const logger = boltLogger(options.log);
  const clientOptions = options.apiUrl === undefined ? {} : { slackApiUrl: options.apiUrl.endsWith('/') ? options.apiUrl : `${options.apiUrl}/` };
  const httpReceiver =
    options.appToken === undefined
      ? new HTTPReceiver({
          signingSecret: options.signingSecret ?? '',
          endpoints: SLACK_EVENTS_PATH,
          logger,
          // Ack as soon as the handler calls ack(); the handlers themselves only touch Redis.
          processBeforeResponse: false,
        })
      : undefined;
  const receiver = httpReceiver ?? new SocketModeReceiver({ appToken: options.appToken ?? '', logger });
  const app = new App({ token: options.botToken, receiver, logger, clientOptions });
  const client = app.client;

  async function call<T>(method: string, work: () => Promise<T>): Promise<T> {
    try {
      const result = await work();
      options.metrics?.externalCall('slack', 'ok');
      return result;
    } catch (error) {
      options.metrics?.externalCall('slack', 'error');
      options.log.warn({ method, err: error }, 'slack call failed');
      throw error;
    }
  }

  /** The bot's own id, read once (auth.test) and kept; a failed read is tried again next time. */
  let botId: string | undefined;
  async function ownBotId(): Promise<string> {
    botId ??= selfSchema.parse(await call('auth.test', () => client.auth.test())).bot_id;
    return botId;
  }

  // A message ref is the message's ts (unique within its channel, which every call names); a thread is its root's ts.
  const port: ChatPort = {
    async postMessage({ channel, thread, view, key }) {
      const result = await call('chat.postMessage', () =>
        client.chat.postMessage({
          channel,
          thread_ts: thread,
          text: escapeMrkdwn(view.text),
          blocks: toBlockKit(view),
          unfurl_links: false,
          metadata: { event_type: MESSAGE_KEY_EVENT, event_payload: { key } },
        }),
      );
      return { ref: postResultSchema.parse(result).ts };
    },
    async updateMessage({ channel, ref, view }) {
      await call('chat.update', () => client.chat.update({ channel, ts: ref, text: escapeMrkdwn(view.text), blocks: toBlockKit(view) }));
    },
    async postEphemeral({ channel, user, text, thread }) {
      await call('chat.postEphemeral', () => client.chat.postEphemeral({ channel, user, text: toMrkdwn(text), thread_ts: thread }));
    },
    async findMessageByKey({ channel, thread, key }) {
      const self = await ownBotId();
      let cursor: string | undefined;
      for (let page = 0; page < FIND_PAGES; page++) {
        const raw = await call('conversations.history', () =>
          thread === undefined
            ? client.conversations.history({ channel, limit: 100, cursor, include_all_metadata: true })
            : client.conversations.replies({ channel, ts: thread, limit: 100, cursor, include_all_metadata: true }),
        );
        const parsed = historySchema.parse(raw);
        // Only this bot's own posts: any other app in the channel can post the same metadata, and a
        // forgery adopted here would stand in for the card or reply, which would then never be posted.
        const found = parsed.messages.find(
          (m) => m.bot_id === self && m.metadata?.event_type === MESSAGE_KEY_EVENT && m.metadata.event_payload?.key === key,
        );
        if (found !== undefined) return { ref: found.ts };
        cursor = parsed.response_metadata?.next_cursor;
        if (cursor === undefined || cursor === '') return undefined;
      }
      return undefined;
    },
    async uploadFile({ channel, thread, filename, title, content, key }) {
      // uploadV2 is three calls: files.getUploadURLExternal, the bytes POSTed to the upload_url it
      // returns, then files.completeUploadExternal sharing the file into the thread. Slack keeps no
      // idempotency key for files; the outbox's record stops a second upload.
      const raw = await call('files.uploadV2', () =>
        client.filesUploadV2({ channel_id: channel, thread_ts: thread, filename, title, file: Buffer.from(content, 'utf8') }),
      );
      const id = uploadResultSchema.parse(raw).files.flatMap((completion) => completion.files)[0]?.id;
      if (id === undefined) throw new Error(`files.uploadV2 of ${filename} (${key}) answered without a file id`);
      return { ref: id };
    },
    async permalink({ channel, ref }) {
      const raw = await call('chat.getPermalink', () => client.chat.getPermalink({ channel, message_ts: ref }));
      return permalinkSchema.parse(raw).permalink;
    },
    principals: createSlackPrincipals(async (groupId) => {
      const raw = await call('usergroups.users.list', () => client.usergroups.users.list({ usergroup: groupId }));
      return groupUsersSchema.parse(raw).users;
    }),
  };

  async function withDeadline<T>(work: Promise<T>, fallback: T): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<T>((resolve) => {
      timer = setTimeout(() => resolve(fallback), ACK_DEADLINE_MS);
    });
    try {
      return await Promise.race([work, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  return {
    port,
    routes: httpReceiver === undefined ? [] : [{ method: 'POST', path: SLACK_EVENTS_PATH, listener: httpReceiver.requestListener }],
    async start(handlers) {
      app.command(options.command, async ({ command, ack }) => {
        const parsed = slashCommandSchema.safeParse(command);
        if (!parsed.success) {
          await ack({ response_type: 'ephemeral', text: 'shipgate could not read this command from Slack; please try again.' });
          return;
        }
        const c = parsed.data;
        // The work goes on after this answer, so it must not claim that nothing happened.
        const busy: CommandReply = { ephemeral: [{ kind: 'text', text: `shipgate is slow to answer right now; your command may still be taken. Check \`${options.command} status\` before trying again.` }] };
        // Slack sends the arguments as typed, with `<@U…>`, `<#C…|name>` and entities in them: handlers get plain text.
        const work = handlers.onCommand({ command: c.command, text: readIncoming(c.text).text, userId: c.user_id, userName: c.user_name, channelId: c.channel_id, deliveryId: c.trigger_id });
        const reply = await withDeadline(
          work.catch((error: unknown): CommandReply => {
            options.log.error({ err: error }, 'command handler failed');
            return { ephemeral: [{ kind: 'text', text: `shipgate hit an internal error. Check \`${options.command} status\` to see whether your run started before trying again.` }] };
          }),
          busy,
        );
        await ack(reply.ephemeral === undefined ? undefined : { response_type: 'ephemeral', text: toMrkdwn(reply.ephemeral) });
      });

      /** Answers a click: the ephemeral reply, or the reason modal it asks for (then the click comes back through the view). */
      async function answerAction(event: ActionEvent, triggerId: string | undefined): Promise<void> {
        const reply = await handlers.onAction(event);
        if (reply.askReason !== undefined) {
          if (triggerId === undefined) {
            // No trigger to open a modal with: decide without a reason rather than not at all.
            await answerAction({ ...event, reason: '' }, undefined);
            return;
          }
          const metadata = { actionId: event.actionId, value: event.value, channelId: event.channelId, message: event.message, deliveryId: event.deliveryId };
          await call('views.open', () =>
            client.views.open({
              trigger_id: triggerId,
              view: {
                type: 'modal',
                callback_id: REASON_VIEW_ID,
                private_metadata: JSON.stringify(metadata),
                title: { type: 'plain_text', text: reply.askReason?.title.slice(0, 24) ?? 'Reason' },
                submit: { type: 'plain_text', text: reply.askReason?.submit.slice(0, 24) ?? 'Submit' },
                close: { type: 'plain_text', text: 'Cancel' },
                blocks: [
                  {
                    type: 'input',
                    block_id: REASON_BLOCK,
                    optional: true,
                    label: { type: 'plain_text', text: reply.askReason?.label.slice(0, 2000) ?? 'Reason' },
                    element: { type: 'plain_text_input', action_id: REASON_INPUT, multiline: true, max_length: 2000 },
                  },
                ],
              },
            }),
          );
          return;
        }
        if (reply.ephemeral !== undefined) {
          await port.postEphemeral({ channel: event.channelId, user: event.userId, text: reply.ephemeral });
        }
      }

      app.action({ action_id: /^shipgate\./ }, async ({ body, ack }) => {
        await ack();
        const parsed = blockActionSchema.safeParse(body);
        if (!parsed.success) {
          options.log.warn({ issues: parsed.error.issues.length }, 'unreadable block action ignored');
          return;
        }
        const b = parsed.data;
        const action = b.actions[0];
        const channelId = b.channel?.id ?? b.container?.channel_id;
        if (action === undefined || channelId === undefined) return;
        try {
          await answerAction(
            {
              actionId: action.action_id,
              value: action.value ?? '',
              userId: b.user.id,
              userName: b.user.name ?? b.user.username,
              channelId,
              message: b.container?.message_ts,
              deliveryId: `${action.action_ts}.${b.user.id}`,
            },
            b.trigger_id,
          );
        } catch (error) {
          options.log.error({ err: error, action: action.action_id }, 'action handler failed');
        }
      });

      // The reason modal's submit: the click it was opened for, now with the reason.
      app.view(REASON_VIEW_ID, async ({ body, ack }) => {
        await ack();
        const parsed = viewSubmissionSchema.safeParse(body);
        const metadata = parsed.success ? reasonMetadataSchema.safeParse(parseJson(parsed.data.view.private_metadata)) : undefined;
        if (!parsed.success || metadata === undefined || !metadata.success) {
          options.log.warn('unreadable reason submission ignored');
          return;
        }
        const m = metadata.data;
        const user = parsed.data.user;
        const reason = parsed.data.view.state.values[REASON_BLOCK]?.[REASON_INPUT]?.value ?? '';
        try {
          await answerAction(
            {
              actionId: m.actionId,
              value: m.value,
              userId: user.id,
              userName: user.name ?? user.username,
              channelId: m.channelId,
              message: m.message,
              reason,
              // The submission is one delivery of its own, tied to the click it answers.
              deliveryId: `${m.deliveryId}.reason`,
            },
            undefined,
          );
        } catch (error) {
          options.log.error({ err: error, action: m.actionId }, 'reason submission failed');
        }
      });

      // A user group's members changed: cached membership is stale for every replica.
      app.event('subteam_members_changed', async ({ event }) => {
        const parsed = subteamChangedSchema.safeParse(event);
        if (!parsed.success || handlers.onGroupChanged === undefined) return;
        try {
          await handlers.onGroupChanged(parsed.data.subteam_id);
        } catch (error) {
          options.log.warn({ err: error, group: parsed.data.subteam_id }, 'group refresh failed');
        }
      });

      // Bolt acks Events API deliveries before listeners run, so this may take its time.
      app.event('app_mention', async ({ event, body, context }) => {
        const parsed = appMentionSchema.safeParse(event);
        const envelope = eventEnvelopeSchema.safeParse(body);
        if (!parsed.success || !envelope.success) {
          options.log.warn({ issues: (parsed.error?.issues.length ?? 0) + (envelope.error?.issues.length ?? 0) }, 'unreadable app_mention ignored');
          return;
        }
        const m = parsed.data;
        // Guardrail: only people give instructions. Bots (shipgate's own posts included) never trigger
        // anything, whatever they write, so one bot cannot drive another or loop on itself.
        const botUserId = context.botUserId;
        if (m.bot_id !== undefined || m.subtype === 'bot_message' || m.user === undefined || m.user === botUserId) {
          options.log.debug({ channel: m.channel, ts: m.ts }, 'mention by a bot ignored');
          return;
        }
        if (handlers.onMention === undefined) return;
        const user = m.user;
        try {
          const incoming = readIncoming(stripLeadingMention(m.text, botUserId));
          const reply = await handlers.onMention({
            text: incoming.text,
            mentions: incoming.mentions.filter((id) => id !== botUserId),
            userId: user,
            channelId: m.channel,
            thread: m.thread_ts,
            message: m.ts,
            deliveryId: envelope.data.event_id,
          });
          if (reply.ephemeral !== undefined) {
            await port.postEphemeral({ channel: m.channel, user, text: reply.ephemeral, thread: m.thread_ts });
          }
        } catch (error) {
          options.log.error({ err: error, channel: m.channel, ts: m.ts }, 'mention handler failed');
        }
      });

      if (httpReceiver === undefined) await app.start();
    },
    async stop() {
      if (httpReceiver === undefined) await app.stop();
    },
  };
}
