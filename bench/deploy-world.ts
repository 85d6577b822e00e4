import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { createShipgate, type Shipgate, type ShipgateOptions } from '../src/app/create-shipgate.js';
import { loadConfig, type Config } from '../src/config/config.js';
import type { Policy } from '../src/config/policy.js';
import { newRun, type Gate, type Run } from '../src/domain/run.js';
import { createLogger } from '../src/log.js';
import { createShopGitOps, type GitOpsController, type StageScript } from '../test/helpers/gitops-controller.js';
import { startKubernetesServer, type JsonObject, type JsonValue, type KubernetesServer } from '../test/helpers/kubernetes-server.js';
import { startSlackServer, type SlackServer } from '../test/helpers/slack-server.js';
import { BOT_TOKEN, SIGNING_SECRET } from './bench-bot.js';

/**
 * The deploy gates' world for the benchmarks, without vitest: the local Kubernetes API server
 * (real CRDs), the scripted Kargo/Argo CD controller writing to it, the fake Slack Web API, and
 * shipgate in-process with real client-node informers pointed at the server (as
 * test/integration/deploy-gates.test.ts wires it). Runs are created directly in the run store with
 * the Git gates already passed (agent, PR, CI and merge are other benchmarks' business), then
 * queued the way `/ship` queues a run.
 */

export const PROJECT = 'shop';
export const CHANNEL = 'CSHOP';
export const SOURCE_REPO = 'https://github.com/acme/shop';

export const DEPLOY_POLICY = `
command: /ship
repos:
  acme/shop:
    pipeline: shop
pipelines:
  shop:
    kargo: { project: ${PROJECT}, warehouse: shop }
    stages:
      - { name: dev, kargoStage: dev, argocdApps: [shop-dev] }
      - { name: staging, kargoStage: staging, argocdApps: [shop-staging] }
limits: { activeRunsPerUser: 5000, activeRuns: 5000 }
budgets: { maxDeployIterations: 1 }
`;

export function deployPolicy(redisUrl: string): Policy {
  return loadConfig({ REDIS_URL: redisUrl, LOG_LEVEL: 'silent' }, { readFile: () => DEPLOY_POLICY }).policy;
}

export function deployEnv(redisUrl: string, prefix: string, slackApiUrl: string, kubeconfig: string): Record<string, string> {
  return {
    REDIS_URL: redisUrl,
    SHIPGATE_REDIS_PREFIX: prefix,
    PORT: '0',
    SLACK_BOT_TOKEN: BOT_TOKEN,
    SLACK_SIGNING_SECRET: SIGNING_SECRET,
    SLACK_API_URL: slackApiUrl,
    SHIPGATE_AUDIT_KEY: randomBytes(32).toString('hex'),
    LOG_LEVEL: 'silent',
    KUBECONFIG: kubeconfig,
    KARGO_URL: 'https://kargo.example.test',
    ARGOCD_URL: 'https://argocd.example.test',
  };
}

/** Key of a (Freight, stage) decision in the write log. */
export const decisionKey = (freight: string, stage: string): string => `${freight}/${stage}`;

/**
 * When the controller wrote the change that decides each gate (Date.now(), the clock the fake Slack
 * stamps calls with): a Freight's creation decides `freight`; for a stage, the first write that
 * made the Freight verified there — the Stage's verificationHistory entry turning `Successful` for
 * stages with verification, else the Freight's `status.verifiedIn[stage]` (Kargo's order: the
 * verification result, then verifiedIn, in the same synchronous step of the controller).
 */
export interface WriteLog {
  freightCreated: Map<string, number>;
  stageDecided: Map<string, number>;
  /** Every controller write, by kind. */
  writes: Map<string, number>;
}

const isObject = (value: JsonValue | undefined): value is JsonObject => typeof value === 'object' && value !== null && !Array.isArray(value);

function noteWrite(log: WriteLog, object: JsonObject, at: number): void {
  const kind = typeof object['kind'] === 'string' ? object['kind'] : '?';
  log.writes.set(kind, (log.writes.get(kind) ?? 0) + 1);
  const metadata = object['metadata'];
  const name = isObject(metadata) && typeof metadata['name'] === 'string' ? metadata['name'] : '';
  const status = object['status'];
  if (kind === 'Freight') {
    if (!log.freightCreated.has(name)) log.freightCreated.set(name, at);
    const verifiedIn = isObject(status) ? status['verifiedIn'] : undefined;
    if (isObject(verifiedIn)) {
      for (const stage of Object.keys(verifiedIn)) if (!log.stageDecided.has(decisionKey(name, stage))) log.stageDecided.set(decisionKey(name, stage), at);
    }
  }
  if (kind === 'Stage' && isObject(status) && Array.isArray(status['freightHistory'])) {
    for (const stay of status['freightHistory']) {
      if (!isObject(stay) || !Array.isArray(stay['verificationHistory'])) continue;
      const latest = stay['verificationHistory'][0];
      if (!isObject(latest) || latest['phase'] !== 'Successful' || !isObject(stay['items'])) continue;
      for (const item of Object.values(stay['items'])) {
        if (!isObject(item) || typeof item['name'] !== 'string') continue;
        const key = decisionKey(item['name'], name);
        if (!log.stageDecided.has(key)) log.stageDecided.set(key, at);
      }
    }
  }
}

/** The server as the controller sees it, with every controller write timed into `log`. */
function observedServer(server: KubernetesServer, log: WriteLog): KubernetesServer {
  return new Proxy(server, {
    get(target, property) {
      if (property === 'put')
        return (object: JsonObject): JsonObject => {
          const stored = target.put(object);
          noteWrite(log, stored, Date.now());
          return stored;
        };
      if (property === 'modify')
        return (kind: string, namespace: string, name: string, mutate: (object: JsonObject) => void): JsonObject => {
          const stored = target.modify(kind, namespace, name, mutate);
          noteWrite(log, stored, Date.now());
          return stored;
        };
      return Reflect.get(target, property, target) as unknown;
    },
  });
}

export interface Cluster {
  k8s: KubernetesServer;
  gitops: GitOpsController;
  log: WriteLog;
  kubeconfig: string;
  close(): Promise<void>;
}

/** The Kubernetes API server with the pipeline installed (Warehouse, Stages, Applications); `start` runs the controller. */
export async function startCluster(options: { start: boolean; scripts?: Record<string, StageScript> }): Promise<Cluster> {
  const k8s = await startKubernetesServer();
  const dir = mkdtempSync(join(tmpdir(), 'shipgate-bench-k8s-'));
  const log: WriteLog = { freightCreated: new Map(), stageDecided: new Map(), writes: new Map() };
  const gitops = createShopGitOps(observedServer(k8s, log), options.scripts === undefined ? {} : { scripts: options.scripts });
  gitops.install();
  if (options.start) gitops.start();
  return {
    k8s,
    gitops,
    log,
    kubeconfig: k8s.writeKubeconfig(dir),
    async close() {
      if (options.start) await gitops.stop();
      await k8s.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface DeployBot {
  app: Shipgate;
  slack: SlackServer;
  config: Config;
  stop(): Promise<void>;
}

export async function startDeployBot(
  redisUrl: string,
  prefix: string,
  kubeconfig: string,
  options: Pick<ShipgateOptions, 'tuning' | 'kubernetesWakeUps' | 'chatWritesPerSecond'> = {},
): Promise<DeployBot> {
  const slack = await startSlackServer({ token: BOT_TOKEN });
  let app: Shipgate | undefined;
  try {
    const config = loadConfig(deployEnv(redisUrl, prefix, slack.apiUrl, kubeconfig), { readFile: () => DEPLOY_POLICY });
    const log = createLogger({ level: 'silent', destination: new PassThrough() });
    // Production card spacing (3 s) and write pacing unless the caller says otherwise.
    app = createShipgate({ config, log, ...options });
    const started = app;
    await started.start();
    return {
      app: started,
      slack,
      config,
      async stop() {
        await started.stop();
        await slack.close();
      },
    };
  } catch (error) {
    await app?.stop().catch(() => undefined);
    await slack.close();
    throw error;
  }
}

/** A 40-hex "merge commit" that is the same for the same seed. */
export const fakeSha = (seed: string): string => createHash('sha1').update(seed).digest('hex');

export interface DeployRunSpec {
  id: string;
  mergeSha: string;
  userId: string;
  /** Set: the freight gate is passed too with this Freight (the run starts at stage:dev). */
  freight?: { name: string } | undefined;
}

/**
 * A run whose Git gates passed (and, with `freight`, its freight gate), as the real gates would
 * have left it: the merge commit recorded, the PR and branch named.
 */
export function deployRun(policy: Policy, spec: DeployRunSpec, now: Date): Run {
  const run = newRun(policy, { id: spec.id, repo: 'acme/shop', task: `benchmark change ${spec.id}: add a health module`, requester: { userId: spec.userId, name: 'bench' }, channel: CHANNEL, now });
  const at = now.toISOString();
  const pass = (gate: Gate, summary: string): Gate => ({ ...gate, state: 'passed', summary, startedAt: at, endedAt: at });
  const number = Number.parseInt(spec.mergeSha.slice(0, 6), 16) % 100_000;
  return {
    ...run,
    gates: run.gates.map((gate) => {
      switch (gate.name) {
        case 'agent':
          return pass(gate, 'benchmark: set directly (no agent ran)');
        case 'pr':
          return pass(gate, `benchmark: PR #${number}`);
        case 'ci':
          return pass(gate, 'benchmark: CI green');
        case 'merge':
          return pass(gate, `benchmark: merged as ${spec.mergeSha.slice(0, 12)}`);
        case 'freight':
          return spec.freight === undefined ? gate : pass(gate, `benchmark: Freight ${spec.freight.name}`);
        default:
          return gate;
      }
    }),
    links: { pr: `https://github.com/acme/shop/pull/${number}` },
    artifacts: {
      agent: { branch: `shipgate/${spec.id}`, commitSha: fakeSha(`${spec.id}/head`) },
      pr: { number },
      ci: {},
      merge: { commitSha: spec.mergeSha },
      ...(spec.freight === undefined ? {} : { freight: { name: spec.freight.name, revisions: [{ repoURL: SOURCE_REPO, revision: spec.mergeSha }] } }),
    },
  };
}

/** Stores the run and queues its card and first job exactly as `/ship` does (commands/ship-command.ts). */
export async function enqueueDeployRun(app: Pick<Shipgate, 'store' | 'queues'>, policy: Policy, run: Run): Promise<void> {
  const created = await app.store.create(run, `bench.${run.id}`, policy.limits, [app.queues.cardJob(run.id, run.version), app.queues.runJob(run.id, run.jobSeq)]);
  if (!created.created) throw new Error(`bench: run ${run.id} was not created (${created.reason})`);
}
