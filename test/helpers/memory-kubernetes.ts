import { z } from 'zod';
import type { CreatedObject, KubernetesChange, KubernetesPort, PromotionRequest, WatchTarget } from '../../src/ports/kubernetes.js';

/**
 * An in-memory KubernetesPort for the deploy gates' step tests: the informer caches and the API
 * server behind them, kept apart on purpose.
 *
 * - The cache (`list`/`get`) is per kind and namespace, and answers undefined until that informer
 *   "synced" (`sync`, or the first `put`): not yet known is not none, as the port says. With
 *   `watched`, a kind/namespace outside it throws, as the real adapter does for a target no informer
 *   watches.
 * - The server holds what `put` wrote and every Promotion `createPromotion` made. `findPromotions`
 *   reads the server (a live LIST by labels), so a Promotion created a moment ago is found there
 *   before the informer delivered it; `deliver` copies the server's Promotions into the cache.
 * - `createPromotion` names the object from `generateName` (as the API server does), records every
 *   call in `creates` (refused ones too), and throws the error given to `refuseCreates` instead.
 */
export interface MemoryKubernetes extends KubernetesPort {
  /** The informer of `target` finished its first list (with whatever was put so far). */
  sync(target: WatchTarget): void;
  /** Adds or replaces an object in the server and the (then synced) cache, and tells the subscribers. */
  put(target: WatchTarget, object: unknown): void;
  /** Removes an object from the server and the cache, and tells the subscribers. */
  remove(target: WatchTarget, name: string): void;
  /** The Promotion informer of `namespace` delivered what the server holds. */
  deliver(namespace: string): void;
  /** From now on `createPromotion` throws `error` (undefined: creates succeed again). */
  refuseCreates(error: Error | undefined): void;
  /** Every `createPromotion` call, in order. */
  readonly creates: readonly PromotionRequest[];
  /** Every `findPromotions` call, in order. */
  readonly finds: ReadonlyArray<{ namespace: string; labels: Readonly<Record<string, string>> }>;
}

const named = z.object({ metadata: z.object({ name: z.string(), labels: z.record(z.string(), z.string()).optional() }) });

function nameOf(object: unknown): string {
  const parsed = named.safeParse(object);
  if (!parsed.success) throw new Error('memory-kubernetes: an object without metadata.name');
  return parsed.data.metadata.name;
}

export function createMemoryKubernetes(options: { watched?: readonly WatchTarget[]; clock?: () => Date } = {}): MemoryKubernetes {
  const key = (target: WatchTarget): string => `${target.kind}/${target.namespace}`;
  const cache = new Map<string, Map<string, unknown>>();
  const server = new Map<string, Map<string, unknown>>();
  const listeners = new Set<(change: KubernetesChange) => void>();
  const creates: PromotionRequest[] = [];
  const finds: Array<{ namespace: string; labels: Readonly<Record<string, string>> }> = [];
  const watched = options.watched === undefined ? undefined : new Set(options.watched.map(key));
  let refusal: Error | undefined;
  let generated = 0;

  const informer = (target: WatchTarget): Map<string, unknown> | undefined => {
    if (watched !== undefined && !watched.has(key(target))) throw new Error(`No informer watches ${target.kind} in namespace ${target.namespace}`);
    return cache.get(key(target));
  };
  const bucket = (store: Map<string, Map<string, unknown>>, target: WatchTarget): Map<string, unknown> => {
    let objects = store.get(key(target));
    if (objects === undefined) {
      objects = new Map();
      store.set(key(target), objects);
    }
    return objects;
  };
  const emit = (target: WatchTarget, name: string, type: KubernetesChange['type']): void => {
    for (const listener of listeners) listener({ kind: target.kind, namespace: target.namespace, name, type });
  };

  return {
    creates,
    finds,
    list(target) {
      const objects = informer(target);
      return objects === undefined ? undefined : [...objects.values()];
    },
    get(target, name) {
      return informer(target)?.get(name);
    },
    subscribe(listener) {
      listeners.add(listener);
      return () => {
        listeners.delete(listener);
      };
    },
    async findPromotions(namespace, labels) {
      finds.push({ namespace, labels: { ...labels } });
      const objects = server.get(key({ kind: 'Promotion', namespace })) ?? new Map<string, unknown>();
      return [...objects.values()].filter((object) => {
        const have = named.safeParse(object).data?.metadata.labels ?? {};
        return Object.entries(labels).every(([label, value]) => have[label] === value);
      });
    },
    async createPromotion(request): Promise<CreatedObject> {
      creates.push(request);
      if (refusal !== undefined) throw refusal;
      generated += 1;
      const name = `${request.generateName}01k${String(generated).padStart(5, '0')}`;
      const object = {
        apiVersion: 'kargo.akuity.io/v1alpha1',
        kind: 'Promotion',
        metadata: {
          name,
          namespace: request.namespace,
          generateName: request.generateName,
          labels: request.labels,
          annotations: request.annotations,
          creationTimestamp: (options.clock?.() ?? new Date()).toISOString(),
        },
        spec: request.spec,
      };
      bucket(server, { kind: 'Promotion', namespace: request.namespace }).set(name, object);
      return { name, object };
    },
    sync(target) {
      bucket(cache, target);
    },
    put(target, object) {
      const name = nameOf(object);
      const had = cache.get(key(target))?.has(name) ?? false;
      bucket(server, target).set(name, object);
      bucket(cache, target).set(name, object);
      emit(target, name, had ? 'modified' : 'added');
    },
    remove(target, name) {
      server.get(key(target))?.delete(name);
      cache.get(key(target))?.delete(name);
      emit(target, name, 'deleted');
    },
    deliver(namespace) {
      const target = { kind: 'Promotion' as const, namespace };
      const objects = bucket(cache, target);
      for (const [name, object] of server.get(key(target)) ?? []) {
        const had = objects.has(name);
        objects.set(name, object);
        emit(target, name, had ? 'modified' : 'added');
      }
    },
    refuseCreates(error) {
      refusal = error;
    },
  };
}
