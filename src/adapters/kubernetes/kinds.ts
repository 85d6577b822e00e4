import type { WatchedKind } from '../../ports/kubernetes.js';

export interface KindResource {
  group: string;
  version: string;
  plural: string;
}

/** Where each watched kind lives in the API (the CRDs' group, served version and plural). */
export const KIND_RESOURCES: Readonly<Record<WatchedKind, KindResource>> = {
  Freight: { group: 'kargo.akuity.io', version: 'v1alpha1', plural: 'freights' },
  Stage: { group: 'kargo.akuity.io', version: 'v1alpha1', plural: 'stages' },
  Promotion: { group: 'kargo.akuity.io', version: 'v1alpha1', plural: 'promotions' },
  Application: { group: 'argoproj.io', version: 'v1alpha1', plural: 'applications' },
  AnalysisRun: { group: 'argoproj.io', version: 'v1alpha1', plural: 'analysisruns' },
};

/** The namespaced collection path an informer lists and watches. */
export function collectionPath(kind: WatchedKind, namespace: string): string {
  const { group, version, plural } = KIND_RESOURCES[kind];
  return `/apis/${group}/${version}/namespaces/${encodeURIComponent(namespace)}/${plural}`;
}
