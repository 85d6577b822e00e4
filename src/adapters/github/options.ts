import type { Logger } from '../../log.js';
import type { Metrics } from '../../metrics.js';
import type { EtagCache } from '../../ports/github.js';
import type { Scrub } from '../../security/scrubber.js';

export type GitHubAuth =
  { kind: 'token'; token: string } | { kind: 'app'; appId: string; privateKey: string; installationId?: string };

export interface GitHubRestOptions {
  /** REST base URL: `https://api.github.com`, `https://ghes.example/api/v3`, or a test server. */
  apiUrl: string;
  auth: GitHubAuth;
  log: Logger;
  metrics?: Metrics;
  retry?: {
    /** plugin-retry attempts after the first for 5xx and network errors (default 3). */
    retries?: number;
    /**
     * Milliseconds per "second" of wait for both plugins (default 1000). plugin-retry waits
     * (attempt)² units, plugin-throttling waits Retry-After / until x-ratelimit-reset; tests pass 1.
     */
    retryAfterBaseMs?: number;
    /** Wait for a secondary limit whose answer has no Retry-After (plugin-throttling `fallbackSecondaryRateRetryAfter`, default 60). */
    minRetryAfterSeconds?: number;
    /**
     * Longest rate-limit wait spent inside one call (default 120 s). A limit that resets later is
     * raised as an `ExternalOutageError` so the queue backs off instead of a worker sleeping for an hour.
     */
    maxRetryAfterSeconds?: number;
  };
  /**
   * Key of plugin-throttling's limiters. They are process-wide: all adapters with the same id share
   * the 10-concurrent-requests cap and the 1 s (writes) / 3 s (notifying writes such as opening a
   * pull request) spacing GitHub asks for. Tests give each adapter its own id so they do not wait
   * for one another.
   */
  limiterId?: string;
  /** Per HTTP attempt, including reading the body (default 30 s): a hung connection becomes a retryable failure. */
  requestTimeoutMs?: number;
  /**
   * ETags and bodies of earlier GET answers, for conditional requests (SPEC §5, §10: a 304 costs no
   * rate limit). Production passes the Redis cache (src/store/etag-cache.ts) so that every worker
   * revalidates the others' answers; without one, a bounded in-memory cache of this adapter is used.
   */
  etagCache?: EtagCache;
  /**
   * Scrubs what this adapter writes to GitHub (pull request titles and bodies) and the text of the
   * errors it raises (SPEC §4). Default: the token patterns of src/log.ts.
   */
  scrub?: Scrub | undefined;
  /**
   * Told every credential minted at run time (GitHub App installation tokens, for the API and for
   * pushes) before it is used, so the scrubber can remove it from whatever text it later shows up in.
   */
  onSecret?: ((secret: string) => void) | undefined;
}
