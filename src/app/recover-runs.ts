import { needsLiveJob } from '../domain/run.js';
import type { Queues } from '../queue/queues.js';
import type { RunStore } from '../store/run-store.js';

/**
 * Insurance against a crash between recording a run's next job and adding it, run when a worker
 * starts and then periodically (issue 14: a job scheduler, RECONCILE_EVERY_MS): every run that
 * should have a job gets one. Adding an existing job id is a no-op, and wakeRun also retries a job
 * BullMQ failed for good (e.g. stalled twice). A waiting run keeps its delayed job, or gets one
 * due at its next look when it has none.
 */
export async function recoverRuns({
  store,
  queues,
}: {
  store: Pick<RunStore, 'listActive'>;
  queues: Pick<Queues, 'wakeRun' | 'ensureRunJob'>;
}): Promise<void> {
  for (const run of await store.listActive()) {
    if (needsLiveJob(run)) {
      await queues.wakeRun(run.id, run.jobSeq);
    } else if (run.state === 'waiting') {
      // Its delayed job must exist; one lost (removed by hand, a Redis restored from an older
      // snapshot) would leave the run waiting for ever. An existing one is left as it is.
      await queues.ensureRunJob(run.id, run.jobSeq);
    }
  }
}

/** How often every worker's shared reconcile runs (a BullMQ job scheduler: one job per interval in all). */
export const RECONCILE_EVERY_MS = 60_000;
