import { scrubSecrets } from '../../log.js';
import type { GitHubCiPort, GitHubPort } from '../../ports/github.js';
import { createCheckAnnotations } from './check-annotations.js';
import { createCiSnapshot } from './ci-snapshot.js';
import { createGitHubClients } from './clients.js';
import { createConditionalReads } from './conditional-get.js';
import type { GitHubRestContext } from './context.js';
import { createJobLogs } from './job-logs.js';
import { createMemoryEtagCache } from './memory-etag-cache.js';
import type { GitHubRestOptions } from './options.js';
import { createPortCall } from './port-errors.js';
import { createPulls } from './pulls.js';
import { createRepositoryReads } from './repository.js';
import { createRequiredChecks } from './required-checks.js';

export type { GitHubAuth, GitHubRestOptions } from './options.js';

/**
 * The GitHub port over REST (SPEC §4, §5) with the real Octokit: rate-limit and
 * secondary-limit aware through plugin-throttling, transient failures retried by
 * plugin-retry, every HTTP answer counted in `shipgate_external_calls_total`.
 * Errors leave as `RefusedError` (GitHub said no; retrying cannot help) or
 * `ExternalOutageError` (5xx, network, rate limit; the queue retries later).
 */

/**
 * Assembles the adapter from its concerns (one file each): clients and auth, error mapping,
 * conditional reads, then repository, pulls, CI snapshot, required checks, annotations, job logs.
 */
export function createGitHubRest(options: GitHubRestOptions): GitHubPort & GitHubCiPort {
  const log = options.log.child({ component: 'github' });
  const scrub = options.scrub ?? scrubSecrets;
  const clients = createGitHubClients(options, log, scrub);
  const ctx: GitHubRestContext = {
    clientFor: clients.clientFor,
    call: createPortCall(scrub),
    reads: createConditionalReads(options.etagCache ?? createMemoryEtagCache(), log),
    fetch: clients.fetch,
    log,
    scrub,
  };
  return {
    ...createRepositoryReads(ctx, options.auth, options.onSecret),
    ...createPulls(ctx),
    ...createCiSnapshot(ctx),
    ...createRequiredChecks(ctx),
    ...createCheckAnnotations(ctx),
    ...createJobLogs(ctx),
  };
}
