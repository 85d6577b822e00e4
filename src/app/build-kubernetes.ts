import { createClientNodeKubernetes } from '../adapters/kubernetes/client-node-kubernetes.js';
import { resolveKubeConfig } from '../adapters/kubernetes/kubeconfig.js';
import type { Config } from '../config/config.js';
import type { Logger } from '../log.js';
import type { KubernetesInformers, KubernetesPort } from '../ports/kubernetes.js';
import { watchTargetsFor } from '../../workers/gates/stage/watch-targets.js';

export type Kubernetes = KubernetesPort & KubernetesInformers;

/**
 * The cluster side, when the policy has pipelines that need it: one shared informer per kind and
 * namespace the pipelines name. Without a cluster configuration (no KUBECONFIG, no ~/.kube/config,
 * not in a pod) the deploy gates have nothing to watch; that is said once, and nothing starts.
 */
export function buildKubernetes(config: Pick<Config, 'policy' | 'kubeconfig' | 'homeDir' | 'kubernetesService'>, log: Logger): Kubernetes | undefined {
  const targets = watchTargetsFor(config.policy);
  if (targets.length === 0) return undefined;
  let kubeConfig;
  try {
    kubeConfig = resolveKubeConfig({ kubeconfig: config.kubeconfig, homeDir: config.homeDir, inCluster: config.kubernetesService });
  } catch (error) {
    log.warn({ err: error, targets: targets.length }, 'kubernetes: no cluster configuration (KUBECONFIG, ~/.kube/config or in-cluster); deploy gates have nothing to watch');
    return undefined;
  }
  return createClientNodeKubernetes({ kubeConfig, targets, logger: log });
}
