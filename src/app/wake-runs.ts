import { isWakeable } from '../domain/run.js';
import type { GitHubEvent } from '../http/github-webhooks.js';
import type { Logger } from '../log.js';
import type { Queues } from '../queue/queues.js';
import type { Pokes } from '../store/pokes.js';
import type { RunIndex, RunIndexKey } from '../store/run-index.js';
import type { RunStore } from '../store/run-store.js';

export interface WakeRunsDeps {
  index: Pick<RunIndex, 'find'>;
  store: Pick<RunStore, 'get'>;
  pokes: Pick<Pokes, 'poke'>;
  queues: Pick<Queues, 'wakeRun'>;
  log: Logger;
}

/**
 * A GitHub event about a commit or PR a run watches: look at the run now instead of at its next
 * poll (SPEC §5). The event decides nothing; the gate re-reads GitHub's state when it runs.
 */
export function wakeRunsOnGitHubEvent({
  index,
  store,
  pokes,
  queues,
  log,
}: WakeRunsDeps): (event: GitHubEvent) => Promise<void> {
  return async (event) => {
    const keys: RunIndexKey[] = [{ kind: 'commit', repo: event.repo, sha: event.headSha }];
    if (event.kind === 'pull_request') keys.push({ kind: 'pull', repo: event.repo, number: event.number });
    const runIds = new Set((await Promise.all(keys.map((key) => index.find(key)))).flat());
    for (const runId of runIds) {
      const run = await store.get(runId);
      if (run === undefined || !isWakeable(run)) continue;
      // If the gate is being evaluated right now, the poke makes it look again as soon as it ends pending.
      await pokes.poke(runId);
      if (run.state === 'waiting') await queues.wakeRun(runId, run.jobSeq);
      log.info({ runId, event: event.kind, deliveryId: event.deliveryId }, 'webhook woke the run');
    }
  };
}
