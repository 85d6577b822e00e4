import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable, Writable } from 'node:stream';
import type { PrincipalDirectory } from '../../domain/principals.js';
import type { ChatHandlers, ChatPort } from '../../ports/chat.js';
import { consoleText, toText } from './console-text.js';

/**
 * The local person at the terminal, and the channel they type in. The console
 * stands in for any chat, so it takes every id a policy may name (Slack's or
 * Discord's): a policy written for a team's chat can be tried locally unchanged.
 */
export const CONSOLE_USER = 'ULOCAL';
export const CONSOLE_CHANNEL = 'CLOCAL';

export interface ConsoleChatOptions {
  input: Readable;
  output: Writable;
  command: string;
  /** Members of groups, for trying out group-based policy locally; every other id is a user or channel. */
  userGroups?: Record<string, string[]>;
  /** Where files "attached" to a thread are written (default: shipgate-files in the OS temp directory). */
  filesDir?: string | undefined;
}

export interface ConsoleChat {
  port: ChatPort;
  start(handlers: ChatHandlers): Promise<void>;
  /** Resolves when the person closes the input (Ctrl-D or `quit`). */
  closed: Promise<void>;
  stop(): Promise<void>;
}

const HELP = `Console chat: type a slash command, e.g.
  /ship acme/shop add a /healthz endpoint
  click cancel <run-id>        press the Cancel button of a run
  click <verb> <value> [text]  press any button: the line printed under it (a Reject's reason after the value)
  reply <run-id> <text…>       mention the bot in a run's thread (a follow-up for its agent)
  as <user-id> <line>          act as another user, e.g. as U0999 click cancel sg-…
  quit                         stop shipgate`;

/**
 * A terminal chat in the Hubot-shell tradition: it implements the same chat
 * port as Slack, so commands, workers and rendering run unchanged. Messages
 * are printed as text; buttons are pressed by typing `click <verb> <value>`,
 * and a follow-up in a run's thread is `reply <run-id> <text…>`.
 */
export function createConsoleChat(options: ConsoleChatOptions): ConsoleChat {
  const out = options.output;
  // Message refs are Slack-like timestamps, unique in the process; a thread is named by its root's ref.
  const messages = new Map<string, { channel: string; thread?: string | undefined; key: string }>();
  let clock = 0;
  let delivery = 0;
  // Delivery ids are the duplicate-request keys (kept a day): a random session id, so that another
  // session (a restart, another machine, the same PID in a fresh namespace) never repeats one.
  const session = randomBytes(8).toString('hex');
  const nextTs = () => `${Math.floor(Date.now() / 1000)}.${String(++clock).padStart(6, '0')}`;
  const print = (text: string) => out.write(`${text}\n`);

  const groups = options.userGroups ?? {};
  const principals: PrincipalDirectory = {
    platform: 'console',
    describe: { principal: 'a user or group id without spaces', channel: 'a channel id without spaces' },
    owns: (id) => /^\S+$/.test(id),
    isGroup: (id) => Object.hasOwn(groups, id),
    groupMembers: async (groupId) => (Object.hasOwn(groups, groupId) ? (groups[groupId] ?? []) : []),
  };

  const port: ChatPort = {
    async postMessage({ channel, thread, view, key }) {
      const ref = nextTs();
      messages.set(ref, { channel, thread, key });
      const where = thread === undefined ? `#${channel}` : `#${channel} thread ${thread}`;
      print(`\n── message ${ref} in ${where} ──\n${toText(view)}`);
      return { ref };
    },
    async updateMessage({ channel, ref, view }) {
      print(`\n── message ${ref} in #${channel} (updated) ──\n${toText(view)}`);
    },
    async postEphemeral({ text }) {
      print(`\n(only you can see this) ${consoleText(text)}`);
    },
    async findMessageByKey({ channel, thread, key }) {
      for (const [ref, meta] of messages) {
        if (meta.channel === channel && meta.thread === thread && meta.key === key) return { ref };
      }
      return undefined;
    },
    async uploadFile({ channel, thread, filename, title, content }) {
      // A terminal cannot hold an attachment: the file goes to disk and the thread says where, so
      // the person can open exactly the bytes a Slack thread would have had.
      const dir = options.filesDir ?? join(tmpdir(), 'shipgate-files');
      await mkdir(dir, { recursive: true });
      const path = join(dir, basename(filename));
      await writeFile(path, content, 'utf8');
      print(`\n── file in #${channel} thread ${thread} ──\n${title}: ${path} (${Buffer.byteLength(content, 'utf8')} bytes)`);
      return { ref: path };
    },
    async permalink({ channel, ref }) {
      return `console://${channel}/${ref}`;
    },
    principals,
  };

  let rl: ReturnType<typeof createInterface> | undefined;
  let resolveClosed: () => void = () => undefined;
  const closed = new Promise<void>((resolve) => {
    resolveClosed = resolve;
  });

  async function handleLine(raw: string, handlers: ChatHandlers): Promise<void> {
    let line = raw.trim();
    let user = CONSOLE_USER;
    const as = /^as\s+(\S+)\s+(.*)$/.exec(line);
    if (as !== null) {
      user = as[1] ?? CONSOLE_USER;
      line = (as[2] ?? '').trim();
    }
    if (line === '') return;
    if (line === 'quit' || line === 'exit') {
      rl?.close();
      return;
    }
    const id = `console.${session}.${++delivery}`;
    if (
      line.startsWith(options.command) &&
      (line.length === options.command.length || line[options.command.length] === ' ')
    ) {
      const reply = await handlers.onCommand({
        command: options.command,
        text: line.slice(options.command.length).trim(),
        userId: user,
        channelId: CONSOLE_CHANNEL,
        deliveryId: id,
      });
      if (reply.ephemeral !== undefined) print(`\n(only you can see this) ${consoleText(reply.ephemeral)}`);
      return;
    }
    // `click <action> <value> [reason…]`: the console has no dialogs, so a reason a click asks for comes on the same line.
    const click = /^click\s+([a-z-]+)\s+(\S+)(?:\s+(\S.*))?$/.exec(line);
    if (click !== null) {
      const event = {
        actionId: `shipgate.${click[1] ?? ''}`,
        value: click[2] ?? '',
        userId: user,
        channelId: CONSOLE_CHANNEL,
        deliveryId: id,
      };
      let reply = await handlers.onAction(event);
      if (reply.askReason !== undefined) reply = await handlers.onAction({ ...event, reason: (click[3] ?? '').trim() });
      if (reply.ephemeral !== undefined) print(`\n(only you can see this) ${consoleText(reply.ephemeral)}`);
      return;
    }
    const followUp = /^reply\s+(\S+)\s+(\S.*)$/.exec(line);
    if (followUp !== null) {
      if (handlers.onMention === undefined) {
        print('\n(only you can see this) Follow-ups in a run are not available in this build.');
        return;
      }
      // The console has no thread to point at, so the run is named by id instead (MentionEvent.runId).
      const answer = await handlers.onMention({
        text: (followUp[2] ?? '').trim(),
        mentions: [],
        userId: user,
        channelId: CONSOLE_CHANNEL,
        thread: undefined,
        message: nextTs(),
        deliveryId: id,
        runId: followUp[1] ?? '',
      });
      if (answer.ephemeral !== undefined) print(`\n(only you can see this) ${consoleText(answer.ephemeral)}`);
      return;
    }
    print(HELP);
  }

  return {
    port,
    closed,
    async start(handlers) {
      print(`shipgate console chat — you are ${CONSOLE_USER} in #${CONSOLE_CHANNEL}. Type "help" for help.`);
      // Read only once handlers exist: lines typed (or piped) earlier wait in the stream.
      const reader = createInterface({ input: options.input, terminal: false });
      rl = reader;
      // Lines are handled one at a time, in order, like a person typing; closing waits for the last one.
      let queue = Promise.resolve();
      reader.on('line', (line) => {
        queue = queue
          .then(() => handleLine(line, handlers))
          .catch((error: unknown) => {
            print(`error: ${error instanceof Error ? error.message : String(error)}`);
          });
      });
      reader.on('close', () => {
        void queue.then(() => resolveClosed());
      });
    },
    async stop() {
      rl?.close();
    },
  };
}
