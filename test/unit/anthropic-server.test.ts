import Anthropic from '@anthropic-ai/sdk';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  startAnthropicServer,
  toolResultsOf,
  type AnthropicServer,
  type ModelRequest,
} from '../helpers/anthropic-server.js';

/**
 * The fake Messages API is only worth something if the real SDK cannot tell it from Anthropic for
 * the calls the agent makes, so every test here drives it through `@anthropic-ai/sdk`, never raw HTTP.
 */

const API_KEY = 'test-key';
// claude-sonnet-4-5 makes SDK 1.12 print a deprecation warning on every call.
const MODEL = 'claude-sonnet-4-6';

const editorTool: Anthropic.ToolTextEditor20250728 = {
  type: 'text_editor_20250728',
  name: 'str_replace_based_edit_tool',
};
const runCheckTool: Anthropic.Tool = {
  name: 'run_check',
  description: 'Runs one of the repository checks by name.',
  input_schema: { type: 'object', properties: { name: { type: 'string' } }, required: ['name'] },
};

let server: AnthropicServer;
let client: Anthropic;
/** Set by tests that provoke requests the fake must flag; all others end with `unexpected` empty. */
let expectUnexpected = false;

beforeEach(async () => {
  server = await startAnthropicServer({ apiKey: API_KEY });
  client = new Anthropic({ apiKey: API_KEY, baseURL: server.baseUrl, maxRetries: 2 });
  expectUnexpected = false;
});

afterEach(async () => {
  if (!expectUnexpected) expect(server.unexpected).toEqual([]);
  await server.close();
});

function toolUses(message: Anthropic.Message): Anthropic.ToolUseBlock[] {
  return message.content.filter((block): block is Anthropic.ToolUseBlock => block.type === 'tool_use');
}

describe('fake Anthropic Messages API through the real SDK', () => {
  it('answers a non-streaming request with typed tool_use blocks and usage', async () => {
    server.script({
      content: [
        { type: 'text', text: 'Let me look at the file.' },
        { type: 'tool_use', name: 'str_replace_based_edit_tool', input: { command: 'view', path: '/repo/README.md' } },
      ],
    });

    const message = await client.messages.create({
      model: MODEL,
      max_tokens: 1024,
      system: 'You are shipgate.',
      tools: [editorTool, runCheckTool],
      messages: [{ role: 'user', content: 'Fix the typo in the README.' }],
    });

    expect(message.type).toBe('message');
    expect(message.role).toBe('assistant');
    expect(message.model).toBe(MODEL);
    expect(message.id).toMatch(/^msg_/);
    expect(message.stop_reason).toBe('tool_use');
    expect(message.stop_sequence).toBeNull();
    const [call] = toolUses(message);
    expect(call?.id).toMatch(/^toolu_[A-Za-z0-9]{24}$/);
    expect(call?.name).toBe('str_replace_based_edit_tool');
    expect(call?.input).toEqual({ command: 'view', path: '/repo/README.md' });
    expect(message.usage.input_tokens).toBeGreaterThan(0);
    expect(message.usage.output_tokens).toBeGreaterThan(0);
    expect(message.usage.cache_creation_input_tokens).toBe(0);
    expect(message.usage.cache_read_input_tokens).toBe(0);

    const [request] = server.requests;
    expect(request?.method).toBe('POST');
    expect(request?.path).toBe('/v1/messages');
    expect(request?.status).toBe(200);
    expect(request?.stream).toBe(false);
    // SDK 1.x sends the API key as a bearer token, and pins its API version.
    expect(request?.headers['authorization']).toBe(`Bearer ${API_KEY}`);
    expect(request?.headers['anthropic-version']).toMatch(/^\d{4}-\d{2}-\d{2}$/);
    expect(request?.body['tools']).toEqual([editorTool, runCheckTool]);
    expect(request?.body['system']).toBe('You are shipgate.');
    expect(server.remaining()).toBe(0);
  });

  it('streams text and tool_use input as SSE deltas that MessageStream reassembles', async () => {
    const input = { command: 'str_replace', path: '/repo/src/app.ts', old_str: 'colour', new_str: 'color ✓ 🚀' };
    server.script({
      content: [
        { type: 'text', text: 'I will replace the misspelled word in app.ts now.' },
        { type: 'tool_use', id: 'toolu_fixed', name: 'str_replace_based_edit_tool', input },
      ],
      usage: { output_tokens: 42 },
    });

    const stream = client.messages.stream({
      model: MODEL,
      max_tokens: 64_000,
      tools: [editorTool],
      messages: [{ role: 'user', content: 'Fix the spelling.' }],
    });
    const texts: string[] = [];
    stream.on('text', (delta) => texts.push(delta));
    const message = await stream.finalMessage();

    expect(texts.length).toBeGreaterThan(1);
    expect(texts.join('')).toBe('I will replace the misspelled word in app.ts now.');
    expect(message.content[0]).toEqual({ type: 'text', text: 'I will replace the misspelled word in app.ts now.' });
    expect(toolUses(message)).toEqual([
      { type: 'tool_use', id: 'toolu_fixed', name: 'str_replace_based_edit_tool', input },
    ]);
    expect(message.stop_reason).toBe('tool_use');
    // input_tokens arrive in message_start, output_tokens in message_delta.
    expect(message.usage.output_tokens).toBe(42);
    expect(message.usage.input_tokens).toBeGreaterThan(0);
    expect(server.requests[0]?.stream).toBe(true);
    expect(server.requests[0]?.headers['x-stainless-helper-method']).toBe('stream');
  });

  it('lets a response depend on the request, e.g. on the tool_result the agent sent', async () => {
    server.script(
      { content: [{ type: 'tool_use', id: 'toolu_check', name: 'run_check', input: { name: 'lint' } }] },
      (request: ModelRequest) => {
        const [result] = toolResultsOf(request);
        return {
          content: [{ type: 'text', text: `lint said: ${result?.content ?? '?'} (error: ${result?.is_error})` }],
        };
      },
    );
    const first = await client.messages.create({
      model: MODEL,
      max_tokens: 1024,
      tools: [runCheckTool],
      messages: [{ role: 'user', content: 'Run lint.' }],
    });
    const second = await client.messages.create({
      model: MODEL,
      max_tokens: 1024,
      tools: [runCheckTool],
      messages: [
        { role: 'user', content: 'Run lint.' },
        { role: 'assistant', content: first.content },
        {
          role: 'user',
          content: [{ type: 'tool_result', tool_use_id: 'toolu_check', content: '3 problems', is_error: true }],
        },
      ],
    });
    expect(second.content).toEqual([{ type: 'text', text: 'lint said: 3 problems (error: true)' }]);
    expect(second.stop_reason).toBe('end_turn');
  });

  it('has a 429 with retry-after 0 retried by the SDK after its default backoff', async () => {
    server.script({ status: 429, retryAfterSeconds: 0 }, { content: [{ type: 'text', text: 'ok' }] });

    const message = await client.messages.create({
      model: MODEL,
      max_tokens: 1024,
      messages: [{ role: 'user', content: 'hi' }],
    });

    expect(message.content).toEqual([{ type: 'text', text: 'ok' }]);
    expect(server.requests.map((r) => r.status)).toEqual([429, 200]);
    expect(server.requests.map((r) => r.headers['x-stainless-retry-count'])).toEqual(['0', '1']);
    // `retry-after: 0` is not a positive delay, so the SDK falls back to 0.5 s × (0.75–1) jitter.
    const [first, second] = server.requests;
    expect(second!.at - first!.at).toBeGreaterThanOrEqual(350);
  });

  it('has a 529 overloaded retried, immediately when retry-after-ms asks for it', async () => {
    server.script(
      { status: 529, retryAfterMs: 1 },
      { status: 529, retryAfterMs: 1 },
      { content: [{ type: 'text', text: 'ok' }] },
    );

    const message = await client.messages.create({
      model: MODEL,
      max_tokens: 1024,
      messages: [{ role: 'user', content: 'hi' }],
    });

    expect(message.content).toEqual([{ type: 'text', text: 'ok' }]);
    expect(server.requests.map((r) => r.status)).toEqual([529, 529, 200]);
    expect(server.requests.at(-1)!.at - server.requests[0]!.at).toBeLessThan(300);
  });

  it('gives up after maxRetries and surfaces OverloadedError with the API error type', async () => {
    server.script({ status: 529, retryAfterMs: 1 }, { status: 529, retryAfterMs: 1 }, { status: 529, retryAfterMs: 1 });

    const error = await client.messages
      .create({ model: MODEL, max_tokens: 1024, messages: [{ role: 'user', content: 'hi' }] })
      .catch((e: unknown) => e);

    expect(error).toBeInstanceOf(Anthropic.OverloadedError);
    expect(error).toMatchObject({ status: 529, type: 'overloaded_error', apiMessage: 'Overloaded' });
    expect(server.requests).toHaveLength(3);
  });

  it('surfaces a 400 as BadRequestError with the message, without retrying', async () => {
    server.script({ status: 400, message: 'prompt is too long: 210000 tokens > 200000 maximum' });

    const error = await client.messages
      .create({ model: MODEL, max_tokens: 1024, messages: [{ role: 'user', content: 'hi' }] })
      .catch((e: unknown) => e);

    expect(error).toBeInstanceOf(Anthropic.BadRequestError);
    expect(error).toMatchObject({
      status: 400,
      type: 'invalid_request_error',
      apiMessage: 'prompt is too long: 210000 tokens > 200000 maximum',
    });
    expect(String(error)).toContain('prompt is too long');
    expect(server.requests).toHaveLength(1);
  });

  it('fails a stream mid-way with an SSE error event, which the SDK does not retry', async () => {
    server.script({ status: 529, midStream: true });

    const stream = client.messages.stream({
      model: MODEL,
      max_tokens: 1024,
      messages: [{ role: 'user', content: 'hi' }],
    });
    const error = await stream.finalMessage().catch((e: unknown) => e);

    expect(error).toBeInstanceOf(Anthropic.APIError);
    expect(error).toMatchObject({ status: undefined, type: 'overloaded_error' });
    expect(server.requests).toHaveLength(1);
  });

  it('reports cache creation on the first request and cache reads on the next for a marked system+tools prefix', async () => {
    server.script({ content: [{ type: 'text', text: 'one' }] }, { content: [{ type: 'text', text: 'two' }] });
    const tools: Anthropic.ToolUnion[] = [editorTool, { ...runCheckTool, cache_control: { type: 'ephemeral' } }];
    const system: Anthropic.TextBlockParam[] = [
      { type: 'text', text: 'You are shipgate. '.repeat(50), cache_control: { type: 'ephemeral' } },
    ];

    const first = await client.messages.create({
      model: MODEL,
      max_tokens: 1024,
      system,
      tools,
      messages: [{ role: 'user', content: 'First task.' }],
    });
    const second = await client.messages.create({
      model: MODEL,
      max_tokens: 1024,
      system,
      tools,
      messages: [{ role: 'user', content: 'A different, longer second task.' }],
    });

    expect(first.usage.cache_creation_input_tokens).toBeGreaterThan(200);
    expect(first.usage.cache_read_input_tokens).toBe(0);
    expect(first.usage.cache_creation).toEqual({
      ephemeral_5m_input_tokens: first.usage.cache_creation_input_tokens,
      ephemeral_1h_input_tokens: 0,
    });
    expect(second.usage.cache_creation_input_tokens).toBe(0);
    expect(second.usage.cache_read_input_tokens).toBe(first.usage.cache_creation_input_tokens);
    // Only what follows the last breakpoint is billed as plain input.
    expect(second.usage.input_tokens).toBeGreaterThan(first.usage.input_tokens);
    expect(second.usage.input_tokens).toBeLessThan(20);
    // The tools went over the wire as the agent sent them, cache_control included.
    expect(server.requests[1]?.body['tools']).toEqual(tools);
  });

  it('reads the conversation prefix a previous turn cached and writes only the new turn', async () => {
    server.script(
      { content: [{ type: 'tool_use', id: 'toolu_1', name: 'run_check', input: { name: 'test' } }] },
      { content: [{ type: 'text', text: 'done' }] },
    );
    const system: Anthropic.TextBlockParam[] = [
      { type: 'text', text: 'System.', cache_control: { type: 'ephemeral' } },
    ];
    const ask: Anthropic.MessageParam = {
      role: 'user',
      content: [{ type: 'text', text: 'Run the tests.', cache_control: { type: 'ephemeral' } }],
    };
    const first = await client.messages.create({
      model: MODEL,
      max_tokens: 1024,
      system,
      tools: [runCheckTool],
      messages: [ask],
    });
    const second = await client.messages.create({
      model: MODEL,
      max_tokens: 1024,
      system,
      tools: [runCheckTool],
      messages: [
        // The breakpoint moves to the newest turn; moving it does not change the cached prefix.
        { role: 'user', content: [{ type: 'text', text: 'Run the tests.' }] },
        { role: 'assistant', content: first.content },
        {
          role: 'user',
          content: [
            { type: 'tool_result', tool_use_id: 'toolu_1', content: 'ok', cache_control: { type: 'ephemeral' } },
          ],
        },
      ],
    });

    const firstPrefix = first.usage.cache_creation_input_tokens ?? 0;
    expect(first.usage.input_tokens).toBe(0);
    expect(second.usage.cache_read_input_tokens).toBe(firstPrefix);
    expect(second.usage.cache_creation_input_tokens).toBeGreaterThan(0);
    expect(second.usage.input_tokens).toBe(0);

    server.resetCache();
    server.script({ content: [{ type: 'text', text: 'again' }] });
    const afterExpiry = await client.messages.create({ model: MODEL, max_tokens: 1024, system, messages: [ask] });
    expect(afterExpiry.usage.cache_read_input_tokens).toBe(0);
  });

  it('rejects, like the API, a tool_use left without its tool_result, and flags it as unexpected', async () => {
    expectUnexpected = true;
    server.script({ content: [{ type: 'text', text: 'never sent' }] });

    const error = await client.messages
      .create({
        model: MODEL,
        max_tokens: 1024,
        tools: [runCheckTool],
        messages: [
          { role: 'user', content: 'Run lint.' },
          {
            role: 'assistant',
            content: [{ type: 'tool_use', id: 'toolu_x', name: 'run_check', input: { name: 'lint' } }],
          },
          { role: 'user', content: 'What happened?' },
        ],
      })
      .catch((e: unknown) => e);

    expect(error).toBeInstanceOf(Anthropic.BadRequestError);
    expect(String(error)).toContain('tool_use` ids were found without `tool_result` blocks immediately after: toolu_x');
    expect(server.unexpected).toHaveLength(1);
    expect(server.remaining()).toBe(1);
  });

  it('rejects more than four cache_control breakpoints', async () => {
    expectUnexpected = true;
    const marked = { cache_control: { type: 'ephemeral' } } as const;
    const error = await client.messages
      .create({
        model: MODEL,
        max_tokens: 1024,
        system: [
          { type: 'text', text: 'a', ...marked },
          { type: 'text', text: 'b', ...marked },
          { type: 'text', text: 'c', ...marked },
          { type: 'text', text: 'd', ...marked },
        ],
        messages: [{ role: 'user', content: [{ type: 'text', text: 'e', ...marked }] }],
      })
      .catch((e: unknown) => e);

    expect(error).toBeInstanceOf(Anthropic.BadRequestError);
    expect(String(error)).toContain('A maximum of 4 blocks with cache_control may be provided. Found 5.');
  });

  it('answers an exhausted script with a non-retried 500 and records it as unexpected', async () => {
    expectUnexpected = true;
    const error = await client.messages
      .create({ model: MODEL, max_tokens: 1024, messages: [{ role: 'user', content: 'hi' }] })
      .catch((e: unknown) => e);

    expect(error).toBeInstanceOf(Anthropic.InternalServerError);
    expect(server.requests).toHaveLength(1);
    expect(server.unexpected.map((u) => u.reason)).toEqual(['script exhausted at request #1']);
  });

  it('refuses a wrong API key with AuthenticationError', async () => {
    const intruder = new Anthropic({ apiKey: 'wrong', baseURL: server.baseUrl, maxRetries: 2 });
    const error = await intruder.messages
      .create({ model: MODEL, max_tokens: 1024, messages: [{ role: 'user', content: 'hi' }] })
      .catch((e: unknown) => e);

    expect(error).toBeInstanceOf(Anthropic.AuthenticationError);
    expect(server.requests.map((r) => r.status)).toEqual([401]);
  });

  it('needs a client timeout for a large non-streaming max_tokens (the SDK long-request guard)', async () => {
    const request = { model: MODEL, max_tokens: 32_000, messages: [{ role: 'user' as const, content: 'hi' }] };
    // Without an explicit timeout the SDK refuses before sending anything (> ~21,333 tokens at 10 min).
    await expect(async () => client.messages.create(request)).rejects.toThrow(/Streaming is required/);
    expect(server.requests).toHaveLength(0);

    server.script({ content: [{ type: 'text', text: 'ok' }] });
    const patient = new Anthropic({ apiKey: API_KEY, baseURL: server.baseUrl, timeout: 120_000 });
    const message = await patient.messages.create(request);
    expect(message.content).toEqual([{ type: 'text', text: 'ok' }]);
    expect(server.requests[0]?.headers['x-stainless-timeout']).toBe('120');
  });
});
