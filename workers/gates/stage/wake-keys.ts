import { z } from 'zod';
import type { KubernetesChange } from '../../../src/ports/kubernetes.js';
import type { RunIndexKey } from '../../../src/store/run-index.js';

/**
 * Which runs an informer event may concern, as run-index keys (SPEC §5: events only wake runs; the
 * gate re-reads the cache and decides). The deploy gates link exactly these keys while they wait:
 *
 * - a Freight: that Freight, and its Warehouse (a run waiting at `freight` does not know the name yet);
 * - a Promotion: that Promotion, and the Stage it promotes into (an auto-promotion's name is Kargo's);
 * - a Stage or an Application: itself;
 * - an AnalysisRun: the Stage Kargo ran it for, when it carries Kargo's stage label (the Stage's own
 *   verification history changes with it anyway).
 *
 * `object` is the changed object as the cache holds it, or undefined once deleted: then only the
 * object's own key is known.
 */
const freightShape = z.object({ origin: z.object({ kind: z.string(), name: z.string() }) });
const promotionShape = z.object({ spec: z.object({ stage: z.string() }) });
const labelledShape = z.object({ metadata: z.object({ labels: z.record(z.string(), z.string()) }) });

/** The label Kargo puts on the AnalysisRuns of a Stage's verification. */
export const KARGO_STAGE_LABEL = 'kargo.akuity.io/stage';

export function wakeKeysFor(change: KubernetesChange, object: unknown): RunIndexKey[] {
  const { kind, namespace, name } = change;
  const own: RunIndexKey = { kind: 'kube', object: kind, namespace, name };
  const related = (objectKind: 'Warehouse' | 'Stage', relatedName: string): RunIndexKey => ({
    kind: 'kube',
    object: objectKind,
    namespace,
    name: relatedName,
  });
  switch (kind) {
    case 'Freight': {
      const freight = freightShape.safeParse(object);
      return freight.success && freight.data.origin.kind === 'Warehouse'
        ? [own, related('Warehouse', freight.data.origin.name)]
        : [own];
    }
    case 'Promotion': {
      const promotion = promotionShape.safeParse(object);
      return promotion.success ? [own, related('Stage', promotion.data.spec.stage)] : [own];
    }
    case 'AnalysisRun': {
      const stage = labelledShape.safeParse(object);
      const label = stage.success ? stage.data.metadata.labels[KARGO_STAGE_LABEL] : undefined;
      return label === undefined ? [] : [related('Stage', label)];
    }
    case 'Stage':
    case 'Application':
      return [own];
  }
}
