import { ACTIVE_RUN_STATES } from '../domain/run.js';
import type { Metrics } from '../metrics.js';
import { CHAT_QUEUE, RUN_QUEUE, type Queues } from '../queue/queues.js';
import type { RunStore } from '../store/run-store.js';

type Counted = Pick<Queues['runs'], 'getJobCounts'>;

/** On every scrape: the depth of both queues, and the active runs by state (all from Redis, so any process answers for all). */
export function collectRunMetrics({
  metrics,
  queues,
  store,
}: {
  metrics: Pick<Metrics, 'onCollect'>;
  queues: { runs: Counted; chat: Counted };
  store: Pick<RunStore, 'listActive'>;
}): void {
  metrics.onCollect(async (set) => {
    for (const [name, queue] of [
      [RUN_QUEUE, queues.runs],
      [CHAT_QUEUE, queues.chat],
    ] as const) {
      const counts = await queue.getJobCounts('waiting', 'active', 'delayed', 'failed');
      for (const [state, value] of Object.entries(counts)) set.queueDepth(name, state, value);
    }
    const active = await store.listActive();
    for (const state of ACTIVE_RUN_STATES) set.activeRuns(state, active.filter((r) => r.state === state).length);
  });
}
