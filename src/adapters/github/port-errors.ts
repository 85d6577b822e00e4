import { z } from 'zod';
import { ExternalOutageError, RefusedError } from '../../errors.js';
import type { Scrub } from '../../security/scrubber.js';

/**
 * How the adapter reports failures: every port call leaves with `RefusedError` (GitHub said no;
 * retrying cannot help) or `ExternalOutageError` (5xx, network, rate limit; the queue retries later).
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

/** Maps whatever a call threw to the two error kinds the queue understands (src/errors.ts). */
export function toPortError(what: string, error: unknown, scrub: Scrub): Error {
  if (error instanceof RefusedError || error instanceof ExternalOutageError) return error;
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

/** Runs one port call, mapping what it throws to the two error kinds; `what` names it in the message. */
export type PortCall = <T>(what: string, action: () => Promise<T>) => Promise<T>;

export function createPortCall(scrub: Scrub): PortCall {
  return async (what, action) => {
    try {
      return await action();
    } catch (error) {
      throw toPortError(what, error, scrub);
    }
  };
}
