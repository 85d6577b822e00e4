import type { KubeConfig } from '@kubernetes/client-node';
import { createKubernetesMcpDiagnosis } from '../adapters/kubernetes-mcp/kubernetes-mcp-diagnosis.js';
import { createClientNodeKubernetes } from '../adapters/kubernetes/client-node-kubernetes.js';
import { resolveKubeConfig } from '../adapters/kubernetes/kubeconfig.js';
import type { Config } from '../config/config.js';
import type { Logger } from '../log.js';
import type { ClusterDiagnosisPort } from '../ports/diagnosis.js';
import type { KubernetesInformers, KubernetesPort } from '../ports/kubernetes.js';
import type { Scrub } from '../security/scrubber.js';
import { watchTargetsFor } from '../../workers/gates/stage/watch-targets.js';

export type Kubernetes = KubernetesPort & KubernetesInformers;

export interface Cluster {
  kubernetes: Kubernetes;
  /** The read-only look at a red stage's namespace (kubernetes-mcp-server with the bot's credentials). */
  diagnosis: ClusterDiagnosisPort;
}

/**
 * The cluster side, when the policy has pipelines that need it: one shared informer per kind and
 * namespace the pipelines name, and the diagnosis sessions of red deploy gates on the same
 * credentials. Without a cluster configuration (no KUBECONFIG, no ~/.kube/config, not in a pod) the
 * deploy gates have nothing to watch; that is said once, and nothing starts.
 */
export function buildKubernetes(
  config: Pick<Config, 'policy' | 'kubeconfig' | 'homeDir' | 'kubernetesService'>,
  log: Logger,
  scrub: Scrub,
): Cluster | undefined {
  const targets = watchTargetsFor(config.policy);
  if (targets.length === 0) return undefined;
  let kubeConfig: KubeConfig;
  try {
    kubeConfig = resolveKubeConfig({ kubeconfig: config.kubeconfig, homeDir: config.homeDir, inCluster: config.kubernetesService });
  } catch (error) {
    log.warn({ err: error, targets: targets.length }, 'kubernetes: no cluster configuration (KUBECONFIG, ~/.kube/config or in-cluster); deploy gates have nothing to watch');
    return undefined;
  }
  return {
    kubernetes: createClientNodeKubernetes({ kubeConfig, targets, logger: log }),
    diagnosis: createKubernetesMcpDiagnosis({ kubeConfig, scrub, log: log.child({ component: 'diagnosis' }) }),
  };
}
