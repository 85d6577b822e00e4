/**
 * The Kubernetes port: only what the deploy gates use (SPEC §5, issue 9). Objects are read from
 * shared informer caches (one informer per kind and namespace, never one per run) and cross this
 * port as plain JSON (`unknown`): each gate parses what it reads with its own zod schema, so no
 * client library type leaks past the adapter (src/adapters/kubernetes/).
 *
 * Change events are level-triggered wake-ups: an event names the object, the subscriber looks the
 * runs that follow it up (a Redis index) and wakes them, and each run re-reads the cache and
 * decides. An event carries no state on purpose: a missed or coalesced event costs nothing as
 * long as the next read is current.
 */

/** The kinds the deploy gates follow: Kargo's Freight, Stage and Promotion, Argo CD's Application, Argo Rollouts' AnalysisRun. */
export type WatchedKind = 'Freight' | 'Stage' | 'Promotion' | 'Application' | 'AnalysisRun';

/** One informer: a kind in one namespace (the Kargo project namespace, or Argo CD's). */
export interface WatchTarget {
  kind: WatchedKind;
  namespace: string;
}

export interface KubernetesChange extends WatchTarget {
  name: string;
  type: 'added' | 'modified' | 'deleted';
}

export interface PromotionRequest {
  /** The Kargo project namespace. */
  namespace: string;
  /** The server picks the name (the bot sends only `generateName`), so the bot never relies on one it chose: it finds its Promotions by label. */
  generateName: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  /** The Promotion's `spec` (stage, freight, steps), as Kargo's CRD defines it. */
  spec: Record<string, unknown>;
}

export interface CreatedObject {
  /** The name the server chose. */
  name: string;
  /** The object as stored (defaults applied, unknown fields pruned). */
  object: unknown;
}

/** A request the API server refused (RBAC, validation, conflict): its HTTP status and Status message. */
export class KubernetesRequestError extends Error {
  constructor(
    readonly statusCode: number | undefined,
    message: string,
  ) {
    super(message);
    this.name = 'KubernetesRequestError';
  }
}

export interface KubernetesPort {
  /**
   * Every object of `kind` in `namespace` from the informer cache; undefined until that informer
   * completed its first list (not yet known ≠ none). Throws for a kind/namespace no informer watches.
   */
  list(target: WatchTarget): readonly unknown[] | undefined;
  /** One cached object; undefined when absent or not yet listed (see `list`). */
  get(target: WatchTarget, name: string): unknown;
  /** Calls `listener` for every change any informer sees; returns the unsubscribe function. */
  subscribe(listener: (change: KubernetesChange) => void): () => void;
  /**
   * The Promotions in `namespace` carrying every one of `labels`, read live from the API server, not
   * from the cache: the look-up before a create must see a Promotion created a moment ago by a worker
   * that died before recording it, which the informer may not have delivered yet.
   */
  findPromotions(namespace: string, labels: Readonly<Record<string, string>>): Promise<unknown[]>;
  createPromotion(request: PromotionRequest): Promise<CreatedObject>;
}

/** The informers' lifecycle, for the role that runs them (the worker), not for the gates. */
export interface KubernetesInformers {
  /** Starts every informer; resolves once each finished its first list (or failed and is retrying). */
  start(): Promise<void>;
  /** Stops every informer and its restarts; ends open watches. */
  stop(): Promise<void>;
}
