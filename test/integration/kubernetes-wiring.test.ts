import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { startTestBot, type TestBot } from '../helpers/bot.js';
import { eventually } from '../helpers/eventually.js';
import { startKubernetesServer, type KubernetesServer } from '../helpers/kubernetes-server.js';

/**
 * The worker role starts one shared informer per kind and namespace the policy's pipelines need
 * (SPEC §5, §10: no per-run watches, no periodic LIST), against the local Kubernetes API server
 * through the real client-node, and stops them with the process.
 */

const POLICY = `
repos:
  acme/shop: { pipeline: shop }
pipelines:
  shop:
    kargo: { project: shop, warehouse: shop }
    stages:
      - { name: dev, kargoStage: dev, argocdApps: [shop-dev] }
`;

let bot: TestBot | undefined;
let server: KubernetesServer | undefined;
const dirs: string[] = [];
afterEach(async () => {
  await bot?.stop();
  bot = undefined;
  expect(server?.unexpected ?? []).toEqual([]);
  await server?.close();
  server = undefined;
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

it('watches each kind the pipelines need once, and stops with the worker', async () => {
  server = await startKubernetesServer();
  const dir = mkdtempSync(join(tmpdir(), 'shipgate-kube-wiring-'));
  dirs.push(dir);
  const k8s = server;
  bot = await startTestBot({ name: 'kube-wiring', policy: POLICY, env: { KUBECONFIG: k8s.writeKubeconfig(dir) } });

  const kinds = ['Freight', 'Stage', 'Promotion', 'AnalysisRun', 'Application'];
  await eventually(async () => kinds.every((kind) => k8s.openWatches(kind) === 1), 'one open watch per kind', 10_000);
  for (const kind of kinds) expect(k8s.count('list', kind), kind).toBe(1);

  await bot.stop();
  bot = undefined;
  await eventually(async () => kinds.every((kind) => k8s.openWatches(kind) === 0), 'the watches closed', 10_000);
});
