import type { Redis } from '../redis.js';

/**
 * Finds runs from outside events: a GitHub webhook names a commit or a pull
 * request, a chat mention names a thread. Entries expire with the runs they
 * point at; several runs may share a key (two runs never share a commit, but
 * the index does not rely on that).
 */
export interface RunIndex {
  link(key: RunIndexKey, runId: string): Promise<void>;
  find(key: RunIndexKey): Promise<string[]>;
  /**
   * Takes an ended run out of the Kubernetes keys it was linked to: a Stage, a Warehouse or an
   * Application outlives every run, and each informer event reads every run linked to it.
   */
  unlinkKubernetes(runId: string): Promise<void>;
}

export type RunIndexKey =
  | { kind: 'commit'; repo: string; sha: string }
  | { kind: 'pull'; repo: string; number: number }
  /** A run's thread: the channel and the card's message reference, as the chat adapter gave them. */
  | { kind: 'thread'; channel: string; message: string }
  /**
   * A Kubernetes object a deploy gate follows (a Freight, Stage, Promotion or Application), or a
   * Warehouse whose next Freight a run waits for: an informer event about it wakes the run.
   */
  | { kind: 'kube'; object: KubeObjectKind; namespace: string; name: string };

export type KubeObjectKind = 'Freight' | 'Stage' | 'Promotion' | 'Application' | 'AnalysisRun' | 'Warehouse';

const TTL_SECONDS = 14 * 24 * 3600;

export function createRunIndex({ redis, prefix }: { redis: Redis; prefix: string }): RunIndex {
  const keyOf = (key: RunIndexKey): string => {
    switch (key.kind) {
      case 'commit':
        return `${prefix}:index:commit:${key.repo.toLowerCase()}:${key.sha}`;
      case 'pull':
        return `${prefix}:index:pull:${key.repo.toLowerCase()}:${key.number}`;
      case 'thread':
        // Unchanged since the reference was called `ts`: threads linked by a running bot are still found.
        return `${prefix}:index:thread:${key.channel}:${key.message}`;
      case 'kube':
        return `${prefix}:index:kube:${key.object}:${key.namespace}:${key.name}`;
    }
  };
  const linksOf = (runId: string): string => `${prefix}:index:links:${runId}`;
  return {
    async link(key, runId) {
      const tx = redis.multi().sadd(keyOf(key), runId).expire(keyOf(key), TTL_SECONDS);
      // Kubernetes keys are remembered per run, so that the run's end can take it out of them again.
      if (key.kind === 'kube') tx.sadd(linksOf(runId), keyOf(key)).expire(linksOf(runId), TTL_SECONDS);
      await tx.exec();
    },
    async unlinkKubernetes(runId) {
      const keys = await redis.smembers(linksOf(runId));
      const tx = redis.multi();
      for (const key of keys) tx.srem(key, runId);
      await tx.del(linksOf(runId)).exec();
    },
    async find(key) {
      return redis.smembers(keyOf(key));
    },
  };
}
