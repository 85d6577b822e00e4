import type { Policy } from '../../../src/config/policy.js';
import type { WatchTarget } from '../../../src/ports/kubernetes.js';

/**
 * What the deploy gates need watched (SPEC §5: one shared informer per kind and namespace, never
 * one per run): Freight, Stage and Promotion in each Kargo project a pipeline names; AnalysisRuns
 * there too (Kargo runs verification in the project's namespace); Applications in each Argo CD
 * namespace that holds an app a pipeline lists, or that a Kargo pipeline promotes into. Sorted and without duplicates, so that two
 * pipelines of one project share the informers.
 */
export function watchTargetsFor(policy: Pick<Policy, 'pipelines'>): WatchTarget[] {
  const targets = new Map<string, WatchTarget>();
  const add = (target: WatchTarget): void => {
    targets.set(`${target.kind}/${target.namespace}`, target);
  };
  for (const pipeline of Object.values(policy.pipelines)) {
    if (pipeline.kargo !== undefined) {
      const namespace = pipeline.kargo.project;
      for (const kind of ['Freight', 'Stage', 'Promotion', 'AnalysisRun'] as const) add({ kind, namespace });
    }
    // With Kargo, always: a stage also checks the apps its Promotion's argocd-update step synced.
    const apps = [...(pipeline.argocdApps ?? []), ...pipeline.stages.flatMap((stage) => stage.argocdApps)];
    if (apps.length > 0 || pipeline.kargo !== undefined) add({ kind: 'Application', namespace: pipeline.argocdNamespace });
  }
  return [...targets.values()].sort((a, b) => (a.namespace === b.namespace ? a.kind.localeCompare(b.kind) : a.namespace.localeCompare(b.namespace)));
}
