import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { z } from 'zod';

/**
 * A local stand-in for the Anthropic Messages API (SPEC §9). It speaks the wire protocol the real
 * `@anthropic-ai/sdk` client uses — `POST /v1/messages`, JSON or SSE (`stream: true`), Anthropic's
 * error body `{ type: 'error', error: { type, message } }` with `retry-after` — and answers from a
 * script of responses that tests queue in order, one per HTTP request (an SDK retry consumes the
 * next entry, exactly as a retry hits the real API again).
 *
 * It is stricter than a scripted mock needs to be, where the real API is strict too, so that agent
 * bugs surface here and not in production: dangling `tool_use` ids, `tool_result`s without a
 * matching `tool_use`, empty text blocks, more than four `cache_control` breakpoints and custom
 * tools without `input_schema` are answered with the API's 400 and recorded in `unexpected`.
 *
 * Usage is computed, not scripted, so prompt caching is observable end to end. The cache model
 * (a deliberately simple prefix-hash model of Anthropic's prompt cache):
 * - The prompt is flattened in the API's cache order — tools, then system blocks, then each
 *   message's content blocks (a string is one text block) — into segments. A segment costs
 *   ceil(JSON length / 4) tokens (`cache_control` excluded), and each segment boundary has a
 *   running SHA-256 over the model and every segment so far: equal hash = identical prefix.
 * - A breakpoint is a segment carrying `cache_control` (or the last segment, for the top-level
 *   automatic `cache_control`). Without breakpoints everything is `input_tokens`.
 * - Read: the longest prefix whose hash was written by an earlier successful request, looking at
 *   boundaries at most 20 segments before some breakpoint (the API's lookback window), is
 *   `cache_read_input_tokens`.
 * - Write: the tokens from there up to the last breakpoint are `cache_creation_input_tokens`
 *   (split into 5m/1h by the TTL of the breakpoint closing each stretch); every breakpoint's
 *   prefix is then stored. Tokens after the last breakpoint are `input_tokens`.
 * - Breakpoints whose prefix is shorter than `minCacheableTokens` (default 0; the real minimum is
 *   1024–4096 depending on the model) neither read nor write, as the API silently ignores them.
 * - Entries never expire (use `resetCache()` to simulate expiry); only requests answered with a
 *   message touch the cache, as a rejected request is never processed. Parameters other than the
 *   model, tools, system and messages (tool_choice, thinking, …) do not affect the hash.
 */

export type JsonValue = z.core.util.JSONType;
export type JsonObject = { [key: string]: JsonValue };

export interface ModelUsage {
  input_tokens: number;
  output_tokens: number;
  cache_creation_input_tokens: number;
  cache_read_input_tokens: number;
}

export type ScriptedBlock =
  { type: 'text'; text: string } | { type: 'tool_use'; id?: string; name: string; input: JsonObject };

export interface MessageSpec {
  content: ScriptedBlock[];
  /** Defaults to `tool_use` when any block is a tool_use, else `end_turn`. */
  stop_reason?: 'end_turn' | 'tool_use' | 'max_tokens';
  /** Overrides the computed usage field by field. */
  usage?: Partial<ModelUsage>;
  /** Holds the answer this long, as a slow model does (ends early when the client goes away). */
  delayMs?: number;
}

export interface ErrorSpec {
  status: 400 | 401 | 403 | 404 | 413 | 429 | 500 | 529;
  /** Anthropic error type; defaults from the status (429 rate_limit_error, 529 overloaded_error, …). */
  type?: string;
  message?: string;
  /** Sent as `retry-after`. The SDK treats 0 as "no advice" and backs off ~0.4–0.5 s anyway. */
  retryAfterSeconds?: number;
  /** Sent as `retry-after-ms`, which the SDK prefers; `1` makes retries effectively immediate. */
  retryAfterMs?: number;
  /**
   * For a streaming request: answer HTTP 200, send `message_start`, then an SSE `error` event, as
   * the API does when it overloads mid-stream (the SDK raises an APIError without status and does
   * not retry). Ignored for non-streaming requests.
   */
  midStream?: boolean;
}

export type ScriptedResponse = MessageSpec | ErrorSpec | ((request: ModelRequest) => MessageSpec | ErrorSpec);

const cacheControlSchema = z.object({ type: z.literal('ephemeral'), ttl: z.enum(['5m', '1h']).optional() });
/** A content block param; only the fields the fake inspects are typed, the rest pass through. */
const contentBlockSchema = z.looseObject({
  type: z.string().min(1),
  cache_control: cacheControlSchema.nullish(),
  text: z.string().optional(),
  id: z.string().optional(),
  tool_use_id: z.string().optional(),
  is_error: z.boolean().optional(),
  content: z.union([z.string(), z.array(z.looseObject({ type: z.string(), text: z.string().optional() }))]).optional(),
});
const systemBlockSchema = z.looseObject({
  type: z.literal('text'),
  text: z.string(),
  cache_control: cacheControlSchema.nullish(),
});
const toolSchema = z.looseObject({
  name: z.string().min(1),
  type: z.string().optional(),
  input_schema: z.looseObject({ type: z.literal('object') }).optional(),
  cache_control: cacheControlSchema.nullish(),
});
const messagesRequestSchema = z.object({
  model: z.string().min(1),
  max_tokens: z.number().int().positive(),
  messages: z
    .array(
      z.object({ role: z.enum(['user', 'assistant']), content: z.union([z.string(), z.array(contentBlockSchema)]) }),
    )
    .min(1),
  system: z.union([z.string(), z.array(systemBlockSchema)]).optional(),
  tools: z.array(toolSchema).optional(),
  stream: z.boolean().optional(),
  cache_control: cacheControlSchema.nullish(),
});
const jsonObjectSchema = z.record(z.string(), z.json());

export type MessagesParams = z.infer<typeof messagesRequestSchema>;
export type ContentBlockParam = z.infer<typeof contentBlockSchema>;

export interface RecordedModelRequest {
  method: string;
  path: string;
  /** Header names lower-cased; repeated headers joined with `, `. */
  headers: Record<string, string>;
  /** The parsed JSON body (`{}` when it was not a JSON object). */
  body: JsonObject;
  /** Validated Messages params, when the body was a valid Messages request. */
  params?: MessagesParams;
  stream: boolean;
  /** Date.now() when the request arrived. */
  at: number;
  /** HTTP status the fake answered with (200 for a stream, even one that fails mid-stream). */
  status: number;
  /** Usage reported in the answer, for successful answers. */
  usage?: ModelUsage;
}

/** What a response function receives: a recorded request whose body was a valid Messages request. */
export type ModelRequest = RecordedModelRequest & { params: MessagesParams };

export interface UnexpectedModelRequest {
  method: string;
  path: string;
  reason: string;
  at: number;
}

export interface AnthropicServerOptions {
  /** When set, every request must present it (`x-api-key` or `Authorization: Bearer`), else 401 authentication_error. */
  apiKey?: string;
  /** Breakpoints with a shorter prefix are ignored, like the API's per-model minimum. Default 0. */
  minCacheableTokens?: number;
}

export interface AnthropicServer {
  /** Origin for `new Anthropic({ baseURL })`, e.g. `http://127.0.0.1:1234` (the SDK appends `/v1/messages`). */
  readonly baseUrl: string;
  readonly requests: readonly RecordedModelRequest[];
  /** Requests the fake could not answer from the script or that broke the API's rules; tests expect it empty. */
  readonly unexpected: readonly UnexpectedModelRequest[];
  /** Queues responses, answered in order, one per request. */
  script(...responses: ScriptedResponse[]): void;
  /** How many scripted responses are still queued. */
  remaining(): number;
  /** Forgets every cached prefix, as if the cache TTL had expired. */
  resetCache(): void;
  close(): Promise<void>;
}

/** The `tool_result` blocks of the request's last message, content flattened to text. */
export function toolResultsOf(
  request: ModelRequest,
): Array<{ tool_use_id: string; content: string; is_error: boolean }> {
  const last = request.params.messages.at(-1);
  if (last === undefined || typeof last.content === 'string') return [];
  return last.content.flatMap((block) =>
    block.type === 'tool_result' && block.tool_use_id !== undefined
      ? [{ tool_use_id: block.tool_use_id, content: flattenText(block.content), is_error: block.is_error ?? false }]
      : [],
  );
}

function flattenText(content: ContentBlockParam['content']): string {
  if (content === undefined) return '';
  if (typeof content === 'string') return content;
  return content.map((part) => part.text ?? '').join('');
}

// --- ids and tokens --------------------------------------------------------------------------

/** Anthropic ids are a prefix plus 24 base62-looking characters; base64url without -/_ is close enough. */
function newId(prefix: string): string {
  return `${prefix}${randomBytes(24).toString('base64url').replace(/[-_]/g, 'x').slice(0, 24)}`;
}

function tokensOf(text: string): number {
  return Math.max(1, Math.ceil(text.length / 4));
}

// --- the cache model (see the file comment) --------------------------------------------------

interface Segment {
  hash: string;
  tokens: number;
  breakpoint: '5m' | '1h' | undefined;
}

const LOOKBACK_SEGMENTS = 20;
const MAX_BREAKPOINTS = 4;

type CacheControl = z.infer<typeof cacheControlSchema>;

function segmentsOf(params: MessagesParams): Segment[] {
  const parts: Array<{ json: string; cacheControl: CacheControl | null | undefined }> = [];
  const add = (block: { cache_control?: CacheControl | null | undefined; [key: string]: unknown }): void => {
    // The marker moves from turn to turn; it must not change the identity of the prefix.
    const { cache_control: cacheControl, ...rest } = block;
    parts.push({ json: JSON.stringify(rest), cacheControl });
  };
  for (const tool of params.tools ?? []) add(tool);
  if (typeof params.system === 'string') add({ type: 'text', text: params.system });
  else for (const block of params.system ?? []) add(block);
  for (const message of params.messages) {
    if (typeof message.content === 'string') add({ role: message.role, type: 'text', text: message.content });
    // The role is part of each block's identity: the same text said by the other side is another prompt.
    else for (const block of message.content) add({ role: message.role, ...block });
  }
  if (params.cache_control != null && parts.length > 0) {
    const last = parts[parts.length - 1]!;
    last.cacheControl ??= params.cache_control;
  }
  let hash = createHash('sha256').update(`model:${params.model}`).digest('hex');
  return parts.map((part) => {
    hash = createHash('sha256').update(hash).update('\n').update(part.json).digest('hex');
    return {
      hash,
      tokens: tokensOf(part.json),
      breakpoint: part.cacheControl == null ? undefined : (part.cacheControl.ttl ?? '5m'),
    };
  });
}

interface CacheOutcome {
  usage: Omit<ModelUsage, 'output_tokens'>;
  creation5m: number;
  creation1h: number;
  /** Stores the request's breakpoints; called only when the request is answered with a message. */
  commit(): void;
}

function cacheOutcome(params: MessagesParams, cache: Set<string>, minCacheableTokens: number): CacheOutcome {
  const segments = segmentsOf(params);
  const cumulative: number[] = [];
  let total = 0;
  for (const segment of segments) {
    total += segment.tokens;
    cumulative.push(total);
  }
  const breakpoints = segments.flatMap((segment, index) =>
    segment.breakpoint !== undefined && cumulative[index]! >= minCacheableTokens ? [index] : [],
  );
  const lastBreakpoint = breakpoints.at(-1);
  if (lastBreakpoint === undefined) {
    return {
      usage: { input_tokens: total, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 },
      creation5m: 0,
      creation1h: 0,
      commit: () => undefined,
    };
  }
  let hit = -1;
  for (const breakpoint of breakpoints) {
    for (let index = breakpoint; index >= Math.max(0, breakpoint - LOOKBACK_SEGMENTS); index -= 1) {
      if (index > hit && cache.has(segments[index]!.hash)) {
        hit = index;
        break;
      }
    }
  }
  const read = hit >= 0 ? cumulative[hit]! : 0;
  let creation5m = 0;
  let creation1h = 0;
  for (let index = hit + 1; index <= lastBreakpoint; index += 1) {
    // A stretch is written with the TTL of the breakpoint that closes it.
    const closing = breakpoints.find((breakpoint) => breakpoint >= index)!;
    if (segments[closing]!.breakpoint === '1h') creation1h += segments[index]!.tokens;
    else creation5m += segments[index]!.tokens;
  }
  return {
    usage: {
      input_tokens: total - cumulative[lastBreakpoint]!,
      cache_creation_input_tokens: creation5m + creation1h,
      cache_read_input_tokens: read,
    },
    creation5m,
    creation1h,
    commit: () => {
      for (const breakpoint of breakpoints) cache.add(segments[breakpoint]!.hash);
    },
  };
}

// --- request rules the real API enforces ------------------------------------------------------

const CUSTOM_TOOL_NAME = /^[a-zA-Z0-9_-]{1,128}$/;

function ruleViolation(params: MessagesParams): string | undefined {
  const tools = params.tools ?? [];
  const names = new Set<string>();
  for (const [index, tool] of tools.entries()) {
    if (names.has(tool.name)) return 'tools: Tool names must be unique.';
    names.add(tool.name);
    if (tool.type === undefined || tool.type === 'custom') {
      if (tool.input_schema === undefined) return `tools.${index}.custom.input_schema: Field required`;
      if (!CUSTOM_TOOL_NAME.test(tool.name))
        return `tools.${index}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{1,128}$'`;
    }
  }

  let breakpoints = 0;
  const countBreakpoint = (block: { cache_control?: CacheControl | null | undefined }): void => {
    if (block.cache_control != null) breakpoints += 1;
  };
  tools.forEach(countBreakpoint);
  if (Array.isArray(params.system)) params.system.forEach(countBreakpoint);
  if (params.cache_control != null) breakpoints += 1;

  const { messages } = params;
  for (const [index, message] of messages.entries()) {
    const isFinalAssistant = index === messages.length - 1 && message.role === 'assistant';
    const blocks: ContentBlockParam[] =
      typeof message.content === 'string'
        ? message.content === ''
          ? []
          : [{ type: 'text', text: message.content }]
        : message.content;
    if (blocks.length === 0 && !isFinalAssistant)
      return `messages.${index}: all messages must have non-empty content except for the optional final assistant message`;
    for (const [blockIndex, block] of blocks.entries()) {
      countBreakpoint(block);
      if (block.type === 'text' && (block.text ?? '').trim() === '' && !isFinalAssistant)
        return `messages.${index}.content.${blockIndex}: text content blocks must contain non-whitespace text`;
    }

    const toolUseIds = blocks.flatMap((block) =>
      block.type === 'tool_use' && block.id !== undefined ? [block.id] : [],
    );
    if (message.role === 'assistant' && toolUseIds.length > 0) {
      const next = messages[index + 1];
      const answered = new Set(
        next === undefined || typeof next.content === 'string'
          ? []
          : next.content.flatMap((block) =>
              block.type === 'tool_result' && block.tool_use_id !== undefined ? [block.tool_use_id] : [],
            ),
      );
      const missing = toolUseIds.filter((id) => !answered.has(id));
      if (missing.length > 0)
        return `messages.${index}: \`tool_use\` ids were found without \`tool_result\` blocks immediately after: ${missing.join(', ')}. Each \`tool_use\` block must have a corresponding \`tool_result\` block in the next message.`;
    }
    if (message.role === 'user') {
      const previous = messages[index - 1];
      const asked = new Set(
        previous === undefined || previous.role !== 'assistant' || typeof previous.content === 'string'
          ? []
          : previous.content.flatMap((block) =>
              block.type === 'tool_use' && block.id !== undefined ? [block.id] : [],
            ),
      );
      for (const [blockIndex, block] of blocks.entries()) {
        if (block.type === 'tool_result' && !asked.has(block.tool_use_id ?? ''))
          return `messages.${index}.content.${blockIndex}: unexpected \`tool_use_id\` found in \`tool_result\` blocks: ${block.tool_use_id ?? '(none)'}. Each \`tool_result\` block must have a corresponding \`tool_use\` block in the previous message.`;
      }
    }
  }
  if (breakpoints > MAX_BREAKPOINTS)
    return `A maximum of ${MAX_BREAKPOINTS} blocks with cache_control may be provided. Found ${breakpoints}.`;
  return undefined;
}

// --- answers ---------------------------------------------------------------------------------

const ERROR_TYPES: Record<ErrorSpec['status'], { type: string; message: string }> = {
  400: { type: 'invalid_request_error', message: 'Invalid request' },
  401: { type: 'authentication_error', message: 'invalid x-api-key' },
  403: { type: 'permission_error', message: 'Your API key does not have permission to use the specified resource.' },
  404: { type: 'not_found_error', message: 'Not found' },
  413: { type: 'request_too_large', message: 'Request exceeds the maximum allowed number of bytes.' },
  429: { type: 'rate_limit_error', message: 'Number of request tokens has exceeded your per-minute rate limit' },
  500: { type: 'api_error', message: 'Internal server error' },
  529: { type: 'overloaded_error', message: 'Overloaded' },
};

interface SseEvent {
  event: string;
  data: JsonObject;
}

type Answer = (
  | { kind: 'json'; status: number; body: JsonObject; headers?: Record<string, string>; usage?: ModelUsage }
  | { kind: 'sse'; events: SseEvent[]; usage?: ModelUsage }
) & { delayMs?: number };

function errorBody(type: string, message: string, requestId: string): JsonObject {
  return { type: 'error', error: { type, message }, request_id: requestId };
}

function isErrorSpec(spec: MessageSpec | ErrorSpec): spec is ErrorSpec {
  return 'status' in spec;
}

function lowerCaseHeaders(req: IncomingMessage): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(req.headers)) {
    if (value !== undefined) headers[name.toLowerCase()] = Array.isArray(value) ? value.join(', ') : value;
  }
  return headers;
}

/**
 * The API key a request presents. SDK 1.x (API version 2026-10-21) sends `apiKey` as
 * `Authorization: Bearer <key>`; older clients and curl examples send `x-api-key`. Both are accepted.
 */
function presentedKey(headers: Record<string, string>): string | undefined {
  const bearer = /^Bearer (.+)$/.exec(headers['authorization'] ?? '')?.[1];
  return headers['x-api-key'] ?? bearer;
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolveBody, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => resolveBody(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/** Splits into pieces of `size` code points, so no surrogate pair is cut. */
function chunks(text: string, size: number): string[] {
  const points = Array.from(text);
  const pieces: string[] = [];
  for (let start = 0; start < points.length; start += size) pieces.push(points.slice(start, start + size).join(''));
  return pieces;
}

function zodMessage(error: z.ZodError): string {
  const issue = error.issues[0];
  if (issue === undefined) return 'Invalid request';
  return `${issue.path.map(String).join('.') || 'body'}: ${issue.message}`;
}

export async function startAnthropicServer(options: AnthropicServerOptions = {}): Promise<AnthropicServer> {
  const requests: RecordedModelRequest[] = [];
  const unexpected: UnexpectedModelRequest[] = [];
  const queue: ScriptedResponse[] = [];
  const cache = new Set<string>();
  const minCacheableTokens = options.minCacheableTokens ?? 0;

  const noteUnexpected = (record: RecordedModelRequest, reason: string): void => {
    unexpected.push({ method: record.method, path: record.path, reason, at: record.at });
  };

  const fail = (
    status: number,
    type: string,
    message: string,
    requestId: string,
    headers: Record<string, string> = {},
  ): Answer => ({ kind: 'json', status, body: errorBody(type, message, requestId), headers });

  const answerError = (spec: ErrorSpec, stream: boolean, requestId: string, model: string): Answer => {
    const defaults = ERROR_TYPES[spec.status];
    const type = spec.type ?? defaults.type;
    const message = spec.message ?? defaults.message;
    if (spec.midStream === true && stream) {
      return {
        kind: 'sse',
        events: [
          { event: 'message_start', data: { type: 'message_start', message: startedMessage(newId('msg_'), model) } },
          { event: 'error', data: errorBody(type, message, requestId) },
        ],
      };
    }
    const headers: Record<string, string> = {};
    if (spec.retryAfterSeconds !== undefined) headers['retry-after'] = String(spec.retryAfterSeconds);
    if (spec.retryAfterMs !== undefined) headers['retry-after-ms'] = String(spec.retryAfterMs);
    return fail(spec.status, type, message, requestId, headers);
  };

  const answerMessage = (spec: MessageSpec, request: ModelRequest): Answer => {
    const { params } = request;
    const declared = new Set((params.tools ?? []).map((tool) => tool.name));
    const content = spec.content.map((block): JsonObject => {
      if (block.type === 'text') return { type: 'text', text: block.text };
      // A scripted call of a tool the agent did not declare is a script bug the real model would not make.
      if (!declared.has(block.name))
        noteUnexpected(request, `scripted tool_use "${block.name}" is not among the request's tools`);
      return { type: 'tool_use', id: block.id ?? newId('toolu_'), name: block.name, input: block.input };
    });
    const stopReason = spec.stop_reason ?? (spec.content.some((b) => b.type === 'tool_use') ? 'tool_use' : 'end_turn');
    const outcome = cacheOutcome(params, cache, minCacheableTokens);
    outcome.commit();
    const usage: ModelUsage = {
      ...outcome.usage,
      output_tokens: tokensOf(JSON.stringify(content)),
      ...spec.usage,
    };
    const overriddenCreation = spec.usage?.cache_creation_input_tokens !== undefined;
    const usageJson: JsonObject = {
      input_tokens: usage.input_tokens,
      cache_creation_input_tokens: usage.cache_creation_input_tokens,
      cache_read_input_tokens: usage.cache_read_input_tokens,
      cache_creation: {
        ephemeral_5m_input_tokens: overriddenCreation ? usage.cache_creation_input_tokens : outcome.creation5m,
        ephemeral_1h_input_tokens: overriddenCreation ? 0 : outcome.creation1h,
      },
      output_tokens: usage.output_tokens,
      service_tier: 'standard',
    };
    const id = newId('msg_');
    if (params.stream !== true) {
      return {
        kind: 'json',
        status: 200,
        usage,
        body: {
          id,
          type: 'message',
          role: 'assistant',
          model: params.model,
          content,
          stop_reason: stopReason,
          stop_sequence: null,
          usage: usageJson,
        },
      };
    }
    // The API reports the input side in message_start (output_tokens a small placeholder) and the
    // final output_tokens in message_delta; a client must take each from where it is sent.
    const events: SseEvent[] = [
      {
        event: 'message_start',
        data: {
          type: 'message_start',
          message: { ...startedMessage(id, params.model), usage: { ...usageJson, output_tokens: 1 } },
        },
      },
    ];
    for (const [index, block] of spec.content.entries()) {
      const sent = content[index]!;
      if (block.type === 'text') {
        events.push({
          event: 'content_block_start',
          data: { type: 'content_block_start', index, content_block: { type: 'text', text: '' } },
        });
        if (index === 0) events.push({ event: 'ping', data: { type: 'ping' } });
        for (const piece of chunks(block.text, 12))
          events.push({
            event: 'content_block_delta',
            data: { type: 'content_block_delta', index, delta: { type: 'text_delta', text: piece } },
          });
      } else {
        events.push({
          event: 'content_block_start',
          data: { type: 'content_block_start', index, content_block: { ...sent, input: {} } },
        });
        if (index === 0) events.push({ event: 'ping', data: { type: 'ping' } });
        // The API opens every tool input with an empty partial_json, then sends the JSON in pieces.
        for (const piece of ['', ...chunks(JSON.stringify(block.input), 10)])
          events.push({
            event: 'content_block_delta',
            data: { type: 'content_block_delta', index, delta: { type: 'input_json_delta', partial_json: piece } },
          });
      }
      events.push({ event: 'content_block_stop', data: { type: 'content_block_stop', index } });
    }
    events.push(
      {
        event: 'message_delta',
        data: {
          type: 'message_delta',
          delta: { stop_reason: stopReason, stop_sequence: null },
          usage: { output_tokens: usage.output_tokens },
        },
      },
      { event: 'message_stop', data: { type: 'message_stop' } },
    );
    return { kind: 'sse', events, usage };
  };

  const decide = (record: RecordedModelRequest, raw: string, requestId: string): Answer => {
    if (record.method !== 'POST' || record.path !== '/v1/messages') {
      noteUnexpected(record, `no route for ${record.method} ${record.path}`);
      return fail(404, 'not_found_error', `${record.method} ${record.path} not found`, requestId);
    }
    // Authentication comes first at the API too; a wrong key is an outcome a test may want, not a fake bug.
    if (options.apiKey !== undefined && presentedKey(record.headers) !== options.apiKey)
      return fail(401, 'authentication_error', 'invalid x-api-key', requestId);
    if (record.headers['anthropic-version'] === undefined) {
      noteUnexpected(record, 'anthropic-version header missing');
      return fail(400, 'invalid_request_error', 'anthropic-version: header is required', requestId);
    }
    let json: unknown;
    try {
      json = JSON.parse(raw);
    } catch {
      noteUnexpected(record, 'body is not valid JSON');
      return fail(400, 'invalid_request_error', 'There was an error parsing the body of your request', requestId);
    }
    const object = jsonObjectSchema.safeParse(json);
    if (object.success) record.body = object.data;
    const parsed = messagesRequestSchema.safeParse(json);
    if (!parsed.success) {
      const message = zodMessage(parsed.error);
      noteUnexpected(record, `invalid Messages request: ${message}`);
      return fail(400, 'invalid_request_error', message, requestId);
    }
    const params = parsed.data;
    record.params = params;
    record.stream = params.stream === true;
    const violation = ruleViolation(params);
    if (violation !== undefined) {
      noteUnexpected(record, `the API would reject this request: ${violation}`);
      return fail(400, 'invalid_request_error', violation, requestId);
    }

    const request: ModelRequest = { ...record, params };
    const next = queue.shift();
    // x-should-retry: false keeps the SDK from retrying (and sleeping on) a fake-side failure.
    const noRetry = { 'x-should-retry': 'false' };
    if (next === undefined) {
      noteUnexpected(record, `script exhausted at request #${requests.length}`);
      return fail(500, 'api_error', 'anthropic fake: script exhausted', requestId, noRetry);
    }
    let spec: MessageSpec | ErrorSpec;
    try {
      spec = typeof next === 'function' ? next(request) : next;
    } catch (error) {
      noteUnexpected(record, `response function threw: ${error instanceof Error ? error.message : String(error)}`);
      return fail(500, 'api_error', 'anthropic fake: response function threw', requestId, noRetry);
    }
    if (isErrorSpec(spec)) return answerError(spec, record.stream, requestId, params.model);
    const answer = answerMessage(spec, request);
    return spec.delayMs === undefined ? answer : { ...answer, delayMs: spec.delayMs };
  };

  const send = async (res: ServerResponse, answer: Answer, requestId: string): Promise<void> => {
    if (answer.kind === 'json') {
      const payload = JSON.stringify(answer.body);
      res.writeHead(answer.status, {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(payload),
        'request-id': requestId,
        ...answer.headers,
      });
      res.end(payload);
      return;
    }
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      'request-id': requestId,
    });
    for (const event of answer.events) {
      res.write(`event: ${event.event}\ndata: ${JSON.stringify(event.data)}\n\n`);
      // Yield between events so they leave as separate chunks, as a real stream does.
      await new Promise<void>((resolveTick) => setImmediate(resolveTick));
    }
    res.end();
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const raw = await readBody(req);
    const record: RecordedModelRequest = {
      method: req.method ?? '',
      path: new URL(req.url ?? '/', 'http://fake').pathname,
      headers: lowerCaseHeaders(req),
      body: {},
      stream: false,
      at: Date.now(),
      status: 0,
    };
    requests.push(record);
    const requestId = newId('req_');
    const answer = decide(record, raw, requestId);
    record.status = answer.kind === 'json' ? answer.status : 200;
    if (answer.usage !== undefined) record.usage = answer.usage;
    if (answer.delayMs !== undefined) {
      const delay = answer.delayMs;
      // A client that gave up (an aborted call, a killed bot) gets nothing, and holds nothing open.
      const gone = await new Promise<boolean>((resolveWait) => {
        const timer = setTimeout(() => resolveWait(false), delay);
        res.once('close', () => {
          clearTimeout(timer);
          resolveWait(true);
        });
      });
      if (gone || res.destroyed) return;
    }
    await send(res, answer, requestId);
  };

  const http = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      unexpected.push({
        method: req.method ?? '',
        path: req.url ?? '',
        reason: `fake server crashed: ${String(error)}`,
        at: Date.now(),
      });
      if (!res.headersSent) {
        res.writeHead(500, { 'content-type': 'application/json', 'x-should-retry': 'false' });
        res.end(JSON.stringify(errorBody('api_error', 'anthropic fake crashed', newId('req_'))));
      } else {
        res.end();
      }
    });
  });
  await new Promise<void>((resolveListen, reject) => {
    http.once('error', reject);
    http.listen(0, '127.0.0.1', () => resolveListen());
  });
  const address = http.address();
  if (address === null || typeof address === 'string') throw new Error('anthropic fake server has no TCP address');

  return {
    baseUrl: `http://127.0.0.1:${address.port}`,
    requests,
    unexpected,
    script(...responses) {
      queue.push(...responses);
    },
    remaining: () => queue.length,
    resetCache() {
      cache.clear();
    },
    close() {
      return new Promise<void>((resolveClose, reject) => {
        http.close((error) => (error ? reject(error) : resolveClose()));
        // The SDK's fetch keeps connections alive; without this close() waits for them to idle out.
        http.closeAllConnections();
      });
    },
  };
}

function startedMessage(id: string, model: string): JsonObject {
  return {
    id,
    type: 'message',
    role: 'assistant',
    model,
    content: [],
    stop_reason: null,
    stop_sequence: null,
    usage: { input_tokens: 0, output_tokens: 1 },
  };
}
