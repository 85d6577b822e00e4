import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { createClientNodeKubernetes } from '../../src/adapters/kubernetes/client-node-kubernetes.js';
import { resolveKubeConfig } from '../../src/adapters/kubernetes/kubeconfig.js';
import { createLogger } from '../../src/log.js';
import {
  KubernetesRequestError,
  type KubernetesChange,
  type KubernetesInformers,
  type KubernetesPort,
} from '../../src/ports/kubernetes.js';
import { eventually } from '../helpers/eventually.js';
import { startKubernetesServer, type JsonObject, type KubernetesServer } from '../helpers/kubernetes-server.js';

const NS = 'shop';
const FREIGHT = { kind: 'Freight', namespace: NS } as const;
const STAGE = { kind: 'Stage', namespace: NS } as const;
const APP = { kind: 'Application', namespace: 'argocd' } as const;

function freight(name: string, alias = 'brave-eagle'): JsonObject {
  return {
    apiVersion: 'kargo.akuity.io/v1alpha1',
    kind: 'Freight',
    metadata: { name, namespace: NS },
    alias,
    origin: { kind: 'Warehouse', name: 'shop' },
    commits: [{ repoURL: 'https://github.com/acme/shop', id: name }],
  };
}

function stage(name: string): JsonObject {
  return {
    apiVersion: 'kargo.akuity.io/v1alpha1',
    kind: 'Stage',
    metadata: { name, namespace: NS },
    spec: { requestedFreight: [{ origin: { kind: 'Warehouse', name: 'shop' }, sources: { direct: true } }] },
  };
}

function application(name: string): JsonObject {
  return {
    apiVersion: 'argoproj.io/v1alpha1',
    kind: 'Application',
    metadata: { name, namespace: 'argocd' },
    spec: { project: 'default', destination: { namespace: 'shop-dev' } },
    status: { health: { status: 'Progressing' } },
  };
}

const aliasOf = (object: unknown): string | undefined =>
  z.looseObject({ alias: z.string().optional() }).parse(object).alias;

describe('client-node Kubernetes adapter against the test server', () => {
  let server: KubernetesServer;
  let dir: string;
  let kube: KubernetesPort & KubernetesInformers;
  let changes: KubernetesChange[];
  let logLines: string[];

  beforeEach(async () => {
    server = await startKubernetesServer();
    dir = mkdtempSync(join(tmpdir(), 'shipgate-kube-'));
    server.put(freight('f1'));
    server.put(stage('dev'));
    server.put(application('shop-dev'));
    logLines = [];
    const destination = new PassThrough();
    destination.on('data', (chunk: Buffer) => logLines.push(chunk.toString('utf8')));
    kube = createClientNodeKubernetes({
      kubeConfig: resolveKubeConfig({
        kubeconfig: server.writeKubeconfig(dir),
        homeDir: undefined,
        inCluster: undefined,
      }),
      targets: [FREIGHT, STAGE, APP, FREIGHT],
      logger: createLogger({ level: 'info', destination }),
      backoff: { initialMs: 50, maxMs: 400, healthyAfterMs: 5_000 },
    });
    changes = [];
    kube.subscribe((change) => changes.push(change));
  });

  afterEach(async () => {
    await kube.stop();
    expect(server.unexpected).toEqual([]);
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const saw = (name: string, type: KubernetesChange['type']): boolean =>
    changes.some((c) => c.name === name && c.type === type);

  it('fills the cache from one initial list per kind and namespace (not known before that)', async () => {
    expect(kube.list(FREIGHT)).toBeUndefined();
    await kube.start();
    expect(kube.list(FREIGHT)).toHaveLength(1);
    expect(aliasOf(kube.get(FREIGHT, 'f1'))).toBe('brave-eagle');
    expect(kube.get(APP, 'shop-dev')).toMatchObject({ status: { health: { status: 'Progressing' } } });
    expect(changes).toEqual(
      expect.arrayContaining([
        { kind: 'Freight', namespace: NS, name: 'f1', type: 'added' },
        { kind: 'Stage', namespace: NS, name: 'dev', type: 'added' },
        { kind: 'Application', namespace: 'argocd', name: 'shop-dev', type: 'added' },
      ]),
    );
    // The duplicate target shares the one informer.
    expect(server.count('list', 'Freight')).toBe(1);
    expect(() => kube.list({ kind: 'Promotion', namespace: NS })).toThrow(/No informer watches Promotion/u);
  });

  it('delivers a controller change to the subscriber and the cache, with one LIST and one WATCH per kind in steady state', async () => {
    await kube.start();
    await eventually(async () => server.openWatches() === 3, 'three watches open');
    for (let i = 0; i < 5; i += 1) {
      server.modify('Application', 'argocd', 'shop-dev', (app) => {
        app['status'] = {
          health: { status: i === 4 ? 'Healthy' : 'Progressing' },
          sync: { status: 'Synced', revision: `r${i}` },
        };
      });
    }
    server.put(freight('f2'));
    await eventually(
      async () =>
        saw('f2', 'added') && changes.filter((c) => c.name === 'shop-dev' && c.type === 'modified').length === 5,
      'five modifications and one add',
    );
    expect(kube.get(APP, 'shop-dev')).toMatchObject({ status: { health: { status: 'Healthy' } } });
    for (const kind of ['Freight', 'Stage', 'Application']) {
      expect(server.count('list', kind)).toBe(1);
      expect(server.count('watch', kind)).toBe(1);
    }
  });

  it('relists after 410 Gone and misses nothing that changed meanwhile', async () => {
    await kube.start();
    await eventually(async () => server.openWatches('Freight') === 1, 'the Freight watch');
    server.expireWatches('Freight');
    // Changes between the 410 and the relist reach no watch: the relist must report them.
    server.modify('Freight', NS, 'f1', (f) => {
      f['alias'] = 'calm-otter';
    });
    server.put(freight('f2'));
    await eventually(async () => saw('f1', 'modified') && saw('f2', 'added'), 'the changes through the relist');
    expect(aliasOf(kube.get(FREIGHT, 'f1'))).toBe('calm-otter');
    expect(server.count('list', 'Freight')).toBe(2);
    expect(server.count('list', 'Stage')).toBe(1);
    await eventually(async () => server.openWatches('Freight') === 1, 'the Freight watch again');
  });

  it('restarts a dropped watch after a backoff, from its resourceVersion, and misses nothing', async () => {
    await kube.start();
    await eventually(async () => server.openWatches('Stage') === 1, 'the Stage watch');
    server.dropWatches('Stage');
    server.modify('Stage', NS, 'dev', (s) => {
      s['status'] = { lastHandledRefresh: 'x' };
    });
    await eventually(async () => saw('dev', 'modified'), 'the change after the restart');
    expect(
      logLines.some(
        (line) =>
          line.includes('kubernetes informer failed; restarting after backoff') && line.includes('"kind":"Stage"'),
      ),
    ).toBe(true);
    // The restart watched from the last resourceVersion: no second LIST.
    expect(server.count('list', 'Stage')).toBe(1);
    expect(server.count('watch', 'Stage')).toBe(2);
  });

  it('relists when a restart finds its resourceVersion compacted', async () => {
    await kube.start();
    await eventually(async () => server.openWatches('Freight') === 1, 'the Freight watch');
    server.dropWatches('Freight');
    server.remove('Freight', NS, 'f1');
    server.compact();
    await eventually(async () => saw('f1', 'deleted'), 'the deletion through the relist');
    expect(kube.list(FREIGHT)).toEqual([]);
    expect(server.count('list', 'Freight')).toBe(2);
  });

  it('creates a Promotion with generateName and returns the name the server chose', async () => {
    const created = await kube.createPromotion({
      namespace: NS,
      generateName: 'prod.',
      labels: { 'shipgate.dev/run': 'r1' },
      annotations: { 'shipgate.dev/approved-by': 'alice,bob' },
      spec: {
        stage: 'prod',
        freight: 'f1',
        steps: [{ uses: 'argocd-update', config: { apps: [{ name: 'shop-prod' }] } }],
      },
    });
    expect(created.name).toMatch(/^prod\.[a-z0-9]{5}$/u);
    expect(server.get('Promotion', NS, created.name)).toMatchObject({
      metadata: { labels: { 'shipgate.dev/run': 'r1' }, annotations: { 'shipgate.dev/approved-by': 'alice,bob' } },
    });

    const refused = kube.createPromotion({
      namespace: NS,
      generateName: 'prod.',
      labels: {},
      annotations: {},
      spec: { stage: 'prod', freight: 'f1', steps: [] },
    });
    await expect(refused).rejects.toBeInstanceOf(KubernetesRequestError);
    await expect(refused).rejects.toMatchObject({ statusCode: 422 });
    await expect(refused).rejects.toThrow(/spec\.steps/u);
  });

  it('stop() ends every watch and nothing reconnects', async () => {
    await kube.start();
    await eventually(async () => server.openWatches() === 3, 'three watches open');
    await kube.stop();
    await eventually(async () => server.openWatches() === 0, 'no watch open');
    const requests = server.requests.length;
    await new Promise((r) => setTimeout(r, 300));
    expect(server.requests.length).toBe(requests);
    expect(logLines.some((line) => line.includes('restarting after backoff'))).toBe(false);
  });
});
