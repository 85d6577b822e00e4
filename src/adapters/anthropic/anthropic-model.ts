import Anthropic from '@anthropic-ai/sdk';
import { z } from 'zod';
import { ExternalOutageError, RefusedError } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { Metrics } from '../../metrics.js';
import type { ModelPort } from '../../ports/model.js';

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
  return {
    async createMessage(request, { signal }) {
      try {
        const message = await client.messages.create(request, { signal });
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
            throw new RefusedError(`the model API rejected the request (${status}): ${error.message}`);
          }
          if (status === 401 || status === 403) {
            throw new RefusedError(`the model API refused our credentials (${status}); check ANTHROPIC_API_KEY`);
          }
          throw new ExternalOutageError('anthropic', `still failing after retries (${status || 'network error'}): ${error.message}`, { cause: error });
        }
        throw error;
      }
    },
  };
}
