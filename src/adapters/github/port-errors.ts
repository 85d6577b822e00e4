import { z } from 'zod';
import { CancelledError, cancelledBy, ExternalOutageError, RefusedError } from '../../errors.js';
import type { Scrub } from '../../security/scrubber.js';

/**
 * How the adapter reports failures: every port call leaves with `RefusedError` (GitHub said no;
 * retrying cannot help), `ExternalOutageError` (5xx, network, rate limit; the queue retries later),
 * or `CancelledError` (the caller's signal aborted).
 */

/** The parts of an Octokit `RequestError` that decide how to report it; duck-typed to avoid a transitive import. */
export const requestErrorSchema = z.object({
  status: z.number(),
  message: z.string(),
  response: z.object({ headers: z.record(z.string(), z.unknown()), data: z.unknown() }).optional(),
});

function isRateLimited(error: z.infer<typeof requestErrorSchema>): boolean {
  const remaining = error.response?.headers['x-ratelimit-remaining'];
  return error.status === 429 || (error.status === 403 && (remaining === '0' || /rate limit/i.test(error.message)));
}

/** A GitHub answer with one of `statuses` that is not a rate limit (GitHub also limits with 403). */
export function isAnswer(error: unknown, statuses: readonly number[]): boolean {
  const parsed = requestErrorSchema.safeParse(error);
  return parsed.success && statuses.includes(parsed.data.status) && !isRateLimited(parsed.data);
}

/** Maps whatever a call threw to the error kinds the queue understands (src/errors.ts). */
export function toPortError(what: string, error: unknown, scrub: Scrub): Error {
  if (error instanceof RefusedError || error instanceof ExternalOutageError || error instanceof CancelledError) return error;
  if (error instanceof z.ZodError) {
    return new ExternalOutageError('github', `${what}: unexpected answer: ${z.prettifyError(error)}`, { cause: error });
  }
  const parsed = requestErrorSchema.safeParse(error);
  if (!parsed.success) {
    const message = error instanceof Error ? error.message : String(error);
    return new ExternalOutageError('github', `${what}: ${scrub(message)}`, { cause: error });
  }
  const { status } = parsed.data;
  const message = scrub(parsed.data.message);
  if (isRateLimited(parsed.data)) {
    return new ExternalOutageError('github', `${what}: rate limited (HTTP ${status}): ${message}`, { cause: error });
  }
  if (status >= 400 && status < 500) {
    return new RefusedError(`GitHub refused ${what} (HTTP ${status}): ${message}`, { cause: error });
  }
  // Octokit reports network failures and timeouts as status 500 too.
  return new ExternalOutageError('github', `${what} failed (HTTP ${status}): ${message}`, { cause: error });
}

/**
 * Runs one port call, mapping what it throws to the port's error kinds; `what` names it in the
 * message. With a signal, the call settles with `CancelledError` as soon as the signal aborts.
 */
export type PortCall = <T>(what: string, action: () => Promise<T>, signal?: AbortSignal) => Promise<T>;

export function createPortCall(scrub: Scrub): PortCall {
  return async (what, action, signal) => {
    if (signal?.aborted === true) throw cancelledBy(signal, what);
    const attempt = (async () => {
      try {
        return await action();
      } catch (error) {
        // Whatever an aborted call threw on its way out (fetch's abort reason wrapped by Octokit as a
        // status 500, a parse of a cut body) is the cancel's doing, not GitHub's.
        if (signal?.aborted === true) throw cancelledBy(signal, what);
        throw toPortError(what, error, scrub);
      }
    })();
    return signal === undefined ? attempt : settleOnAbort(attempt, signal, what);
  };
}

/**
 * `attempt`, or `CancelledError` the moment `signal` aborts, whichever comes first. plugin-retry
 * and plugin-throttling wait on Bottleneck timers that no signal reaches, so the caller cannot wait
 * for the call itself to end. The call is left behind: the request hook (clients.ts) refuses the
 * attempt its timer then starts, and its rejection is handled here so it is never unhandled.
 */
function settleOnAbort<T>(attempt: Promise<T>, signal: AbortSignal, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(cancelledBy(signal, what));
    signal.addEventListener('abort', onAbort, { once: true });
    attempt.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        // Always an Error: the call maps whatever it threw (toPortError, cancelledBy).
        reject(error instanceof Error ? error : new Error(String(error)));
      },
    );
  });
}
