/**
 * The sandbox port (SPEC §4): where repository code runs. A check is arbitrary
 * code that the repository and the model both control, so everything that runs
 * it (the agent's `run_check`, the bot's own check rounds, later local CI)
 * goes through this port and never spawns it directly.
 *
 * The contract every adapter keeps:
 * - the command sees a **copy** of `tree` at `/repo` and nothing it writes
 *   there (or anywhere) comes back: the caller's tree is left as it was;
 * - it gets no credential, no view of the worker's processes, environment or
 *   files, and (for an isolating adapter) no network;
 * - when `run` settles, nothing the command started is still running;
 * - output is the combined stdout/stderr tail, at most `outputCapBytes`, with
 *   the copy's real path shown as `/repo`.
 *
 * The bubblewrap adapter gives all of that on one host; a Kubernetes-pod
 * adapter would implement the same interface (copy in, run, collect output,
 * delete the pod) without touching the gates.
 */

export interface SandboxRequest {
  /** Directory whose contents the command sees at /repo (copied; never written). */
  tree: string;
  /** Shell command, run with `/bin/sh -c` in /repo. */
  command: string;
  timeoutMs: number;
  outputCapBytes: number;
  signal?: AbortSignal | undefined;
}

export interface SandboxResult {
  /** Null when the command was ended by a signal (timeout, abort, a limit, or its own crash). */
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  /** Combined stdout and stderr tail, not yet scrubbed of secrets (the caller's scrubber does that). */
  output: string;
  /** Bytes of output produced in all; more than `outputCapBytes` means `output` is only the tail. */
  outputBytes: number;
  durationMs: number;
}

export interface SandboxPort {
  /** `bubblewrap`, `none`, … — shown to people where it matters (the card says when checks are unsandboxed). */
  readonly kind: string;
  /** False only for `sandbox: none`: the command then runs as the worker, with the network and the worker's view. */
  readonly isolated: boolean;
  /** Rejects with the abort reason once an aborted command really stopped. */
  run(request: SandboxRequest): Promise<SandboxResult>;
  /** Proves at start-up that the sandbox can be created here; throws SandboxUnavailableError saying how to fix it. */
  probe(): Promise<void>;
}

/** The configured sandbox cannot work on this machine: a start-up error that names the fix. */
export class SandboxUnavailableError extends Error {
  override name = 'SandboxUnavailableError';
}
