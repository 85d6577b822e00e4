import { needsLiveJob } from '../domain/run.js';
import type { Queues } from '../queue/queues.js';
import type { RunStore } from '../store/run-store.js';

/**
 * Insurance against a crash between recording a run's next job and adding it, run when a worker
 * starts: every run that should have a job gets one. Adding an existing job id is a no-op, and
 * wakeRun also retries a job BullMQ failed for good (e.g. stalled twice). A waiting run has its
 * delayed job (or a webhook wakes it).
 */
export async function recoverRuns({
  store,
  queues,
}: {
  store: Pick<RunStore, 'listActive'>;
  queues: Pick<Queues, 'wakeRun'>;
}): Promise<void> {
  for (const run of await store.listActive()) {
    if (needsLiveJob(run)) {
      await queues.wakeRun(run.id, run.jobSeq);
    }
  }
}
