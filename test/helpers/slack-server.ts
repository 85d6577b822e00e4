import { EventEmitter } from 'node:events';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { z } from 'zod';

/**
 * A local stand-in for the Slack Web API (SPEC §9). It speaks the wire protocol the real
 * `@slack/web-api` WebClient uses (POST `/api/<method>`, form-encoded or JSON params, bearer
 * token, HTTP 200 with `{ ok: false, error }` for API errors, 429 + Retry-After for rate limits)
 * and keeps enough state (channels, threads, user groups) for the bot's behaviour to be asserted
 * from the outside: what was posted, updated, and in which thread.
 *
 * It is deliberately stricter than Slack where Slack would silently do something surprising
 * (e.g. a reply to an unknown thread_ts is an error here), so that bot bugs surface in tests.
 */

export type JsonValue = z.core.util.JSONType;
export type JsonObject = { [key: string]: JsonValue };

export interface SlackMetadata {
  event_type: string;
  event_payload: JsonObject;
}

/** A message as stored per channel. The object is mutated in place by chat.update and replies. */
export interface SlackMessage {
  type: 'message';
  channel: string;
  ts: string;
  /** Set on replies (the parent's ts) and on a parent once it has replies (its own ts), as Slack does. */
  thread_ts?: string;
  text?: string;
  blocks?: JsonObject[];
  attachments?: JsonObject[];
  metadata?: SlackMetadata;
  /** Bot messages carry both `user` (the bot user) and `bot_id`; human messages only `user`. */
  user: string;
  bot_id?: string;
  app_id?: string;
  team: string;
  parent_user_id?: string;
  reply_count?: number;
  reply_users?: string[];
  latest_reply?: string;
  /** Present once a bot has updated the message. */
  edited?: { user: string; ts: string };
  /** Set for `reply_broadcast` replies, which then also show in channel history. */
  subtype?: 'thread_broadcast';
  /** How many times chat.update touched this message (not a Slack field; for assertions). */
  updateCount: number;
}

export interface SlackEphemeral {
  channel: string;
  user: string;
  message_ts: string;
  thread_ts?: string;
  text?: string;
  blocks?: JsonObject[];
  at: number;
}

export interface RecordedCall {
  method: string;
  /** Parsed params; JSON carried as strings in form bodies (blocks, metadata, …) is decoded. */
  body: JsonObject;
  /** Date.now() when the request arrived. */
  at: number;
  /** HTTP status the fake answered with (429 for simulated rate limits). */
  status: number;
  /** `error` of an `{ ok: false }` answer, if any. */
  error?: string;
}

export interface UnexpectedRequest {
  httpMethod: string;
  path: string;
  contentType: string | undefined;
  body: string;
  at: number;
  reason: string;
}

export interface ResponseUrlPost {
  /** The id part of the URL handed out by `newResponseUrl()`. */
  id: string;
  body: JsonValue;
  at: number;
}

/**
 * A file shared into a channel or thread through the files.uploadV2 flow: files.getUploadURLExternal,
 * the bytes POSTed to the upload_url it handed out, then files.completeUploadExternal.
 */
export interface SlackUpload {
  file_id: string;
  filename: string;
  title: string | undefined;
  channel: string;
  thread_ts: string | undefined;
  /** Exactly the bytes the client POSTed to the upload URL. */
  bytes: Buffer;
  at: number;
}

/**
 * `{ status: 429 }` answers HTTP 429 with `Retry-After: <retryAfter ?? 0>` (WebClient retries
 * it); `retryAfter: null` omits the header, which WebClient treats as fatal (no retry). Other
 * statuses answer a non-JSON body (WebClient raises WebAPIHTTPError and retries it under its
 * retryConfig). `{ error }` answers HTTP 200 `{ ok: false, error }`, which WebClient never retries.
 */
export interface OpenedView {
  triggerId: string;
  viewId: string;
  callbackId: string | undefined;
  privateMetadata: string | undefined;
  /** The view as the bot sent it. */
  view: JsonObject;
}

export type FailSpec = { status: number; retryAfter?: number | null } | { error: string };

export interface SlackServerOptions {
  /** When set, every call must carry it (Authorization: Bearer, or a `token` param). */
  token?: string;
  botUserId?: string;
  botId?: string;
  appId?: string;
  teamId?: string;
  /** Seconds part of the first ts handed out; ts then grow by 100µs per message. */
  startTs?: number;
}

export interface SlackServer {
  /** Base URL for `new WebClient(token, { slackApiUrl })`; ends in `/api/`. */
  readonly apiUrl: string;
  /** Origin of the server, e.g. `http://127.0.0.1:1234`. */
  readonly url: string;
  readonly botUserId: string;
  readonly botId: string;
  readonly teamId: string;
  readonly calls: readonly RecordedCall[];
  readonly unexpected: readonly UnexpectedRequest[];
  readonly ephemerals: readonly SlackEphemeral[];
  readonly responseUrlPosts: readonly ResponseUrlPost[];
  /** Modals opened with views.open, oldest first. */
  readonly openedViews: readonly OpenedView[];
  /** Messages of a channel (top-level and thread replies), oldest first; live objects. */
  messages(channel: string): SlackMessage[];
  /** Recorded calls of one API method, oldest first. */
  callsOf(method: string): RecordedCall[];
  /** Files shared by files.completeUploadExternal, oldest first (uploads never completed are not here). */
  uploads(): SlackUpload[];
  /** Resolves with the predicate's first truthy result; a throwing predicate counts as "not yet". */
  waitFor<T>(predicate: (server: SlackServer) => T, timeoutMs?: number, description?: string): Promise<Truthy<T>>;
  setUserGroup(groupId: string, userIds: readonly string[]): void;
  /** Queues a failure for the next call of `method` (one failure per call of failNext). */
  failNext(method: string, spec: FailSpec): void;
  /** Posts a message as a person (e.g. a reply in a run's thread); returns its ts. */
  addUserMessage(channel: string, message: { user: string; text: string; thread_ts?: string }): string;
  /** Posts a message as another app's bot, with the metadata it chose; returns its ts. */
  addAppMessage(
    channel: string,
    message: { botId: string; appId: string; text: string; metadata: SlackMetadata; thread_ts?: string },
  ): string;
  /** A URL on this server to use as a slash command's / action's `response_url`; posts land in `responseUrlPosts`. */
  newResponseUrl(): string;
  close(): Promise<void>;
}

export type Truthy<T> = Exclude<T, false | 0 | '' | null | undefined>;

function isTruthy<T>(value: T): value is Truthy<T> {
  return value !== false && value !== 0 && value !== '' && value !== null && value !== undefined;
}

// --- param parsing -------------------------------------------------------------------------

/** Params that WebClient JSON-encodes into a form field because they are objects or arrays. */
const JSON_FORM_FIELDS = new Set(['blocks', 'attachments', 'metadata', 'unfurls', 'user_auth_blocks', 'view']);

const jsonObjectSchema = z.record(z.string(), z.json());
const boolish = z.union([z.boolean(), z.enum(['true', 'false', '1', '0']).transform((v) => v === 'true' || v === '1')]);
const intish = z.union([z.number().int().nonnegative(), z.string().regex(/^\d+$/).transform(Number)]);
const tsSchema = z.string().regex(/^\d+\.\d+$/, 'expected a Slack ts like 1700000000.000100');
const blocksSchema = z.array(jsonObjectSchema);
const metadataSchema = z.object({ event_type: z.string().min(1), event_payload: jsonObjectSchema });
const cursorPayloadSchema = z.object({ offset: z.number().int().nonnegative() });

const postMessageSchema = z.object({
  channel: z.string().min(1),
  text: z.string().optional(),
  blocks: blocksSchema.optional(),
  attachments: blocksSchema.optional(),
  thread_ts: tsSchema.optional(),
  reply_broadcast: boolish.optional(),
  metadata: metadataSchema.optional(),
});
const updateSchema = z.object({
  channel: z.string().min(1),
  ts: tsSchema,
  text: z.string().optional(),
  blocks: blocksSchema.optional(),
  attachments: blocksSchema.optional(),
  metadata: metadataSchema.optional(),
});
const postEphemeralSchema = z.object({
  channel: z.string().min(1),
  user: z.string().min(1),
  text: z.string().optional(),
  blocks: blocksSchema.optional(),
  attachments: blocksSchema.optional(),
  thread_ts: tsSchema.optional(),
});
const pageSchema = {
  limit: intish.optional(),
  cursor: z.string().optional(),
  include_all_metadata: boolish.optional(),
};
const historySchema = z.object({
  channel: z.string().min(1),
  oldest: tsSchema.optional(),
  latest: tsSchema.optional(),
  inclusive: boolish.optional(),
  ...pageSchema,
});
const repliesSchema = z.object({ channel: z.string().min(1), ts: tsSchema, ...pageSchema });
const permalinkSchema = z.object({ channel: z.string().min(1), message_ts: z.string().min(1) });
// views.open: Slack's limits on modals (https://api.slack.com/reference/surfaces/views).
const plainTextSchema = (max: number) => z.object({ type: z.literal('plain_text'), text: z.string().min(1).max(max), emoji: z.boolean().optional() });
const modalViewSchema = z.object({
  type: z.literal('modal'),
  title: plainTextSchema(24),
  submit: plainTextSchema(24).optional(),
  close: plainTextSchema(24).optional(),
  callback_id: z.string().max(255).optional(),
  private_metadata: z.string().max(3000).optional(),
  blocks: z.array(jsonObjectSchema).min(1).max(100),
});
const viewsOpenSchema = z.object({ trigger_id: z.string().min(1), view: modalViewSchema });
const usergroupUsersSchema = z.object({ usergroup: z.string().min(1), include_disabled: boolish.optional() });

/** Decodes a form field; JSON-bearing fields become objects, a malformed one stays a string (and fails validation). */
function decodeFormField(key: string, value: string): JsonValue {
  if (!JSON_FORM_FIELDS.has(key)) return value;
  try {
    return z.json().parse(JSON.parse(value));
  } catch {
    return value;
  }
}

type ParsedBody = { ok: true; params: JsonObject } | { ok: false; reason: string };

function parseBody(contentType: string | undefined, raw: string, query: URLSearchParams): ParsedBody {
  const params: JsonObject = {};
  for (const [key, value] of query) params[key] = decodeFormField(key, value);
  const mediaType = (contentType ?? '').split(';')[0]?.trim().toLowerCase() ?? '';
  if (raw.length === 0) return { ok: true, params };
  if (mediaType === 'application/x-www-form-urlencoded') {
    for (const [key, value] of new URLSearchParams(raw)) params[key] = decodeFormField(key, value);
    return { ok: true, params };
  }
  if (mediaType === 'application/json') {
    let parsed: unknown;
    try {
      parsed = JSON.parse(raw);
    } catch {
      return { ok: false, reason: 'body is not valid JSON' };
    }
    const object = jsonObjectSchema.safeParse(parsed);
    if (!object.success) return { ok: false, reason: 'JSON body is not an object' };
    return { ok: true, params: { ...params, ...object.data } };
  }
  return { ok: false, reason: `unsupported content-type ${contentType ?? '(none)'}` };
}

function issuesToMessages(error: z.ZodError): string[] {
  return error.issues.map((issue) => `[ERROR] ${issue.message} [json-pointer:/${issue.path.map(String).join('/')}]`);
}

// --- the server ----------------------------------------------------------------------------

interface ApiAnswer {
  status: number;
  body: JsonObject | string;
  headers?: Record<string, string>;
}

const ok = (fields: JsonObject): ApiAnswer => ({ status: 200, body: { ok: true, ...fields } });
const fail = (error: string, extra: JsonObject = {}): ApiAnswer => ({
  status: 200,
  body: { ok: false, error, ...extra },
});

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolveBody, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => resolveBody(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function send(res: ServerResponse, answer: ApiAnswer): void {
  const isJson = typeof answer.body !== 'string';
  const payload = typeof answer.body === 'string' ? answer.body : JSON.stringify(answer.body);
  res.writeHead(answer.status, {
    'content-type': isJson ? 'application/json; charset=utf-8' : 'text/plain; charset=utf-8',
    ...answer.headers,
  });
  res.end(payload);
}

function paginate<T>(
  items: readonly T[],
  limitParam: number | undefined,
  cursor: string | undefined,
  defaultLimit: number,
): { ok: true; page: T[]; nextCursor: string | undefined } | { ok: false } {
  let offset = 0;
  if (cursor !== undefined && cursor !== '') {
    try {
      const decoded = cursorPayloadSchema.safeParse(JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')));
      if (!decoded.success) return { ok: false };
      offset = decoded.data.offset;
    } catch {
      return { ok: false };
    }
  }
  // Slack treats limit=0 / absent as its default and caps large values at 999.
  const limit = limitParam === undefined || limitParam === 0 ? defaultLimit : Math.min(limitParam, 999);
  const page = items.slice(offset, offset + limit);
  const next =
    offset + limit < items.length
      ? Buffer.from(JSON.stringify({ offset: offset + limit })).toString('base64url')
      : undefined;
  return { ok: true, page, nextCursor: next };
}

/**
 * The content of the one file part of a multipart/form-data body (RFC 7578), byte for byte;
 * undefined when the body is not that. Small on purpose: only what WebClient's upload sends.
 */
function multipartFile(contentType: string, body: Buffer): Buffer | undefined {
  const boundary = /boundary=(?:"([^"]+)"|([^;\s]+))/i.exec(contentType);
  const marker = boundary?.[1] ?? boundary?.[2];
  if (marker === undefined) return undefined;
  const delimiter = Buffer.from(`--${marker}`);
  const files: Buffer[] = [];
  let start = body.indexOf(delimiter);
  while (start >= 0) {
    const next = body.indexOf(delimiter, start + delimiter.length);
    if (next < 0) break;
    // A part: CRLF, headers, CRLF CRLF, content, CRLF, then the next delimiter.
    const part = body.subarray(start + delimiter.length + 2, next - 2);
    const split = part.indexOf('\r\n\r\n');
    if (split >= 0 && /filename=/i.test(part.subarray(0, split).toString('utf8'))) files.push(Buffer.from(part.subarray(split + 4)));
    start = next;
  }
  return files.length === 1 ? files[0] : undefined;
}

export async function startSlackServer(options: SlackServerOptions = {}): Promise<SlackServer> {
  const botUserId = options.botUserId ?? 'U0BOT';
  const botId = options.botId ?? 'B0BOT';
  const appId = options.appId ?? 'A0BOT';
  const teamId = options.teamId ?? 'T0TEAM';
  // Microseconds since epoch as a safe integer (1.7e15 < 2^53), so ts strictly increase.
  let clockMicros = (options.startTs ?? 1_700_000_000) * 1_000_000;
  const nextTs = (): string => {
    clockMicros += 100;
    return `${Math.floor(clockMicros / 1_000_000)}.${String(clockMicros % 1_000_000).padStart(6, '0')}`;
  };

  const calls: RecordedCall[] = [];
  const unexpected: UnexpectedRequest[] = [];
  const ephemerals: SlackEphemeral[] = [];
  const responseUrlPosts: ResponseUrlPost[] = [];
  const openedViews: OpenedView[] = [];
  const usedTriggers = new Set<string>();
  const channels = new Map<string, SlackMessage[]>();
  const userGroups = new Map<string, string[]>();
  const failures = new Map<string, FailSpec[]>();
  const changes = new EventEmitter();
  changes.setMaxListeners(0);
  let responseUrlCounter = 0;
  const changed = (): void => {
    changes.emit('change');
  };

  const channelMessages = (channel: string): SlackMessage[] => {
    let list = channels.get(channel);
    if (list === undefined) {
      list = [];
      channels.set(channel, list);
    }
    return list;
  };

  /** The wire view of a message: no bookkeeping fields, metadata only when asked for. */
  const render = (message: SlackMessage, withMetadata: boolean): JsonObject => {
    const out: JsonObject = {
      type: 'message',
      user: message.user,
      ts: message.ts,
      team: message.team,
      text: message.text ?? '',
    };
    if (message.bot_id !== undefined) out['bot_id'] = message.bot_id;
    if (message.app_id !== undefined) out['app_id'] = message.app_id;
    if (message.subtype !== undefined) out['subtype'] = message.subtype;
    if (message.blocks !== undefined) out['blocks'] = message.blocks;
    if (message.attachments !== undefined) out['attachments'] = message.attachments;
    if (message.thread_ts !== undefined) out['thread_ts'] = message.thread_ts;
    if (message.parent_user_id !== undefined) out['parent_user_id'] = message.parent_user_id;
    if (message.reply_count !== undefined) out['reply_count'] = message.reply_count;
    if (message.reply_users !== undefined) {
      out['reply_users'] = message.reply_users;
      out['reply_users_count'] = message.reply_users.length;
    }
    if (message.latest_reply !== undefined) out['latest_reply'] = message.latest_reply;
    if (message.edited !== undefined) out['edited'] = { ...message.edited };
    if (withMetadata && message.metadata !== undefined)
      out['metadata'] = { event_type: message.metadata.event_type, event_payload: message.metadata.event_payload };
    return out;
  };

  /** Stores a new message; replies update their parent's thread summary like Slack does. */
  const store = (
    channel: string,
    fields: Omit<SlackMessage, 'type' | 'channel' | 'ts' | 'team' | 'updateCount'>,
  ): SlackMessage | 'thread_not_found' => {
    const list = channelMessages(channel);
    let parent: SlackMessage | undefined;
    if (fields.thread_ts !== undefined) {
      const threadTs = fields.thread_ts;
      parent = list.find((m) => m.ts === threadTs);
      // Slack would post into a phantom thread; an unknown thread here is a bot bug, so fail loudly.
      if (parent === undefined) return 'thread_not_found';
      // Replying to a reply lands in the same thread in Slack.
      if (parent.thread_ts !== undefined && parent.thread_ts !== parent.ts) {
        const rootTs = parent.thread_ts;
        parent = list.find((m) => m.ts === rootTs) ?? parent;
      }
    }
    const message: SlackMessage = { type: 'message', channel, ts: nextTs(), team: teamId, updateCount: 0, ...fields };
    if (parent !== undefined) {
      message.thread_ts = parent.ts;
      message.parent_user_id = parent.user;
      parent.thread_ts = parent.ts;
      parent.reply_count = (parent.reply_count ?? 0) + 1;
      parent.reply_users = [...new Set([...(parent.reply_users ?? []), message.user])];
      parent.latest_reply = message.ts;
    }
    list.push(message);
    return message;
  };

  const threadOf = (channel: string, ts: string): SlackMessage[] | undefined => {
    const list = channels.get(channel) ?? [];
    const hit = list.find((m) => m.ts === ts);
    if (hit === undefined) return undefined;
    const rootTs = hit.thread_ts ?? hit.ts;
    return list.filter((m) => m.ts === rootTs || m.thread_ts === rootTs);
  };

  // --- files.uploadV2 (files.getUploadURLExternal → POST to upload_url → files.completeUploadExternal) ---
  // The upload URL is on this server; Slack's is elsewhere, which WebClient allows (absolute URLs).
  let uploadOrigin = '';
  let fileCounter = 0;
  const stagedFiles = new Map<string, { filename: string; length: number; bytes?: Buffer }>();
  const completedUploads: SlackUpload[] = [];
  const getUploadUrlSchema = z.object({ filename: z.string().min(1), length: intish, alt_text: z.string().optional(), snippet_type: z.string().optional() });
  const completeUploadSchema = z.object({
    files: z.string().transform((text, ctx) => {
      const parsed = z.array(z.object({ id: z.string().min(1), title: z.string().optional() })).min(1).safeParse(((): unknown => {
        try {
          return JSON.parse(text);
        } catch {
          return undefined;
        }
      })());
      if (!parsed.success) {
        ctx.addIssue({ code: 'custom', message: 'files must be a JSON array of { id, title }' });
        return z.NEVER;
      }
      return parsed.data;
    }),
    channel_id: z.string().min(1).optional(),
    thread_ts: tsSchema.optional(),
    initial_comment: z.string().optional(),
  });
  const uploadMethods: Record<string, (params: JsonObject) => ApiAnswer> = {
    'files.getUploadURLExternal': (params) => {
      const parsed = getUploadUrlSchema.safeParse(params);
      if (!parsed.success)
        return fail('invalid_arguments', { response_metadata: { messages: issuesToMessages(parsed.error) } });
      // Slack refuses empty files.
      if (parsed.data.length === 0) return fail('invalid_arguments');
      fileCounter += 1;
      const fileId = `F0FILE${String(fileCounter).padStart(4, '0')}`;
      stagedFiles.set(fileId, { filename: parsed.data.filename, length: parsed.data.length });
      return ok({ upload_url: `${uploadOrigin}/upload/v1/${fileId}`, file_id: fileId });
    },
    'files.completeUploadExternal': (params) => {
      const parsed = completeUploadSchema.safeParse(params);
      if (!parsed.success)
        return fail('invalid_arguments', { response_metadata: { messages: issuesToMessages(parsed.error) } });
      const p = parsed.data;
      if (p.thread_ts !== undefined && p.channel_id === undefined) return fail('invalid_arguments');
      if (p.channel_id !== undefined && p.thread_ts !== undefined) {
        const threadTs = p.thread_ts;
        if (!(channels.get(p.channel_id) ?? []).some((m) => m.ts === threadTs)) return fail('thread_not_found');
      }
      const shared: JsonObject[] = [];
      for (const file of p.files) {
        const staged = stagedFiles.get(file.id);
        // Completing a file that was never uploaded (or twice) is a bot bug here.
        if (staged?.bytes === undefined) return fail('file_not_found');
      }
      for (const file of p.files) {
        const staged = stagedFiles.get(file.id);
        if (staged?.bytes === undefined) continue;
        stagedFiles.delete(file.id);
        if (p.channel_id !== undefined) {
          completedUploads.push({ file_id: file.id, filename: staged.filename, title: file.title, channel: p.channel_id, thread_ts: p.thread_ts, bytes: staged.bytes, at: Date.now() });
        }
        shared.push({ id: file.id, name: staged.filename, title: file.title ?? staged.filename, size: staged.bytes.length });
      }
      return ok({ files: shared });
    },
  };

  /** The bytes of one staged file, as WebClient POSTs them: multipart/form-data with one file part. */
  const handleUpload = async (req: IncomingMessage, res: ServerResponse, fileId: string): Promise<void> => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk)));
    const raw = Buffer.concat(chunks);
    const at = Date.now();
    const contentType = req.headers['content-type'];
    const reject = (reason: string): void => {
      unexpected.push({ httpMethod: req.method ?? '', path: req.url ?? '', contentType, body: raw.toString('utf8').slice(0, 500), at, reason });
      changed();
      send(res, { status: 400, body: reason });
    };
    const staged = stagedFiles.get(fileId);
    if (req.method !== 'POST') {
      reject('upload URL takes POST only');
      return;
    }
    if (staged === undefined || staged.bytes !== undefined) {
      reject(`no pending upload ${fileId}`);
      return;
    }
    const bytes = (contentType ?? '').toLowerCase().startsWith('multipart/form-data') ? multipartFile(contentType ?? '', raw) : raw;
    if (bytes === undefined) {
      reject('upload must be multipart/form-data with exactly one file part');
      return;
    }
    if (bytes.length !== staged.length) {
      reject(`upload of ${fileId} has ${bytes.length} bytes, files.getUploadURLExternal announced ${staged.length}`);
      return;
    }
    staged.bytes = bytes;
    changed();
    send(res, { status: 200, body: `OK - ${bytes.length}` });
  };
  // --- end files.uploadV2 ---

  const methods: Record<string, (params: JsonObject) => ApiAnswer> = {
    ...uploadMethods,
    'auth.test': () =>
      ok({
        url: 'https://shipgate-test.slack.com/',
        team: 'shipgate-test',
        user: 'shipgate',
        team_id: teamId,
        user_id: botUserId,
        bot_id: botId,
        is_enterprise_install: false,
      }),

    'chat.postMessage': (params) => {
      const parsed = postMessageSchema.safeParse(params);
      if (!parsed.success)
        return fail('invalid_arguments', { response_metadata: { messages: issuesToMessages(parsed.error) } });
      const p = parsed.data;
      if (p.text === undefined && p.blocks === undefined && p.attachments === undefined) return fail('no_text');
      const stored = store(p.channel, {
        user: botUserId,
        bot_id: botId,
        app_id: appId,
        ...(p.text !== undefined && { text: p.text }),
        ...(p.blocks !== undefined && { blocks: p.blocks }),
        ...(p.attachments !== undefined && { attachments: p.attachments }),
        ...(p.metadata !== undefined && { metadata: p.metadata }),
        ...(p.thread_ts !== undefined && { thread_ts: p.thread_ts }),
        ...(p.thread_ts !== undefined && p.reply_broadcast === true && { subtype: 'thread_broadcast' as const }),
      });
      if (stored === 'thread_not_found') return fail('thread_not_found');
      return ok({ channel: p.channel, ts: stored.ts, message: render(stored, true) });
    },

    'chat.update': (params) => {
      const parsed = updateSchema.safeParse(params);
      if (!parsed.success)
        return fail('invalid_arguments', { response_metadata: { messages: issuesToMessages(parsed.error) } });
      const p = parsed.data;
      const message = channels.get(p.channel)?.find((m) => m.ts === p.ts);
      if (message === undefined) return fail('message_not_found');
      if (message.bot_id !== botId) return fail('cant_update_message');
      // Slack keeps fields that the update leaves out (blocks: [] clears them).
      if (p.text !== undefined) message.text = p.text;
      if (p.blocks !== undefined) message.blocks = p.blocks;
      if (p.attachments !== undefined) message.attachments = p.attachments;
      if (p.metadata !== undefined) message.metadata = p.metadata;
      message.edited = { user: botUserId, ts: nextTs() };
      message.updateCount += 1;
      return ok({ channel: p.channel, ts: message.ts, text: message.text ?? '', message: render(message, true) });
    },

    'chat.postEphemeral': (params) => {
      const parsed = postEphemeralSchema.safeParse(params);
      if (!parsed.success)
        return fail('invalid_arguments', { response_metadata: { messages: issuesToMessages(parsed.error) } });
      const p = parsed.data;
      if (p.text === undefined && p.blocks === undefined && p.attachments === undefined) return fail('no_text');
      const ephemeral: SlackEphemeral = {
        channel: p.channel,
        user: p.user,
        message_ts: nextTs(),
        at: Date.now(),
        ...(p.thread_ts !== undefined && { thread_ts: p.thread_ts }),
        ...(p.text !== undefined && { text: p.text }),
        ...(p.blocks !== undefined && { blocks: p.blocks }),
      };
      ephemerals.push(ephemeral);
      return ok({ message_ts: ephemeral.message_ts });
    },

    'conversations.history': (params) => {
      const parsed = historySchema.safeParse(params);
      if (!parsed.success)
        return fail('invalid_arguments', { response_metadata: { messages: issuesToMessages(parsed.error) } });
      const p = parsed.data;
      const inclusive = p.inclusive === true;
      const after = (ts: string, bound: string): boolean => Number(ts) > Number(bound) || (inclusive && ts === bound);
      const before = (ts: string, bound: string): boolean => Number(ts) < Number(bound) || (inclusive && ts === bound);
      // History holds top-level messages (and broadcast replies), newest first.
      const visible = (channels.get(p.channel) ?? [])
        .filter((m) => m.thread_ts === undefined || m.thread_ts === m.ts || m.subtype === 'thread_broadcast')
        .filter(
          (m) =>
            (p.oldest === undefined || after(m.ts, p.oldest)) && (p.latest === undefined || before(m.ts, p.latest)),
        )
        .reverse();
      const page = paginate(visible, p.limit, p.cursor, 100);
      if (!page.ok) return fail('invalid_cursor');
      return ok({
        messages: page.page.map((m) => render(m, p.include_all_metadata === true)),
        has_more: page.nextCursor !== undefined,
        pin_count: 0,
        ...(page.nextCursor !== undefined && { response_metadata: { next_cursor: page.nextCursor } }),
      });
    },

    'conversations.replies': (params) => {
      const parsed = repliesSchema.safeParse(params);
      if (!parsed.success)
        return fail('invalid_arguments', { response_metadata: { messages: issuesToMessages(parsed.error) } });
      const p = parsed.data;
      const thread = threadOf(p.channel, p.ts);
      if (thread === undefined) return fail('thread_not_found');
      const page = paginate(thread, p.limit, p.cursor, 1000);
      if (!page.ok) return fail('invalid_cursor');
      return ok({
        messages: page.page.map((m) => render(m, p.include_all_metadata === true)),
        has_more: page.nextCursor !== undefined,
        ...(page.nextCursor !== undefined && { response_metadata: { next_cursor: page.nextCursor } }),
      });
    },

    'chat.getPermalink': (params) => {
      const parsed = permalinkSchema.safeParse(params);
      if (!parsed.success)
        return fail('invalid_arguments', { response_metadata: { messages: issuesToMessages(parsed.error) } });
      const { channel, message_ts } = parsed.data;
      if (!(channels.get(channel) ?? []).some((m) => m.ts === message_ts)) return fail('message_not_found');
      return ok({ channel, permalink: `https://fake.slack.test/archives/${channel}/p${message_ts.replace('.', '')}` });
    },

    'views.open': (params) => {
      const parsed = viewsOpenSchema.safeParse(params);
      if (!parsed.success)
        return fail('invalid_arguments', { response_metadata: { messages: issuesToMessages(parsed.error) } });
      const { trigger_id: triggerId, view } = parsed.data;
      // A trigger opens one view (Slack: exchanged_trigger_id); a modal with inputs needs a submit button.
      if (!/^\d+\.\d+\.[0-9a-f]+$/.test(triggerId)) return fail('invalid_trigger_id');
      if (usedTriggers.has(triggerId)) return fail('exchanged_trigger_id');
      if (view.submit === undefined && view.blocks.some((block) => block['type'] === 'input')) return fail('invalid_arguments');
      usedTriggers.add(triggerId);
      const viewId = `V${String(openedViews.length + 1).padStart(8, '0')}`;
      const raw = params['view'];
      openedViews.push({
        triggerId,
        viewId,
        callbackId: view.callback_id,
        privateMetadata: view.private_metadata,
        view: raw !== null && typeof raw === 'object' && !Array.isArray(raw) ? raw : {},
      });
      changed();
      return ok({ view: { id: viewId, type: 'modal', callback_id: view.callback_id ?? '', private_metadata: view.private_metadata ?? '', state: { values: {} } } });
    },

    'usergroups.users.list': (params) => {
      const parsed = usergroupUsersSchema.safeParse(params);
      if (!parsed.success)
        return fail('invalid_arguments', { response_metadata: { messages: issuesToMessages(parsed.error) } });
      const users = userGroups.get(parsed.data.usergroup);
      if (users === undefined) return fail('no_such_subteam');
      return ok({ users: [...users] });
    },
  };

  const authError = (req: IncomingMessage, params: JsonObject): string | undefined => {
    if (options.token === undefined) return undefined;
    const header = req.headers.authorization;
    const bearer = header !== undefined && header.startsWith('Bearer ') ? header.slice('Bearer '.length) : undefined;
    const bodyToken = typeof params['token'] === 'string' ? params['token'] : undefined;
    const presented = bearer ?? bodyToken;
    if (presented === undefined || presented === '') return 'not_authed';
    return presented === options.token ? undefined : 'invalid_auth';
  };

  const answerFailure = (spec: FailSpec): ApiAnswer => {
    if ('error' in spec) return fail(spec.error);
    if (spec.status === 429) {
      const retryAfter = spec.retryAfter === undefined ? 0 : spec.retryAfter;
      return {
        status: 429,
        body: { ok: false, error: 'ratelimited' },
        ...(retryAfter !== null && { headers: { 'retry-after': String(retryAfter) } }),
      };
    }
    return { status: spec.status, body: `simulated HTTP ${spec.status}` };
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    // Upload bodies are bytes, not API params: handled before the body is read as text.
    const uploadMatch = /^\/upload\/v1\/(F\w+)$/.exec(new URL(req.url ?? '/', 'http://127.0.0.1').pathname);
    if (uploadMatch?.[1] !== undefined) return handleUpload(req, res, uploadMatch[1]);
    const raw = await readBody(req);
    const at = Date.now();
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const contentType = req.headers['content-type'];
    const noteUnexpected = (reason: string): void => {
      unexpected.push({ httpMethod: req.method ?? '', path: url.pathname, contentType, body: raw, at, reason });
      changed();
    };

    const responseUrlMatch = /^\/response-url\/([\w-]+)$/.exec(url.pathname);
    if (responseUrlMatch?.[1] !== undefined && req.method === 'POST') {
      let body: JsonValue = raw;
      try {
        body = z.json().parse(JSON.parse(raw));
      } catch {
        // Slack's response_url takes JSON; anything else is kept verbatim for the assertion to show.
      }
      responseUrlPosts.push({ id: responseUrlMatch[1], body, at });
      changed();
      send(res, { status: 200, body: 'ok' });
      return;
    }

    const apiMatch = /^\/api\/([\w.]+)$/.exec(url.pathname);
    if (apiMatch?.[1] === undefined || (req.method !== 'POST' && req.method !== 'GET')) {
      noteUnexpected('not a Web API path');
      send(res, { status: 404, body: 'not found' });
      return;
    }
    const method = apiMatch[1];
    const parsedBody = parseBody(contentType, raw, url.searchParams);
    if (!parsedBody.ok) {
      noteUnexpected(parsedBody.reason);
      send(res, fail('invalid_form_data'));
      return;
    }
    const params = parsedBody.params;
    const record = (answer: ApiAnswer): void => {
      const error =
        typeof answer.body === 'object' && typeof answer.body['error'] === 'string' ? answer.body['error'] : undefined;
      calls.push({ method, body: params, at, status: answer.status, ...(error !== undefined && { error }) });
    };

    const handler = methods[method];
    if (handler === undefined) {
      noteUnexpected(`unknown method ${method}`);
      send(res, fail('unknown_method'));
      return;
    }
    const denied = authError(req, params);
    let answer: ApiAnswer;
    if (denied !== undefined) {
      answer = fail(denied);
    } else {
      const queued = failures.get(method);
      const failure = queued?.shift();
      answer = failure !== undefined ? answerFailure(failure) : handler(params);
    }
    record(answer);
    changed();
    send(res, answer);
  };

  const http = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      unexpected.push({
        httpMethod: req.method ?? '',
        path: req.url ?? '',
        contentType: req.headers['content-type'],
        body: '',
        at: Date.now(),
        reason: `fake server crashed: ${String(error)}`,
      });
      changed();
      if (!res.headersSent) send(res, { status: 500, body: 'fake slack server error' });
    });
  });
  await new Promise<void>((resolveListen, reject) => {
    http.once('error', reject);
    http.listen(0, '127.0.0.1', () => resolveListen());
  });
  const address = http.address();
  if (address === null || typeof address === 'string') throw new Error('slack fake server has no TCP address');
  const origin = `http://127.0.0.1:${address.port}`;
  uploadOrigin = origin;

  const server: SlackServer = {
    apiUrl: `${origin}/api/`,
    url: origin,
    botUserId,
    botId,
    teamId,
    calls,
    unexpected,
    ephemerals,
    openedViews,
    responseUrlPosts,
    messages: (channel) => [...(channels.get(channel) ?? [])],
    callsOf: (method) => calls.filter((c) => c.method === method),
    uploads: () => completedUploads.map((upload) => ({ ...upload, bytes: Buffer.from(upload.bytes) })),
    waitFor<T>(predicate: (s: SlackServer) => T, timeoutMs = 5_000, description?: string): Promise<Truthy<T>> {
      return new Promise((resolveWait, reject) => {
        let lastError: unknown;
        const check = (): boolean => {
          try {
            const value = predicate(server);
            if (value instanceof Promise) {
              // A promise is always truthy: an async predicate would pass without checking anything.
              cleanup();
              reject(new Error('slack fake: waitFor takes a synchronous predicate; use eventually() for async checks'));
              return true;
            }
            if (isTruthy(value)) {
              cleanup();
              resolveWait(value);
              return true;
            }
          } catch (error) {
            lastError = error;
          }
          return false;
        };
        const timer = setTimeout(() => {
          cleanup();
          const seen =
            calls.map((c) => `${c.method}${c.error !== undefined ? `(${c.error})` : ''}`).join(', ') || 'none';
          const why = lastError instanceof Error ? `; last predicate error: ${lastError.message}` : '';
          reject(
            new Error(
              `slack fake: waitFor${description !== undefined ? ` "${description}"` : ''} timed out after ${timeoutMs} ms; calls so far: ${seen}${why}`,
            ),
          );
        }, timeoutMs);
        const onChange = (): void => {
          check();
        };
        const cleanup = (): void => {
          clearTimeout(timer);
          changes.off('change', onChange);
        };
        if (!check()) changes.on('change', onChange);
      });
    },
    setUserGroup(groupId, userIds) {
      userGroups.set(groupId, [...userIds]);
      changed();
    },
    failNext(method, spec) {
      const queued = failures.get(method) ?? [];
      queued.push(spec);
      failures.set(method, queued);
    },
    addUserMessage(channel, message) {
      const stored = store(channel, {
        user: message.user,
        text: message.text,
        ...(message.thread_ts !== undefined && { thread_ts: message.thread_ts }),
      });
      if (stored === 'thread_not_found')
        throw new Error(`slack fake: no message ${message.thread_ts ?? ''} in ${channel} to reply to`);
      changed();
      return stored.ts;
    },
    addAppMessage(channel, message) {
      const stored = store(channel, {
        user: `U${message.botId}`,
        bot_id: message.botId,
        app_id: message.appId,
        text: message.text,
        metadata: message.metadata,
        ...(message.thread_ts !== undefined && { thread_ts: message.thread_ts }),
      });
      if (stored === 'thread_not_found')
        throw new Error(`slack fake: no message ${message.thread_ts ?? ''} in ${channel} to reply to`);
      changed();
      return stored.ts;
    },
    newResponseUrl() {
      responseUrlCounter += 1;
      return `${origin}/response-url/r${responseUrlCounter}`;
    },
    close() {
      return new Promise<void>((resolveClose, reject) => {
        http.close((error) => (error ? reject(error) : resolveClose()));
        // WebClient's fetch keeps connections alive; without this close() waits for them to idle out.
        http.closeAllConnections();
      });
    },
  };
  return server;
}
