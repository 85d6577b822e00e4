import type Anthropic from '@anthropic-ai/sdk';
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { runAgent, type AgentConversation, type AgentSpend } from '../../src/agent/agent-loop.js';
import { callsOf } from '../../src/agent/diagnose.js';
import { createToolbox } from '../../src/agent/toolbox.js';
import { createLogger } from '../../src/log.js';
import type { ModelPort, ModelRequest } from '../../src/ports/model.js';
import { parseStoredConversation } from '../../src/store/agent-conversation-store.js';

/**
 * The agent loop's turn boundaries (issue 14): `onTurn` sees the conversation after every model
 * answer with its tool results, a continuation asked for, and the final answer — each one a
 * conversation the API takes — and a conversation that already ends on the final answer is done.
 */

const ZERO = { inputTokens: 0, outputTokens: 0, cacheReadTokens: 0, cacheWriteTokens: 0, costUsd: 0 };
const budget = { maxTurns: 10, maxTokens: 1_000_000, maxCostUsd: 100, deadline: new Date(Date.now() + 3_600_000) };
const log = createLogger({ level: 'silent', destination: new PassThrough() });

function answer(content: Anthropic.ContentBlock[], stop: Anthropic.StopReason): Anthropic.Message {
  return {
    id: 'msg_1',
    type: 'message',
    role: 'assistant',
    model: 'claude-sonnet-4-6',
    content,
    stop_reason: stop,
    stop_sequence: null,
    usage: {
      input_tokens: 10,
      output_tokens: 5,
      cache_creation_input_tokens: 0,
      cache_read_input_tokens: 0,
      server_tool_use: null,
      service_tier: null,
    },
  } as Anthropic.Message;
}

function model(answers: Anthropic.Message[]): ModelPort & { requests: ModelRequest[] } {
  const requests: ModelRequest[] = [];
  return {
    requests,
    async createMessage(request) {
      requests.push(structuredClone(request));
      const next = answers.shift();
      if (next === undefined) throw new Error('called more often than scripted');
      return next;
    },
  };
}

const tools = createToolbox([
  {
    name: 'probe',
    tools: [{ name: 'probe', description: 'probe', input_schema: { type: 'object' } }],
    call: async () => ({ content: 'probed', isError: false }),
  },
]);

describe('runAgent turn boundaries', () => {
  it('hands every boundary to onTurn with the spend that includes it, each a conversation the API takes', async () => {
    const port = model([
      answer([{ type: 'tool_use', id: 'p1', name: 'probe', input: {} } as Anthropic.ToolUseBlock], 'tool_use'),
      answer([{ type: 'text', text: 'half', citations: null }], 'max_tokens'),
      answer([{ type: 'text', text: 'Done.', citations: null }], 'end_turn'),
    ]);
    const seen: Array<{ messages: number; turns: number; loaded: string }> = [];
    const conversation: AgentConversation = { system: 'sys', messages: [{ role: 'user', content: 'go' }] };
    const outcome = await runAgent(
      {
        model: port,
        modelId: 'claude-sonnet-4-6',
        tools,
        clock: () => new Date(),
        log,
        onSpend: async () => undefined,
        onTurn: async (conv: AgentConversation, spend: AgentSpend) => {
          // Stored and read back as the store does: the parser refuses anything the API would.
          const record = {
            phase: 'diagnosis',
            fix: 1,
            turnsAtStart: 0,
            messages: conv.messages,
            spend,
            savedAt: 'now',
          };
          const loaded = parseStoredConversation(JSON.stringify(record), { phase: 'diagnosis', fix: 1 });
          seen.push({ messages: conv.messages.length, turns: spend.turns, loaded: loaded.kind });
        },
      },
      conversation,
      budget,
      { turns: 0, usage: ZERO },
      new AbortController().signal,
    );
    expect(outcome.finalText).toBe('Done.');
    expect(seen).toEqual([
      { messages: 3, turns: 1, loaded: 'found' },
      { messages: 5, turns: 2, loaded: 'found' },
      { messages: 6, turns: 3, loaded: 'found' },
    ]);
  });

  it('a conversation that ends on the final answer is finished: its answer, no call', async () => {
    const port = model([]);
    const conversation: AgentConversation = {
      system: 'sys',
      messages: [
        { role: 'user', content: 'go' },
        { role: 'assistant', content: [{ type: 'text', text: 'All done.' }] },
      ],
    };
    const spent = { turns: 4, usage: ZERO };
    const outcome = await runAgent(
      {
        model: port,
        modelId: 'claude-sonnet-4-6',
        tools,
        clock: () => new Date(),
        log,
        onSpend: async () => undefined,
      },
      conversation,
      budget,
      spent,
      new AbortController().signal,
    );
    expect(outcome).toEqual({ finalText: 'All done.', spend: spent });
    expect(port.requests).toHaveLength(0);
  });
});

describe('callsOf', () => {
  it('reads the tool calls back from the messages, each with how its result went', () => {
    expect(
      callsOf([
        { role: 'user', content: 'look' },
        {
          role: 'assistant',
          content: [
            { type: 'text', text: 'reading' },
            { type: 'tool_use', id: 'a', name: 'pods_log', input: { name: 'web-1' } },
            { type: 'tool_use', id: 'b', name: 'events', input: {} },
          ],
        },
        {
          role: 'user',
          content: [
            { type: 'tool_result', tool_use_id: 'a', content: 'four', is_error: false },
            { type: 'tool_result', tool_use_id: 'b', content: 'refused', is_error: true },
          ],
        },
      ]),
    ).toEqual([
      { id: 'a', tool: 'pods_log', input: { name: 'web-1' }, isError: false, resultBytes: 4 },
      { id: 'b', tool: 'events', input: {}, isError: true, resultBytes: 7 },
    ]);
  });
});
