import type Anthropic from '@anthropic-ai/sdk';

/**
 * The model port: one Messages API call (SPEC §4). The adapter is the real
 * @anthropic-ai/sdk client; the agent loop owns turns, tools and budgets.
 */
export type ModelRequest = Anthropic.MessageCreateParamsNonStreaming;
export type ModelResponse = Anthropic.Message;

export interface ModelPort {
  createMessage(request: ModelRequest, options: { signal: AbortSignal }): Promise<ModelResponse>;
}
