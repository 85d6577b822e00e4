import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, afterEach, expect, inject } from 'vitest';
import { z } from 'zod';
import { createAuditLog, type AuditLog } from '../../src/audit/audit-log.js';
import { parsePolicy } from '../../src/config/config.js';
import type { Policy } from '../../src/config/policy.js';
import { newRun, type Run } from '../../src/domain/run.js';
import { branchName } from '../../src/git/branch-names.js';
import { createQueues, type Queues } from '../../src/queue/queues.js';
import { APPROVE_ACTION_ID } from '../../src/render/approval.js';
import { createApprovalStore, type ApprovalStore } from '../../src/store/approval-store.js';
import { createRunStore, type RunStore } from '../../src/store/run-store.js';
import type { AnthropicServer } from './anthropic-server.js';
import { TEST_AUDIT_KEY_BYTES } from './audit-key.js';
import { SIGNING_SECRET, testEnv } from './bot.js';
import { eventually } from './eventually.js';
import { createShopGitOps, type GitOpsController, type GitOpsStage, type StageScript } from './gitops-controller.js';
import { freePort } from './global-redis.js';
import { testPrefix } from './ids.js';
import {
  startKubernetesServer,
  type JsonObject,
  type KubernetesServer,
  type KubernetesServerOptions,
} from './kubernetes-server.js';
import {
  killAll,
  removePolicyFile,
  spawnShipgate,
  waitForHealthy,
  writePolicyFile,
  type ShipgateProcess,
  type SpawnOptions,
} from './process.js';
import { sendBlockAction, type BlockActionFields, type SignedRequestOptions } from './slack-requests.js';
import { startSlackServer, type SlackMessage, type SlackServer } from './slack-server.js';
import { expectNoTrustViolations } from './trust-chains.js';

/**
 * The set-up the real-process kill and stop tests share (issue 14): what a test started and must
 * end, the local console world of the scripted model, and the Slack + Kubernetes world of the
 * deploy and approval gates. Each test keeps its own story (what it holds, when it kills, what it
 * asserts); only the scaffolding lives here.
 */

// --- what a test started ---------------------------------------------------------------------------

export interface ProcessScope {
  /** Spawns shipgate (see spawnShipgate); SIGKILLed when the scope ends if it is still running. */
  spawn(env: Record<string, string>, options?: SpawnOptions): ShipgateProcess;
  /** Runs when the scope ends, after every process is gone; the last registered runs first. */
  defer(cleanup: () => Promise<void> | void): void;
  /** A policy file (writePolicyFile), removed when the scope ends. */
  policyFile(text: string): string;
  /** A temp folder, removed when the scope ends. */
  tempDir(name: string): string;
  /** A connection to the tests' Redis, closed when the scope ends. */
  redis(): Redis;
}

/**
 * Everything one test (`each`) or one file's tests (`file`, for a world the tests share because
 * process start-up is most of their time) started, ended in one hook: processes first (so nothing
 * writes into a closed fake), then the rest in reverse order. Every cleanup runs even when one
 * throws; the first error fails the hook, so a deferred `expect` still fails the test.
 */
export function processScope(lifetime: 'each' | 'file' = 'each'): ProcessScope {
  const processes: ShipgateProcess[] = [];
  const cleanups: (() => Promise<void> | void)[] = [];
  const end = async (): Promise<void> => {
    await killAll(processes.splice(0));
    let first: Error | undefined;
    for (const cleanup of cleanups.splice(0).reverse()) {
      try {
        await cleanup();
      } catch (error) {
        first ??= error instanceof Error ? error : new Error(String(error));
      }
    }
    if (first !== undefined) throw first;
  };
  if (lifetime === 'each') afterEach(end);
  else afterAll(end);
  const defer = (cleanup: () => Promise<void> | void) => void cleanups.push(cleanup);
  return {
    spawn(env, options) {
      const p = spawnShipgate(env, options);
      processes.push(p);
      return p;
    },
    defer,
    policyFile(text) {
      const path = writePolicyFile(text);
      defer(() => removePolicyFile(path));
      return path;
    },
    tempDir(name) {
      const dir = mkdtempSync(join(tmpdir(), `shipgate-${name}-`));
      defer(() => rmSync(dir, { recursive: true, force: true }));
      return dir;
    },
    redis() {
      const redis = new Redis(inject('redisUrl'));
      defer(() => redis.disconnect());
      return redis;
    },
  };
}

/** Waits for /healthz (generously: start-up is slow on a loaded machine); on failure says what the process printed. */
export async function healthy(process: ShipgateProcess, port: number): Promise<void> {
  await waitForHealthy(port, 60_000).catch((error: unknown) => {
    throw new Error(
      `${String(error)} (exit ${String(process.child.exitCode)} ${String(process.child.signalCode)} pid ${String(process.child.pid)})\n--- stdout ---\n${process.stdout()}\n--- stderr ---\n${process.stderr()}`,
    );
  });
}

export interface Stopped {
  code: number | null;
  /** From the signal to the exit. */
  ms: number;
}

/** Sends SIGTERM (as a deploy or a node drain does) and measures how long the process takes to exit. */
export async function sigterm(process: ShipgateProcess): Promise<Stopped> {
  const sent = Date.now();
  process.child.kill('SIGTERM');
  const code = await process.exited;
  return { code, ms: Date.now() - sent };
}

/** SIGKILL: nothing of the process runs after it. */
export async function sigkill(process: ShipgateProcess): Promise<void> {
  process.child.kill('SIGKILL');
  await process.exited;
}

/** Waits until the run is done or failed and returns it; a timeout names its gates as last seen. */
export async function runEnded(store: RunStore, runId: string, what: string, timeoutMs: number): Promise<Run> {
  let seen = '';
  return eventually(
    async () => {
      const run = await store.get(runId);
      seen = JSON.stringify(run?.gates.map((g) => [g.name, g.state, g.summary]));
      return run?.state === 'done' || run?.state === 'failed' ? run : undefined;
    },
    what,
    timeoutMs,
  ).catch((error: unknown) => {
    throw new Error(`${String(error)}; gates: ${seen}`);
  });
}

// --- local mode: the console chat, the sample repository, the scripted model -------------------------

/** The local-mode policy of the sample repository (local forge, real sandbox). */
export const DEMO_POLICY =
  'repos:\n  demo/shop:\n    path: ./repos/shop.git\n    sample: true\n    checks: { test: node --test }\n    ci: { test: node --test }\n';

/** A scripted model answer: one editor call on the sample repository. */
export const editorTurn = (id: string, input: Record<string, string>) => ({
  content: [{ type: 'tool_use' as const, id, name: 'str_replace_based_edit_tool', input }],
});

/** The agent's first turn on the sample repository: add GET /healthz. */
export const addHealthz = editorTurn('t1', {
  command: 'str_replace',
  path: '/repo/src/app.js',
  old_str: "  '/products':",
  new_str: "  '/healthz': () => ({ status: 200, body: { ok: true } }),\n  '/products':",
});

/** The agent's closing turn. */
export const saysDone = (text: string) => ({ content: [{ type: 'text' as const, text }] });

export interface LocalWorld {
  prefix: string;
  /** The policy file; the sample repository is seeded beside it. */
  policy: string;
  /** A console-mode process's environment against the scripted model, on a fresh prefix. */
  env: Record<string, string>;
  redis: Redis;
  store: RunStore;
}

/** The demo policy, a fresh prefix, the model's address and key, and the run store over that prefix. */
export function localWorld(scope: ProcessScope, name: string, model: AnthropicServer): LocalWorld {
  const prefix = testPrefix(name);
  const policy = scope.policyFile(DEMO_POLICY);
  const env = {
    REDIS_URL: inject('redisUrl'),
    PORT: '0',
    SHIPGATE_CONFIG: policy,
    SHIPGATE_REDIS_PREFIX: prefix,
    ANTHROPIC_BASE_URL: model.baseUrl,
    ANTHROPIC_API_KEY: 'sk-ant-scripted',
  };
  const redis = scope.redis();
  return { prefix, policy, env, redis, store: createRunStore({ redis, prefix, clock: () => new Date() }) };
}

/** Waits for the console prompt, types `/ship demo/shop <task>` and returns the queued run's id. */
export async function shipFromConsole(p: ShipgateProcess, task = 'add a /healthz endpoint'): Promise<string> {
  await p.waitForOutput(/console chat — you are ULOCAL/, 60_000);
  p.child.stdin.write(`/ship demo/shop ${task}\n`);
  return (await p.waitForOutput(/Queued run (sg-[a-z0-9]{8})/, 30_000))[1] ?? '';
}

/** Waits until the scripted model has had `n` requests (a held answer is one the bot is waiting on). */
export async function modelAsked(model: AnthropicServer, n: number, what: string, timeoutMs: number): Promise<void> {
  await eventually(async () => (model.requests.length >= n ? true : undefined), what, timeoutMs);
}

// --- the deploy and approval gates: Slack, the cluster, web and worker processes ---------------------

export const REQUESTER = 'UALICE';
export const APPROVER = 'UAPPROVER';
export const SECOND_APPROVER = 'UCAROL';
export const CHANNEL = 'CSHOP';
export const TASK = 'add a health module';

/**
 * The pipeline of the approval tests, as the policy says it and as the scripted controller runs it:
 * dev (Kargo's to promote, or the bot's with `promote: bot`), then prod behind an approval by
 * APPROVER or SECOND_APPROVER, promoted only ever by the bot's Promotion once approved.
 */
export function approvalPipeline(devPromotedBy: 'kargo' | 'bot'): { policy: string; stages: GitOpsStage[] } {
  const bot = devPromotedBy === 'bot';
  return {
    policy: `
repos:
  acme/shop: { pipeline: shop, channels: [${CHANNEL}] }
pipelines:
  shop:
    kargo: { project: shop, warehouse: shop }
    stages:
      - { name: dev, kargoStage: dev, argocdApps: [shop-dev]${bot ? ', promote: bot' : ''} }
      - name: prod
        kargoStage: prod
        argocdApps: [shop-prod]
        approval: { approvers: [${APPROVER}, ${SECOND_APPROVER}], minApprovals: 1, expiresAfter: 1h }
budgets: { maxRunMinutes: 30 }
`,
    stages: [
      { name: 'dev', apps: ['shop-dev'], ...(bot ? { autoPromote: false } : {}) },
      { name: 'prod', apps: ['shop-prod'], autoPromote: false },
    ],
  };
}

export interface GateWorldOptions {
  /** The Redis prefix's name. */
  name: string;
  /** The policy text; its repository is `acme/shop`, its pipeline `shop`. */
  policy: string;
  /** The scripted Kargo/Argo CD stages. */
  stages: GitOpsStage[];
  /** What a stage's Promotions and apps do (default: they succeed, healthy). */
  scripts?: Record<string, StageScript>;
  /** Between two controller writes (default the controller's). */
  stepDelayMs?: number;
  /** The local API server's options (TLS and the built-in kinds for a diagnosis, a hook that holds an answer). */
  kubernetes?: KubernetesServerOptions;
  /** More environment for every process (a model, a forge). */
  env?: Record<string, string>;
  /** `split`: a web process takes the clicks and a worker runs the gates (production's shape); `one`: one process does both. */
  roles: 'split' | 'one';
}

export type GateRole = 'web' | 'worker';

export interface GateWorld {
  slack: SlackServer;
  k8s: KubernetesServer;
  gitops: GitOpsController;
  /** The Redis key prefix of the processes and the stores. */
  prefix: string;
  policy: Policy;
  store: RunStore;
  approvals: ApprovalStore;
  audit: AuditLog;
  queues: Queues;
  /** Where Slack posts the clicks (the web process, or the one process). */
  eventsUrl: string;
  /** Starts the processes and waits until each serves /healthz. */
  start(): Promise<void>;
  /** The current process of a role (`one`: the one process is the worker). */
  process(role: GateRole): ShipgateProcess;
  /** Starts the role's process again, on the same port and environment. */
  restart(role: GateRole): Promise<void>;
}

/**
 * Slack, the local Kubernetes API server with the scripted Kargo/Argo CD controller (running),
 * Redis stores of a fresh prefix, and (on `start`) the shipgate processes; the fakes must have seen
 * nothing they did not expect when the scope ends.
 */
export async function createGateWorld(scope: ProcessScope, options: GateWorldOptions): Promise<GateWorld> {
  const slack = await startSlackServer({ token: 'xoxb-test-token-not-real' });
  const k8s = await startKubernetesServer(options.kubernetes ?? {});
  // Registered first, so it runs last: after the processes are gone and the fakes are closed.
  scope.defer(() => expect([...k8s.unexpected, ...slack.unexpected]).toEqual([]));
  scope.defer(() => slack.close());
  scope.defer(() => k8s.close());
  const dir = scope.tempDir(options.name);
  const gitops = createShopGitOps(k8s, {
    stages: options.stages,
    ...(options.scripts === undefined ? {} : { scripts: options.scripts }),
    ...(options.stepDelayMs === undefined ? {} : { stepDelayMs: options.stepDelayMs }),
  });
  scope.defer(() => gitops.stop());
  gitops.install();
  gitops.start();

  const prefix = testPrefix(options.name);
  const redisUrl = new URL(inject('redisUrl'));
  const redis = scope.redis();
  const clock = () => new Date();
  const audit = createAuditLog({ redis, prefix, clock, key: TEST_AUDIT_KEY_BYTES });
  scope.defer(() => audit.close());
  const queues = createQueues({ connection: { host: redisUrl.hostname, port: Number(redisUrl.port) }, prefix });
  scope.defer(() => queues.close());

  const [webPort, workerPort] = [await freePort(), await freePort()];
  // At info, so that a failure's message can quote what the worker did.
  const common = testEnv(slack, prefix, {
    SHIPGATE_CONFIG: scope.policyFile(options.policy),
    LOG_LEVEL: 'info',
    ...options.env,
  });
  const kubeconfig = k8s.writeKubeconfig(dir);
  const split = options.roles === 'split';
  const envs: Record<GateRole, Record<string, string>> = {
    web: { ...common, SHIPGATE_ROLE: 'web', PORT: String(webPort) },
    worker: split
      ? { ...common, SHIPGATE_ROLE: 'worker', PORT: String(workerPort), KUBECONFIG: kubeconfig }
      : { ...common, PORT: String(workerPort), KUBECONFIG: kubeconfig },
  };
  const ports: Record<GateRole, number> = { web: webPort, worker: workerPort };
  const current: Partial<Record<GateRole, ShipgateProcess>> = {};
  const roles: GateRole[] = split ? ['web', 'worker'] : ['worker'];
  const launch = async (role: GateRole): Promise<void> => {
    const p = scope.spawn(envs[role]);
    current[role] = p;
    await healthy(p, ports[role]);
  };

  return {
    slack,
    k8s,
    gitops,
    prefix,
    policy: parsePolicy(options.policy, 'policy'),
    store: createRunStore({ redis, prefix, clock }),
    approvals: createApprovalStore({ redis, prefix }),
    audit,
    queues,
    eventsUrl: `http://127.0.0.1:${split ? webPort : workerPort}/slack/events`,
    async start() {
      await Promise.all(roles.map(launch));
    },
    process(role) {
      const p = current[split ? role : 'worker'];
      if (p === undefined) throw new Error(`no ${role} process started`);
      return p;
    },
    restart(role) {
      return launch(split ? role : 'worker');
    },
  };
}

export interface SeededRun {
  runId: string;
  freight: string;
}

/**
 * A run whose Git half is done (merged as `mergeSha`), queued at `freight`, with the evidence those
 * gates write (commit, pull request, green CI, merge) already in the audit log, keyed as the worker
 * and the gates key them, so the trust checker sees a whole chain and nothing is written twice. Kargo
 * makes the merge commit's Freight.
 */
export async function seedMergedRun(world: GateWorld, runId: string, mergeSha: string, pr: number): Promise<SeededRun> {
  const freight = world.gitops.produceFreight(mergeSha);
  const base = newRun(world.policy, {
    id: runId,
    repo: 'acme/shop',
    task: TASK,
    requester: { userId: REQUESTER },
    channel: CHANNEL,
    now: new Date(),
  });
  const at = new Date().toISOString();
  const branch = branchName(runId, TASK);
  const commit = mergeSha.replace(/^./, 'a');
  const run: Run = {
    ...base,
    gates: base.gates.map((gate) =>
      ['agent', 'pr', 'ci', 'merge'].includes(gate.name)
        ? { ...gate, state: 'passed', summary: 'done before the test', startedAt: at, endedAt: at }
        : gate,
    ),
    artifacts: { agent: { branch, commitSha: commit }, pr: { number: pr }, merge: { commitSha: mergeSha } },
  };
  await world.store.create(run, `delivery-${runId}`);
  const { audit } = world;
  const bot = 'shipgate';
  await audit.append({
    type: 'run.requested',
    actor: REQUESTER,
    runId,
    data: { repo: run.repo, task: run.task, channel: CHANNEL, gates: run.gates.map((g) => g.name), at: run.createdAt },
    key: `${runId}.requested`,
  });
  await audit.append({
    type: 'commit.created',
    actor: bot,
    runId,
    data: { gate: 'agent', commit, branch },
    key: `${runId}.agent.once.commit.created.${commit}`,
  });
  await audit.append({
    type: 'pr.opened',
    actor: bot,
    runId,
    data: { gate: 'pr', number: pr, head: branch, commit },
    key: `${runId}.pr.once.pr.opened.${pr}`,
  });
  await audit.append({
    type: 'ci.verdict',
    actor: bot,
    runId,
    data: { gate: 'ci', commit, pr, verdict: 'passed' },
    key: `${runId}.ci.${at}.ci.verdict.${commit}`,
  });
  await audit.append({
    type: 'pr.merged',
    actor: bot,
    runId,
    data: { gate: 'merge', pr, mergeCommit: mergeSha, head: branch },
    key: `${runId}.merge.once.pr.merged.${mergeSha}`,
  });
  await world.queues.scheduleRun(runId, 0);
  return { runId, freight };
}

const eventSchema = z.object({ type: z.string(), actor: z.string(), data: z.record(z.string(), z.unknown()) });
export type StoredEvent = z.infer<typeof eventSchema>;

/** The run's audit events as exported (JSON Lines), parsed. */
export async function eventsOf(world: GateWorld, runId: string): Promise<StoredEvent[]> {
  const lines = (await world.audit.exportRun(runId)).trim().split('\n');
  return lines.map((line) => eventSchema.parse(JSON.parse(line)));
}

/** Waits until the run is done and its end audited once; a timeout names its gates and what the worker printed. */
export async function waitDone(world: GateWorld, runId: string, timeoutMs = 60_000): Promise<void> {
  let seen = '';
  await eventually(
    async () => {
      const run = await world.store.get(runId);
      seen = JSON.stringify(run?.gates.map((g) => [g.name, g.state, g.summary]));
      // The end is stored first, then audited (a worker dying in between audits it on the next look).
      return run?.state === 'done' && (await eventsOf(world, runId)).filter((e) => e.type === 'run.done').length === 1;
    },
    `run ${runId} done, and audited so`,
    timeoutMs,
  ).catch((error: unknown) => {
    const worker = world.process('worker');
    throw new Error(
      `${String(error)}; gates: ${seen}\n--- worker output ---\n${worker.stdout().slice(-6000)}\n${worker.stderr()}`,
    );
  });
}

const buttonBlocks = z.array(
  z.looseObject({
    type: z.string(),
    elements: z.array(z.looseObject({ action_id: z.string().optional(), value: z.string().optional() })).optional(),
  }),
);

export function approveButtonOf(message: SlackMessage): string | undefined {
  const blocks = buttonBlocks.safeParse(message.blocks ?? []);
  if (!blocks.success) return undefined;
  return blocks.data.flatMap((block) => block.elements ?? []).find((element) => element.action_id === APPROVE_ACTION_ID)
    ?.value;
}

/**
 * The approval request the outbox posted in the run's thread, with the value its Approve button
 * carries, once `approval.requested` is audited. Known race, not these tests' subject: the outbox
 * posts the message first and audits the request after marking it posted, so a click in between
 * (Slack shows the buttons at once) is audited before the request it answers and the trust checker
 * flags it (approval-requested, approvals-count). So this waits for the audit before clicking.
 */
export async function approvalRequest(
  world: GateWorld,
  runId: string,
): Promise<{ message: SlackMessage; value: string }> {
  const found = await world.slack.waitFor(
    (s) => {
      const message = s.messages(CHANNEL).find((m) => approveButtonOf(m)?.startsWith(`${runId}|`) === true);
      const value = message === undefined ? undefined : approveButtonOf(message);
      return (
        message !== undefined &&
        value !== undefined &&
        message.thread_ts !== undefined &&
        message.thread_ts !== message.ts && { message, value }
      );
    },
    60_000,
    `the approval request of ${runId} in its thread`,
  );
  await eventually(
    async () => (await eventsOf(world, runId)).some((e) => e.type === 'approval.requested'),
    'the approval request audited',
  );
  return found;
}

/** One signed Approve click, as Slack delivers it; Slack's ack must be a 200. */
export async function click(
  world: GateWorld,
  fields: Omit<BlockActionFields, 'channel_id' | 'action_id'>,
  options: SignedRequestOptions = {},
): Promise<void> {
  const response = await sendBlockAction(
    world.eventsUrl,
    SIGNING_SECRET,
    { channel_id: CHANNEL, action_id: APPROVE_ACTION_ID, ...fields },
    options,
  );
  expect(response.status).toBe(200);
}

/** The answers (ephemeral, to the clicker only) a user got so far. */
export const answersTo = (world: GateWorld, userId: string): string[] =>
  world.slack.ephemerals.filter((e) => e.user === userId).map((e) => e.text ?? '');

const labelled = z.object({ metadata: z.object({ labels: z.record(z.string(), z.string()).optional() }) });

/** The Promotions the API server stores for this run (by the label the bot gives its own). */
export function runPromotions(world: GateWorld, runId: string): JsonObject[] {
  return world.k8s
    .list('Promotion', 'shop')
    .filter((p) => labelled.safeParse(p).data?.metadata.labels?.['shipgate.io/run'] === runId);
}

/** How many approval requests were posted (not updated) for this run. */
export function approvalPosts(world: GateWorld, runId: string): number {
  return world.slack.callsOf('chat.postMessage').filter((call) => {
    const text = JSON.stringify(call.body['blocks'] ?? []);
    return text.includes('Approval needed') && text.includes(runId);
  }).length;
}

const stageOf = (object: JsonObject | undefined): string | undefined =>
  labelled.safeParse(object).data?.metadata.labels?.['shipgate.io/stage'];

/**
 * The bot's Promotions of the run: one per stage of `botStages` (default the production one alone),
 * each created once over HTTP (`createsBefore`: the API server's count before this run) and audited
 * once. The production one carries who asked and who approved, and is audited with its approvers;
 * the chain of custody over the whole log breaks no trust invariant and verifies.
 */
export async function expectPromotedOnce(
  world: GateWorld,
  { runId, freight }: SeededRun,
  createsBefore: number,
  botStages: readonly string[] = ['prod'],
): Promise<void> {
  const stages = [...botStages].sort();
  const promotions = runPromotions(world, runId);
  expect(promotions.map(stageOf).sort()).toEqual(stages);
  expect(world.k8s.count('create', 'Promotion') - createsBefore).toBe(stages.length);
  const prod = promotions.find((p) => stageOf(p) === 'prod');
  expect(prod).toMatchObject({
    metadata: {
      labels: { 'shipgate.io/run': runId, 'shipgate.io/stage': 'prod' },
      annotations: {
        'shipgate.io/requested-by': REQUESTER,
        'shipgate.io/repository': 'acme/shop',
        'shipgate.io/approval-freight': freight,
        'shipgate.io/approved-by': expect.stringContaining(APPROVER) as unknown,
        'shipgate.io/approved-at': expect.stringMatching(/^\d{4}-\d\d-\d\dT/) as unknown,
        'shipgate.io/thread': expect.stringContaining(CHANNEL) as unknown,
      },
    },
    spec: { stage: 'prod', freight },
  });
  const events = await eventsOf(world, runId);
  const created = events.filter((e) => e.type === 'promotion.created');
  expect(created.map((e) => e.data['stage']).sort()).toEqual(stages);
  expect(created.find((e) => e.data['stage'] === 'prod')?.data).toMatchObject({
    stage: 'prod',
    freight,
    promotion: z.object({ metadata: z.object({ name: z.string() }) }).safeParse(prod).data?.metadata.name,
    approvers: [APPROVER],
  });
  expect(events.filter((e) => e.type === 'approval.requested')).toHaveLength(1);
  expect(events.filter((e) => e.type === 'approval.approved').map((e) => e.actor)).toEqual([APPROVER]);
  expectNoTrustViolations(await world.audit.allEvents(), world.policy);
  expect(await world.audit.verify()).toMatchObject({ ok: true });
}
