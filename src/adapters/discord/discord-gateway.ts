import type { REST } from '@discordjs/rest';
import { WebSocketManager, WebSocketShardEvents } from '@discordjs/ws';
import { GatewayDispatchEvents, GatewayIntentBits } from 'discord-api-types/v10';
import { z } from 'zod';
import type { Logger } from '../../log.js';

/**
 * The Discord Gateway connection for thread mentions (`DISCORD_GATEWAY=1`): @discordjs/ws's
 * WebSocketManager (the URL from GET /gateway/bot, heartbeats, resumes, reconnects and identify
 * throttling are the library's), and only MESSAGE_CREATE read off it.
 *
 * The one intent is GUILD_MESSAGES, which is not privileged. MESSAGE_CONTENT is not requested:
 * Discord delivers the content of a message that mentions the app (or replies to one of its
 * messages) without it, and shipgate reads no other message
 * (https://discord.com/developers/docs/gateway/you-might-not-need-a-privileged-intent). So the
 * application needs no privileged intent switched on, and no review once it grows.
 */

export const GATEWAY_INTENTS = GatewayIntentBits.GuildMessages;

/** Close codes that no reconnect can mend, with what the operator must do. */
const FATAL_CLOSES: Record<number, string> = {
  4004: 'the Gateway refused DISCORD_BOT_TOKEN: set it to the bot token from the Bot page',
  4013: 'the Gateway refused the intents shipgate asked for',
  4014: "the Gateway refused a privileged intent: switch it on on the application's Bot page",
};

/** How long to wait before trying to connect again after a failed start (GET /gateway/bot down, say). */
const RETRY_MS = [1_000, 5_000, 15_000, 60_000] as const;

const userSchema = z.object({ id: z.string(), bot: z.boolean().optional() });

/** The fields of a MESSAGE_CREATE that shipgate reads (https://discord.com/developers/docs/resources/message#message-object). */
export const gatewayMessageSchema = z.object({
  id: z.string(),
  channel_id: z.string(),
  guild_id: z.string().optional(),
  author: userSchema,
  webhook_id: z.string().nullish(),
  content: z.string(),
  mentions: z.array(userSchema).default([]),
  type: z.number().int(),
});
export type GatewayMessage = z.infer<typeof gatewayMessageSchema>;

const readySchema = z.object({ user: z.object({ id: z.string() }) });

export interface DiscordGateway {
  /** Disconnects (close code 1000) and stops reconnecting. */
  stop(): Promise<void>;
}

export function startDiscordGateway(options: {
  rest: REST;
  token: string;
  log: Logger;
  /** A MESSAGE_CREATE, with the bot's own user id from READY. */
  onMessage(message: GatewayMessage, botUserId: string): Promise<void>;
}): DiscordGateway {
  const { log } = options;
  const manager = new WebSocketManager({ token: options.token, intents: GATEWAY_INTENTS, rest: options.rest });
  let botUserId: string | undefined;
  let stopped = false;
  let retry: NodeJS.Timeout | undefined;

  manager.on(WebSocketShardEvents.Ready, (data, shardId) => {
    const ready = readySchema.safeParse(data);
    if (!ready.success) {
      log.warn({ shardId }, 'discord gateway ready without a user');
      return;
    }
    botUserId = ready.data.user.id;
    log.info({ shardId, botUserId }, 'discord gateway ready');
  });
  manager.on(WebSocketShardEvents.Dispatch, (payload) => {
    if (payload.t !== GatewayDispatchEvents.MessageCreate) return;
    const self = botUserId;
    if (self === undefined) return;
    const message = gatewayMessageSchema.safeParse(payload.d);
    if (!message.success) {
      log.warn({ issues: message.error.issues.length }, 'unreadable gateway message ignored');
      return;
    }
    options.onMessage(message.data, self).catch((error: unknown) => {
      log.error({ err: error, message: message.data.id }, 'gateway message failed');
    });
  });
  manager.on(WebSocketShardEvents.Closed, (code, shardId) => {
    const fatal = FATAL_CLOSES[code];
    if (fatal !== undefined) log.error({ code, shardId, fix: fatal }, 'discord gateway closed for good');
    else if (!stopped) log.info({ code, shardId }, 'discord gateway closed; reconnecting');
  });
  // Without a listener an 'error' event would throw out of the emitter.
  manager.on(WebSocketShardEvents.Error, (error, shardId) =>
    log.error({ err: error, shardId }, 'discord gateway error'),
  );

  function connect(attempt: number): void {
    if (stopped) return;
    manager.connect().catch((error: unknown) => {
      if (stopped) return;
      const delay = RETRY_MS[Math.min(attempt, RETRY_MS.length - 1)] ?? 60_000;
      log.warn({ err: error, retryInMs: delay }, 'discord gateway connect failed');
      retry = setTimeout(() => connect(attempt + 1), delay);
      retry.unref();
    });
  }
  // In the background: the interactions endpoint works without the Gateway, so starting waits for neither.
  connect(0);

  return {
    async stop() {
      stopped = true;
      clearTimeout(retry);
      await manager.destroy({ code: 1000, reason: 'shipgate stopping' });
    },
  };
}
