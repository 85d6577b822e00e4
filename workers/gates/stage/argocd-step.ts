import { destinationNamespaceOf, evaluateArgoHealth, normaliseRepo, parseArgoApplication, type ArgoApplication, type DesiredRevision } from './argocd-health.js';
import { argocdAppUrl, linkSuffix, pipelineFor, type DeployUiBases } from './deploy-links.js';
import { renderDeployFailure } from './deploy-report.js';
import { fixForwardOrFail } from './fix-forward.js';
import { deployFingerprint } from './stage-step.js';
import type { Policy } from '../../../src/config/policy.js';
import { RefusedError } from '../../../src/errors.js';
import type { KubernetesPort } from '../../../src/ports/kubernetes.js';
import type { RunIndex } from '../../../src/store/run-index.js';
import type { GateStep } from '../gate-step.js';
import { pollDelay } from '../poll-delay.js';

export interface ArgocdStepDeps {
  policy: Policy;
  kubernetes: Pick<KubernetesPort, 'list' | 'get'>;
  index: Pick<RunIndex, 'link'>;
  ui: DeployUiBases;
  clock: () => Date;
  firstPollMs?: number | undefined;
  maxPollMs?: number | undefined;
}

/**
 * The sources of `application` that track the run's repository (`owner/name`, over any host, https or
 * ssh, with or without `.git`), each wanted at the merge commit. An app that tracks another repository
 * gets none, and the Argo CD rule then fails it as "no-desired-source" instead of passing vacuously.
 */
export function mergeCommitRevisions(application: ArgoApplication, repo: string, mergeSha: string): DesiredRevision[] {
  const wanted = repo.toLowerCase();
  const many = application.spec?.sources ?? [];
  const sources = many.length > 0 ? many : application.spec?.source ? [application.spec.source] : [];
  return sources.flatMap((source) => {
    if (source.repoURL === undefined || source.chart !== undefined) return [];
    const url = normaliseRepo(source.repoURL);
    const tracks = url.endsWith(`/${wanted}`) || url.endsWith(`:${wanted}`);
    return tracks ? [{ repoURL: source.repoURL, revision: mergeSha }] : [];
  });
}

/**
 * The `argocd` gate of an Argo-only pipeline (SPEC §1: no Kargo section, `argocdApps` given): the run
 * ends `done` when every listed application is healthy at the merge commit by SPEC §5's rule. Red
 * (Degraded, Missing, a failed sync at that commit) fixes forward like any red deploy gate.
 */
export function createArgocdStep(deps: ArgocdStepDeps): GateStep {
  const firstPoll = deps.firstPollMs ?? 10_000;
  const maxPoll = deps.maxPollMs ?? 2 * 60_000;
  return {
    async run({ run, gate, record, audit }) {
      const pipeline = pipelineFor(deps.policy, run.repo);
      const apps = pipeline?.argocdApps ?? [];
      if (pipeline === undefined || apps.length === 0) throw new RefusedError(`${run.repo}'s pipeline lists no Argo CD applications`);
      const mergeSha = run.artifacts.merge?.commitSha;
      if (mergeSha === undefined) throw new RefusedError('the merge gate recorded no merge commit');
      const namespace = pipeline.argocdNamespace;
      const target = { kind: 'Application' as const, namespace };
      for (const app of apps) await deps.index.link({ kind: 'kube', object: 'Application', namespace, name: app }, run.id);
      const pending = (summary: string) => ({
        kind: 'pending' as const,
        summary,
        recheckAfterMs: pollDelay(gate.startedAt, deps.clock(), firstPoll, maxPoll),
      });
      if (deps.kubernetes.list(target) === undefined) return pending(`waiting for the first list of Applications in ${namespace}`);

      const waiting: string[] = [];
      const healthy: string[] = [];
      for (const name of apps) {
        const raw = deps.kubernetes.get(target, name);
        if (raw === undefined) {
          waiting.push(`Application ${namespace}/${name} not found`);
          continue;
        }
        const application = parseArgoApplication(raw);
        const outcome = evaluateArgoHealth({ application, desired: mergeCommitRevisions(application, run.repo, mergeSha) });
        if (outcome.state === 'failed') {
          if (outcome.code === 'no-desired-source')
            return { kind: 'failed', summary: `${outcome.summary}. The application must track ${run.repo} for its sync to show this change.` };
          const failure = { kind: 'application' as const, stage: 'argocd', outcome };
          const fingerprint = deployFingerprint(failure);
          await audit('stage.verdict', { stage: 'argocd', app: name, commit: mergeSha, verdict: 'failed', fingerprint }, mergeSha);
          const destination = destinationNamespaceOf(raw);
          const target = {
            stage: 'argocd',
            ...(destination === undefined ? {} : { namespace: destination }),
            objects: apps.map((app) => ({ kind: 'Application' as const, namespace, name: app })),
          };
          return fixForwardOrFail({ run, budgets: deps.policy.budgets, report: renderDeployFailure(failure), fingerprint, target });
        }
        (outcome.state === 'healthy' ? healthy : waiting).push(outcome.summary);
      }
      if (waiting.length > 0) {
        await record(() => ({ activity: waiting.join('; ') }));
        return pending(waiting.join('; '));
      }
      await audit('stage.verdict', { stage: 'argocd', apps, commit: mergeSha, verdict: 'passed' }, mergeSha);
      await record((r) => ({ activity: undefined, links: { ...r.links, argocd: argocdAppUrl(deps.ui, namespace, apps[0] ?? '') ?? r.links.argocd } }));
      const links = apps.map((app) => linkSuffix(argocdAppUrl(deps.ui, namespace, app)).slice(3)).filter((l) => l !== '');
      return { kind: 'passed', summary: [...healthy, ...links].join('\n') };
    },
  };
}

