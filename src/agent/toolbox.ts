import type Anthropic from '@anthropic-ai/sdk';

/**
 * The agent's toolbox (SPEC §4): the tools of every provider offered in this
 * iteration, and the dispatch of the model's calls to the provider that
 * declared the tool. Providers are the only place tools are added (editor,
 * search and checks today; read-only diagnosis later), so the agent step and
 * the loop never learn a tool's name.
 */

/** What a tool call returns to the agent loop; it becomes a `tool_result` block (`is_error` when `isError`). */
export interface ToolResult {
  content: string;
  isError: boolean;
}

/** An Anthropic tool definition that names one tool (toolsets, which name none, cannot be dispatched by name). */
export type ToolDefinition = Extract<Anthropic.ToolUnion, { name: string }>;

/** One family of tools: it declares them (Anthropic tool definitions) and answers their calls. */
export interface ToolProvider {
  /** For logs and errors: which provider a tool came from. */
  readonly name: string;
  readonly tools: readonly ToolDefinition[];
  /**
   * Answers a call to one of its own tools; `input` is the model's, untrusted. Refusals and bad input
   * come back as `isError` results; only an abort (the run is being cancelled) or a broken environment
   * may throw.
   */
  call(tool: string, input: unknown, signal: AbortSignal): Promise<ToolResult>;
}

/** Which pass of the agent gate is putting its toolbox together. */
export interface AgentIteration {
  /** 1 for the first pass; n + 1 once CI has sent the change back n times. */
  number: number;
  /** What this pass must address (a CI failure report), when a later gate sent the run back. */
  feedback: string | undefined;
}

/** A provider as registered with the agent gate: offered in every iteration unless `offeredIn` says otherwise. */
export interface ToolProviderRegistration {
  provider: ToolProvider;
  /** E.g. diagnosis tools only once CI has failed. Decided once per iteration, so the tool list (a cached prompt prefix) stays put within it. */
  offeredIn?: ((iteration: AgentIteration) => boolean) | undefined;
}

/** What the agent loop is given: the definitions to send, and one entry point for every call. */
export interface AgentToolbox {
  definitions: Anthropic.ToolUnion[];
  /** Executes one tool call; refusals come back as `isError` results, never as exceptions. */
  execute(name: string, input: unknown, signal: AbortSignal): Promise<ToolResult>;
}

/** The providers of `registrations` that this iteration offers, in registration order. */
export function providersFor(registrations: readonly ToolProviderRegistration[], iteration: AgentIteration): ToolProvider[] {
  return registrations.filter((r) => r.offeredIn === undefined || r.offeredIn(iteration)).map((r) => r.provider);
}

/**
 * Builds the toolbox over `providers`. Two providers declaring the same tool name is a wiring
 * mistake and throws here, before the model sees an ambiguous list. A call to a tool nobody
 * declared (the model guessed, or asked for one offered only in another iteration) is answered
 * `is_error`, so the run goes on.
 */
export function createToolbox(providers: readonly ToolProvider[]): AgentToolbox {
  const owners = new Map<string, ToolProvider>();
  for (const provider of providers) {
    for (const tool of provider.tools) {
      const taken = owners.get(tool.name);
      if (taken !== undefined) throw new Error(`tool "${tool.name}" is declared by both the ${taken.name} and the ${provider.name} provider`);
      owners.set(tool.name, provider);
    }
  }
  return {
    definitions: providers.flatMap((provider) => [...provider.tools]),
    async execute(name, input, signal) {
      const owner = owners.get(name);
      if (owner === undefined) return { content: `There is no tool named "${name}". Use only the tools you were given.`, isError: true };
      return owner.call(name, input, signal);
    },
  };
}
