import type { Usage } from '../domain/run.js';

/**
 * USD per million tokens. Cache writes (5-minute TTL) cost 1.25× input and
 * cache reads 0.1× input, per Anthropic's published pricing. An unknown model
 * is priced like the most expensive family so that cost budgets fail closed.
 */
interface Price {
  input: number;
  output: number;
}

const FAMILIES: Array<{ match: RegExp; price: Price }> = [
  { match: /haiku-4/, price: { input: 1, output: 5 } },
  { match: /haiku/, price: { input: 0.8, output: 4 } },
  { match: /sonnet/, price: { input: 3, output: 15 } },
  { match: /opus-4-[5-9]/, price: { input: 5, output: 25 } },
  { match: /opus/, price: { input: 15, output: 75 } },
];
const MOST_EXPENSIVE: Price = { input: 15, output: 75 };

export function priceOf(model: string): Price {
  return FAMILIES.find((family) => family.match.test(model))?.price ?? MOST_EXPENSIVE;
}

export interface CallUsage {
  input_tokens: number;
  output_tokens: number;
  cache_creation_input_tokens: number | null;
  cache_read_input_tokens: number | null;
}

/** Usage and cost of one Messages API call, in the run's units. */
export function usageOfCall(model: string, usage: CallUsage): Usage {
  const price = priceOf(model);
  const cacheWrite = usage.cache_creation_input_tokens ?? 0;
  const cacheRead = usage.cache_read_input_tokens ?? 0;
  const costUsd =
    (usage.input_tokens * price.input + cacheWrite * price.input * 1.25 + cacheRead * price.input * 0.1 + usage.output_tokens * price.output) / 1_000_000;
  return { inputTokens: usage.input_tokens, outputTokens: usage.output_tokens, cacheReadTokens: cacheRead, cacheWriteTokens: cacheWrite, costUsd };
}

export function addUsage(a: Usage, b: Usage): Usage {
  return {
    inputTokens: a.inputTokens + b.inputTokens,
    outputTokens: a.outputTokens + b.outputTokens,
    cacheReadTokens: a.cacheReadTokens + b.cacheReadTokens,
    cacheWriteTokens: a.cacheWriteTokens + b.cacheWriteTokens,
    costUsd: a.costUsd + b.costUsd,
  };
}

/** Every token the run sent or received, cached or not (what maxTokensPerRun limits). */
export function totalTokens(usage: Usage): number {
  return usage.inputTokens + usage.outputTokens + usage.cacheReadTokens + usage.cacheWriteTokens;
}
