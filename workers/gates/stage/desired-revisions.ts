import { z } from 'zod';
import type { ArgoApplication, DesiredRevision } from './argocd-health.js';
import type { DeployRevision } from '../../../src/domain/run.js';

/**
 * What revision each Argo CD application must be at once a Promotion succeeded (SPEC §5 "at the
 * promoted revision").
 *
 * The Promotion says it best: Kargo's `argocd-update` step leaves a health check behind
 * (`status.healthChecks[]` with `uses: argocd-update`, `config.apps[]` of `{name, namespace,
 * desiredRevisions[]}`), one desired revision per application source, in source order, and an empty
 * entry for a source it does not steer — the revision it pushed to the GitOps repository, which is
 * not the merge commit. Kargo's own health checker compares exactly these.
 *
 * When the Promotion names no revision for an application (no `argocd-update` step, or one that
 * steers nothing), the Freight's own commits and charts are the fallback: an application that
 * tracks the application repository or the chart directly must be at the Freight's commit or chart
 * version. An application none of whose sources matches either fails the Argo CD rule as
 * "no-desired-source" (argocd-health.ts), never passes vacuously.
 */

const argocdHealthCheckSchema = z.object({
  uses: z.literal('argocd-update'),
  config: z.object({
    apps: z.array(
      z.object({
        name: z.string(),
        namespace: z.string().optional(),
        desiredRevisions: z.array(z.string()).nullish(),
      }),
    ),
  }),
});

const promotionHealthChecksSchema = z.object({
  status: z.object({ healthChecks: z.array(z.unknown()).nullish() }).optional(),
});

/** The desired revisions the Promotion's argocd-update health checks give `app`, in source order, or undefined when none does. */
export function promotionDesiredRevisions(promotion: unknown, app: { name: string; namespace: string }, defaultNamespace: string): string[] | undefined {
  const parsed = promotionHealthChecksSchema.safeParse(promotion);
  if (!parsed.success) return undefined;
  for (const raw of parsed.data.status?.healthChecks ?? []) {
    const check = argocdHealthCheckSchema.safeParse(raw);
    if (!check.success) continue;
    const entry = check.data.config.apps.find((a) => a.name === app.name && (a.namespace || defaultNamespace) === app.namespace);
    const revisions = entry?.desiredRevisions ?? [];
    if (revisions.some((revision) => revision !== '')) return revisions;
  }
  return undefined;
}

/** The applications in `namespace` the Promotion's argocd-update health checks name. */
export function promotionAppNames(promotion: unknown, namespace: string): string[] {
  const parsed = promotionHealthChecksSchema.safeParse(promotion);
  if (!parsed.success) return [];
  return (parsed.data.status?.healthChecks ?? []).flatMap((raw) => {
    const check = argocdHealthCheckSchema.safeParse(raw);
    return check.success ? check.data.config.apps.filter((a) => (a.namespace || namespace) === namespace).map((a) => a.name) : [];
  });
}

/**
 * The revisions `application` is checked against: the Promotion's, paired with the application's
 * sources by position (as Kargo pairs them), else the Freight's.
 */
export function desiredRevisionsFor(input: {
  application: ArgoApplication;
  promoted: readonly string[] | undefined;
  freight: readonly DeployRevision[];
}): DesiredRevision[] {
  const { application, promoted } = input;
  if (promoted !== undefined) {
    const many = application.spec?.sources ?? [];
    const sources = many.length > 0 ? many : application.spec?.source ? [application.spec.source] : [];
    const desired: DesiredRevision[] = [];
    promoted.forEach((revision, i) => {
      const source = sources[i];
      if (revision === '' || source?.repoURL === undefined) return;
      desired.push({ repoURL: source.repoURL, revision, ...(source.chart === undefined ? {} : { chart: source.chart }) });
    });
    if (desired.length > 0) return desired;
  }
  return input.freight.map((r) => ({ repoURL: r.repoURL, revision: r.revision, ...(r.chart === undefined ? {} : { chart: r.chart }) }));
}
