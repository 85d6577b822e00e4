import type { Job } from 'bullmq';
import { ExternalOutageError } from '../errors.js';
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
    // An outside system out of reach is expected weather, said in the thread already ("retrying (n of
    // m)"): its reason is enough here. Anything else is a bug, and its stack is what a person needs.
    if (error instanceof ExternalOutageError) log.warn({ runId, attempt: job.attemptsMade, reason: error.message }, 'run job failed: an outside system is out of reach');
    else log.warn({ runId, attempt: job.attemptsMade, err: error }, 'run job failed');
    try {
      if ((await job.getState()) === 'failed') await failRun(runId, `internal error after retries: ${error.message}`);
    } catch (err) {
      log.error({ runId, err }, 'could not record run failure');
    }
  };
}
