import { createServer, type IncomingMessage } from 'node:http';
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { attachDiscordGateway, type DiscordGateway } from './discord-gateway.js';

/**
 * A local stand-in for Discord's REST API v10 (SPEC §9), for the endpoints shipgate uses: channel
 * messages (create with nonce + enforce_nonce, multipart uploads with files, edit, list), threads
 * started from a message, a channel read, interaction follow-ups (webhook execute, edit @original),
 * application command registration and GET /gateway/bot, whose URL is the fake Gateway on the same
 * port (discord-gateway.ts): every message created here, by the bot or by `postUserMessage`, is
 * also dispatched there as MESSAGE_CREATE. Request bodies are checked with zod against Discord's documented shapes and limits
 * (https://discord.com/developers/docs/resources/message#create-message); a body Discord would
 * refuse is answered 400 Invalid Form Body and recorded in `unexpected`, like any request to an
 * endpoint not served here, so tests fail on it.
 *
 * Every answer carries Discord's rate-limit headers (X-RateLimit-Limit/Remaining/Reset/Reset-After/
 * Bucket), and `rateLimitEvery: n` answers every n-th bot request with a real-looking 429
 * (`retry_after`, Retry-After), which the real @discordjs/rest must wait out and retry.
 *
 * A message's `nonce` is answered as Discord answers it: in the create's response (and the
 * Gateway's MESSAGE_CREATE) only, never by a later read (GET messages, an edit's answer), as the
 * message object's documentation says (discord-api-types: "You will not receive this from further
 * fetches").
 */

export type JsonValue = z.core.util.JSONType;

export interface DiscordMessage {
  id: string;
  channel_id: string;
  author: { id: string; username: string; bot?: boolean };
  content: string;
  embeds: DiscordEmbed[];
  components: DiscordActionRow[];
  attachments: Array<{ id: string; filename: string; size: number; content: string }>;
  nonce: string | undefined;
  /** Set on a message a webhook posted. */
  webhook_id?: string | undefined;
  /** Set on a reply: the message it answers. */
  message_reference?: { message_id: string; channel_id: string } | undefined;
  timestamp: string;
  edited_timestamp: string | null;
  /** Not Discord's: how many edits touched it, for assertions. */
  editCount: number;
}

export interface DiscordChannel {
  id: string;
  type: number;
  guild_id: string;
  name: string;
  parent_id?: string;
  /** Threads: who started it. */
  owner_id?: string;
}

export interface WebhookCall {
  kind: 'followup' | 'edit-original';
  token: string;
  body: z.infer<typeof webhookBody>;
  at: number;
}

export interface RecordedRequest {
  method: string;
  path: string;
  status: number;
  at: number;
}

export interface UnexpectedRequest {
  method: string;
  path: string;
  body: string;
  reason: string;
}

export interface DiscordServerOptions {
  token: string;
  applicationId: string;
  /** Every n-th request that carries the bot token is answered 429 first (Discord's per-route limit). */
  rateLimitEvery?: number | undefined;
}

export interface DiscordServer {
  /** For DISCORD_API_URL: `http://127.0.0.1:<port>/api/v10`. */
  readonly apiUrl: string;
  readonly botUserId: string;
  readonly guildId: string;
  /** The fake Gateway on the same port (GET /gateway/bot hands out its URL). */
  readonly gateway: DiscordGateway;
  readonly requests: readonly RecordedRequest[];
  readonly unexpected: readonly UnexpectedRequest[];
  readonly webhookCalls: readonly WebhookCall[];
  /** Registered application commands, by `global` or guild id. */
  readonly commands: ReadonlyMap<string, z.infer<typeof commandsBody>>;
  /** A text channel of the test guild. */
  addChannel(id: string, name?: string): void;
  /**
   * A person writes in a channel or thread (what the Gateway then dispatches as MESSAGE_CREATE).
   * `mentions` are user ids the message pings; `replyTo` makes it a reply to that message; `embeds`
   * and `webhookId` let another bot or a webhook write what shipgate's own posts carry.
   */
  postUserMessage(
    channelId: string,
    author: { id: string; username?: string; bot?: boolean },
    content: string,
    options?: { mentions?: string[]; replyTo?: string; embeds?: DiscordEmbed[]; webhookId?: string },
  ): DiscordMessage;
  /** Messages of a channel or thread, oldest first; live objects. */
  messages(channelId: string): DiscordMessage[];
  channel(id: string): DiscordChannel | undefined;
  /** A fresh interaction id and token, valid for follow-ups from now on (as Discord issues them). */
  newInteraction(): { id: string; token: string };
  /** The next bot request matching `method path` (path with :params, e.g. `POST /channels/:id/messages`) takes effect but its answer is lost (502). */
  loseNextAnswer(route: string): void;
  /** The next `count` successful answers on `route` are lost alike (each request still takes effect). */
  loseAnswers(route: string, count: number): void;
  waitFor<T>(
    predicate: (server: DiscordServer) => T | undefined | false,
    timeoutMs?: number,
    description?: string,
  ): Promise<T>;
  close(): Promise<void>;
}

// --- documented shapes (only what a body may hold for the endpoints served) ----------------------

const snowflake = z.string().regex(/^\d{15,21}$/, 'expected a snowflake');
const allowedMentions = z.strictObject({
  parse: z.array(z.enum(['roles', 'users', 'everyone'])).optional(),
  roles: z.array(snowflake).max(100).optional(),
  users: z.array(snowflake).max(100).optional(),
  replied_user: z.boolean().optional(),
});
const embed = z
  .strictObject({
    title: z.string().max(256).optional(),
    description: z.string().max(4096).optional(),
    url: z.string().optional(),
    color: z.number().int().min(0).max(0xffffff).optional(),
    footer: z.strictObject({ text: z.string().max(2048) }).optional(),
    fields: z
      .array(
        z.strictObject({
          name: z.string().min(1).max(256),
          value: z.string().min(1).max(1024),
          inline: z.boolean().optional(),
        }),
      )
      .max(25)
      .optional(),
  })
  .refine(
    (e) => (e.title?.length ?? 0) + (e.description?.length ?? 0) + (e.footer?.text.length ?? 0) <= 6000,
    'embed over 6000 characters',
  );
const button = z.strictObject({
  type: z.literal(2),
  style: z.union([z.literal(1), z.literal(2), z.literal(3), z.literal(4)]),
  label: z.string().min(1).max(80),
  custom_id: z.string().min(1).max(100),
  disabled: z.boolean().optional(),
});
const actionRow = z.strictObject({ type: z.literal(1), components: z.array(button).min(1).max(5) });
const customIdsUnique = (rows: Array<{ components: Array<{ custom_id: string }> }>) => {
  const ids = rows.flatMap((row) => row.components.map((c) => c.custom_id));
  return new Set(ids).size === ids.length;
};
const components = z.array(actionRow).max(5).refine(customIdsUnique, 'custom_id must be unique in a message');
const attachmentMeta = z.strictObject({
  id: z.union([z.number(), z.string()]),
  filename: z.string().min(1),
  description: z.string().optional(),
});
const messageReference = z.strictObject({
  message_id: snowflake,
  channel_id: snowflake.optional(),
  guild_id: snowflake.optional(),
  fail_if_not_exists: z.boolean().optional(),
});
const createMessageBody = z.strictObject({
  content: z.string().max(2000).optional(),
  embeds: z.array(embed).max(10).optional(),
  components: components.optional(),
  allowed_mentions: allowedMentions.optional(),
  nonce: z.union([z.string().max(25), z.number().int()]).optional(),
  enforce_nonce: z.boolean().optional(),
  attachments: z.array(attachmentMeta).optional(),
  flags: z.number().int().optional(),
  message_reference: messageReference.optional(),
});
const editMessageBody = createMessageBody.omit({ nonce: true, enforce_nonce: true, message_reference: true });
const startThreadBody = z.strictObject({
  name: z.string().min(1).max(100),
  auto_archive_duration: z.union([z.literal(60), z.literal(1440), z.literal(4320), z.literal(10080)]).optional(),
  rate_limit_per_user: z.number().int().optional(),
});
const webhookBody = createMessageBody
  .omit({ nonce: true, enforce_nonce: true, message_reference: true })
  .extend({ flags: z.number().int().optional() });
const commandsBody = z.array(
  z.looseObject({
    name: z.string().regex(/^[-_\p{L}\p{N}]{1,32}$/u),
    description: z.string().min(1).max(100),
    options: z
      .array(
        z.looseObject({
          name: z.string().regex(/^[-_\p{L}\p{N}]{1,32}$/u),
          description: z.string().min(1).max(100),
          type: z.number().int(),
        }),
      )
      .max(25)
      .optional(),
  }),
);

export type DiscordEmbed = z.infer<typeof embed>;
export type DiscordActionRow = z.infer<typeof actionRow>;

// --- the server ----------------------------------------------------------------------------------

interface Answer {
  status: number;
  body?: unknown;
  /** A 400 the bot is expected to meet (the thread exists already): not a test failure. */
  alreadyThread?: boolean;
}

const ROUTES = [
  'GET /gateway/bot',
  'GET /users/@me',
  'GET /channels/:channel/messages',
  'POST /channels/:channel/messages',
  'PATCH /channels/:channel/messages/:message',
  'POST /channels/:channel/messages/:message/threads',
  'GET /channels/:channel',
  'POST /webhooks/:app/:token',
  'PATCH /webhooks/:app/:token/messages/:message',
  'PUT /applications/:app/commands',
  'PUT /applications/:app/guilds/:guild/commands',
] as const;
type Route = (typeof ROUTES)[number];

function match(method: string, path: string): { route: Route; params: Record<string, string> } | undefined {
  for (const route of ROUTES) {
    const [routeMethod, pattern = ''] = route.split(' ');
    if (routeMethod !== method) continue;
    const want = pattern.split('/');
    // Clients percent-encode segments (@discordjs/rest sends /users/%40me), so compare them decoded.
    const got = path.split('/').map((part) => decodeURIComponent(part));
    if (want.length !== got.length) continue;
    const params: Record<string, string> = {};
    if (
      want.every((part, i) =>
        part.startsWith(':') ? ((params[part.slice(1)] = got[i] ?? ''), true) : part === got[i],
      )
    )
      return { route, params };
  }
  return undefined;
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

/** The parts of a multipart/form-data body (RFC 7578) by field name: what @discordjs/rest sends with files. */
function multipart(
  contentType: string,
  body: Buffer,
): Map<string, { filename: string | undefined; data: Buffer }> | undefined {
  const boundary = /boundary=(?:"([^"]+)"|([^;\s]+))/i.exec(contentType);
  const marker = boundary?.[1] ?? boundary?.[2];
  if (marker === undefined) return undefined;
  const delimiter = Buffer.from(`--${marker}`);
  const parts = new Map<string, { filename: string | undefined; data: Buffer }>();
  let start = body.indexOf(delimiter);
  while (start >= 0) {
    const next = body.indexOf(delimiter, start + delimiter.length);
    if (next < 0) break;
    const part = body.subarray(start + delimiter.length + 2, next - 2);
    const split = part.indexOf('\r\n\r\n');
    if (split >= 0) {
      const headers = part.subarray(0, split).toString('utf8');
      const name = /name="([^"]*)"/i.exec(headers)?.[1];
      const filename = /filename="([^"]*)"/i.exec(headers)?.[1];
      if (name !== undefined) parts.set(name, { filename, data: Buffer.from(part.subarray(split + 4)) });
    }
    start = next;
  }
  return parts;
}

function invalid(error: z.ZodError): Answer {
  return { status: 400, body: { code: 50035, message: 'Invalid Form Body', errors: z.treeifyError(error) } };
}

export async function startDiscordServer(options: DiscordServerOptions): Promise<DiscordServer> {
  let counter = 1_300_000_000_000_000_000n;
  const nextId = () => String(++counter);
  const botUserId = nextId();
  const guildId = nextId();
  const channels = new Map<string, DiscordChannel>();
  const messages = new Map<string, DiscordMessage[]>();
  const interactions = new Map<string, number>();
  const requests: RecordedRequest[] = [];
  const unexpected: UnexpectedRequest[] = [];
  const webhookCalls: WebhookCall[] = [];
  const commands = new Map<string, z.infer<typeof commandsBody>>();
  /** Route → how many more successful answers to lose. */
  const lose = new Map<string, number>();
  let botRequests = 0;

  const list = (channelId: string) => {
    let found = messages.get(channelId);
    if (found === undefined) {
      found = [];
      messages.set(channelId, found);
    }
    return found;
  };
  const unknownChannel: Answer = { status: 404, body: { code: 10003, message: 'Unknown Channel' } };
  const unknownMessage: Answer = { status: 404, body: { code: 10008, message: 'Unknown Message' } };
  const unknownWebhook: Answer = { status: 404, body: { code: 10015, message: 'Unknown Webhook' } };
  /** A message as Discord sends it; `withNonce` only for the create's own answer and its dispatch. */
  const wire = (m: DiscordMessage, withNonce = false) => {
    const { editCount: _editCount, attachments, nonce, ...rest } = m;
    return {
      ...rest,
      ...(withNonce && nonce !== undefined ? { nonce } : {}),
      guild_id: guildId,
      type: m.message_reference === undefined ? 0 : 19,
      attachments: attachments.map(({ content: _content, ...a }) => a),
      mentions: [] as Array<{ id: string; username: string; bot?: boolean }>,
      mention_roles: [],
      pinned: false,
      tts: false,
      mention_everyone: false,
    };
  };

  /** Create Message: JSON, or multipart with payload_json and files[n]. */
  function createMessage(channelId: string, contentType: string, raw: Buffer): Answer {
    const channel = channels.get(channelId);
    if (channel === undefined) return unknownChannel;
    let json: unknown;
    const files: DiscordMessage['attachments'] = [];
    if (contentType.startsWith('multipart/form-data')) {
      const parts = multipart(contentType, raw);
      const payload = parts?.get('payload_json');
      if (parts === undefined || payload === undefined)
        return { status: 400, body: { code: 50035, message: 'multipart without payload_json' } };
      json = JSON.parse(payload.data.toString('utf8'));
      const declared = z
        .object({ attachments: z.array(z.object({ id: z.union([z.number(), z.string()]) })).optional() })
        .safeParse(json);
      const ids = new Set((declared.success ? (declared.data.attachments ?? []) : []).map((a) => String(a.id)));
      for (const [name, part] of parts) {
        const index = /^files\[(\d+)\]$/.exec(name)?.[1];
        if (index === undefined) continue;
        // Discord links each files[n] to the payload's attachment with id n; a file without one is refused.
        if (!ids.has(index))
          return { status: 400, body: { code: 50035, message: `files[${index}] has no attachment with id ${index}` } };
        files.push({
          id: nextId(),
          filename: part.filename ?? 'file',
          size: part.data.length,
          content: part.data.toString('utf8'),
        });
      }
    } else json = JSON.parse(raw.toString('utf8'));
    const body = createMessageBody.safeParse(json);
    if (!body.success) return invalid(body.error);
    const b = body.data;
    if (
      (b.content ?? '') === '' &&
      (b.embeds ?? []).length === 0 &&
      files.length === 0 &&
      (b.components ?? []).length === 0
    ) {
      return { status: 400, body: { code: 50006, message: 'Cannot send an empty message' } };
    }
    const nonce = b.nonce === undefined ? undefined : String(b.nonce);
    // enforce_nonce: a second message with the same nonce from the same author returns the first.
    if (nonce !== undefined && b.enforce_nonce === true) {
      const existing = list(channelId).find((m) => m.nonce === nonce);
      if (existing !== undefined) return { status: 200, body: wire(existing, true) };
    }
    const reference = b.message_reference;
    if (reference !== undefined && !list(channelId).some((m) => m.id === reference.message_id) && reference.fail_if_not_exists !== false)
      return { status: 400, body: { code: 50035, message: 'Unknown message in message_reference' } };
    const message: DiscordMessage = {
      id: nextId(),
      channel_id: channelId,
      author: { id: botUserId, username: 'shipgate', bot: true },
      content: b.content ?? '',
      embeds: b.embeds ?? [],
      components: b.components ?? [],
      attachments: files,
      nonce,
      ...(reference === undefined ? {} : { message_reference: { message_id: reference.message_id, channel_id: channelId } }),
      timestamp: new Date().toISOString(),
      edited_timestamp: null,
      editCount: 0,
    };
    list(channelId).push(message);
    gateway.messageCreated({ ...wire(message, true), mentions: [] });
    return { status: 200, body: wire(message, true) };
  }

  function handle(
    route: Route,
    params: Record<string, string>,
    query: URLSearchParams,
    contentType: string,
    raw: Buffer,
  ): Answer {
    const json = (): unknown => (raw.length === 0 ? {} : JSON.parse(raw.toString('utf8')));
    switch (route) {
      case 'GET /gateway/bot':
        return {
          status: 200,
          body: {
            url: gateway.url,
            shards: 1,
            session_start_limit: { total: 1000, remaining: 999, reset_after: 14_400_000, max_concurrency: 1 },
          },
        };
      case 'GET /users/@me':
        return {
          status: 200,
          body: { id: botUserId, username: 'shipgate', discriminator: '0', global_name: null, avatar: null, bot: true },
        };
      case 'GET /channels/:channel/messages': {
        if (!channels.has(params['channel'] ?? '')) return unknownChannel;
        const limit = Number(query.get('limit') ?? '50');
        if (!Number.isInteger(limit) || limit < 1 || limit > 100)
          return { status: 400, body: { code: 50035, message: 'limit must be 1 to 100' } };
        // Newest first, as Discord lists them, and without nonces (see the header).
        return { status: 200, body: [...list(params['channel'] ?? '')].reverse().slice(0, limit).map((m) => wire(m)) };
      }
      case 'POST /channels/:channel/messages':
        return createMessage(params['channel'] ?? '', contentType, raw);
      case 'PATCH /channels/:channel/messages/:message': {
        const message = list(params['channel'] ?? '').find((m) => m.id === params['message']);
        if (message === undefined) return unknownMessage;
        const body = editMessageBody.safeParse(json());
        if (!body.success) return invalid(body.error);
        if (body.data.content !== undefined) message.content = body.data.content;
        if (body.data.embeds !== undefined) message.embeds = body.data.embeds;
        if (body.data.components !== undefined) message.components = body.data.components;
        message.edited_timestamp = new Date().toISOString();
        message.editCount++;
        return { status: 200, body: wire(message) };
      }
      case 'POST /channels/:channel/messages/:message/threads': {
        const parent = channels.get(params['channel'] ?? '');
        if (parent === undefined) return unknownChannel;
        const message = list(parent.id).find((m) => m.id === params['message']);
        if (message === undefined) return unknownMessage;
        const body = startThreadBody.safeParse(json());
        if (!body.success) return invalid(body.error);
        // A thread started from a message has the message's id.
        if (channels.has(message.id))
          return {
            status: 400,
            alreadyThread: true,
            body: { code: 160004, message: 'A thread has already been created for this message' },
          };
        const thread: DiscordChannel = {
          id: message.id,
          type: 11,
          guild_id: guildId,
          name: body.data.name,
          parent_id: parent.id,
          owner_id: botUserId,
        };
        channels.set(thread.id, thread);
        return {
          status: 201,
          body: {
            ...thread,
            owner_id: botUserId,
            message_count: 0,
            member_count: 1,
            thread_metadata: {
              archived: false,
              auto_archive_duration: body.data.auto_archive_duration ?? 4320,
              locked: false,
            },
          },
        };
      }
      case 'GET /channels/:channel': {
        const channel = channels.get(params['channel'] ?? '');
        return channel === undefined ? unknownChannel : { status: 200, body: channel };
      }
      case 'POST /webhooks/:app/:token':
      case 'PATCH /webhooks/:app/:token/messages/:message': {
        const token = params['token'] ?? '';
        const issued = interactions.get(token);
        if (params['app'] !== options.applicationId || issued === undefined || Date.now() - issued > 15 * 60_000)
          return unknownWebhook;
        if (route.startsWith('PATCH') && params['message'] !== '@original') return unknownMessage;
        const body = webhookBody.safeParse(json());
        if (!body.success) return invalid(body.error);
        webhookCalls.push({
          kind: route.startsWith('PATCH') ? 'edit-original' : 'followup',
          token,
          body: body.data,
          at: Date.now(),
        });
        return {
          status: 200,
          body: { id: nextId(), channel_id: '0', content: body.data.content ?? '', flags: body.data.flags ?? 0 },
        };
      }
      case 'PUT /applications/:app/commands':
      case 'PUT /applications/:app/guilds/:guild/commands': {
        if (params['app'] !== options.applicationId)
          return { status: 403, body: { code: 50001, message: 'Missing Access' } };
        const body = commandsBody.safeParse(json());
        if (!body.success) return invalid(body.error);
        commands.set(params['guild'] ?? 'global', body.data);
        return {
          status: 200,
          body: body.data.map((c) => ({
            ...c,
            id: nextId(),
            application_id: options.applicationId,
            version: nextId(),
          })),
        };
      }
    }
  }

  const server = createServer((req, res) => {
    void (async () => {
      const raw = await readBody(req);
      const url = new URL(req.url ?? '/', 'http://127.0.0.1');
      const method = req.method ?? 'GET';
      const path = url.pathname.replace(/^\/api\/v10/, '');
      const text = raw.toString('utf8').slice(0, 2000);
      const answer = (status: number, body: unknown, headers: Record<string, string> = {}) => {
        requests.push({ method, path, status, at: Date.now() });
        const payload = body === undefined ? '' : JSON.stringify(body);
        res.writeHead(status, { 'content-type': 'application/json', ...headers });
        res.end(payload);
      };
      if (!url.pathname.startsWith('/api/v10/')) {
        unexpected.push({ method, path: url.pathname, body: text, reason: 'not under /api/v10' });
        answer(404, { code: 0, message: '404: Not Found' });
        return;
      }
      const found = match(method, path);
      if (found === undefined) {
        unexpected.push({ method, path, body: text, reason: 'no such endpoint in the fake' });
        answer(404, { code: 0, message: '404: Not Found' });
        return;
      }
      const isWebhook = found.route.includes('/webhooks/');
      const auth = req.headers.authorization;
      if (!isWebhook && auth !== `Bot ${options.token}`) {
        unexpected.push({ method, path, body: text, reason: `bad Authorization: ${auth ?? '(none)'}` });
        answer(401, { code: 0, message: '401: Unauthorized' });
        return;
      }
      const bucket =
        found.route.replace(/ .*/, '') +
        ':' +
        (found.params['channel'] ?? found.params['token'] ?? found.params['app'] ?? '');
      const limitHeaders = (remaining: number): Record<string, string> => ({
        'x-ratelimit-limit': '5',
        'x-ratelimit-remaining': String(remaining),
        'x-ratelimit-reset': ((Date.now() + 100) / 1000).toFixed(3),
        'x-ratelimit-reset-after': '0.100',
        'x-ratelimit-bucket': Buffer.from(bucket).toString('hex').slice(0, 32),
      });
      if (!isWebhook && options.rateLimitEvery !== undefined && ++botRequests % options.rateLimitEvery === 0) {
        // Discord's 429: nothing happened, try again after retry_after seconds.
        answer(
          429,
          { message: 'You are being rate limited.', retry_after: 0.1, global: false },
          { ...limitHeaders(0), 'retry-after': '0.1', 'x-ratelimit-scope': 'user' },
        );
        return;
      }
      let result: Answer;
      try {
        result = handle(found.route, found.params, url.searchParams, req.headers['content-type'] ?? '', raw);
      } catch (error) {
        result = {
          status: 400,
          body: { code: 50109, message: `The request body contains invalid JSON: ${String(error)}` },
        };
      }
      if (result.status === 400 && !result.alreadyThread) {
        unexpected.push({ method, path, body: text, reason: JSON.stringify(result.body).slice(0, 1000) });
      }
      const routeKey = found.route;
      const losing = lose.get(routeKey) ?? 0;
      if (losing > 0 && result.status < 300) {
        if (losing === 1) lose.delete(routeKey);
        else lose.set(routeKey, losing - 1);
        answer(502, { message: 'Bad Gateway' });
        return;
      }
      answer(result.status, result.body, isWebhook ? {} : limitHeaders(4));
    })().catch((error: unknown) => {
      unexpected.push({
        method: req.method ?? '',
        path: req.url ?? '',
        body: '',
        reason: `fake crashed: ${String(error)}`,
      });
      if (!res.headersSent) res.writeHead(500).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  // Mounted once the server listens (it needs the port), before any request can arrive.
  const gateway = attachDiscordGateway(server, {
    port,
    token: options.token,
    botUser: { id: botUserId, username: 'shipgate' },
    applicationId: options.applicationId,
    guildId,
  });

  const self: DiscordServer = {
    apiUrl: `http://127.0.0.1:${port}/api/v10`,
    botUserId,
    guildId,
    gateway,
    requests,
    unexpected,
    webhookCalls,
    commands,
    addChannel(id, name = 'general') {
      channels.set(id, { id, type: 0, guild_id: guildId, name });
    },
    postUserMessage(channelId, author, content, extra = {}) {
      const channel = channels.get(channelId);
      if (channel === undefined) throw new Error(`discord fake: no channel ${channelId}`);
      const replied = extra.replyTo === undefined ? undefined : list(channelId).find((m) => m.id === extra.replyTo);
      const message: DiscordMessage = {
        id: nextId(),
        channel_id: channelId,
        author: { id: author.id, username: author.username ?? `user${author.id.slice(-4)}`, ...(author.bot === true ? { bot: true } : {}) },
        content,
        embeds: extra.embeds ?? [],
        components: [],
        attachments: [],
        nonce: undefined,
        ...(extra.webhookId === undefined ? {} : { webhook_id: extra.webhookId }),
        ...(replied === undefined ? {} : { message_reference: { message_id: replied.id, channel_id: channelId } }),
        timestamp: new Date().toISOString(),
        edited_timestamp: null,
        editCount: 0,
      };
      list(channelId).push(message);
      const mentioned = (extra.mentions ?? []).map((id) => ({
        id,
        username: id === botUserId ? 'shipgate' : `user${id.slice(-4)}`,
        ...(id === botUserId ? { bot: true } : {}),
      }));
      gateway.messageCreated({
        ...wire(message),
        member: { roles: [], joined_at: '2024-01-01T00:00:00.000000+00:00', deaf: false, mute: false, flags: 0 },
        mentions: mentioned,
        repliesToBot: replied?.author.id === botUserId,
      });
      return message;
    },
    messages: (channelId) => list(channelId),
    channel: (id) => channels.get(id),
    newInteraction() {
      const token = `aW50ZXJhY3Rpb246${randomBytes(24).toString('base64url')}`;
      interactions.set(token, Date.now());
      return { id: nextId(), token };
    },
    loseNextAnswer(route) {
      lose.set(route, 1);
    },
    loseAnswers(route, count) {
      lose.set(route, count);
    },
    async waitFor(predicate, timeoutMs = 10_000, description = 'condition') {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        let value: ReturnType<typeof predicate> | undefined;
        try {
          value = predicate(self);
        } catch {
          value = undefined;
        }
        if (value !== undefined && value !== false) return value;
        if (Date.now() > deadline) throw new Error(`discord fake: timed out waiting for ${description}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    async close() {
      gateway.close();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
  return self;
}
