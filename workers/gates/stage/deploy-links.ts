import type { PipelinePolicy, Policy } from '../../../src/config/policy.js';

/**
 * Links into the Kargo and Argo CD UIs for thread replies and the card (SPEC §2). The bases come
 * from KARGO_URL and ARGOCD_URL; without one, its links are left out rather than guessed.
 */
export interface DeployUiBases {
  kargo?: string | undefined;
  argocd?: string | undefined;
}

const join = (base: string, ...parts: string[]): string =>
  `${base.replace(/\/+$/, '')}/${parts.map((part) => encodeURIComponent(part)).join('/')}`;

export function kargoProjectUrl(bases: DeployUiBases, project: string): string | undefined {
  return bases.kargo === undefined ? undefined : join(bases.kargo, 'project', project);
}

export function kargoFreightUrl(bases: DeployUiBases, project: string, freight: string): string | undefined {
  return bases.kargo === undefined ? undefined : join(bases.kargo, 'project', project, 'freight', freight);
}

export function kargoStageUrl(bases: DeployUiBases, project: string, stage: string): string | undefined {
  return bases.kargo === undefined ? undefined : join(bases.kargo, 'project', project, 'stage', stage);
}

/** Argo CD's UI names an application by its namespace and name (apps in any namespace). */
export function argocdAppUrl(bases: DeployUiBases, namespace: string, app: string): string | undefined {
  return bases.argocd === undefined ? undefined : join(bases.argocd, 'applications', namespace, app);
}

/** The pipeline the run's repository deploys through, if any. */
export function pipelineFor(policy: Pick<Policy, 'repos' | 'pipelines'>, repo: string): PipelinePolicy | undefined {
  const name = policy.repos[repo]?.pipeline;
  return name === undefined ? undefined : policy.pipelines[name];
}

/** ` — <url>` for a reply line, or nothing without a URL. */
export function linkSuffix(url: string | undefined): string {
  return url === undefined ? '' : ` — ${url}`;
}
