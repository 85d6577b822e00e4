import { RefusedError } from '../errors.js';

export type GitErrorKind = 'failed' | 'rejected' | 'timeout';

/**
 * A git command failed. `command` and `stderr` are scrubbed of the credentials
 * passed to the command and of anything that looks like a secret, so the error
 * can be logged and shown in chat as is. `kind` is `rejected` when the remote
 * refused the update (non-fast-forward and the like): retrying cannot help and
 * forcing is never an option.
 */
export class GitError extends Error {
  override name = 'GitError';
  constructor(
    message: string,
    readonly command: readonly string[],
    readonly exitCode: number | null,
    readonly stderr: string,
    readonly kind: GitErrorKind = 'failed',
  ) {
    super(message);
  }
}

/** The git layer refused to push (not the run's branch, default or protected branch): a policy refusal, not retryable. */
export class PushRefusedError extends RefusedError {
  override name = 'PushRefusedError';
  constructor(
    readonly branch: string,
    reason: string,
  ) {
    super(`refusing to push to ${JSON.stringify(branch)}: ${reason}`);
  }
}
