/**
 * Errors that decide retries. A gate step throws `RefusedError` when retrying
 * cannot help (bad input, refused by policy): the gate fails with its message.
 * `ExternalOutageError` (or any other error) means an outside system
 * misbehaved: the queue retries the step with backoff.
 */
export class RefusedError extends Error {
  override name = 'RefusedError';
}

export class ExternalOutageError extends Error {
  override name = 'ExternalOutageError';
  constructor(
    readonly system: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`${system}: ${message}`, options);
  }
}

/**
 * The work was stopped on purpose: the run was cancelled, or the worker is shutting down (the
 * step's signal aborted). Neither the step's failure nor an outage: the run processor finishes
 * the cancel (or hands the job back), nothing is announced as "retrying", no attempt is spent.
 */
export class CancelledError extends Error {
  override name = 'CancelledError';
}

/** The `CancelledError` for an aborted signal: `what` names the interrupted call; the abort reason is its cause. */
export function cancelledBy(signal: AbortSignal, what: string): CancelledError {
  return new CancelledError(`${what}: stopped (${reasonText(signal.reason)})`, { cause: signal.reason });
}

/** Throws `cancelledBy(signal, what)` when `signal` has aborted; a missing signal never aborts. */
export function throwIfCancelled(signal: AbortSignal | undefined, what: string): void {
  if (signal?.aborted === true) throw cancelledBy(signal, what);
}

function reasonText(reason: unknown): string {
  if (reason instanceof Error) return reason.message;
  return typeof reason === 'string' ? reason : 'aborted';
}
