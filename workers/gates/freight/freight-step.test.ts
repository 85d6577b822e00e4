import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { createFreightStep } from './freight-step.js';
import { parsePolicy } from '../../../src/config/config.js';
import type { Policy } from '../../../src/config/policy.js';
import { newRun, type Run } from '../../../src/domain/run.js';
import { RefusedError } from '../../../src/errors.js';
import { createLogger } from '../../../src/log.js';
import type { RunIndexKey } from '../../../src/store/run-index.js';
import { createMemoryKubernetes } from '../../../test/helpers/memory-kubernetes.js';
import { sampleYaml } from '../../../test/helpers/samples.js';
import type { GateAuditType, GateContext } from '../gate-step.js';
import type { DeployUiBases } from '../stage/deploy-links.js';
import { watchTargetsFor } from '../stage/watch-targets.js';

/**
 * The `freight` gate step against an in-memory Freight informer and a hand-built context. The
 * Freight are built from the real FreightReference in Kargo's docs Stage status
 * (`kargo/stage-status.docs-example.legacy-v0.8.yaml`: name, origin, commits, images), with the
 * metadata, alias and charts a Freight object has at its top level (kargo.akuity.io_freights CRD).
 */

const docsRef = z
  .object({
    status: z.object({
      freightHistory: z.array(
        z.object({
          items: z.record(
            z.string(),
            z.object({
              name: z.string(),
              origin: z.object({ kind: z.string(), name: z.string() }),
              commits: z.array(z.object({ repoURL: z.string(), id: z.string() })),
              images: z.array(z.object({ repoURL: z.string(), tag: z.string(), digest: z.string() })),
            }),
          ),
        }),
      ),
    }),
  })
  .parse(sampleYaml('kargo', 'stage-status.docs-example.legacy-v0.8.yaml')).status.freightHistory[0]?.items['Warehouse/my-warehouse'];
if (docsRef === undefined) throw new Error('sample changed');

const SHA = '961cfaedbc53aacdb65110028839a2c1c281290d';
const OTHER_SHA = '111eaf55aa41f21bb9bb707ba1baa748b83ec51e';
const FREIGHT = '666209fd9755a1e48bec6b27f5f447747410dd9e';
const REPO = 'https://github.com/example/kargo-demo.git';
const PROJECT = 'kargo-demo';
const FREIGHT_TARGET = { kind: 'Freight', namespace: PROJECT } as const;

const commitPolicy = parsePolicy(
  `
repos:
  example/kargo-demo: { pipeline: demo }
  example/plain: {}
pipelines:
  demo:
    kargo: { project: kargo-demo, warehouse: my-warehouse }
    stages: [{ name: test, kargoStage: test }]
`,
  'test',
);

const imagePolicy = parsePolicy(
  `
repos:
  example/kargo-demo: { pipeline: demo }
pipelines:
  demo:
    kargo:
      project: kargo-demo
      warehouse: my-warehouse
      match: image
      tagPatterns: ['sha-{sha:7}']
      imageRepoURL: ghcr.io/example/kargo-demo
    stages: [{ name: test, kargoStage: test }]
`,
  'test',
);

/** A Freight object as Kargo stores it, from the docs' reference. */
function freight(change: { name?: string; alias?: string; warehouse?: string; commits?: unknown[]; images?: unknown[]; charts?: unknown[]; created?: string } = {}): unknown {
  return {
    apiVersion: 'kargo.akuity.io/v1alpha1',
    kind: 'Freight',
    metadata: { name: change.name ?? docsRef?.name, namespace: PROJECT, creationTimestamp: change.created ?? '2024-07-15T22:10:00Z' },
    alias: change.alias ?? 'wonky-wombat',
    origin: { kind: 'Warehouse', name: change.warehouse ?? docsRef?.origin.name },
    commits: change.commits ?? docsRef?.commits,
    images: change.images ?? docsRef?.images,
    ...(change.charts === undefined ? {} : { charts: change.charts }),
  };
}

interface Audit {
  type: GateAuditType;
  data: Record<string, unknown>;
  discriminator: string;
}

function world(options: { policy?: Policy; ui?: DeployUiBases; repo?: string; merge?: string | null } = {}) {
  const policy = options.policy ?? commitPolicy;
  const kubernetes = createMemoryKubernetes({ watched: watchTargetsFor(policy) });
  const linked: RunIndexKey[] = [];
  const step = createFreightStep({
    policy,
    kubernetes,
    index: {
      link: async (key) => {
        linked.push(key);
      },
    },
    ui: options.ui ?? { kargo: 'https://kargo.test/' },
    clock: () => new Date('2026-12-01T10:01:00Z'),
  });
  const base = newRun(policy, { id: 'sg-freight01', repo: options.repo ?? 'example/kargo-demo', task: 't', requester: { userId: 'UALICE' }, channel: 'CSHOP', now: new Date('2026-12-01T10:00:00Z') });
  const merge = options.merge === undefined ? SHA : options.merge;
  const run: Run = { ...base, links: { pr: 'https://github.test/example/kargo-demo/pull/3' }, artifacts: merge === null ? {} : { merge: { commitSha: merge } } };
  let stored = run;
  const audits: Audit[] = [];
  const gate = run.gates.find((g) => g.name === 'freight') ?? { name: 'freight', kind: 'freight' as const, state: 'pending' as const };
  const ctx: GateContext = {
    run,
    gate: { ...gate, state: 'running', startedAt: '2026-12-01T10:00:00Z' },
    signal: new AbortController().signal,
    log: createLogger({ level: 'silent', destination: new PassThrough() }),
    record: async (change) => (stored = { ...stored, ...change(stored) }),
    reply: async () => undefined,
    audit: async (type, data, discriminator) => {
      audits.push({ type, data, discriminator });
    },
  };
  return { step, ctx, kubernetes, linked, audits, stored: () => stored };
}

/** The message of the RefusedError `outcome` rejects with; fails the test on anything else. */
async function refusal(outcome: Promise<unknown>): Promise<string> {
  const error = await outcome.then(
    () => undefined,
    (reason: unknown) => reason,
  );
  expect(error).toBeInstanceOf(RefusedError);
  return error instanceof Error ? error.message : '';
}

const WAREHOUSE_KEY: RunIndexKey = { kind: 'kube', object: 'Warehouse', namespace: PROJECT, name: 'my-warehouse' };

describe('freight gate step', () => {
  it('waits for the first list of Freight, linking the Warehouse so its next Freight wakes the run', async () => {
    const w = world();
    expect(await w.step.run(w.ctx)).toEqual({ kind: 'pending', summary: 'waiting for the first list of Freight in kargo-demo', recheckAfterMs: 30_000 });
    expect(w.linked).toEqual([WAREHOUSE_KEY]);
    expect(w.audits).toEqual([]);
  });

  it('waits while the Warehouse has produced no Freight with the merge commit', async () => {
    const w = world();
    w.kubernetes.put(FREIGHT_TARGET, freight({ name: 'f-other', commits: [{ repoURL: REPO, id: OTHER_SHA }] }));
    const outcome = await w.step.run(w.ctx);
    expect(outcome).toEqual({
      kind: 'pending',
      summary: 'waiting for Warehouse kargo-demo/my-warehouse to produce Freight with 961cfaedbc53',
      recheckAfterMs: 30_000,
    });
    expect(w.stored().activity).toBe('waiting for Warehouse my-warehouse to produce Freight for 961cfaedbc53');
    expect(w.stored().artifacts.freight).toBeUndefined();
    expect(w.linked).toEqual([WAREHOUSE_KEY]);
    expect(w.audits).toEqual([]);
  });

  it('ignores Freight of another Warehouse even when it carries the merge commit', async () => {
    const w = world();
    w.kubernetes.put(FREIGHT_TARGET, freight({ warehouse: 'other-warehouse' }));
    expect((await w.step.run(w.ctx)).kind).toBe('pending');
    expect(w.stored().artifacts.freight).toBeUndefined();
  });

  it('passes with the Freight name, alias and link, and records what the Freight stands for', async () => {
    const w = world();
    const charts = [{ repoURL: 'oci://ghcr.io/example/charts', name: 'kargo-demo', version: '1.4.2' }];
    w.kubernetes.put(FREIGHT_TARGET, freight({ name: 'f-other', commits: [{ repoURL: REPO, id: OTHER_SHA }] }));
    w.kubernetes.put(FREIGHT_TARGET, freight({ charts }));
    const outcome = await w.step.run(w.ctx);
    expect(outcome).toEqual({
      kind: 'passed',
      summary: `Freight wonky-wombat (666209fd9755) from Warehouse my-warehouse carries 961cfaedbc53 (${REPO}) — https://kargo.test/project/kargo-demo/freight/${FREIGHT}`,
    });
    expect(w.stored().artifacts.freight).toEqual({
      name: FREIGHT,
      alias: 'wonky-wombat',
      matchedBy: REPO,
      revisions: [
        { repoURL: REPO, revision: SHA },
        { repoURL: 'oci://ghcr.io/example/charts', revision: '1.4.2', chart: 'kargo-demo' },
      ],
    });
    expect(w.stored().artifacts.merge).toEqual({ commitSha: SHA });
    expect(w.stored().links).toEqual({ pr: 'https://github.test/example/kargo-demo/pull/3', kargo: 'https://kargo.test/project/kargo-demo' });
    expect(w.stored().activity).toBeUndefined();
    expect(w.linked).toEqual([WAREHOUSE_KEY, { kind: 'kube', object: 'Freight', namespace: PROJECT, name: FREIGHT }]);
    expect(w.audits).toEqual([
      {
        type: 'freight.found',
        data: { freight: FREIGHT, alias: 'wonky-wombat', warehouse: 'my-warehouse', project: PROJECT, commit: SHA, matchedBy: REPO },
        discriminator: FREIGHT,
      },
    ]);
  });

  it('without KARGO_URL: no link, and the run keeps the links it had', async () => {
    const w = world({ ui: {} });
    w.kubernetes.put(FREIGHT_TARGET, {
      ...(freight() as Record<string, unknown>),
      alias: undefined,
    });
    const outcome = await w.step.run(w.ctx);
    expect(outcome).toEqual({ kind: 'passed', summary: `Freight ${FREIGHT} from Warehouse my-warehouse carries 961cfaedbc53 (${REPO})` });
    expect(w.stored().links).toEqual({ pr: 'https://github.test/example/kargo-demo/pull/3', kargo: undefined });
    expect(w.stored().artifacts.freight).toMatchObject({ name: FREIGHT, alias: undefined });
  });

  it('match: image takes the tag the patterns give for the merge commit, from the configured image repository only', async () => {
    const w = world({ policy: imagePolicy });
    // The same tag from another repository, and the image repository with another commit's tag: neither is this run's.
    w.kubernetes.put(FREIGHT_TARGET, freight({ name: 'f-elsewhere', commits: [], images: [{ repoURL: 'docker.io/someone/else', tag: 'sha-961cfae' }] }));
    w.kubernetes.put(FREIGHT_TARGET, freight({ name: 'f-older-commit', commits: [], images: [{ repoURL: 'ghcr.io/example/kargo-demo', tag: 'sha-111eaf5' }] }));
    expect(await w.step.run(w.ctx)).toEqual({
      kind: 'pending',
      summary: 'waiting for Warehouse kargo-demo/my-warehouse to produce Freight with an image built from 961cfaedbc53',
      recheckAfterMs: 30_000,
    });
    // The full SHA as a tag is not one of the configured patterns.
    w.kubernetes.put(FREIGHT_TARGET, freight({ name: 'f-full-sha', commits: [], images: [{ repoURL: 'ghcr.io/example/kargo-demo', tag: SHA }] }));
    expect((await w.step.run(w.ctx)).kind).toBe('pending');

    w.kubernetes.put(FREIGHT_TARGET, freight({ name: 'f-image', alias: 'brave-badger', commits: [], images: [{ repoURL: 'ghcr.io/example/kargo-demo', tag: 'sha-961cfae', digest: 'sha256:abc' }] }));
    const outcome = await w.step.run(w.ctx);
    expect(outcome).toEqual({
      kind: 'passed',
      summary: 'Freight brave-badger (f-image) from Warehouse my-warehouse carries 961cfaedbc53 (ghcr.io/example/kargo-demo:sha-961cfae) — https://kargo.test/project/kargo-demo/freight/f-image',
    });
    expect(w.stored().artifacts.freight).toEqual({ name: 'f-image', alias: 'brave-badger', matchedBy: 'ghcr.io/example/kargo-demo:sha-961cfae', revisions: [] });
    expect(w.audits.map((a) => [a.type, a.discriminator])).toEqual([['freight.found', 'f-image']]);
  });

  it('skips an object the cache holds that is not Freight as Kargo writes it', async () => {
    const w = world();
    w.kubernetes.put(FREIGHT_TARGET, { metadata: { name: 'broken' } });
    w.kubernetes.put(FREIGHT_TARGET, freight());
    expect((await w.step.run(w.ctx)).kind).toBe('passed');
    expect(w.stored().artifacts.freight?.name).toBe(FREIGHT);
  });

  it('refuses when the merge gate recorded no merge commit, or the repository has no Kargo pipeline', async () => {
    const noMerge = world({ merge: null });
    noMerge.kubernetes.put(FREIGHT_TARGET, freight());
    expect(await refusal(noMerge.step.run(noMerge.ctx))).toBe('the merge gate recorded no merge commit');
    expect(noMerge.linked).toEqual([]);

    const plain = world({ repo: 'example/plain' });
    expect(await refusal(plain.step.run(plain.ctx))).toBe('example/plain has no Kargo pipeline, so it has no Freight to wait for');

    const short = world({ merge: SHA.slice(0, 12) });
    short.kubernetes.put(FREIGHT_TARGET, freight());
    expect(await refusal(short.step.run(short.ctx))).toBe('merge commit "961cfaedbc53" is not a full SHA');
  });
});
