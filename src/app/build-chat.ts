import type { Readable, Writable } from 'node:stream';
import { createConsoleChat } from '../adapters/console/console-chat.js';
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
  config: Pick<Config, 'chat' | 'slack' | 'role' | 'policy'>;
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

/** Chat mode → adapter (loadConfig picks the mode). A new chat is one row here. */
export const CHAT_TABLE: ChatFactories = {
  'slack-http': slackChat,
  'slack-socket': slackChat,
  console: (_mode, { config, console }) => {
    if (config.role !== 'all') {
      throw new ConfigError([
        `SHIPGATE_ROLE: the console chat needs role all (got ${config.role}). Fix: set SLACK_BOT_TOKEN for split roles, or unset SHIPGATE_ROLE.`,
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

/** The configured chat's adapter. Constructing one does no I/O: the web role starts it. */
export function buildChat(deps: BuildChatDeps, factories: ChatFactories = CHAT_TABLE): ChatAdapter {
  return buildFrom(deps.config.chat.kind, deps.config.chat, factories, deps);
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
