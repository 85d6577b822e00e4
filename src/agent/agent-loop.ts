import type Anthropic from '@anthropic-ai/sdk';
import type { Usage } from '../domain/run.js';
import { RefusedError } from '../errors.js';
import type { Logger } from '../log.js';
import type { ModelPort } from '../ports/model.js';
import { addUsage, totalTokens, usageOfCall } from './pricing.js';
import type { AgentToolbox } from './toolbox.js';

/**
 * The agent loop (SPEC §4): Messages API with tool use until the model gives
 * an ordinary final answer. Budgets are enforced here, by the orchestrator,
 * before every call; the model cannot talk its way past them.
 */

export interface AgentBudget {
  maxTurns: number;
  maxTokens: number;
  maxCostUsd: number;
  /** Wall-clock limit of the whole run (createdAt + maxRunMinutes). */
  deadline: Date;
}

/** What the run has spent so far, across iterations and restarts (kept in the run record). */
export interface AgentSpend {
  turns: number;
  usage: Usage;
}

export class BudgetExceededError extends RefusedError {
  override name = 'BudgetExceededError';
}

export interface AgentLoopDeps {
  model: ModelPort;
  modelId: string;
  tools: AgentToolbox;
  clock: () => Date;
  log: Logger;
  /** Called after every model call with the run's new totals, before tools run (persist it: budgets survive restarts). */
  onSpend(spend: AgentSpend, activity: string): Promise<void>;
  /** Called after each tool call with what was asked and how it went (e.g. to audit diagnosis reads). */
  onToolCall?: ((call: ToolCallRecord) => Promise<void>) | undefined;
  /**
   * Called at every turn boundary — the model's answer and the results of the tools it called, a
   * continuation asked for, or the final answer — with the conversation as it now stands and the
   * spend that includes it (persist it: a restarted step continues from here, SPEC §8). Never
   * between a tool_use and its results, so what it sees is always a conversation the API takes.
   */
  onTurn?: ((conversation: AgentConversation, spend: AgentSpend) => Promise<void>) | undefined;
  maxOutputTokens?: number;
}

/** One tool call as the loop saw it: the model's id for it, the tool, its input and how it went. */
export interface ToolCallRecord {
  id: string;
  tool: string;
  input: unknown;
  isError: boolean;
  /** Size of the result the model got. */
  resultBytes: number;
}

export interface AgentConversation {
  system: string;
  messages: Anthropic.MessageParam[];
}

export interface AgentOutcome {
  finalText: string;
  spend: AgentSpend;
}

const CACHE: Anthropic.CacheControlEphemeral = { type: 'ephemeral' };

/** Marks the end of the conversation as a cache breakpoint, so the growing history is read from cache next time. */
function withConversationBreakpoint(messages: Anthropic.MessageParam[]): Anthropic.MessageParam[] {
  const last = messages.at(-1);
  if (last === undefined || last.role === 'system') return messages;
  const blocks: Anthropic.ContentBlockParam[] = typeof last.content === 'string' ? [{ type: 'text', text: last.content }] : [...last.content];
  const tail = blocks.at(-1);
  if (tail === undefined || tail.type === 'thinking' || tail.type === 'redacted_thinking') return messages;
  blocks[blocks.length - 1] = { ...tail, cache_control: CACHE };
  const marked: Anthropic.MessageParam = last.role === 'user' ? { role: 'user', content: blocks } : { role: 'assistant', content: blocks };
  return [...messages.slice(0, -1), marked];
}

/** The assistant's answer as request params: only block kinds we send back. */
function asParams(content: Anthropic.ContentBlock[]): Anthropic.ContentBlockParam[] {
  return content.flatMap((block): Anthropic.ContentBlockParam[] => {
    if (block.type === 'text') return [{ type: 'text', text: block.text }];
    if (block.type === 'tool_use') return [{ type: 'tool_use', id: block.id, name: block.name, input: block.input }];
    return [];
  });
}

function describeToolCall(block: Anthropic.ToolUseBlock): string {
  const input = block.input;
  if (typeof input === 'object' && input !== null) {
    const fields = Object.fromEntries(Object.entries(input));
    const command = typeof fields.command === 'string' ? fields.command : undefined;
    const path = typeof fields.path === 'string' ? fields.path : undefined;
    const name = typeof fields.name === 'string' ? fields.name : undefined;
    if (command !== undefined && path !== undefined) return `${command} ${path}`;
    if (name !== undefined) return `${block.name} ${name}`;
  }
  return block.name;
}

export function checkBudget(budget: AgentBudget, spend: AgentSpend, now: Date): void {
  if (spend.turns >= budget.maxTurns) {
    throw new BudgetExceededError(`the agent used all ${budget.maxTurns} turns (budgets.maxAgentTurns) without finishing`);
  }
  if (totalTokens(spend.usage) >= budget.maxTokens) {
    throw new BudgetExceededError(`the run used ${totalTokens(spend.usage)} tokens, over its budget of ${budget.maxTokens} (budgets.maxTokensPerRun)`);
  }
  if (spend.usage.costUsd >= budget.maxCostUsd) {
    throw new BudgetExceededError(`the run cost $${spend.usage.costUsd.toFixed(2)}, over its budget of $${budget.maxCostUsd} (budgets.maxCostUsdPerRun)`);
  }
  if (now.getTime() >= budget.deadline.getTime()) {
    throw new BudgetExceededError(`the run passed its time limit (budgets.maxRunMinutes, until ${budget.deadline.toISOString()})`);
  }
}

/** The text of an assistant message that called no tool: the model's final answer of a finished pass. */
function finalAnswerOf(message: Anthropic.MessageParam | undefined): string | undefined {
  if (message?.role !== 'assistant') return undefined;
  if (typeof message.content === 'string') return message.content.trim();
  if (message.content.some((block) => block.type === 'tool_use')) return undefined;
  return message.content
    .flatMap((block) => (block.type === 'text' ? [block.text] : []))
    .join('\n')
    .trim();
}

/**
 * Runs the conversation until `end_turn`. `conversation.messages` is extended
 * in place, so a caller can append feedback (failed checks, CI) and call again.
 * A conversation that already ends with the model's final answer (one restored
 * after a restart that came after the answer) is finished: its answer is
 * returned without another call, since the API takes no conversation that ends
 * with the assistant's turn as a new question.
 */
export async function runAgent(
  deps: AgentLoopDeps,
  conversation: AgentConversation,
  budget: AgentBudget,
  spent: AgentSpend,
  signal: AbortSignal,
): Promise<AgentOutcome> {
  let spend = spent;
  const finished = finalAnswerOf(conversation.messages.at(-1));
  if (finished !== undefined) return { finalText: finished, spend };
  for (;;) {
    signal.throwIfAborted();
    checkBudget(budget, spend, deps.clock());
    const request: Anthropic.MessageCreateParamsNonStreaming = {
      model: deps.modelId,
      max_tokens: deps.maxOutputTokens ?? 8_192,
      // Tools come first in the prompt, then the system prompt: one breakpoint here caches both.
      system: [{ type: 'text', text: conversation.system, cache_control: CACHE }],
      tools: deps.tools.definitions,
      messages: withConversationBreakpoint(conversation.messages),
    };
    const response = await deps.model.createMessage(request, { signal });
    spend = { turns: spend.turns + 1, usage: addUsage(spend.usage, usageOfCall(deps.modelId, response.usage)) };
    conversation.messages.push({ role: 'assistant', content: asParams(response.content) });

    const toolUses = response.content.filter((block): block is Anthropic.ToolUseBlock => block.type === 'tool_use');
    const activity = toolUses.length > 0 ? toolUses.map(describeToolCall).join(', ') : 'finishing';
    await deps.onSpend(spend, activity);
    deps.log.info({ turn: spend.turns, stopReason: response.stop_reason, tools: toolUses.length, tokens: totalTokens(spend.usage) }, 'model turn');

    if (response.stop_reason === 'tool_use' || toolUses.length > 0) {
      const results: Anthropic.ToolResultBlockParam[] = [];
      for (const use of toolUses) {
        const result = await deps.tools.execute(use.name, use.input, signal);
        await deps.onToolCall?.({ id: use.id, tool: use.name, input: use.input, isError: result.isError, resultBytes: Buffer.byteLength(result.content, 'utf8') });
        results.push({ type: 'tool_result', tool_use_id: use.id, content: result.content, is_error: result.isError });
      }
      conversation.messages.push({ role: 'user', content: results });
      await deps.onTurn?.(conversation, spend);
      continue;
    }
    if (response.stop_reason === 'max_tokens') {
      conversation.messages.push({ role: 'user', content: 'Your last answer was cut off by the output limit. Continue where you stopped.' });
      await deps.onTurn?.(conversation, spend);
      continue;
    }
    if (response.stop_reason === 'pause_turn') {
      // Not a turn boundary (the model goes on with its own message): nothing is persisted here.
      continue;
    }
    if (response.stop_reason === 'refusal') {
      throw new RefusedError('the model declined the task');
    }
    const finalText = response.content
      .filter((block): block is Anthropic.TextBlock => block.type === 'text')
      .map((block) => block.text)
      .join('\n')
      .trim();
    await deps.onTurn?.(conversation, spend);
    return { finalText, spend };
  }
}
