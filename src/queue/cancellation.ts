import type { Redis } from '../redis.js';

/**
 * Cross-process cancel signal: the web role publishes a run id, and whichever
 * worker is executing that run aborts the step's AbortSignal. The durable
 * record of the request is the run's `cancelling` state; this is only the
 * fast path that interrupts work in progress.
 */
export interface Cancellation {
  /** The signal aborts when a cancel for `runId` is published anywhere. */
  register(runId: string): { signal: AbortSignal; release(): void };
  publish(runId: string): Promise<void>;
  close(): Promise<void>;
}

export async function createCancellation({
  publisher,
  subscriber,
  prefix,
}: {
  publisher: Redis;
  /** A dedicated connection: a subscribed connection cannot run other commands. */
  subscriber: Redis | undefined;
  prefix: string;
}): Promise<Cancellation> {
  const channel = `${prefix}:cancel`;
  const controllers = new Map<string, Set<AbortController>>();
  if (subscriber !== undefined) {
    subscriber.on('message', (from: string, runId: string) => {
      if (from !== channel) return;
      for (const controller of controllers.get(runId) ?? []) controller.abort(new Error(`run ${runId} was cancelled`));
    });
    await subscriber.subscribe(channel);
  }
  return {
    register(runId) {
      const controller = new AbortController();
      const set = controllers.get(runId) ?? new Set();
      set.add(controller);
      controllers.set(runId, set);
      return {
        signal: controller.signal,
        release() {
          set.delete(controller);
          if (set.size === 0) controllers.delete(runId);
        },
      };
    },
    async publish(runId) {
      await publisher.publish(channel, runId);
    },
    async close() {
      if (subscriber !== undefined) await subscriber.unsubscribe(channel);
    },
  };
}
