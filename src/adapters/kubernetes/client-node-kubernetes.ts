import { CustomObjectsApi, type KubeConfig } from '@kubernetes/client-node';
import { z } from 'zod';
import { ExternalOutageError } from '../../errors.js';
import type { Logger } from '../../log.js';
import {
  KubernetesRequestError,
  type CreatedObject,
  type KubernetesChange,
  type KubernetesInformers,
  type KubernetesPort,
  type PromotionRequest,
  type WatchTarget,
} from '../../ports/kubernetes.js';
import { KIND_RESOURCES } from './kinds.js';
import { createSharedInformer, type BackoffOptions, type SharedInformer } from './shared-informer.js';

export interface ClientNodeKubernetesDeps {
  kubeConfig: KubeConfig;
  /** One informer per entry (duplicates collapse): the kinds and namespaces the pipelines need. */
  targets: readonly WatchTarget[];
  logger: Logger;
  backoff?: BackoffOptions;
}

const listSchema = z.looseObject({ items: z.array(z.unknown()) });
const createdSchema = z.looseObject({ metadata: z.looseObject({ name: z.string().min(1) }) });
const apiErrorSchema = z.looseObject({ code: z.number(), body: z.unknown() });
const statusSchema = z.looseObject({ message: z.string() });

/** The API server's Status message (client-node's ApiException carries the body as a JSON string). */
function requestError(error: unknown): Error {
  const parsed = apiErrorSchema.safeParse(error);
  // No HTTP answer at all (refused, reset, DNS, TLS): the API server is out of reach, which retrying can fix.
  if (!parsed.success)
    return new ExternalOutageError('kubernetes', error instanceof Error ? error.message : String(error), { cause: error });
  let body: unknown = parsed.data.body;
  if (typeof body === 'string') {
    try {
      body = JSON.parse(body);
    } catch {
      // Not JSON: keep the text.
    }
  }
  const status = statusSchema.safeParse(body);
  return new KubernetesRequestError(
    parsed.data.code,
    status.success ? status.data.message : `HTTP ${parsed.data.code}`,
  );
}

const key = (target: WatchTarget): string => `${target.kind}/${target.namespace}`;

/**
 * The Kubernetes port on `@kubernetes/client-node` 1.4: one shared informer per kind and
 * namespace (shared-informer.ts), reads served from their caches, and the Promotion create. The
 * caller (the worker role) starts and stops the informers.
 */
export function createClientNodeKubernetes(deps: ClientNodeKubernetesDeps): KubernetesPort & KubernetesInformers {
  const api = deps.kubeConfig.makeApiClient(CustomObjectsApi);
  const log = deps.logger.child({ component: 'kubernetes' });
  const informers = new Map<string, SharedInformer>();
  const listeners = new Set<(change: KubernetesChange) => void>();

  for (const target of deps.targets) {
    if (informers.has(key(target))) continue;
    const { group, version, plural } = KIND_RESOURCES[target.kind];
    const informer = createSharedInformer({
      kubeConfig: deps.kubeConfig,
      target,
      listFn: () => api.listNamespacedCustomObject({ group, version, namespace: target.namespace, plural }),
      logger: deps.logger,
      ...(deps.backoff === undefined ? {} : { backoff: deps.backoff }),
    });
    informer.onChange((type, name) => {
      for (const listener of listeners) {
        try {
          listener({ kind: target.kind, namespace: target.namespace, name, type });
        } catch (error) {
          log.error(
            { err: error, kind: target.kind, namespace: target.namespace, name },
            'kubernetes change subscriber failed',
          );
        }
      }
    });
    informers.set(key(target), informer);
  }

  const informerFor = (target: WatchTarget): SharedInformer => {
    const informer = informers.get(key(target));
    // A gate asking for a kind nobody watches is a wiring bug: say so instead of "not found".
    if (informer === undefined) throw new Error(`No informer watches ${target.kind} in namespace ${target.namespace}`);
    return informer;
  };

  return {
    list(target) {
      const informer = informerFor(target);
      return informer.synced ? informer.list() : undefined;
    },
    get(target, name) {
      const informer = informerFor(target);
      return informer.synced ? informer.get(name) : undefined;
    },
    subscribe(listener) {
      listeners.add(listener);
      return () => {
        listeners.delete(listener);
      };
    },
    async findPromotions(namespace, labels) {
      const { group, version, plural } = KIND_RESOURCES.Promotion;
      const labelSelector = Object.entries(labels)
        .map(([name, value]) => `${name}=${value}`)
        .join(',');
      let answer: unknown;
      try {
        answer = await api.listNamespacedCustomObject({ group, version, namespace, plural, labelSelector });
      } catch (error) {
        throw requestError(error);
      }
      return listSchema.parse(answer).items;
    },
    async createPromotion(request: PromotionRequest): Promise<CreatedObject> {
      const { group, version, plural } = KIND_RESOURCES.Promotion;
      let created: unknown;
      try {
        created = await api.createNamespacedCustomObject({
          group,
          version,
          namespace: request.namespace,
          plural,
          body: {
            apiVersion: `${group}/${version}`,
            kind: 'Promotion',
            metadata: {
              generateName: request.generateName,
              namespace: request.namespace,
              labels: request.labels,
              annotations: request.annotations,
            },
            spec: request.spec,
          },
        });
      } catch (error) {
        throw requestError(error);
      }
      const parsed = createdSchema.parse(created);
      log.info({ namespace: request.namespace, name: parsed.metadata.name }, 'kubernetes promotion created');
      return { name: parsed.metadata.name, object: created };
    },
    async start() {
      await Promise.all([...informers.values()].map((informer) => informer.start()));
    },
    async stop() {
      await Promise.all([...informers.values()].map((informer) => informer.stop()));
    },
  };
}
