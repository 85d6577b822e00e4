import { findRunFreight, kargoFreightSchema, type FreightMatch, type KargoFreight } from './freight-match.js';
import { patchArtifacts, type DeployRevision } from '../../../src/domain/run.js';
import { RefusedError } from '../../../src/errors.js';
import type { KubernetesPort } from '../../../src/ports/kubernetes.js';
import type { RunIndex } from '../../../src/store/run-index.js';
import type { GateStep } from '../gate-step.js';
import { pollDelay } from '../poll-delay.js';
import { kargoFreightUrl, kargoProjectUrl, linkSuffix, pipelineFor, type DeployUiBases } from '../stage/deploy-links.js';
import type { Policy } from '../../../src/config/policy.js';
import { z } from 'zod';

export interface FreightStepDeps {
  policy: Policy;
  kubernetes: Pick<KubernetesPort, 'list'>;
  index: Pick<RunIndex, 'link'>;
  ui: DeployUiBases;
  clock: () => Date;
  /** Fallback re-check while no Freight event woke the run; Warehouses poll their sources every few minutes. */
  firstPollMs?: number | undefined;
  maxPollMs?: number | undefined;
}

/** Chart entries of a Freight, as far as the revisions need them (freight-match.ts reads commits and images). */
const chartsSchema = z.object({
  charts: z
    .array(z.object({ repoURL: z.string().optional(), name: z.string().optional(), version: z.string().optional() }))
    .nullish(),
});

/**
 * The revisions the Freight stands for: each commit (repository and full id) and each chart
 * (repository, name and version). Argo CD sources are compared with these when a Promotion does not
 * say what it synced an application to (workers/gates/stage/desired-revisions.ts).
 */
export function freightRevisions(freight: KargoFreight, raw: unknown): DeployRevision[] {
  const revisions: DeployRevision[] = [];
  for (const commit of freight.commits ?? []) {
    if (commit.repoURL && commit.id) revisions.push({ repoURL: commit.repoURL, revision: commit.id });
  }
  const charts = chartsSchema.safeParse(raw);
  for (const chart of charts.success ? (charts.data.charts ?? []) : []) {
    if (chart.repoURL && chart.name && chart.version)
      revisions.push({ repoURL: chart.repoURL, revision: chart.version, chart: chart.name });
  }
  return revisions;
}

/**
 * The `freight` gate (SPEC §1 gate 5): Kargo's Warehouse produced Freight that carries the merge
 * commit (`match: commit`) or an image built from it (`match: image`). It reads the shared Freight
 * informer's cache; a Freight event of the Warehouse wakes the run (wake-keys.ts), polling is the
 * fallback. Freight of other Warehouses or commits is never this run's (freight-match.ts).
 */
export function createFreightStep(deps: FreightStepDeps): GateStep {
  const firstPoll = deps.firstPollMs ?? 30_000;
  const maxPoll = deps.maxPollMs ?? 5 * 60_000;
  return {
    async run({ run, gate, record, audit, log }) {
      const kargo = pipelineFor(deps.policy, run.repo)?.kargo;
      if (kargo === undefined) throw new RefusedError(`${run.repo} has no Kargo pipeline, so it has no Freight to wait for`);
      const mergeSha = run.artifacts.merge?.commitSha;
      if (mergeSha === undefined) throw new RefusedError('the merge gate recorded no merge commit');
      const namespace = kargo.project;
      await deps.index.link({ kind: 'kube', object: 'Warehouse', namespace, name: kargo.warehouse }, run.id);
      const pending = (summary: string) => ({
        kind: 'pending' as const,
        summary,
        recheckAfterMs: pollDelay(gate.startedAt, deps.clock(), firstPoll, maxPoll),
      });

      const cached = deps.kubernetes.list({ kind: 'Freight', namespace });
      if (cached === undefined) return pending(`waiting for the first list of Freight in ${namespace}`);
      const parsed: Array<{ freight: KargoFreight; raw: unknown }> = [];
      for (const raw of cached) {
        const freight = kargoFreightSchema.safeParse(raw);
        if (freight.success) parsed.push({ freight: freight.data, raw });
        else log.warn({ issues: freight.error.issues.length }, 'freight: an object that is not Freight as Kargo writes it was skipped');
      }
      let match: FreightMatch | null;
      try {
        match = findRunFreight({
          freight: parsed.map((p) => p.freight),
          warehouse: kargo.warehouse,
          mergeSha,
          rule:
            kargo.match === 'image'
              ? { match: 'image', tagPatterns: kargo.tagPatterns, ...(kargo.imageRepoURL === undefined ? {} : { imageRepoURL: kargo.imageRepoURL }) }
              : { match: 'commit' },
        });
      } catch (error) {
        throw new RefusedError(error instanceof Error ? error.message : String(error));
      }
      const short = mergeSha.slice(0, 12);
      if (match === null) {
        await record(() => ({ activity: `waiting for Warehouse ${kargo.warehouse} to produce Freight for ${short}` }));
        return pending(
          `waiting for Warehouse ${namespace}/${kargo.warehouse} to produce Freight ${kargo.match === 'image' ? 'with an image built from' : 'with'} ${short}`,
        );
      }

      const found = match;
      const raw = parsed.find((p) => p.freight === found.freight)?.raw;
      const revisions = freightRevisions(found.freight, raw);
      await deps.index.link({ kind: 'kube', object: 'Freight', namespace, name: found.name }, run.id);
      await record((r) => ({
        artifacts: patchArtifacts(r.artifacts, 'freight', {
          name: found.name,
          alias: found.alias ?? undefined,
          matchedBy: found.matchedBy,
          revisions,
        }),
        links: { ...r.links, kargo: kargoProjectUrl(deps.ui, namespace) ?? r.links.kargo },
        activity: undefined,
      }));
      await audit(
        'freight.found',
        { freight: found.name, alias: found.alias, warehouse: kargo.warehouse, project: namespace, commit: mergeSha, matchedBy: found.matchedBy },
        found.name,
      );
      const label = found.alias === null ? found.name : `${found.alias} (${found.name.slice(0, 12)})`;
      return {
        kind: 'passed',
        summary: `Freight ${label} from Warehouse ${kargo.warehouse} carries ${short} (${found.matchedBy})${linkSuffix(kargoFreightUrl(deps.ui, namespace, found.name))}`,
      };
    },
  };
}
