/**
 * The cluster-diagnosis port (SPEC §4, issue 11): when a deploy gate is red, the agent may look at
 * the running system through read-only tools scoped to the failing stage's namespace. A session is
 * one such look: it is opened for one namespace when the diagnosis step starts and closed when it
 * ends, and whatever it started (a Kubernetes MCP server process, a kubeconfig on disk) is gone
 * once `close` resolves.
 *
 * What crosses the port is already policed by the adapter (src/adapters/kubernetes-mcp/): only the
 * tools of its read allow-list exist, each call's namespace is the session's, kinds that could
 * reveal a Secret are refused, and every result is size-capped and scrubbed. A refused or failed
 * call is a result with `isError`, never an exception, so the agent's run goes on; only an abort
 * (the run is being cancelled) rejects.
 *
 * Results are still untrusted input (cluster text is written by whatever runs in the cluster): the
 * agent's provider frames them as data before the model sees them (src/agent/diagnosis-tools.ts).
 */

/** The JSON schema of a tool's input, as the model is shown it (always an object). */
export interface DiagnosisInputSchema {
  type: 'object';
  properties: Record<string, unknown>;
  required?: string[];
}

/** One read tool a session offers, defined by the bot (not copied from the server it talks to). */
export interface DiagnosisToolDefinition {
  name: string;
  description: string;
  inputSchema: DiagnosisInputSchema;
}

export interface DiagnosisToolResult {
  /** Scrubbed and capped; says so when something was cut. */
  text: string;
  isError: boolean;
  /** True when `text` holds what the cluster said (frame it as data); false for the bot's own refusals and errors. */
  fromCluster: boolean;
}

export interface ClusterDiagnosisSession {
  /** The namespace every call is confined to. */
  readonly namespace: string;
  /** The read tools this session can answer (the allow-list, less any the server did not offer as read-only). */
  readonly tools: readonly DiagnosisToolDefinition[];
  /** Answers one call; `input` is the model's, untrusted. Rejects only when `signal` aborts. */
  call(tool: string, input: unknown, signal: AbortSignal): Promise<DiagnosisToolResult>;
  /** Ends the session: the server process (and its process group) is gone and its kubeconfig removed once this resolves. Idempotent. */
  close(): Promise<void>;
}

export interface DiagnosisScope {
  /** The stage's namespace (the destination namespace of its Argo CD applications). */
  namespace: string;
}

export interface ClusterDiagnosisPort {
  /**
   * Starts a read-only session for `scope`. Rejects with `DiagnosisUnavailableError` when it cannot
   * be had here (no server binary for this platform, no usable cluster credentials, the server did
   * not start): the red-gate report then goes to the agent without cluster tools.
   */
  open(scope: DiagnosisScope, signal?: AbortSignal): Promise<ClusterDiagnosisSession>;
}

/** A diagnosis session cannot be had (and retrying the same way will not help within this run). */
export class DiagnosisUnavailableError extends Error {
  override name = 'DiagnosisUnavailableError';
}
