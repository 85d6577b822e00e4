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
