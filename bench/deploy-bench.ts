import { spawn } from 'node:child_process';
import { resolve } from 'node:path';
import type { KubeVerb } from '../test/helpers/kubernetes-server.js';
import type { SlackServer } from '../test/helpers/slack-server.js';
import { startSlackServer } from '../test/helpers/slack-server.js';
import { createRedis, type Redis } from '../src/redis.js';
import { currentGate, type Run } from '../src/domain/run.js';
import { BOT_TOKEN } from './bench-bot.js';
import {
  PROJECT,
  decisionKey,
  deployPolicy,
  deployRun,
  enqueueDeployRun,
  fakeSha,
  startCluster,
  startDeployBot,
  type Cluster,
  type DeployBot,
} from './deploy-world.js';
import { MEMORY_HOLD_SHA, memoryRunId, type ChildInput, type ChildReply, type ChildRequest, type ChildStatus } from './deploy-bot-process.js';
import { bytes, maxPerBucket, ms, num, ratio, summarise, type LatencySummary } from './stats.js';
import { usedMemory } from './store-bench.js';

/**
 * The deploy gates' SPEC §10 targets (sections 4–6 of `npm run bench`):
 *
 *   4. Gate change → thread reply: for each deploy gate result, the time from the controller's
 *      write that decided it to the reply reaching the fake Slack, with informer events waking the
 *      runs (production poll settings) vs a baseline bot whose runs only wake on a 10 s poll.
 *   5. LIST and WATCH requests per kind while 100 runs wait on the deploy gates and the controller
 *      keeps promoting new Freight (target: one LIST and one WATCH per kind, nothing per run).
 *   6. Memory per waiting run with 1,000 runs on the deploy gates: Redis used_memory and the bot
 *      process's heap (a separate process, so the fakes' memory is not counted).
 */

export const LATENCY_RUNS = 20;
/**
 * One run's deploy gates ask for about six Slack writes (three gate replies, the end, card updates):
 * at a Freight per second that stays under the 10 writes/s pacing. (In trial runs at one per 500 ms the
 * pacing saturated and the replies queued behind it: p95 1.3-1.9 s, nearly all of it after the verdict.)
 */
const FREIGHT_SPACING_MS = 1_000;
export const BASELINE_POLL_MS = 10_000;
export const IN_FLIGHT_RUNS = 100;
export const IN_FLIGHT_WINDOW_MS = 30_000;
const CHURN_EVERY_MS = 2_000;
export const MEMORY_RUNS = 1_000;
const MEMORY_WARM_RUNS = 100;
export const GATE_P95_TARGET_MS = 2_000;
const KINDS = ['Freight', 'Stage', 'Promotion', 'Application', 'AnalysisRun'] as const;
const DEPLOY_GATES = ['freight', 'stage:dev', 'stage:staging'] as const;

export interface Hooks {
  progress(message: string): void;
  cleanups: (() => Promise<void>)[];
}

const sleep = (milliseconds: number) => new Promise<void>((r) => setTimeout(r, milliseconds));

async function waitUntil(predicate: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`deploy bench: timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(100);
  }
}

/** Starts something and registers its clean-up; returns a function that runs (and unregisters) the clean-up early. */
function owned(hooks: Hooks, thing: { close?: () => Promise<void>; stop?: () => Promise<void> }): () => Promise<void> {
  let done = false;
  const close = async (): Promise<void> => {
    if (done) return;
    done = true;
    await (thing.stop ?? thing.close)?.call(thing);
  };
  hooks.cleanups.push(close);
  return close;
}

function describeStates(runs: readonly Run[]): string {
  const states = new Map<string, number>();
  for (const run of runs) {
    const gate = currentGate(run);
    const where = gate === undefined ? run.state : `${run.state} at ${gate.name}`;
    states.set(where, (states.get(where) ?? 0) + 1);
  }
  return [...states].map(([state, count]) => `${count} ${state}`).join(', ');
}

// --- 4. gate change → thread reply ---------------------------------------------------------------

export interface LatencyPhase {
  /** Every deploy gate result that was replied. */
  all: LatencySummary;
  /** p95 over every expected result, an unreplied one counting as longer than the wait (then Infinity). */
  p95Expected: number;
  byGate: Record<(typeof DEPLOY_GATES)[number], LatencySummary>;
  /** Where the time went: the deciding write → the verdict stored (gate endedAt), and the verdict → the reply at the fake Slack. */
  toVerdict: LatencySummary;
  verdictToReply: LatencySummary;
  /** Results expected (runs × gates) and found (a reply and a deciding write). */
  expected: number;
  found: number;
  runStates: string;
  /** Slack writes (posts and updates) while the Freight came, and the most in one wall-clock second. */
  writes: number;
  peakWritesPerSecond: number;
  /** How long after the last Freight the phase waited for replies. */
  waitedMs: number;
  /** True when the wait ended by its time limit; false when every run was done or stuck for good. */
  timedOut: boolean;
  /** Runs not done at the end (stuck for good unless `timedOut`). */
  unfinished: number;
  /** The current gate's summary of runs that did not finish (distinct, shortened). */
  stuck: string[];
}

/** The Freight the Stage got last (its freightHistory[0]), if any. */
function newestInStage(cluster: Cluster, stage: string): string | undefined {
  const status = cluster.k8s.get('Stage', PROJECT, stage)?.['status'];
  const history = typeof status === 'object' && status !== null && !Array.isArray(status) ? status['freightHistory'] : undefined;
  const newest = Array.isArray(history) ? history[0] : undefined;
  const items = typeof newest === 'object' && newest !== null && !Array.isArray(newest) ? newest['items'] : undefined;
  if (typeof items !== 'object' || items === null || Array.isArray(items)) return undefined;
  for (const item of Object.values(items)) {
    if (typeof item === 'object' && item !== null && !Array.isArray(item) && typeof item['name'] === 'string') return item['name'];
  }
  return undefined;
}

interface GateReply {
  runId: string;
  gate: string;
  outcome: string;
  at: number;
}

/** The first successful thread reply per key, read from its metadata key `<run>.<gate>.<attempt>.<outcome>`. */
function gateReplies(slack: SlackServer): GateReply[] {
  const seen = new Set<string>();
  const replies: GateReply[] = [];
  for (const call of slack.calls) {
    if (call.method !== 'chat.postMessage' || call.status !== 200 || call.error !== undefined || call.body['thread_ts'] === undefined) continue;
    const metadata = call.body['metadata'];
    const payload = typeof metadata === 'object' && metadata !== null && !Array.isArray(metadata) ? metadata['event_payload'] : undefined;
    const key = typeof payload === 'object' && payload !== null && !Array.isArray(payload) ? payload['key'] : undefined;
    if (typeof key !== 'string' || seen.has(key)) continue;
    seen.add(key);
    const parts = key.split('.');
    const [runId, gate] = parts;
    if (runId === undefined || gate === undefined || parts.length < 4) continue;
    replies.push({ runId, gate, outcome: parts[parts.length - 1] ?? '', at: call.at });
  }
  return replies;
}

async function latencyPhase(
  redisUrl: string,
  hooks: Hooks,
  options: { name: string; wake: boolean; deployPollMs?: number },
): Promise<LatencyPhase & { cluster: Cluster; bot: DeployBot; closeAll: () => Promise<void> }> {
  const policy = deployPolicy(redisUrl);
  const cluster = await startCluster({ start: true });
  const closeCluster = owned(hooks, cluster);
  const bot = await startDeployBot(redisUrl, `bench-deploy-${options.name}`, cluster.kubeconfig, {
    kubernetesWakeUps: options.wake,
    ...(options.deployPollMs === undefined ? {} : { tuning: { deployPollMs: options.deployPollMs } }),
  });
  const closeBot = owned(hooks, bot);
  const closeAll = async (): Promise<void> => {
    await closeBot();
    await closeCluster();
  };

  const runs = Array.from({ length: LATENCY_RUNS }, (_, i) => {
    const id = `sg-${options.name.slice(0, 1)}lat${String(i).padStart(4, '0')}`;
    return { id, sha: fakeSha(`${options.name}/${id}`) };
  });
  const now = new Date();
  for (const [i, r] of runs.entries()) await enqueueDeployRun(bot.app, policy, deployRun(policy, { id: r.id, mergeSha: r.sha, userId: `U${100 + (i % 10)}` }, now));
  // Every run looked at its freight gate once (pending: no Freight yet) and has its card.
  await waitUntil(
    async () => {
      const stored = await Promise.all(runs.map((r) => bot.app.store.get(r.id)));
      return stored.every((run) => run?.state === 'waiting' && run.chat.card !== undefined && run.gates.find((g) => g.name === 'freight')?.summary !== undefined);
    },
    30_000,
    `${LATENCY_RUNS} runs waiting at freight with their cards`,
  );
  await sleep(1_000);

  const freightOf = new Map<string, string>();
  const started = Date.now();
  for (const r of runs) {
    freightOf.set(r.id, cluster.gitops.produceFreight(r.sha));
    await sleep(FREIGHT_SPACING_MS);
  }
  const lastFreightAt = Date.now();
  const order = new Map([...freightOf.values()].map((name, i) => [name, i]));
  const replies = (): GateReply[] => gateReplies(bot.slack).filter((r) => freightOf.has(r.runId));
  // Done when every run is done. A run can also be stuck for good: waiting at a stage gate whose Stage
  // already holds a newer Freight (Kargo promoted the next one before the gate looked, so its Argo CD
  // app will not run this run's revision again); the polling baseline ends once every run is one or the other.
  const settled = async (): Promise<boolean> => {
    const now = await Promise.all(runs.map((r) => bot.app.store.get(r.id)));
    return now.every((run) => {
      if (run === undefined) return false;
      if (run.state === 'done') return true;
      const gate = currentGate(run);
      const freight = run.artifacts.freight?.name;
      if (options.wake || gate?.kind !== 'stage' || gate.summary === undefined || freight === undefined) return false;
      // Stuck only when the stage holds a Freight produced after this run's (not while its own is on the way).
      const newest = newestInStage(cluster, gate.name.slice('stage:'.length));
      return newest !== undefined && (order.get(newest) ?? -1) > (order.get(freight) ?? Number.POSITIVE_INFINITY);
    });
  };
  const timedOut = await waitUntil(settled, options.wake ? 20_000 : 4 * BASELINE_POLL_MS, `every run done or stuck (${options.name})`).then(
    () => false,
    (error: unknown) => {
      hooks.progress(`${String(error)}; reporting what arrived`);
      return true;
    },
  );
  // The replies of the last verdicts may still be in the chat outbox: wait until none arrived for 1.5 s.
  const drainUntil = Date.now() + 8_000;
  for (let count = -1; Date.now() < drainUntil; ) {
    const now = replies().length;
    if (now === count) break;
    count = now;
    await sleep(1_500);
  }
  const waitedMs = Date.now() - lastFreightAt;

  const stored = new Map((await Promise.all(runs.map((r) => bot.app.store.get(r.id)))).filter((run): run is Run => run !== undefined).map((run) => [run.id, run]));
  const samples = new Map<string, number[]>(DEPLOY_GATES.map((g) => [g, []]));
  const toVerdict: number[] = [];
  const verdictToReply: number[] = [];
  for (const reply of replies()) {
    if (reply.outcome !== 'passed') continue;
    const freight = freightOf.get(reply.runId);
    if (freight === undefined) continue;
    const decidedAt = reply.gate === 'freight' ? cluster.log.freightCreated.get(freight) : cluster.log.stageDecided.get(decisionKey(freight, reply.gate.slice('stage:'.length)));
    if (decidedAt === undefined) continue;
    samples.get(reply.gate)?.push(reply.at - decidedAt);
    const endedAt = stored.get(reply.runId)?.gates.find((g) => g.name === reply.gate)?.endedAt;
    if (endedAt !== undefined) {
      toVerdict.push(Date.parse(endedAt) - decidedAt);
      verdictToReply.push(reply.at - Date.parse(endedAt));
    }
  }
  const all = [...samples.values()].flat();
  const expected = LATENCY_RUNS * DEPLOY_GATES.length;
  const withMissing = [...all, ...Array.from({ length: expected - all.length }, () => Number.POSITIVE_INFINITY)];
  const writeTimes = bot.slack.calls.filter((c) => c.at >= started && (c.method === 'chat.postMessage' || c.method === 'chat.update')).map((c) => c.at);
  const stuck = new Set<string>();
  for (const run of stored.values()) {
    const gate = currentGate(run);
    if (gate !== undefined) stuck.add(`${gate.name}: ${(gate.summary ?? '').replace(/[0-9a-f]{40}/g, (sha) => sha.slice(0, 7)).slice(0, 140)}`);
  }
  return {
    all: summarise(all),
    p95Expected: summarise(withMissing).p95,
    byGate: {
      freight: summarise(samples.get('freight') ?? []),
      'stage:dev': summarise(samples.get('stage:dev') ?? []),
      'stage:staging': summarise(samples.get('stage:staging') ?? []),
    },
    toVerdict: summarise(toVerdict),
    verdictToReply: summarise(verdictToReply),
    expected,
    found: all.length,
    runStates: describeStates([...stored.values()]),
    writes: writeTimes.length,
    peakWritesPerSecond: maxPerBucket(writeTimes, 1_000),
    waitedMs,
    timedOut,
    unfinished: [...stored.values()].filter((run) => run.state !== 'done').length,
    stuck: [...stuck].slice(0, 3),
    cluster,
    bot,
    closeAll,
  };
}

// --- 5. LIST / WATCH with 100 runs in flight ---------------------------------------------------------

export interface InFlightResult {
  runs: number;
  windowMs: number;
  /** Requests per kind over the bot's whole life (section 4's runs included) and inside the window. */
  perKind: Array<{ kind: string; list: number; watch: number; windowList: number; windowWatch: number }>;
  /** Other requests the bot made (get, create, …) over its life. */
  otherRequests: number;
  controllerWrites: number;
  freightProduced: number;
  runStates: string;
  /** Gate looks (evaluations ending pending) during the window, by all the runs. */
  looks: number;
}

async function inFlightPhase(redisUrl: string, hooks: Hooks, world: { cluster: Cluster; bot: DeployBot }): Promise<InFlightResult> {
  const { cluster, bot } = world;
  const { k8s, gitops } = cluster;
  const policy = deployPolicy(redisUrl);
  // Every Promotion into dev from here on syncs, then fails its next comparison: nothing reaches staging, no run passes.
  gitops.setScript('dev', { app: 'comparison-error' });
  const holdSha = fakeSha('in-flight/hold');
  const hold = gitops.produceFreight(holdSha);
  const now = new Date();
  const ids: string[] = [];
  for (let i = 0; i < IN_FLIGHT_RUNS; i++) {
    const id = `sg-flight${String(i).padStart(3, '0')}`;
    ids.push(id);
    // Half wait at freight for a commit no Freight carries; half at stage:dev with a Freight that never gets healthy there.
    const spec = i % 2 === 0 ? { id, mergeSha: fakeSha(`in-flight/${id}`), userId: `U${200 + (i % 20)}` } : { id, mergeSha: holdSha, userId: `U${200 + (i % 20)}`, freight: { name: hold } };
    await enqueueDeployRun(bot.app, policy, deployRun(policy, spec, now));
  }
  const flightRuns = async (): Promise<Run[]> => (await Promise.all(ids.map((id) => bot.app.store.get(id)))).filter((r): r is Run => r !== undefined);
  await waitUntil(
    async () => (await flightRuns()).every((run) => run.state === 'waiting' && currentGate(run)?.summary !== undefined),
    30_000,
    `${IN_FLIGHT_RUNS} runs waiting on deploy gates`,
  );
  const before = new Map(KINDS.map((kind) => [kind, { list: k8s.count('list', kind), watch: k8s.count('watch', kind) }]));
  const writesBefore = [...cluster.log.writes.values()].reduce((a, b) => a + b, 0);
  const seqBefore = new Map((await flightRuns()).map((run) => [run.id, run.jobSeq]));

  let produced = 0;
  const windowStart = Date.now();
  while (Date.now() - windowStart < IN_FLIGHT_WINDOW_MS) {
    gitops.produceFreight(fakeSha(`in-flight/churn/${produced++}`));
    await sleep(CHURN_EVERY_MS);
  }
  const windowMs = Date.now() - windowStart;
  const writes = [...cluster.log.writes.values()].reduce((a, b) => a + b, 0) - writesBefore;
  const stored = await flightRuns();
  const verbs: KubeVerb[] = ['get', 'create', 'update', 'patch', 'delete'];
  return {
    runs: IN_FLIGHT_RUNS,
    windowMs,
    perKind: KINDS.map((kind) => ({
      kind,
      list: k8s.count('list', kind),
      watch: k8s.count('watch', kind),
      windowList: k8s.count('list', kind) - (before.get(kind)?.list ?? 0),
      windowWatch: k8s.count('watch', kind) - (before.get(kind)?.watch ?? 0),
    })),
    otherRequests: verbs.reduce((acc, verb) => acc + k8s.count(verb), 0),
    controllerWrites: writes,
    freightProduced: produced,
    runStates: describeStates(stored),
    // Each look that ends pending schedules the run's next job (jobSeq + 1): the gate looks the events caused.
    looks: stored.reduce((acc, run) => acc + run.jobSeq - (seqBefore.get(run.id) ?? run.jobSeq), 0),
  };
}

// --- 6. memory per waiting run ------------------------------------------------------------------------

export interface MemoryResult {
  runs: number;
  redisBytesPerRun: number;
  redisFirstHalf: number;
  redisSecondHalf: number;
  /** Plain SET of each waiting run's JSON, as the store bench's baseline. */
  setBytesPerRun: number;
  heapBytesPerRun: number;
  heapFirstHalf: number;
  heapSecondHalf: number;
  /** What holding the parsed runs in a Map costs the same process. */
  heldRunBytesPerRun: number;
  /** MEMORY USAGE per key family of the bot's prefix, per run, largest first. */
  families: Array<{ family: string; bytesPerRun: number }>;
  states: string;
  chatWritesPerSecond: number;
  settleMs: number;
}

interface Child {
  request(body: ChildRequest extends infer R ? (R extends { id: number } ? Omit<R, 'id'> : never) : never): Promise<ChildReply & { ok: true }>;
  stop(): Promise<void>;
}

async function startChild(config: ChildInput): Promise<Child> {
  const child = spawn(process.execPath, ['--expose-gc', '--import', 'tsx', resolve(import.meta.dirname, 'deploy-bot-process.ts')], {
    cwd: resolve(import.meta.dirname, '..'),
    env: { ...process.env, SHIPGATE_BENCH_CHILD: JSON.stringify(config) },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const pending = new Map<number, { resolve: (reply: ChildReply & { ok: true }) => void; reject: (error: Error) => void }>();
  let nextId = 1;
  let ready: (() => void) | undefined;
  const started = new Promise<void>((resolveStart, rejectStart) => {
    ready = resolveStart;
    void exited.then((code) => rejectStart(new Error(`the bench child exited (${String(code)}) before it was ready`)));
  });
  child.on('message', (reply: ChildReply) => {
    if (reply.id === 0) return ready?.();
    const waiter = pending.get(reply.id);
    pending.delete(reply.id);
    if (reply.ok) waiter?.resolve(reply);
    else waiter?.reject(new Error(`bench child: ${reply.error}`));
  });
  void exited.then((code) => {
    for (const waiter of pending.values()) waiter.reject(new Error(`the bench child exited (${String(code)})`));
    pending.clear();
  });
  const timeout = setTimeout(() => child.kill('SIGKILL'), 30_000);
  try {
    await started;
  } finally {
    clearTimeout(timeout);
  }
  let stopped = false;
  const request: Child['request'] = (body) => {
    const id = nextId++;
    return new Promise((resolveReply, reject) => {
      pending.set(id, { resolve: resolveReply, reject });
      child.send({ ...body, id });
    });
  };
  return {
    request,
    async stop() {
      if (stopped) return;
      stopped = true;
      if (child.exitCode === null && child.connected) {
        await Promise.race([request({ op: 'stop' }).catch(() => undefined), sleep(15_000)]);
      }
      const killer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(killer);
    },
  };
}

/** `<prefix>:run:sg-…` → `run:*`: ids, job numbers and hashes become `*`. */
function keyFamily(prefix: string, key: string): string {
  const rest = key.slice(prefix.length + 1);
  return rest
    .split(':')
    .map((part) => (/^sg-|^\d+$|^[0-9a-f]{16,}$|\.\d+$|^U\d+$/.test(part) || part.includes('.') ? '*' : part))
    .join(':');
}

async function keyFamilies(redis: Redis, prefix: string, runs: number): Promise<Array<{ family: string; bytesPerRun: number }>> {
  const totals = new Map<string, number>();
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
    cursor = next;
    const pipeline = redis.pipeline();
    for (const key of keys) pipeline.memory('USAGE', key, 'SAMPLES', '0');
    const sizes = (await pipeline.exec()) ?? [];
    keys.forEach((key, i) => {
      const size = Number(sizes[i]?.[1] ?? 0);
      const family = keyFamily(prefix, key);
      totals.set(family, (totals.get(family) ?? 0) + size);
    });
  } while (cursor !== '0');
  return [...totals]
    .map(([family, total]) => ({ family, bytesPerRun: total / runs }))
    .sort((a, b) => b.bytesPerRun - a.bytesPerRun);
}

export async function memoryPhase(redisUrl: string, hooks: Hooks): Promise<MemoryResult> {
  const prefix = 'bench-deploy-mem';
  const chatWritesPerSecond = 1_000;
  const cardUpdateIntervalMs = 500;
  // Both only speed up the settling of 1,100 cards (10 writes/s would take minutes); see the notes.
  const cluster = await startCluster({ start: false });
  owned(hooks, cluster);
  const holdFreight = cluster.gitops.produceFreight(MEMORY_HOLD_SHA);
  const slack = await startSlackServer({ token: BOT_TOKEN });
  owned(hooks, slack);
  const probe = createRedis(redisUrl, 'command');
  hooks.cleanups.push(async () => {
    await probe.quit();
  });
  const child = await startChild({ redisUrl, prefix, slackApiUrl: slack.apiUrl, kubeconfig: cluster.kubeconfig, chatWritesPerSecond, cardUpdateIntervalMs, holdFreight });
  owned(hooks, child);
  await waitUntil(() => KINDS.every((kind) => cluster.k8s.count('watch', kind) >= 1), 20_000, 'the bench child informers to watch');

  const settled = async (count: number): Promise<ChildStatus> => {
    let last: ChildStatus | undefined;
    await waitUntil(
      async () => {
        const status = (await child.request({ op: 'status' })).status;
        last = status;
        if (status === undefined) return false;
        const busy = (jobs: Record<string, number>) => (jobs['waiting'] ?? 0) + (jobs['active'] ?? 0) + (jobs['prioritized'] ?? 0);
        return status.active === count && status.waiting === count && status.withCard === count && busy(status.runJobs) === 0 && busy(status.chatJobs) === 0 && (status.chatJobs['delayed'] ?? 0) === 0;
      },
      60_000,
      `${count} runs waiting with their cards (last: ${JSON.stringify(last)})`,
    );
    if (last === undefined) throw new Error('no status');
    return last;
  };
  // Heap after full GCs; the median of three reads, as a look in flight holds a few objects for a moment.
  const heap = async (): Promise<number> => {
    const reads: number[] = [];
    for (let i = 0; i < 3; i++) {
      reads.push((await child.request({ op: 'heap' })).heapUsed ?? Number.NaN);
      await sleep(100);
    }
    return reads.sort((x, y) => x - y)[1] ?? Number.NaN;
  };

  // Warm-up, as the store bench does: the first runs pay for connections, scripts, JIT and caches.
  hooks.progress(`memory: ${MEMORY_WARM_RUNS} warm-up runs`);
  await child.request({ op: 'create', from: MEMORY_RUNS, count: MEMORY_WARM_RUNS });
  await settled(MEMORY_WARM_RUNS);
  await sleep(500);
  const mem0 = await usedMemory(probe);
  const heap0 = await heap();
  const half = MEMORY_RUNS / 2;
  const t0 = Date.now();
  hooks.progress(`memory: ${half} runs onto the deploy gates`);
  await child.request({ op: 'create', from: 0, count: half });
  await settled(MEMORY_WARM_RUNS + half);
  const mem1 = await usedMemory(probe);
  const heap1 = await heap();
  hooks.progress(`memory: ${MEMORY_RUNS - half} more runs`);
  await child.request({ op: 'create', from: half, count: MEMORY_RUNS - half });
  const status = await settled(MEMORY_WARM_RUNS + MEMORY_RUNS);
  const settleMs = Date.now() - t0;
  const mem2 = await usedMemory(probe);
  const heap2 = await heap();
  const heldRunBytesPerRun = (await child.request({ op: 'heldRunsHeap' })).bytesPerRun ?? Number.NaN;
  const families = await keyFamilies(probe, prefix, MEMORY_WARM_RUNS + MEMORY_RUNS);

  // Baseline: each waiting run's JSON under a plain SET key.
  const baseMem0 = await usedMemory(probe);
  for (let i = 0; i < MEMORY_RUNS; i++) {
    const json = await probe.hget(`${prefix}:run:${memoryRunId(i)}`, 'json');
    if (json === null) throw new Error(`memory: run ${memoryRunId(i)} is missing`);
    await probe.set(`bench-deploy-mem-base:run:${memoryRunId(i)}`, json);
  }
  const baseMem1 = await usedMemory(probe);
  await child.stop();
  return {
    runs: MEMORY_RUNS,
    redisBytesPerRun: (mem2 - mem0) / MEMORY_RUNS,
    redisFirstHalf: (mem1 - mem0) / half,
    redisSecondHalf: (mem2 - mem1) / (MEMORY_RUNS - half),
    setBytesPerRun: (baseMem1 - baseMem0) / MEMORY_RUNS,
    heapBytesPerRun: (heap2 - heap0) / MEMORY_RUNS,
    heapFirstHalf: (heap1 - heap0) / half,
    heapSecondHalf: (heap2 - heap1) / (MEMORY_RUNS - half),
    heldRunBytesPerRun,
    families,
    states: status.states,
    chatWritesPerSecond,
    settleMs,
  };
}

// --- all three ----------------------------------------------------------------------------------------

export interface DeployBenchResult {
  informer: LatencyPhase;
  baseline: LatencyPhase;
  inFlight: InFlightResult;
  memory: MemoryResult;
}

export async function benchDeployGates(redisUrl: string, hooks: Hooks): Promise<DeployBenchResult> {
  hooks.progress(`deploy: ${LATENCY_RUNS} runs through freight, stage:dev and stage:staging, informer events waking them`);
  const { cluster, bot, closeAll, ...informer } = await latencyPhase(redisUrl, hooks, { name: 'events', wake: true });
  // The polling baseline and the in-flight count run side by side: the count does not depend on
  // timing, and the baseline's latency is its 10 s poll, not CPU (both share the 2 cores meanwhile).
  hooks.progress(`deploy: baseline (${BASELINE_POLL_MS / 1000} s polling, events wake nothing) and ${IN_FLIGHT_RUNS} runs in flight for ${IN_FLIGHT_WINDOW_MS / 1000} s`);
  const [baselinePhase, inFlight] = await Promise.all([
    latencyPhase(redisUrl, hooks, { name: 'polling', wake: false, deployPollMs: BASELINE_POLL_MS }),
    inFlightPhase(redisUrl, hooks, { cluster, bot }),
  ]);
  const { closeAll: closeBaseline, cluster: _cluster, bot: _bot, ...baseline } = baselinePhase;
  await closeAll();
  await closeBaseline();
  hooks.progress(`deploy: ${MEMORY_RUNS} runs waiting on deploy gates (bot in its own process)`);
  const memory = await memoryPhase(redisUrl, hooks);
  return { informer, baseline, inFlight, memory };
}

// --- report -------------------------------------------------------------------------------------------

/** A p95 that counts an unreplied result as longer than the wait, or as never when its run is stuck for good. */
function p95Text(phase: LatencyPhase): string {
  if (Number.isFinite(phase.p95Expected)) return ms(phase.p95Expected);
  const missing = phase.expected - phase.found;
  return phase.timedOut ? `> ${num(phase.waitedMs / 1000)} s (${missing} unreplied)` : `never (${missing} stuck)`;
}

export function deployRows(r: DeployBenchResult): string[][] {
  const a = r.informer;
  const b = r.baseline;
  const m = r.memory;
  const both = (pick: (p: LatencyPhase) => LatencySummary): string[] => [`${ms(pick(a).p50)} / ${ms(pick(a).p95)}`, `${ms(pick(b).p50)} / ${ms(pick(b).p95)}`, ratio(pick(a).p95, pick(b).p95)];
  const rows: string[][] = [
    ['4 deploy', `gate change → thread reply p95, all ${a.expected} results`, p95Text(a), p95Text(b), Number.isFinite(b.p95Expected) ? ratio(a.p95Expected, b.p95Expected) : '-', `<= ${GATE_P95_TARGET_MS} ms`],
    ['4 deploy', 'replied results p50 / p95', ...both((p) => p.all), ''],
    ['4 deploy', 'replied results max', ms(a.all.max), ms(b.all.max), ratio(a.all.max, b.all.max), ''],
  ];
  for (const gate of DEPLOY_GATES) {
    rows.push(['4 deploy', `${gate} p50 / p95 (n = ${a.byGate[gate].n} / ${b.byGate[gate].n})`, ...both((p) => p.byGate[gate]), '']);
  }
  rows.push(
    ['4 deploy', 'of which: deciding write → verdict stored p50 / p95', ...both((p) => p.toVerdict), ''],
    ['4 deploy', 'of which: verdict stored → reply at Slack p50 / p95', ...both((p) => p.verdictToReply), ''],
    ['4 deploy', 'results replied (a reply and a deciding write)', `${a.found}/${a.expected}`, `${b.found}/${b.expected}`, '', `${a.expected}/${a.expected}`],
  );
  const f = r.inFlight;
  for (const k of f.perKind) {
    rows.push(['5 k8s', `LIST / WATCH ${k.kind}: bot's life (in the ${num(f.windowMs / 1000)} s window)`, `${k.list} / ${k.watch} (${k.windowList} / ${k.windowWatch})`, '', '', '1 / 1 (0 / 0)']);
  }
  rows.push(
    ['5 k8s', 'other requests to the API server (get, create, update, …)', String(f.otherRequests), '', '', '0'],
    ['5 k8s', `gate looks by the ${f.runs} waiting runs in the window (cache reads)`, num(f.looks), '', '', ''],
    ['5 k8s', 'controller writes (informer events) in the window', num(f.controllerWrites), '', '', ''],
    ['6 memory', `Redis memory per waiting run (${m.runs} runs) vs per SET of its JSON`, bytes(m.redisBytesPerRun), bytes(m.setBytesPerRun), ratio(m.redisBytesPerRun, m.setBytesPerRun), 'fixed'],
    ['6 memory', 'Redis per run: first half / second half', `${bytes(m.redisFirstHalf)} / ${bytes(m.redisSecondHalf)}`, '', '', ''],
    ['6 memory', 'bot heap (data, after GC) per waiting run vs holding the runs', bytes(m.heapBytesPerRun), bytes(m.heldRunBytesPerRun), ratio(m.heapBytesPerRun, m.heldRunBytesPerRun), ''],
    ['6 memory', 'heap per run: first half / second half', `${bytes(m.heapFirstHalf)} / ${bytes(m.heapSecondHalf)}`, '', '', ''],
  );
  return rows;
}

export function deployNotes(r: DeployBenchResult, out: (line?: string) => void): void {
  const b = r.baseline;
  out(`Section 4: ${LATENCY_RUNS} runs created at freight (Git gates passed), one Freight each, ${FREIGHT_SPACING_MS} ms apart, auto-promoted to dev, then staging`);
  out('(verification). Latency = reply at the fake Slack minus the controller write that decided the gate: the Freight created; the Freight');
  out('verifiedIn dev; the staging Stage verification Successful. shipgate: production poll settings, informer events wake the runs.');
  out(`Baseline: the same runs and Freight, events waking nothing, deploy gates polled every ${BASELINE_POLL_MS / 1000} s (run beside section 5).`);
  out(`Slack writes meanwhile: ${r.informer.writes}, at most ${r.informer.peakWritesPerSecond} in one wall-clock second (pacing: 10/s); baseline ${b.writes}, at most ${b.peakWritesPerSecond}.`);
  out(`Runs at the end: ${r.informer.runStates}; baseline: ${b.runStates}.`);
  if (b.unfinished > 0 && !b.timedOut) {
    out(`"stuck": the baseline's stage gate looked, and by its next look Kargo had promoted a newer Freight into the stage, so the`);
    out(`run's revision is not what Argo CD runs there any more and the gate cannot pass; e.g. ${b.stuck[0] ?? ''}`);
  }
  out(`Section 5: ${r.inFlight.runs} runs (half at freight, half at stage:dev) while a new Freight is auto-promoted into dev every ${CHURN_EVERY_MS / 1000} s`);
  out(`(${r.inFlight.freightProduced} Freight); a ${num(r.inFlight.windowMs / 1000)} s window, not 60 s: the counts are totals, and one LIST per kind stays 1 however long.`);
  out(`Runs at the end: ${r.inFlight.runStates}.`);
  const m = r.memory;
  out(`Section 6: the bot in its own process (heap after forced GC), after ${MEMORY_WARM_RUNS} warm-up runs; half the runs wait at freight, half at`);
  out(`stage:dev, each settled (card posted, job delayed); for this section only, chat pacing ${m.chatWritesPerSecond}/s and card spacing 0.5 s (neither`);
  out(`changes what a waiting run keeps). With the warm-up runs: ${m.states}. The heap's halves move both ways by about half a MB: noise, not growth.`);
  out('Redis bytes per run by key family (MEMORY USAGE; completed chat jobs are kept for an hour):');
  out(
    `  ${m.families
      .filter((f) => f.bytesPerRun >= 1)
      .slice(0, 10)
      .map((f) => `${f.family} ${bytes(f.bytesPerRun)}`)
      .join(', ')}`,
  );
}

export function deployVerdicts(r: DeployBenchResult, line: (pass: boolean, target: string, figure: string) => void): void {
  const a = r.informer;
  line(
    a.p95Expected <= GATE_P95_TARGET_MS,
    `gate change → thread update p95 <= ${GATE_P95_TARGET_MS / 1000} s (deploy gates, informer events)`,
    `${p95Text(a)} over ${a.found}/${a.expected} results (baseline, ${BASELINE_POLL_MS / 1000} s polling: ${p95Text(r.baseline)}; its freight gate alone ${ms(r.baseline.byGate.freight.p95)})`,
  );
  const f = r.inFlight;
  const single = f.perKind.every((k) => k.list === 1 && k.watch === 1);
  line(
    single && f.otherRequests === 0,
    `no periodic LIST, one informer per kind: 1 LIST + 1 WATCH per kind (${f.runs} runs in flight)`,
    `${f.perKind.map((k) => `${k.kind} ${k.list}/${k.watch}`).join(', ')}; ${num(f.looks)} gate looks in ${num(f.windowMs / 1000)} s`,
  );
  const m = r.memory;
  const spread = Math.abs(m.redisFirstHalf - m.redisSecondHalf) / Math.max(m.redisFirstHalf, m.redisSecondHalf);
  // Fixed in Redis (both halves within 25%), and the process holds no run: its heap grows by less than a quarter of what keeping the runs would cost.
  line(
    spread <= 0.25 && m.heapBytesPerRun < 0.25 * m.heldRunBytesPerRun,
    `${m.runs} runs waiting on deploy gates at a fixed memory per run, none held in the bot's heap`,
    `Redis ${bytes(m.redisBytesPerRun)}/run (halves ${bytes(m.redisFirstHalf)} / ${bytes(m.redisSecondHalf)}); bot heap ${bytes(m.heapBytesPerRun)}/run (halves ${bytes(m.heapFirstHalf)} / ${bytes(m.heapSecondHalf)})`,
  );
}
