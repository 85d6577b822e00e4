import {
  ListWatch,
  V1ListMeta,
  Watch,
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
} from '@kubernetes/client-node';
import { z } from 'zod';
import type { Logger } from '../../log.js';
import type { WatchTarget } from '../../ports/kubernetes.js';
import { collectionPath } from './kinds.js';

export interface BackoffOptions {
  /** First restart delay after a failure. */
  initialMs: number;
  /** The delay doubles per consecutive failure up to this. */
  maxMs: number;
  /** A connection that stayed up this long resets the delay to `initialMs`. */
  healthyAfterMs: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { initialMs: 500, maxMs: 30_000, healthyAfterMs: 30_000 };

export type ChangeType = 'added' | 'modified' | 'deleted';

export interface SharedInformer {
  readonly target: WatchTarget;
  /** True once the first list finished: before that, an empty cache means "not known yet". */
  readonly synced: boolean;
  list(): readonly KubernetesObject[];
  get(name: string): KubernetesObject | undefined;
  onChange(listener: (type: ChangeType, name: string) => void): void;
  start(): Promise<void>;
  stop(): Promise<void>;
}

export interface SharedInformerDeps {
  kubeConfig: KubeConfig;
  target: WatchTarget;
  /** Lists the collection (the initial list, and relists after a 410 or a restart). Loosely typed, as client-node's answers are. */
  listFn: () => Promise<unknown>;
  logger: Logger;
  backoff?: BackoffOptions;
}

const objectSchema = z.looseObject({
  apiVersion: z.string().optional(),
  kind: z.string().optional(),
  metadata: z.looseObject({
    name: z.string(),
    namespace: z.string().optional(),
    resourceVersion: z.string().optional(),
  }),
});

function isKubernetesObject(value: unknown): value is KubernetesObject {
  return objectSchema.safeParse(value).success;
}

const listSchema = z.looseObject({
  metadata: z.looseObject({ resourceVersion: z.string().optional() }).optional(),
  items: z.array(z.unknown()),
});

/** The error's status and message, for the log (client-node errors carry `code` or `statusCode`). */
function describeError(error: unknown): { message: string; statusCode?: number } {
  const parsed = z.looseObject({ code: z.unknown().optional(), statusCode: z.unknown().optional() }).safeParse(error);
  const code = parsed.success
    ? [parsed.data.statusCode, parsed.data.code].find((c) => typeof c === 'number')
    : undefined;
  const message = error instanceof Error ? error.message : String(error);
  return typeof code === 'number' ? { message, statusCode: code } : { message };
}

/** A watch that aborts itself when it connects after its informer was stopped. */
class GuardedWatch extends Watch {
  constructor(
    config: KubeConfig,
    private readonly isStopped: () => boolean,
  ) {
    super(config);
  }

  override async watch(...args: Parameters<Watch['watch']>): Promise<AbortController> {
    const controller = await super.watch(...args);
    if (this.isStopped()) controller.abort();
    return controller;
  }
}

/**
 * One shared informer for one kind in one namespace: client-node's list-then-watch cache
 * (`ListWatch`, what `makeInformer` builds), plus what the 1.4 informer leaves to its user.
 * - A `410 Gone` (an ERROR event or the HTTP status) is handled inside `ListWatch`: it drops its
 *   resourceVersion and relists; the relist reports every change it finds, so nothing is missed.
 * - A clean end of the watch (the apiserver's timeout) re-watches from the last resourceVersion.
 * - Any other error stops the informer: it is restarted here after a capped exponential backoff.
 *   The restart watches from the last resourceVersion it saw (no list), and only relists when the
 *   server answers 410 — so steady state costs one LIST per informer, ever.
 *
 * `ListWatch` is built directly instead of through `makeInformer` only to wrap its `Watch`: a
 * stop() that lands while a watch request is still connecting would otherwise leave that
 * connection open (ListWatch stores the request only after it connected).
 */
export function createSharedInformer(deps: SharedInformerDeps): SharedInformer {
  const { target } = deps;
  const backoff = deps.backoff ?? DEFAULT_BACKOFF;
  const log = deps.logger.child({ component: 'kubernetes-informer', kind: target.kind, namespace: target.namespace });
  const path = collectionPath(target.kind, target.namespace);

  let stopped = true;
  let synced = false;
  let failures = 0;
  let errorsSeen = 0;
  let restartTimer: NodeJS.Timeout | undefined;
  let healthyTimer: NodeJS.Timeout | undefined;
  let starting: Promise<void> | undefined;
  const listeners: ((type: ChangeType, name: string) => void)[] = [];

  const watch = new GuardedWatch(deps.kubeConfig, () => stopped);

  const listFn = async (): Promise<KubernetesListObject<KubernetesObject>> => {
    const list = listSchema.parse(await deps.listFn());
    const metadata = new V1ListMeta();
    metadata.resourceVersion = list.metadata?.resourceVersion;
    return { metadata, items: list.items.filter(isKubernetesObject) };
  };

  const informer = new ListWatch<KubernetesObject>(path, watch, listFn, false);

  const notify = (type: ChangeType) => (object: KubernetesObject) => {
    const name = object.metadata?.name;
    if (name === undefined) return;
    for (const listener of listeners) {
      try {
        listener(type, name);
      } catch (error) {
        log.error({ err: error, name }, 'kubernetes change listener failed');
      }
    }
  };
  informer.on('add', notify('added'));
  informer.on('update', notify('modified'));
  informer.on('delete', notify('deleted'));

  const clearTimers = (): void => {
    if (restartTimer !== undefined) clearTimeout(restartTimer);
    if (healthyTimer !== undefined) clearTimeout(healthyTimer);
    restartTimer = undefined;
    healthyTimer = undefined;
  };

  const run = async (): Promise<void> => {
    if (stopped) return;
    const errorsBefore = errorsSeen;
    try {
      starting = informer.start();
      await starting;
    } catch (error) {
      onError(error);
    } finally {
      starting = undefined;
    }
    if (stopped || errorsSeen !== errorsBefore) return;
    if (!synced) log.info({ objects: informer.list(target.namespace).length }, 'kubernetes informer synced');
    synced = true;
    if (healthyTimer !== undefined) clearTimeout(healthyTimer);
    healthyTimer = setTimeout(() => {
      healthyTimer = undefined;
      failures = 0;
    }, backoff.healthyAfterMs);
    healthyTimer.unref();
  };

  const onError = (error: unknown): void => {
    errorsSeen += 1;
    // Stopping aborts the open watch, which client-node reports as an error: not one.
    if (stopped) return;
    clearTimers();
    const delayMs = Math.min(backoff.maxMs, backoff.initialMs * 2 ** failures);
    failures += 1;
    log.warn({ err: describeError(error), failures, delayMs }, 'kubernetes informer failed; restarting after backoff');
    restartTimer = setTimeout(() => {
      restartTimer = undefined;
      void run();
    }, delayMs);
  };
  informer.on('error', onError);

  return {
    target,
    get synced() {
      return synced;
    },
    list: () => informer.list(target.namespace),
    get: (name) => informer.get(name, target.namespace),
    onChange(listener) {
      listeners.push(listener);
    },
    async start() {
      if (!stopped) return;
      stopped = false;
      await run();
    },
    async stop() {
      stopped = true;
      clearTimers();
      if (starting !== undefined) await starting.catch(() => undefined);
      await informer.stop();
      log.debug('kubernetes informer stopped');
    },
  };
}
