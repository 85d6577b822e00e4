import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { z } from 'zod';
import { createAuditLog } from '../../src/audit/audit-log.js';
import { parsePolicy } from '../../src/config/config.js';
import { newRun, type Run } from '../../src/domain/run.js';
import { createQueues, type Queues } from '../../src/queue/queues.js';
import { createRunStore } from '../../src/store/run-store.js';
import { TEST_AUDIT_KEY_BYTES } from '../helpers/audit-key.js';
import { testEnv } from '../helpers/bot.js';
import { eventually } from '../helpers/eventually.js';
import { createShopGitOps, type GitOpsController } from '../helpers/gitops-controller.js';
import { freePort } from '../helpers/global-redis.js';
import { testPrefix } from '../helpers/ids.js';
import { startKubernetesServer, type KubernetesServer } from '../helpers/kubernetes-server.js';
import { killAll, spawnShipgate, waitForHealthy, writePolicyFile, type ShipgateProcess } from '../helpers/process.js';
import { startSlackServer, type SlackServer } from '../helpers/slack-server.js';

/**
 * Issue 9 / SPEC §10: a worker killed while a stage gate is in flight. Real processes, real SIGKILL,
 * the real client-node informers against the local Kubernetes API server; the stage is one the bot
 * promotes (`promote: bot`), so the kill lands after the bot created its Promotion. The restarted
 * worker finds that Promotion by its labels, creates none, and the run still reaches `done`.
 */

const POLICY = `
repos:
  acme/shop: { pipeline: shop }
pipelines:
  shop:
    kargo: { project: shop, warehouse: shop }
    stages:
      - { name: dev, kargoStage: dev, argocdApps: [shop-dev], promote: bot }
budgets: { maxRunMinutes: 30 }
`;
const MERGE_SHA = 'f00dfacef00dfacef00dfacef00dfacef00dface';

const processes: ShipgateProcess[] = [];
let slack: SlackServer | undefined;
let redis: Redis | undefined;
let queues: Queues | undefined;
let server: KubernetesServer | undefined;
let controller: GitOpsController | undefined;
const dirs: string[] = [];

afterEach(async () => {
  await killAll(processes.splice(0));
  await controller?.stop();
  controller = undefined;
  const unexpected = server?.unexpected ?? [];
  await server?.close();
  server = undefined;
  await queues?.close();
  queues = undefined;
  redis?.disconnect();
  await slack?.close();
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  expect(unexpected).toEqual([]);
});

/** A run whose Git half is done (as the agent, pr, ci and merge gates leave it), queued at `freight`. */
function mergedRun(id: string): Run {
  const policy = parsePolicy(POLICY, 'policy');
  const run = newRun(policy, { id, repo: 'acme/shop', task: 'add a health module', requester: { userId: 'UALICE' }, channel: 'CSHOP', now: new Date() });
  const at = new Date().toISOString();
  return {
    ...run,
    gates: run.gates.map((gate) => (['agent', 'pr', 'ci', 'merge'].includes(gate.name) ? { ...gate, state: 'passed', summary: 'done before the test', startedAt: at, endedAt: at } : gate)),
    artifacts: { agent: { branch: `shipgate/${id}-add-a-health-module`, commitSha: 'a'.repeat(40) }, pr: { number: 1 }, merge: { commitSha: MERGE_SHA } },
  };
}

describe('a worker killed while a stage gate is in flight', { timeout: 120_000 }, () => {
  it('the bot-created Promotion exists once, the restarted worker follows it, and the run reaches done', async () => {
    slack = await startSlackServer({ token: 'xoxb-test-token-not-real' });
    const k8s = await startKubernetesServer();
    server = k8s;
    const dir = mkdtempSync(join(tmpdir(), 'shipgate-deploy-restart-'));
    dirs.push(dir);
    // Slow enough that the Promotion is still running when the worker dies.
    const gitops = createShopGitOps(k8s, { stages: [{ name: 'dev', apps: ['shop-dev'], autoPromote: false }], stepDelayMs: 400 });
    controller = gitops;
    gitops.install();
    gitops.start();
    const freight = gitops.produceFreight(MERGE_SHA);

    const prefix = testPrefix('deploy-restart');
    const port = await freePort();
    redis = new Redis(inject('redisUrl'));
    const store = createRunStore({ redis, prefix, clock: () => new Date() });
    const audit = createAuditLog({ redis, prefix, clock: () => new Date(), key: TEST_AUDIT_KEY_BYTES });
    queues = createQueues({ connection: { host: new URL(inject('redisUrl')).hostname, port: Number(new URL(inject('redisUrl')).port) }, prefix });
    const runId = 'sg-killed01';
    await store.create(mergedRun(runId), `delivery-${runId}`);
    await queues.scheduleRun(runId, 0);

    const env = testEnv(slack, prefix, { PORT: String(port), SHIPGATE_CONFIG: writePolicyFile(POLICY), KUBECONFIG: k8s.writeKubeconfig(dir) });
    const first = spawnShipgate(env);
    processes.push(first);
    await waitForHealthy(port);

    // The bot created its Promotion and Kargo is running it: kill the worker now.
    await eventually(async () => {
      const promotion = gitops.promotionsFor('dev')[0];
      return z.object({ status: z.object({ phase: z.literal('Running') }) }).safeParse(promotion).success;
    }, 'the bot-created Promotion running', 60_000); // the first look follows the informers' lists: over 30 s seen in CI beside another file's processes
    first.child.kill('SIGKILL');
    await first.exited;
    expect((await store.get(runId))?.state).not.toBe('done');

    const second = spawnShipgate(env);
    processes.push(second);
    await waitForHealthy(port);
    let seen = '';
    await eventually(async () => {
      const run = await store.get(runId);
      seen = JSON.stringify(run?.gates.map((g) => [g.name, g.state, g.summary]));
      return run?.state === 'done';
    }, 'the run done after the restart', 60_000).catch((error: unknown) => {
      throw new Error(`${String(error)}; gates: ${seen}\n--- stderr ---\n${second.stderr()}`);
    });

    // Exactly one Promotion, created once, labelled with the run; one audit event for it; the chain verifies.
    expect(k8s.count('create', 'Promotion')).toBe(1);
    const promotions = gitops.promotionsFor('dev');
    expect(promotions).toHaveLength(1);
    expect(promotions[0]).toMatchObject({ metadata: { labels: { 'shipgate.io/run': runId, 'shipgate.io/stage': 'dev' } }, spec: { stage: 'dev', freight } });
    const events = (await audit.exportRun(runId)).trim().split('\n').map((line) => z.object({ type: z.string(), data: z.record(z.string(), z.unknown()) }).parse(JSON.parse(line)));
    expect(events.filter((e) => e.type === 'promotion.created')).toHaveLength(1);
    expect(await audit.verify()).toMatchObject({ ok: true });
  });
});
