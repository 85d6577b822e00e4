import type { Readable, Writable } from 'node:stream';
import { createConsoleChat } from '../adapters/console/console-chat.js';
import { createDiscordChat } from '../adapters/discord/discord-chat.js';
import { createSlackChat } from '../adapters/slack/slack-chat.js';
import { ConfigError, type ChatMode, type Config } from '../config/config.js';
import { policyIdProblems, type PrincipalDirectory } from '../domain/principals.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { ChatHandlers, ChatPort } from '../ports/chat.js';
import type { HttpRoute } from '../ports/http.js';

/** One configured chat, as the roles use it, whichever adapter it is. */
export interface ChatAdapter {
  port: ChatPort;
  /** What the web role mounts on its HTTP server (Slack's events in HTTP mode; none for the console). */
  routes: readonly HttpRoute[];
  /** Wires the handlers and starts taking input (web role only). */
  start(handlers: ChatHandlers): Promise<void>;
  stop(): Promise<void>;
  /** Resolves when the person closes the input (the console); never for a chat that has no end. */
  closed?: Promise<void> | undefined;
}

export interface BuildChatDeps {
  config: Pick<Config, 'chat' | 'slack' | 'discord' | 'role' | 'policy'>;
  log: Logger;
  metrics: Metrics;
  /** Console chat streams (default stdin/stdout). */
  console?: { input: Readable; output: Writable } | undefined;
}

type ChatFactories = {
  [K in ChatMode['kind']]: (mode: Extract<ChatMode, { kind: K }>, deps: BuildChatDeps) => ChatAdapter;
};

function slackChat(
  mode: Extract<ChatMode, { kind: 'slack-http' | 'slack-socket' }>,
  { config, log, metrics }: BuildChatDeps,
): ChatAdapter {
  return createSlackChat({
    botToken: config.slack?.botToken ?? '',
    signingSecret: config.slack?.signingSecret,
    appToken: mode.kind === 'slack-socket' ? mode.appToken : undefined,
    apiUrl: config.slack?.apiUrl,
    command: config.policy.command,
    log,
    metrics,
  });
}

function discordChat({ config, log, metrics }: BuildChatDeps): ChatAdapter {
  const discord = config.discord;
  if (discord === undefined) throw new ConfigError(['DISCORD_BOT_TOKEN: the Discord chat needs DISCORD_PUBLIC_KEY, DISCORD_BOT_TOKEN and DISCORD_APPLICATION_ID.']);
  return createDiscordChat({ publicKey: discord.publicKey, botToken: discord.botToken, applicationId: discord.applicationId, apiUrl: discord.apiUrl, command: config.policy.command, log, metrics, gateway: discord.gateway });
}

/** Chat mode → adapter (loadConfig picks the mode). A new chat is one row here. */
export const CHAT_TABLE: ChatFactories = {
  'slack-http': slackChat,
  'slack-socket': slackChat,
  discord: (_mode, deps) => discordChat(deps),
  console: (_mode, { config, console }) => {
    if (config.role !== 'all') {
      throw new ConfigError([
        `SHIPGATE_ROLE: the console chat needs role all (got ${config.role}). Fix: configure Slack (SLACK_BOT_TOKEN) or Discord (DISCORD_*) for split roles, or unset SHIPGATE_ROLE.`,
      ]);
    }
    const chat = createConsoleChat({
      input: console?.input ?? process.stdin,
      output: console?.output ?? process.stdout,
      command: config.policy.command,
    });
    return { ...chat, routes: [] };
  },
};

// Generic in the kind so that TypeScript sees the row and the mode belong together.
function buildFrom<K extends ChatMode['kind']>(
  kind: K,
  mode: Extract<ChatMode, { kind: K }>,
  factories: ChatFactories,
  deps: BuildChatDeps,
): ChatAdapter {
  const factory: (mode: Extract<ChatMode, { kind: K }>, deps: BuildChatDeps) => ChatAdapter = factories[kind];
  return factory(mode, deps);
}

/**
 * The configured chats' adapter. Constructing one does no I/O: the web role starts it. With Slack
 * and Discord both configured (SPEC §2: a policy may name both) they are composed into one.
 */
export function buildChat(deps: BuildChatDeps, factories: ChatFactories = CHAT_TABLE): ChatAdapter {
  const primary = buildFrom(deps.config.chat.kind, deps.config.chat, factories, deps);
  if (deps.config.chat.kind === 'discord' || deps.config.discord === undefined) return primary;
  return composeChats([primary, factories.discord({ kind: 'discord' }, deps)]);
}

/** The owner of a channel: the first chat whose directory says the id is its own, else the first chat. */
function ownerOf(chats: readonly ChatAdapter[], channel: string): ChatAdapter {
  const first = chats[0];
  if (first === undefined) throw new Error('no chat to route to');
  return chats.find((chat) => chat.port.principals.owns(channel, 'channel')) ?? first;
}

/** One directory over several chats: an id belongs to the chat that owns it (Discord's are prefixed, Slack's are not). */
function composeDirectories(directories: readonly PrincipalDirectory[]): PrincipalDirectory {
  const owner = (id: string, as: 'principal' | 'channel') => directories.find((directory) => directory.owns(id, as));
  return {
    platform: directories.map((directory) => directory.platform).join(' and '),
    describe: {
      principal: directories.map((directory) => directory.describe.principal).join(', or '),
      channel: directories.map((directory) => directory.describe.channel).join(', or '),
    },
    owns: (id, as) => owner(id, as) !== undefined,
    isGroup: (id) => owner(id, 'principal')?.isGroup(id) ?? false,
    groupMembers: async (groupId) => (await owner(groupId, 'principal')?.groupMembers(groupId)) ?? [],
  };
}

/**
 * Several chats as one adapter: each port call goes to the chat that owns its channel (a run
 * lives on the platform it was requested from, and stores that channel), the routes are all of
 * theirs, and start and stop reach each of them.
 */
export function composeChats(chats: readonly ChatAdapter[]): ChatAdapter {
  const port: ChatPort = {
    postMessage: (input) => ownerOf(chats, input.channel).port.postMessage(input),
    updateMessage: (input) => ownerOf(chats, input.channel).port.updateMessage(input),
    postEphemeral: (input) => ownerOf(chats, input.channel).port.postEphemeral(input),
    findMessageByKey: (input) => ownerOf(chats, input.channel).port.findMessageByKey(input),
    uploadFile: (input) => ownerOf(chats, input.channel).port.uploadFile(input),
    permalink: (input) => ownerOf(chats, input.channel).port.permalink(input),
    principals: composeDirectories(chats.map((chat) => chat.port.principals)),
  };
  return {
    port,
    routes: chats.flatMap((chat) => chat.routes),
    async start(handlers) {
      await Promise.all(chats.map((chat) => chat.start(handlers)));
    },
    async stop() {
      await Promise.all(chats.map((chat) => chat.stop()));
    },
  };
}

/**
 * Policy ids are opaque to the policy schema: the configured chats say which are their own (SPEC §2).
 * An id none of them owns stops the start-up, naming the file and the key.
 */
export function checkPolicyIds(
  config: Pick<Config, 'policy' | 'policyPath'>,
  directories: readonly PrincipalDirectory[],
): void {
  const problems = policyIdProblems(config.policy, directories);
  if (problems.length > 0) {
    throw new ConfigError(
      problems.map((line) => `${config.policyPath} → ${line}. See shipgate.example.yaml for the file's shape.`),
    );
  }
}
