import { get } from 'node:http';
import { createInterface } from 'node:readline';
import { z } from 'zod';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startKubernetesServer, type JsonObject, type KubernetesServer } from '../helpers/kubernetes-server.js';

const NS = 'shop';
const objectSchema = z.record(z.string(), z.json());
const metadataOf = (o: JsonObject): { name: string; resourceVersion: string } =>
  z.looseObject({ name: z.string().default(''), resourceVersion: z.string() }).parse(o['metadata']);
const eventSchema = z.object({ type: z.string(), object: objectSchema });
const KARGO = `/apis/kargo.akuity.io/v1alpha1/namespaces/${NS}`;
const ARGO = '/apis/argoproj.io/v1alpha1/namespaces/argocd';

function freight(name: string, extra: JsonObject = {}): JsonObject {
  return {
    apiVersion: 'kargo.akuity.io/v1alpha1',
    kind: 'Freight',
    metadata: { name, namespace: NS },
    alias: 'brave-eagle',
    origin: { kind: 'Warehouse', name: 'shop' },
    commits: [{ repoURL: 'https://github.com/acme/shop', id: 'abc123' }],
    ...extra,
  };
}

function promotion(extra: JsonObject = {}): JsonObject {
  return {
    apiVersion: 'kargo.akuity.io/v1alpha1',
    kind: 'Promotion',
    metadata: { generateName: 'prod.', namespace: NS, labels: { 'shipgate.dev/run': 'r1' } },
    spec: {
      stage: 'prod',
      freight: 'f1',
      steps: [{ uses: 'git-clone', config: { repoURL: 'x', anything: { deep: true } } }],
    },
    ...extra,
  };
}

async function call(
  server: KubernetesServer,
  method: string,
  path: string,
  body?: unknown,
  contentType = 'application/json',
): Promise<{ status: number; body: JsonObject }> {
  const res = await fetch(`${server.url}${path}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': contentType },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: objectSchema.parse(await res.json()) };
}

/** Reads a watch stream until `count` events arrived or the stream ended. */
async function watchEvents(
  server: KubernetesServer,
  path: string,
  count: number,
): Promise<{ type: string; object: JsonObject }[]> {
  return new Promise((resolve, reject) => {
    const events: { type: string; object: JsonObject }[] = [];
    const req = get(`${server.url}${path}`, (res) => {
      expect(res.statusCode).toBe(200);
      // Destroying the request once enough events arrived aborts the response: expected here.
      res.on('error', () => undefined);
      const lines = createInterface({ input: res });
      lines.on('error', () => undefined);
      lines.on('line', (line) => {
        events.push(eventSchema.parse(JSON.parse(line)));
        if (events.length >= count) {
          req.destroy();
          resolve(events);
        }
      });
      lines.on('close', () => resolve(events));
    });
    req.on('error', (error) => {
      if (events.length < count) reject(error);
    });
  });
}

describe('kubernetes test server', () => {
  let server: KubernetesServer;
  beforeEach(async () => {
    server = await startKubernetesServer();
  });
  afterEach(async () => {
    expect(server.unexpected).toEqual([]);
    await server.close();
  });

  it('validates against the real Freight CRD and prunes unknown fields as the API server does', async () => {
    const created = await call(
      server,
      'POST',
      `${KARGO}/freights`,
      freight('f1', { bogus: 1, origin: { kind: 'Warehouse', name: 'shop', extra: 'x' } }),
    );
    expect(created.status).toBe(201);
    expect(created.body['bogus']).toBeUndefined();
    expect(created.body['origin']).toEqual({ kind: 'Warehouse', name: 'shop' });
    expect(created.body['metadata']).toMatchObject({ name: 'f1', namespace: NS, generation: 1 });
    expect(metadataOf(created.body)).toEqual(
      expect.objectContaining({ resourceVersion: String(server.resourceVersion) }),
    );

    const missing = await call(server, 'POST', `${KARGO}/freights`, { ...freight('f2'), origin: undefined });
    expect(missing.status).toBe(422);
    expect(missing.body).toMatchObject({
      kind: 'Status',
      reason: 'Invalid',
      code: 422,
      details: { causes: [{ field: 'origin', reason: 'FieldValueRequired' }] },
    });

    const badEnum = await call(
      server,
      'POST',
      `${KARGO}/freights`,
      freight('f3', { origin: { kind: 'Bucket', name: 'x' } }),
    );
    expect(badEnum.status).toBe(422);
    expect(badEnum.body['message']).toContain('origin.kind: Unsupported value: "Bucket"');

    const badType = await call(server, 'POST', `${KARGO}/freights`, freight('f4', { commits: 'abc' }));
    expect(badType.status).toBe(422);
    expect(badType.body['message']).toContain('commits');
  });

  it('keeps x-kubernetes-preserve-unknown-fields, enforces minItems, and drops a created status under a status subresource', async () => {
    const created = await call(server, 'POST', `${KARGO}/promotions`, promotion({ status: { phase: 'Succeeded' } }));
    expect(created.status).toBe(201);
    const name = metadataOf(created.body).name;
    expect(name).toMatch(/^prod\.[bcdfghjklmnpqrstvwxz2456789]{5}$/u);
    expect(created.body['status']).toBeUndefined();
    expect((created.body['spec'] as JsonObject)['steps']).toEqual([
      { uses: 'git-clone', config: { repoURL: 'x', anything: { deep: true } } },
    ]);

    const noSteps = await call(
      server,
      'POST',
      `${KARGO}/promotions`,
      promotion({ spec: { stage: 'prod', freight: 'f1', steps: [] } }),
    );
    expect(noSteps.status).toBe(422);
    expect(noSteps.body['message']).toContain('spec.steps');

    const noName = await call(server, 'POST', `${KARGO}/promotions`, promotion({ metadata: { namespace: NS } }));
    expect(noName.status).toBe(422);
  });

  it('validates Application and AnalysisRun against the Argo CRDs (no status subresource: status is stored)', async () => {
    const app = {
      apiVersion: 'argoproj.io/v1alpha1',
      kind: 'Application',
      metadata: { name: 'shop-dev', namespace: 'argocd' },
      spec: {
        project: 'default',
        destination: { namespace: 'shop-dev' },
        source: { repoURL: 'r', targetRevision: 'HEAD' },
        nope: 1,
      },
      status: { sync: { status: 'Synced', revision: 'abc' }, health: { status: 'Healthy' } },
    };
    const created = await call(server, 'POST', `${ARGO}/applications`, app);
    expect(created.status).toBe(201);
    expect(created.body['status']).toEqual(app.status);
    expect((created.body['spec'] as JsonObject)['nope']).toBeUndefined();

    const noDestination = await call(server, 'POST', `${ARGO}/applications`, {
      ...app,
      metadata: { name: 'b' },
      spec: { project: 'default' },
    });
    expect(noDestination.status).toBe(422);
    expect(noDestination.body['message']).toContain('spec.destination: Required value');

    const run = await call(server, 'POST', `${ARGO}/analysisruns`, {
      apiVersion: 'argoproj.io/v1alpha1',
      kind: 'AnalysisRun',
      metadata: { name: 'a1' },
      spec: {},
    });
    expect(run.status).toBe(422);
    expect(run.body['message']).toContain('spec.metrics: Required value');
  });

  it('applies merge and JSON patches, and the status subresource only changes the status', async () => {
    server.put(freight('f1'));
    const merged = await call(
      server,
      'PATCH',
      `${KARGO}/freights/f1`,
      { metadata: { labels: { a: 'b' } }, alias: null },
      'application/merge-patch+json',
    );
    expect(merged.status).toBe(200);
    expect(merged.body['alias']).toBeUndefined();
    expect((merged.body['metadata'] as JsonObject)['labels']).toEqual({ a: 'b' });

    const patched = await call(
      server,
      'PATCH',
      `${KARGO}/freights/f1`,
      [
        { op: 'test', path: '/origin/name', value: 'shop' },
        { op: 'add', path: '/commits/-', value: { id: 'def' } },
      ],
      'application/json-patch+json',
    );
    expect(patched.status).toBe(200);
    expect(patched.body['commits']).toHaveLength(2);

    const failedTest = await call(
      server,
      'PATCH',
      `${KARGO}/freights/f1`,
      [{ op: 'test', path: '/origin/name', value: 'other' }],
      'application/json-patch+json',
    );
    expect(failedTest.status).toBe(422);

    const ignored = await call(
      server,
      'PATCH',
      `${KARGO}/freights/f1`,
      { status: { verifiedIn: { dev: {} } } },
      'application/merge-patch+json',
    );
    expect(ignored.body['status']).toBeUndefined();
    const status = await call(
      server,
      'PATCH',
      `${KARGO}/freights/f1/status`,
      { status: { verifiedIn: { dev: {} } }, alias: 'changed' },
      'application/merge-patch+json',
    );
    expect(status.body['status']).toEqual({ verifiedIn: { dev: {} } });
    expect(status.body['alias']).toBeUndefined();

    const conflict = await call(
      server,
      'PATCH',
      `${KARGO}/freights/f1`,
      { metadata: { resourceVersion: '1' } },
      'application/merge-patch+json',
    );
    expect(conflict.status).toBe(409);
  });

  it('lists with the collection resourceVersion and watches from it, with bookmarks when asked', async () => {
    server.put(freight('f1'));
    const list = await call(server, 'GET', `${KARGO}/freights`);
    expect(list.body).toMatchObject({
      kind: 'FreightList',
      metadata: { resourceVersion: String(server.resourceVersion) },
    });
    expect(list.body['items']).toHaveLength(1);
    const listRv = metadataOf(list.body).resourceVersion;

    const events = watchEvents(
      server,
      `${KARGO}/freights?watch=true&resourceVersion=${listRv}&allowWatchBookmarks=true`,
      4,
    );
    await new Promise((r) => setTimeout(r, 50));
    server.modify('Freight', NS, 'f1', (f) => {
      f['alias'] = 'calm-otter';
    });
    server.put(freight('f2'));
    server.bookmark();
    server.remove('Freight', NS, 'f1');
    const got = await events;
    expect(got.map((e) => e.type)).toEqual(['MODIFIED', 'ADDED', 'BOOKMARK', 'DELETED']);
    expect(got[0]!.object['alias']).toBe('calm-otter');

    // A watch from the list's resourceVersion replays everything since.
    const replay = await watchEvents(server, `${KARGO}/freights?watch=true&resourceVersion=${listRv}`, 3);
    expect(replay.map((e) => e.type)).toEqual(['MODIFIED', 'ADDED', 'DELETED']);
    expect(server.count('list', 'Freight')).toBe(1);
    expect(server.count('watch', 'Freight')).toBe(2);
  });

  it('answers a watch from a compacted resourceVersion with an ERROR 410 event, and expires open watches on demand', async () => {
    server.put(freight('f1'));
    const old = server.resourceVersion;
    server.put(freight('f2'));
    server.compact();
    const gone = await watchEvents(server, `${KARGO}/freights?watch=true&resourceVersion=${old}`, 5);
    expect(gone).toHaveLength(1);
    expect(gone[0]).toMatchObject({ type: 'ERROR', object: { kind: 'Status', code: 410, reason: 'Expired' } });

    const open = watchEvents(server, `${KARGO}/freights?watch=true&resourceVersion=${server.resourceVersion}`, 5);
    await new Promise((r) => setTimeout(r, 50));
    expect(server.openWatches('Freight')).toBe(1);
    server.expireWatches('Freight');
    expect((await open).map((e) => [e.type, e.object['code']])).toEqual([['ERROR', 410]]);
    expect(server.openWatches()).toBe(0);
  });
});

it('kubernetes test server records an unknown route and an unsupported patch type as unexpected', async () => {
  const server = await startKubernetesServer();
  try {
    expect((await call(server, 'GET', '/api/v1/namespaces/shop/pods')).status).toBe(404);
    server.put(freight('f1'));
    expect(
      (await call(server, 'PATCH', `${KARGO}/freights/f1`, {}, 'application/strategic-merge-patch+json')).status,
    ).toBe(415);
    expect(server.unexpected.map((u) => u.path)).toEqual(['/api/v1/namespaces/shop/pods', `${KARGO}/freights/f1`]);
  } finally {
    await server.close();
  }
});
