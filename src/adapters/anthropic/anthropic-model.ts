import Anthropic from '@anthropic-ai/sdk';
import { z } from 'zod';
import { ExternalOutageError, RefusedError } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { Metrics } from '../../metrics.js';
import type { ModelPort, ModelRequest } from '../../ports/model.js';
import type { Scrub } from '../../security/scrubber.js';

const count = z.number().int().nonnegative();
const responseSchema = z.object({
  content: z.array(z.object({ type: z.string() })),
  stop_reason: z.string().nullable(),
  usage: z.object({
    input_tokens: count,
    output_tokens: count,
    cache_creation_input_tokens: count.nullable().optional(),
    cache_read_input_tokens: count.nullable().optional(),
  }),
});

export interface AnthropicModelOptions {
  apiKey: string | undefined;
  baseUrl: string | undefined;
  log: Logger;
  metrics?: Metrics | undefined;
  /** SDK-level retries for 408/409/429/5xx/529 with backoff (honouring retry-after). */
  maxRetries?: number;
  timeoutMs?: number;
  /** Applied to the text of every user message and tool result sent (SPEC §4); default: none. */
  scrub?: Scrub | undefined;
}

type ToolResultContent = Exclude<Anthropic.ToolResultBlockParam['content'], string | undefined>[number];

function scrubToolResultContent(block: ToolResultContent, scrub: Scrub): ToolResultContent {
  return block.type === 'text' ? { ...block, text: scrub(block.text) } : block;
}

function scrubBlock(block: Anthropic.ContentBlockParam, scrub: Scrub): Anthropic.ContentBlockParam {
  if (block.type === 'text') return { ...block, text: scrub(block.text) };
  if (block.type === 'tool_result' && block.content !== undefined) {
    const content = typeof block.content === 'string' ? scrub(block.content) : block.content.map((inner) => scrubToolResultContent(inner, scrub));
    return { ...block, content };
  }
  return block;
}

/**
 * The last line of defence before text leaves for the model: what the user turns carry (the task,
 * check output, CI failures, file contents, follow-ups) is scrubbed of secrets. The model's own turns
 * are sent back as they came (thinking blocks are signed). Deterministic, so the cached prefix stays stable.
 */
export function scrubModelRequest(request: ModelRequest, scrub: Scrub): ModelRequest {
  return {
    ...request,
    messages: request.messages.map((message) => {
      if (message.role !== 'user') return message;
      const content = typeof message.content === 'string' ? scrub(message.content) : message.content.map((block) => scrubBlock(block, scrub));
      return { ...message, content };
    }),
  };
}

/**
 * The real @anthropic-ai/sdk client behind the model port. Rate limits and
 * overload (429/529) are retried by the SDK; if they persist, the step fails
 * as an outage and the queue retries it later. A request the API rejects
 * (400, 401, 403, 404) cannot succeed by retrying: the gate fails with the reason.
 */
export function createAnthropicModel(options: AnthropicModelOptions): ModelPort {
  const client = new Anthropic({
    apiKey: options.apiKey ?? null,
    baseURL: options.baseUrl ?? null,
    maxRetries: options.maxRetries ?? 4,
    timeout: options.timeoutMs ?? 10 * 60_000,
  });
  // An API error may quote the request back; its message goes to the thread.
  const scrubError = options.scrub ?? ((text: string) => text);
  return {
    async createMessage(request, { signal }) {
      try {
        const sent = options.scrub === undefined ? request : scrubModelRequest(request, options.scrub);
        const message = await client.messages.create(sent, { signal });
        options.metrics?.externalCall('anthropic', '200');
        // Budgets are computed from usage: an answer without it (a misbehaving gateway behind
        // ANTHROPIC_BASE_URL) would turn every budget check into a comparison with NaN.
        const checked = responseSchema.safeParse(message);
        if (!checked.success) throw new ExternalOutageError('anthropic', `malformed answer: ${checked.error.issues.map((i) => i.path.join('.')).join(', ')}`);
        return message;
      } catch (error) {
        if (error instanceof Anthropic.APIUserAbortError) throw error;
        if (error instanceof Anthropic.APIError) {
          const raw: unknown = error.status;
          const status = typeof raw === 'number' ? raw : 0;
          options.metrics?.externalCall('anthropic', String(status || 'network'));
          options.log.warn({ status, errorName: error.name }, 'model call failed');
          if (status === 400 || status === 404 || status === 413 || status === 422) {
            throw new RefusedError(`the model API rejected the request (${status}): ${scrubError(error.message)}`);
          }
          if (status === 401 || status === 403) {
            throw new RefusedError(`the model API refused our credentials (${status}); check ANTHROPIC_API_KEY`);
          }
          throw new ExternalOutageError('anthropic', `still failing after retries (${status || 'network error'}): ${scrubError(error.message)}`, { cause: error });
        }
        throw error;
      }
    },
  };
}
