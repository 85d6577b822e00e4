import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { wakeRunsOnKubernetesChange } from '../../src/app/wake-runs.js';
import { parsePolicy } from '../../src/config/config.js';
import { newRun, type Run, type RunState } from '../../src/domain/run.js';
import { createLogger } from '../../src/log.js';
import type { KubernetesChange } from '../../src/ports/kubernetes.js';
import type { RunIndexKey } from '../../src/store/run-index.js';
import { KARGO_STAGE_LABEL, wakeKeysFor } from '../../workers/gates/stage/wake-keys.js';
import { createMemoryKubernetes } from '../helpers/memory-kubernetes.js';
import { sampleYaml } from '../helpers/samples.js';

/**
 * Which runs an informer event wakes (workers/gates/stage/wake-keys.ts), and the subscriber that
 * wakes them (src/app/wake-runs.ts) against in-memory index, store, pokes and queues. The
 * AnalysisRun is the docs' (`kargo/analysisrun-verification-failed.docs-example.yaml`, labelled for
 * Stage `dev` in project `guestbook`).
 */

const NS = 'guestbook';
const FREIGHT = '319ddec6bbfbd808d499a0357b027e773aa3707f';
const analysisRun = sampleYaml('kargo', 'analysisrun-verification-failed.docs-example.yaml');
const analysisRunName = z.object({ metadata: z.object({ name: z.string(), namespace: z.string() }) }).parse(analysisRun).metadata;

const freight = (origin: { kind: string; name: string }) => ({ metadata: { name: FREIGHT, namespace: NS }, origin, commits: [] });
const promotion = { metadata: { name: 'dev.01jjpfgfwkzk18k7cyq61jehf4.319ddec', namespace: NS }, spec: { stage: 'dev', freight: FREIGHT, steps: [{ uses: 'fail' }] } };

const change = (kind: KubernetesChange['kind'], name: string, type: KubernetesChange['type'] = 'modified', namespace = NS): KubernetesChange => ({ kind, namespace, name, type });
const key = (object: Extract<RunIndexKey, { kind: 'kube' }>['object'], name: string, namespace = NS): RunIndexKey => ({ kind: 'kube', object, namespace, name });

describe('wakeKeysFor', () => {
  it('a Freight: itself and the Warehouse it came from (runs at `freight` know only the Warehouse)', () => {
    expect(wakeKeysFor(change('Freight', FREIGHT, 'added'), freight({ kind: 'Warehouse', name: 'guestbook' }))).toEqual([key('Freight', FREIGHT), key('Warehouse', 'guestbook')]);
    // Not from a Warehouse, or not readable: only itself.
    expect(wakeKeysFor(change('Freight', FREIGHT), freight({ kind: 'Something', name: 'guestbook' }))).toEqual([key('Freight', FREIGHT)]);
    expect(wakeKeysFor(change('Freight', FREIGHT), { metadata: { name: FREIGHT } })).toEqual([key('Freight', FREIGHT)]);
  });

  it('a Promotion: itself and the Stage it promotes into (an auto-promotion has a name of Kargo’s)', () => {
    expect(wakeKeysFor(change('Promotion', promotion.metadata.name), promotion)).toEqual([key('Promotion', promotion.metadata.name), key('Stage', 'dev')]);
  });

  it('an AnalysisRun: the Stage of its Kargo label, nothing without the label', () => {
    expect(wakeKeysFor(change('AnalysisRun', analysisRunName.name), analysisRun)).toEqual([key('Stage', 'dev')]);
    const unlabelled = { metadata: { name: 'canary-xyz', namespace: NS, labels: { 'rollouts-pod-template-hash': 'abc' } } };
    expect(wakeKeysFor(change('AnalysisRun', 'canary-xyz'), unlabelled)).toEqual([]);
    expect(wakeKeysFor(change('AnalysisRun', 'canary-xyz'), { metadata: { name: 'canary-xyz' } })).toEqual([]);
    expect(KARGO_STAGE_LABEL).toBe('kargo.akuity.io/stage');
  });

  it('a Stage or an Application: itself', () => {
    expect(wakeKeysFor(change('Stage', 'dev'), { metadata: { name: 'dev' } })).toEqual([key('Stage', 'dev')]);
    expect(wakeKeysFor(change('Application', 'guestbook-dev', 'added', 'argocd'), { metadata: { name: 'guestbook-dev' } })).toEqual([key('Application', 'guestbook-dev', 'argocd')]);
  });

  it('a deleted object (no object any more): only its own key', () => {
    expect(wakeKeysFor(change('Freight', FREIGHT, 'deleted'), undefined)).toEqual([key('Freight', FREIGHT)]);
    expect(wakeKeysFor(change('Promotion', 'p1', 'deleted'), undefined)).toEqual([key('Promotion', 'p1')]);
    expect(wakeKeysFor(change('Stage', 'dev', 'deleted'), undefined)).toEqual([key('Stage', 'dev')]);
    // An AnalysisRun's own key is linked by no gate: a deleted one wakes nothing.
    expect(wakeKeysFor(change('AnalysisRun', 'a1', 'deleted'), undefined)).toEqual([]);
  });
});

describe('wakeRunsOnKubernetesChange', () => {
  const policy = parsePolicy('repos:\n  acme/shop: {}\n', 'test');

  /** A run at a deploy gate (`at`), or at another gate to show it is not woken. */
  function run(id: string, state: RunState, jobSeq: number, at: 'freight' | 'ci' = 'freight'): Run {
    const base = newRun(policy, { id, repo: 'acme/shop', task: 't', requester: { userId: 'U1' }, channel: 'C1', now: new Date(0) });
    const gates = at === 'freight'
      ? [...base.gates.map((g) => ({ ...g, state: 'passed' as const })), { name: 'freight', kind: 'freight' as const, state: 'running' as const }]
      : base.gates.map((g) => (g.name === 'agent' || g.name === 'pr' ? { ...g, state: 'passed' as const } : g));
    return { ...base, gates, state, jobSeq };
  }

  function world(runs: Run[], links: Array<[RunIndexKey, string]>, options: { failFind?: boolean } = {}) {
    const byId = new Map(runs.map((r) => [r.id, r]));
    const keyOf = (k: RunIndexKey) => JSON.stringify(k);
    const index = new Map<string, string[]>();
    for (const [k, runId] of links) index.set(keyOf(k), [...(index.get(keyOf(k)) ?? []), runId]);
    const found: RunIndexKey[] = [];
    const poked: string[] = [];
    const woken: Array<[string, number]> = [];
    const logged = new PassThrough();
    let log = '';
    logged.on('data', (chunk: Buffer) => (log += chunk.toString()));
    const kubernetes = createMemoryKubernetes();
    const unsubscribe = kubernetes.subscribe(
      wakeRunsOnKubernetesChange({
        index: {
          find: async (k) => {
            found.push(k);
            if (options.failFind === true) throw new Error('redis is down');
            return index.get(keyOf(k)) ?? [];
          },
        },
        store: { get: async (id) => byId.get(id) },
        pokes: {
          poke: async (runId) => {
            poked.push(runId);
          },
        },
        queues: {
          wakeRun: async (runId, jobSeq) => {
            woken.push([runId, jobSeq]);
          },
        },
        log: createLogger({ level: 'warn', destination: logged }),
        kubernetes,
      }),
    );
    return { kubernetes, found, poked, woken, unsubscribe, log: () => log };
  }

  /** The listener is synchronous and wakes in the background; every fake answers at once, so a macrotask later it is done. */
  const settle = () => new Promise((resolve) => setImmediate(resolve));

  it('a run linked to the object but at a Git gate (a fix forward back at ci) is not woken by cluster events', async () => {
    const w = world([run('sg-at-ci', 'waiting', 2, 'ci')], [[key('Freight', FREIGHT), 'sg-at-ci']]);
    w.kubernetes.put({ kind: 'Freight', namespace: NS }, freight({ kind: 'Warehouse', name: 'guestbook' }));
    await settle();
    expect(w.poked).toEqual([]);
    expect(w.woken).toEqual([]);
  });

  it('a new Freight wakes the waiting run by its Warehouse (poke and job) and pokes the running one; a terminal run is left alone', async () => {
    const w = world(
      [run('sg-waiting', 'waiting', 3), run('sg-running', 'running', 5), run('sg-done', 'done', 7)],
      [
        [key('Warehouse', 'guestbook'), 'sg-waiting'],
        [key('Freight', FREIGHT), 'sg-running'],
        [key('Freight', FREIGHT), 'sg-done'],
        [key('Freight', FREIGHT), 'sg-waiting'],
      ],
    );
    w.kubernetes.put({ kind: 'Freight', namespace: NS }, freight({ kind: 'Warehouse', name: 'guestbook' }));
    await settle();
    expect(w.found).toEqual([key('Freight', FREIGHT), key('Warehouse', 'guestbook')]);
    // Each run once, though linked by both keys.
    expect(w.poked.sort()).toEqual(['sg-running', 'sg-waiting']);
    expect(w.woken).toEqual([['sg-waiting', 3]]);
  });

  it('a deleted Freight wakes only the runs linked to the Freight itself', async () => {
    const w = world(
      [run('sg-by-warehouse', 'waiting', 1), run('sg-by-freight', 'waiting', 2)],
      [
        [key('Warehouse', 'guestbook'), 'sg-by-warehouse'],
        [key('Freight', FREIGHT), 'sg-by-freight'],
      ],
    );
    w.kubernetes.put({ kind: 'Freight', namespace: NS }, freight({ kind: 'Warehouse', name: 'guestbook' }));
    await settle();
    w.poked.length = 0;
    w.woken.length = 0;
    w.found.length = 0;
    w.kubernetes.remove({ kind: 'Freight', namespace: NS }, FREIGHT);
    await settle();
    expect(w.found).toEqual([key('Freight', FREIGHT)]);
    expect(w.woken).toEqual([['sg-by-freight', 2]]);
    expect(w.poked).toEqual(['sg-by-freight']);
  });

  it("an AnalysisRun wakes its Stage's runs; one without Kargo's label looks nothing up", async () => {
    const w = world([run('sg-verifying', 'waiting', 4)], [[key('Stage', 'dev'), 'sg-verifying']]);
    w.kubernetes.put({ kind: 'AnalysisRun', namespace: NS }, analysisRun);
    await settle();
    expect(w.woken).toEqual([['sg-verifying', 4]]);
    w.found.length = 0;
    w.kubernetes.put({ kind: 'AnalysisRun', namespace: NS }, { metadata: { name: 'canary-xyz', namespace: NS } });
    await settle();
    expect(w.found).toEqual([]);
    expect(w.woken).toEqual([['sg-verifying', 4]]);
  });

  it('queued, cancelling, unknown and ended runs are not woken', async () => {
    const w = world(
      [run('sg-queued', 'queued', 0), run('sg-cancelling', 'cancelling', 1), run('sg-failed', 'failed', 2)],
      ['sg-queued', 'sg-cancelling', 'sg-failed', 'sg-vanished'].map((id): [RunIndexKey, string] => [key('Stage', 'dev'), id]),
    );
    w.kubernetes.put({ kind: 'Stage', namespace: NS }, { metadata: { name: 'dev', namespace: NS } });
    await settle();
    expect(w.found).toEqual([key('Stage', 'dev')]);
    expect(w.poked).toEqual([]);
    expect(w.woken).toEqual([]);
  });

  it('a failed look-up costs only latency: logged, never thrown into the informer', async () => {
    const w = world([run('sg-waiting', 'waiting', 3)], [[key('Stage', 'dev'), 'sg-waiting']], { failFind: true });
    expect(() => w.kubernetes.put({ kind: 'Stage', namespace: NS }, { metadata: { name: 'dev', namespace: NS } })).not.toThrow();
    await settle();
    expect(w.woken).toEqual([]);
    expect(w.log()).toContain('waking runs on a kubernetes change failed');
  });
});
