import { queueName, type PromotionQueue } from '../../src/store/promotion-queue.js';

/**
 * An in-memory PromotionQueue for unit tests of the gates, with the store's semantics
 * (src/store/promotion-queue.ts, tested on real Redis in test/integration/promotion-queue.test.ts):
 * first arrival first, re-entrant joins, an inactive head dropped by the next join, leaving wakes
 * the next active run. Leases are not modelled.
 */
export interface MemoryPromotionQueue extends PromotionQueue {
  /** The run ids each `join` or `leave` woke, in order. */
  woken: string[];
}

export function createMemoryPromotionQueue(options: { isActive?: (runId: string) => boolean } = {}): MemoryPromotionQueue {
  const isActive = options.isActive ?? (() => true);
  const queues = new Map<string, string[]>();
  const woken: string[] = [];
  const entriesOf = (name: string): string[] => {
    const entries = queues.get(name) ?? [];
    queues.set(name, entries);
    return entries;
  };
  /** Drops inactive heads; the first active one, if any. */
  const activeHead = (entries: string[]): string | undefined => {
    while (entries[0] !== undefined && !isActive(entries[0])) entries.shift();
    return entries[0];
  };
  const leave = (name: string, runId: string): void => {
    const entries = entriesOf(name);
    const index = entries.indexOf(runId);
    if (index < 0) return;
    entries.splice(index, 1);
    if (index !== 0) return;
    const next = activeHead(entries);
    if (next !== undefined) woken.push(next);
  };
  return {
    woken,
    async join(key, runId) {
      const entries = entriesOf(queueName(key));
      if (!entries.includes(runId)) entries.push(runId);
      const before = entries[0];
      const head = activeHead(entries) ?? runId;
      if (head !== before && head !== runId) woken.push(head);
      return { position: entries.indexOf(runId) + 1, size: entries.length, head };
    },
    async leave(key, runId) {
      leave(queueName(key), runId);
    },
    async leaveAll(runId) {
      for (const name of queues.keys()) leave(name, runId);
    },
    async entries(key) {
      return [...entriesOf(queueName(key))];
    },
  };
}
