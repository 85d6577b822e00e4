import { createHash, randomBytes } from 'node:crypto';
import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { z } from 'zod';

/**
 * A local stand-in for Discord's Gateway (SPEC §9), on the fake REST server's own HTTP port:
 * `GET /gateway/bot` there hands out `ws://127.0.0.1:<port>/gateway`, and this answers the
 * WebSocket upgrade. It speaks the Gateway v10 JSON protocol as far as a bot that only listens
 * needs it (https://discord.com/developers/docs/events/gateway): HELLO with a heartbeat interval,
 * HEARTBEAT answered by HEARTBEAT_ACK, IDENTIFY checked (token, intents, shard) and answered by
 * READY, RESUME refused with INVALID_SESSION (the bot identifies again), and dispatches
 * (MESSAGE_CREATE) to every identified session whose intents include them.
 *
 * Discord's rules that matter to a bot are kept: a privileged intent that the application has not
 * enabled closes the connection with 4014 (Disallowed intents); a bad token closes it with 4004;
 * without the MESSAGE_CONTENT intent a message's `content` (and embeds, attachments, components)
 * arrive empty unless the message mentions the bot, replies to one of its messages or is its own.
 *
 * The WebSocket framing (RFC 6455) is written here on node:http's upgrade, text frames only, so
 * the fake needs no WebSocket library of its own; the real `@discordjs/ws` client (with the `ws`
 * package) talks to it.
 */

/** Gateway opcodes (https://discord.com/developers/docs/topics/opcodes-and-status-codes#gateway-gateway-opcodes). */
const OP = {
  dispatch: 0,
  heartbeat: 1,
  identify: 2,
  resume: 6,
  invalidSession: 9,
  hello: 10,
  heartbeatAck: 11,
} as const;

export const INTENTS = {
  guilds: 1 << 0,
  guildMembers: 1 << 1,
  guildMessages: 1 << 9,
  messageContent: 1 << 15,
} as const;
/** Intents an application must switch on in the developer portal (presences, members, message content). */
const PRIVILEGED = INTENTS.guildMembers | (1 << 8) | INTENTS.messageContent;

export interface GatewayIdentify {
  token: string;
  intents: number;
  shard: [number, number] | undefined;
  properties: Record<string, unknown>;
}

export interface GatewaySession {
  id: string;
  /** The query of the upgrade request (`v=10&encoding=json`). */
  query: string;
  identify: GatewayIdentify | undefined;
  /** HEARTBEATs received (each acknowledged). */
  heartbeats: number;
  closedWith: number | undefined;
}

export interface GatewayMessage {
  id: string;
  channel_id: string;
  guild_id: string;
  author: { id: string; username: string; bot?: boolean };
  content: string;
  mentions: Array<{ id: string; username: string; bot?: boolean }>;
  /** Set on a reply: the message replied to. */
  message_reference?: { message_id: string; channel_id: string } | undefined;
  /** Whether the message was a reply to one of the bot's messages (Discord's "ping on reply"). */
  repliesToBot?: boolean | undefined;
  nonce?: string | undefined;
  [field: string]: unknown;
}

export interface DiscordGateway {
  /** For GET /gateway/bot: `ws://127.0.0.1:<port>/gateway`. */
  readonly url: string;
  readonly sessions: readonly GatewaySession[];
  /** Privileged intents the "application" has switched on (default none). */
  enablePrivilegedIntents(intents: number): void;
  /** Sends MESSAGE_CREATE to every identified session with GUILD_MESSAGES, as Discord would show it to that session. */
  messageCreated(message: GatewayMessage): void;
  /** Closes every connection (as a restart of the Gateway would) and stops answering upgrades. */
  close(): void;
}

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

const identifySchema = z.object({
  op: z.literal(OP.identify),
  d: z.object({
    token: z.string(),
    intents: z.number().int(),
    properties: z.record(z.string(), z.unknown()),
    shard: z.tuple([z.number().int(), z.number().int()]).optional(),
    compress: z.boolean().optional(),
    large_threshold: z.number().optional(),
    presence: z.unknown().optional(),
  }),
});
const payloadSchema = z.object({ op: z.number().int(), d: z.unknown().optional() });

/** One server → client frame (never masked), text or close. */
function frame(opcode: number, payload: Buffer): Buffer {
  const length = payload.length;
  let header: Buffer;
  if (length < 126) {
    header = Buffer.from([0x80 | opcode, length]);
  } else if (length < 65536) {
    header = Buffer.alloc(4);
    header[0] = 0x80 | opcode;
    header[1] = 126;
    header.writeUInt16BE(length, 2);
  } else {
    header = Buffer.alloc(10);
    header[0] = 0x80 | opcode;
    header[1] = 127;
    header.writeBigUInt64BE(BigInt(length), 2);
  }
  return Buffer.concat([header, payload]);
}

/** Reads complete client frames off `buffer`; returns them and what is left over. */
function readFrames(buffer: Buffer): {
  frames: Array<{ fin: boolean; opcode: number; payload: Buffer }>;
  rest: Buffer;
} {
  const frames: Array<{ fin: boolean; opcode: number; payload: Buffer }> = [];
  let offset = 0;
  for (;;) {
    if (buffer.length - offset < 2) break;
    const first = buffer[offset] ?? 0;
    const second = buffer[offset + 1] ?? 0;
    let length = second & 0x7f;
    let at = offset + 2;
    if (length === 126) {
      if (buffer.length - at < 2) break;
      length = buffer.readUInt16BE(at);
      at += 2;
    } else if (length === 127) {
      if (buffer.length - at < 8) break;
      length = Number(buffer.readBigUInt64BE(at));
      at += 8;
    }
    const masked = (second & 0x80) !== 0;
    const maskLength = masked ? 4 : 0;
    if (buffer.length - at < maskLength + length) break;
    const mask = buffer.subarray(at, at + maskLength);
    at += maskLength;
    const payload = Buffer.from(buffer.subarray(at, at + length));
    if (masked) for (let i = 0; i < payload.length; i++) payload[i] = (payload[i] ?? 0) ^ (mask[i % 4] ?? 0);
    frames.push({ fin: (first & 0x80) !== 0, opcode: first & 0x0f, payload });
    offset = at + length;
  }
  return { frames, rest: buffer.subarray(offset) };
}

/**
 * Mounts the fake Gateway on `server` (upgrades to `/gateway`). `botUser` is who READY says the
 * bot is; `token` the only token IDENTIFY accepts.
 */
export function attachDiscordGateway(
  server: Server,
  options: {
    port: number;
    token: string;
    botUser: { id: string; username: string };
    applicationId: string;
    guildId: string;
    heartbeatIntervalMs?: number;
  },
): DiscordGateway {
  const url = `ws://127.0.0.1:${options.port}/gateway`;
  const sessions: GatewaySession[] = [];
  const live = new Map<GatewaySession, { socket: Duplex; seq: number; ready: boolean }>();
  let enabled = 0;
  let open = true;

  function send(session: GatewaySession, payload: Record<string, unknown>): void {
    const state = live.get(session);
    if (state === undefined || state.socket.destroyed) return;
    state.socket.write(frame(0x1, Buffer.from(JSON.stringify(payload), 'utf8')));
  }

  function closeWith(session: GatewaySession, code: number, reason: string): void {
    const state = live.get(session);
    if (state === undefined) return;
    session.closedWith = code;
    const body = Buffer.alloc(2 + Buffer.byteLength(reason));
    body.writeUInt16BE(code, 0);
    body.write(reason, 2);
    if (!state.socket.destroyed) state.socket.end(frame(0x8, body));
    live.delete(session);
  }

  function dispatch(session: GatewaySession, t: string, d: unknown): void {
    const state = live.get(session);
    if (state === undefined) return;
    state.seq += 1;
    send(session, { op: OP.dispatch, t, s: state.seq, d });
  }

  function onPayload(session: GatewaySession, text: string): void {
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      closeWith(session, 4002, 'Decode error');
      return;
    }
    const payload = payloadSchema.safeParse(json);
    if (!payload.success) {
      closeWith(session, 4002, 'Decode error');
      return;
    }
    switch (payload.data.op) {
      case OP.heartbeat:
        session.heartbeats += 1;
        send(session, { op: OP.heartbeatAck });
        return;
      case OP.identify: {
        const identify = identifySchema.safeParse(json);
        if (!identify.success) {
          closeWith(session, 4002, 'Decode error');
          return;
        }
        const d = identify.data.d;
        if (session.identify !== undefined) {
          closeWith(session, 4005, 'Already authenticated');
          return;
        }
        session.identify = { token: d.token, intents: d.intents, shard: d.shard, properties: d.properties };
        if (d.token !== options.token) {
          closeWith(session, 4004, 'Authentication failed');
          return;
        }
        if ((d.intents & PRIVILEGED & ~enabled) !== 0) {
          closeWith(session, 4014, 'Disallowed intent(s)');
          return;
        }
        const state = live.get(session);
        if (state !== undefined) state.ready = true;
        dispatch(session, 'READY', {
          v: 10,
          user: {
            id: options.botUser.id,
            username: options.botUser.username,
            discriminator: '0',
            global_name: null,
            avatar: null,
            bot: true,
          },
          guilds: [{ id: options.guildId, unavailable: true }],
          session_id: session.id,
          resume_gateway_url: url,
          shard: d.shard ?? [0, 1],
          application: { id: options.applicationId, flags: 0 },
        });
        return;
      }
      case OP.resume:
        // Sessions are not kept: the bot must identify afresh.
        send(session, { op: OP.invalidSession, d: false });
        return;
      default:
        closeWith(session, 4001, 'Unknown opcode');
    }
  }

  server.on('upgrade', (req: IncomingMessage, socket: Duplex) => {
    const requested = new URL(req.url ?? '/', 'http://127.0.0.1');
    const key = req.headers['sec-websocket-key'];
    if (
      !open ||
      requested.pathname !== '/gateway' ||
      typeof key !== 'string' ||
      req.headers.upgrade?.toLowerCase() !== 'websocket'
    ) {
      socket.end('HTTP/1.1 400 Bad Request\r\n\r\n');
      return;
    }
    const accept = createHash('sha1')
      .update(key + GUID)
      .digest('base64');
    // No extensions are accepted (permessage-deflate is offered by the client, declined by omission).
    socket.write(
      [
        'HTTP/1.1 101 Switching Protocols',
        'Upgrade: websocket',
        'Connection: Upgrade',
        `Sec-WebSocket-Accept: ${accept}`,
        '',
        '',
      ].join('\r\n'),
    );
    const session: GatewaySession = {
      id: randomBytes(16).toString('hex'),
      query: requested.search.replace(/^\?/, ''),
      identify: undefined,
      heartbeats: 0,
      closedWith: undefined,
    };
    sessions.push(session);
    live.set(session, { socket, seq: 0, ready: false });
    let pending: Buffer = Buffer.alloc(0);
    let fragments: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => {
      const read = readFrames(Buffer.concat([pending, chunk]));
      pending = read.rest;
      for (const { fin, opcode, payload } of read.frames) {
        if (opcode === 0x8) {
          // The client closes: echo its code, as RFC 6455 asks, and forget the session.
          session.closedWith = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
          if (!socket.destroyed) socket.end(frame(0x8, payload.subarray(0, 2)));
          live.delete(session);
          return;
        }
        if (opcode === 0x9) {
          socket.write(frame(0xa, payload));
          continue;
        }
        if (opcode === 0xa) continue;
        if (opcode === 0x1 || opcode === 0x0) {
          fragments.push(payload);
          if (!fin) continue;
          const text = Buffer.concat(fragments).toString('utf8');
          fragments = [];
          onPayload(session, text);
          continue;
        }
        // Binary frames are not what a JSON-encoding client sends.
        closeWith(session, 4002, 'Decode error');
        return;
      }
    });
    socket.on('error', () => live.delete(session));
    socket.on('close', () => live.delete(session));
    send(session, { op: OP.hello, d: { heartbeat_interval: options.heartbeatIntervalMs ?? 250 } });
  });

  return {
    url,
    sessions,
    enablePrivilegedIntents(intents) {
      enabled = intents;
    },
    messageCreated(message) {
      const { repliesToBot, ...wire } = message;
      for (const [session, state] of live) {
        const intents = session.identify?.intents ?? 0;
        if (!state.ready || (intents & INTENTS.guildMessages) === 0) continue;
        const visible =
          (intents & INTENTS.messageContent) !== 0 ||
          message.author.id === options.botUser.id ||
          message.mentions.some((user) => user.id === options.botUser.id) ||
          repliesToBot === true;
        // Without MESSAGE_CONTENT Discord blanks what a message says, except where the bot is addressed.
        dispatch(
          session,
          'MESSAGE_CREATE',
          visible ? wire : { ...wire, content: '', embeds: [], attachments: [], components: [] },
        );
      }
    },
    close() {
      open = false;
      for (const session of [...live.keys()]) closeWith(session, 1001, 'Going away');
    },
  };
}
