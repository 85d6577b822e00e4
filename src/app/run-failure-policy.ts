import type { Job } from 'bullmq';
import type { Logger } from '../log.js';
import type { AdvanceJob } from '../queue/queues.js';

export type FailedRunJob = Pick<Job<AdvanceJob>, 'data' | 'attemptsMade' | 'getState'>;

export interface RunFailurePolicyDeps {
  log: Logger;
  /** Ends the run as failed with the reason (the run processor's `failRun`, bound to its deps). */
  failRun: (runId: string, reason: string) => Promise<void>;
}

/**
 * The run queue's `failed` listener. A job BullMQ retries is only logged; a job that will not be
 * retried (attempts used up, or stalled twice, which BullMQ fails without counting an attempt) must
 * still end its run, or the run would stay active with no job. Never rejects.
 */
export function runFailurePolicy({
  log,
  failRun,
}: RunFailurePolicyDeps): (job: FailedRunJob | undefined, error: Error) => Promise<void> {
  return async (job, error) => {
    if (job === undefined) return;
    const runId = job.data.runId;
    log.warn({ runId, attempt: job.attemptsMade, err: error }, 'run job failed');
    try {
      if ((await job.getState()) === 'failed') await failRun(runId, `internal error after retries: ${error.message}`);
    } catch (err) {
      log.error({ runId, err }, 'could not record run failure');
    }
  };
}
