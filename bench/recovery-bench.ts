import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { loadavg } from 'node:os';
import { resolve } from 'node:path';
import { RECOVERY, type RecoverySettings } from '../src/app/worker-role.js';
import { loadConfig } from '../src/config/config.js';
import type { Policy } from '../src/config/policy.js';
import { newRun } from '../src/domain/run.js';
import { advanceJobId, createQueues, RUN_QUEUE, type Queues } from '../src/queue/queues.js';
import { bullConnection, createRedis, type Redis } from '../src/redis.js';
import { createRunStore, type RunStore } from '../src/store/run-store.js';
import type { Hooks } from './deploy-bench.js';
import { childEventSchema, RECOVERY_POLICY, type ChildInput, type ChildRequest } from './recovery-worker-process.js';
import { num, ratio, summarise, type LatencySummary } from './stats.js';

/**
 * Section 7 of `npm run bench` (issue 14): how long a run stands still after its worker is
 * SIGKILLed, with shipgate's lock and stall settings (RECOVERY in src/app/worker-role.ts) and, in the
 * same bench run, with the settings before them (15 s lock, 5 s stalled check, BullMQ's default
 * maxStalledCount of 1) as the baseline.
 *
 * Each kill: a fresh run's job is taken by one of two idle worker processes of a lane (each lane
 * its own key prefix, so its own queues), whose agent step holds it; after a hold of lockDuration/2
 * plus a spread fraction of lockDuration/4 (past the first lock renewal, so the kill falls at a
 * spread point of the renewal cycle, as a crash would) the holder is SIGKILLed. "Moving again" is
 * a replacement process starting the run's agent step (the step reports it over IPC with its own
 * clock, the same machine's); "taken" is the job's processedOn, when BullMQ moved it to active
 * there. The replacement is the lane's other process, running and idle, or the holder's successor,
 * started when the holder took the job (process starts cost seconds of CPU, so they are hidden
 * behind the hold) if that one is ready first; the table says how often. The released run then
 * ends. Lanes of both settings run side by side, the kills of one lane one after another; the
 * figure is the timers', not the CPU's, but the machine's load shows in it a little.
 */

export const RECOVERY_KILLS = 20;
/** Lanes run side by side; the baseline's kills take three times as long, so it gets more lanes. */
const CURRENT_LANES = 4;
const BASELINE_LANES = 5;
/** The settings before issue 14 (worker-role.ts), BullMQ's default maxStalledCount. */
export const BASELINE_RECOVERY: RecoverySettings = { lockDuration: 15_000, stalledInterval: 5_000, maxStalledCount: 1 };

export interface RecoveryPhase {
  settings: RecoverySettings;
  lanes: number;
  kills: number;
  /** SIGKILL → the run's step started again in the replacement process. */
  moving: LatencySummary;
  /** SIGKILL → BullMQ moved the job to active in the replacement (the job's processedOn). */
  taken: LatencySummary;
  /** Step starts of the measured runs beyond the first and the one after the kill (double work): 0. */
  extraStarts: number;
  /** Kills whose run did not move again within lockDuration + stalledInterval + 30 s. */
  lost: number;
  /** Kills whose run the lane's newly started process took (it was ready by then), not the idle one. */
  bySuccessor: number;
}

export interface RecoveryBenchResult {
  current: RecoveryPhase;
  baseline: RecoveryPhase;
  wallMs: number;
  /** The machine's 1-minute load average when the section ended (other work on it shows here). */
  loadAverage: number;
}

const sleep = (milliseconds: number) => new Promise<void>((r) => setTimeout(r, milliseconds));
/** Seconds with two decimals: the figures here are seconds, read to the 10 ms. */
const secs = (value: number): string => (Number.isFinite(value) ? `${(value / 1000).toFixed(2)} s` : 'n/a');

interface Step {
  runId: string;
  pid: number;
  at: number;
}

interface Child {
  pid: number;
  process: ChildProcess;
  exited: Promise<void>;
  send(request: ChildRequest): void;
}

/** The processes of every lane still running, for the abort clean-up. */
const live = new Set<Child>();

async function startChild(input: ChildInput, onStep: (step: Step) => void): Promise<Child> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', resolve(import.meta.dirname, 'recovery-worker-process.ts')],
    {
      cwd: resolve(import.meta.dirname, '..'),
      env: { ...process.env, SHIPGATE_BENCH_CHILD: JSON.stringify(input) },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    },
  );
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const ready = new Promise<number>((resolveReady, rejectReady) => {
    child.on('message', (message: unknown) => {
      const event = childEventSchema.safeParse(message);
      if (!event.success) return;
      if (event.data.type === 'ready') resolveReady(event.data.pid);
      else if (event.data.type === 'step') onStep(event.data);
      else rejectReady(new Error(`recovery bench child: ${event.data.error}`));
    });
    void exited.then(() =>
      rejectReady(
        new Error(
          `the recovery bench child exited (${String(child.exitCode ?? child.signalCode)}) before it was ready`,
        ),
      ),
    );
  });
  const timeout = setTimeout(() => child.kill('SIGKILL'), 90_000);
  try {
    const pid = await ready;
    const handle: Child = {
      pid,
      process: child,
      exited,
      send: (request) => {
        if (child.connected) child.send(request);
      },
    };
    live.add(handle);
    void exited.then(() => live.delete(handle));
    return handle;
  } finally {
    clearTimeout(timeout);
  }
}

async function stopChild(child: Child): Promise<void> {
  if (child.process.exitCode !== null || child.process.signalCode !== null) return;
  child.send({ op: 'stop' });
  const killer = setTimeout(() => child.process.kill('SIGKILL'), 10_000);
  await child.exited;
  clearTimeout(killer);
}

interface Sample {
  moving: number;
  taken: number;
  /** Taken by the process started after the kill's run was taken, not by the one idle all along. */
  bySuccessor: boolean;
}

interface Lane {
  prefix: string;
  store: RunStore;
  queues: Queues;
  steps: Step[];
}

async function waitForStep(lane: Lane, match: (step: Step) => boolean, timeoutMs: number): Promise<Step | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    // The step's own timestamp is the figure; how soon this loop notices it does not matter.
    const found = lane.steps.find(match);
    if (found !== undefined) return found;
    if (Date.now() > deadline) return undefined;
    await sleep(25);
  }
}

/** Runs `kills` (global kill numbers, which pick the hold) one after another on a lane of two live processes. */
async function runLane(options: {
  redisUrl: string;
  redis: Redis;
  policy: Policy;
  tag: string;
  lane: number;
  settings: RecoverySettings;
  kills: readonly number[];
  /** Kills of the whole phase (the hold fractions are spread over them). */
  total: number;
  auditKey: string;
  hooks: Hooks;
}): Promise<{ samples: Sample[]; extraStarts: number; lost: number }> {
  const { redis, settings } = options;
  const prefix = `bench-recovery-${options.tag}-${options.lane}`;
  const clock = () => new Date();
  const lane: Lane = {
    prefix,
    store: createRunStore({ redis, prefix, clock }),
    queues: createQueues({ connection: bullConnection(options.redisUrl), prefix }),
    steps: [],
  };
  const input: ChildInput = { redisUrl: options.redisUrl, prefix, auditKey: options.auditKey, recovery: settings };
  const start = () => startChild(input, (step) => lane.steps.push(step));
  let children: Child[] = await Promise.all([start(), start()]);
  const samples: Sample[] = [];
  const measured: string[] = [];
  let lost = 0;
  try {
    for (const [i, kill] of options.kills.entries()) {
      const runId = `sg-rec${options.tag}${String(kill).padStart(3, '0')}`;
      measured.push(runId);
      const run = newRun(options.policy, {
        id: runId,
        repo: 'acme/docs',
        task: 'hold the agent step',
        requester: { userId: 'UBENCH' },
        channel: 'CLOCAL',
        now: clock(),
      });
      const created = await lane.store.create(run, `bench.${runId}`, options.policy.limits);
      if (!created.created) throw new Error(`recovery bench: run ${runId} was not created (${created.reason})`);
      await lane.queues.refreshCard(runId, 0);
      await lane.queues.scheduleRun(runId, 0);
      const first = await waitForStep(lane, (s) => s.runId === runId, 60_000);
      const holder = children.find((c) => c.pid === first?.pid);
      if (first === undefined || holder === undefined)
        throw new Error(`recovery bench: no worker of lane ${prefix} took ${runId}`);
      // The holder's successor in the lane starts now, behind the hold and the recovery (a start
      // costs seconds of CPU); it is ready before the next kill's run is created.
      const last = i === options.kills.length - 1;
      const spare = last ? undefined : start();
      spare?.catch(() => undefined);
      // Past the first renewal (lockDuration/2 after the pick-up) and spread over one renewal period.
      const fraction = (kill + 0.5) / options.total;
      await sleep(
        Math.max(0, first.at + settings.lockDuration / 2 + (fraction * settings.lockDuration) / 4 - Date.now()),
      );
      const killedAt = Date.now();
      holder.process.kill('SIGKILL');
      const again = await waitForStep(
        lane,
        (s) => s.runId === runId && s.pid !== holder.pid,
        settings.lockDuration + settings.stalledInterval + 30_000,
      );
      await holder.exited;
      const other = children.find((c) => c !== holder);
      const successor = spare === undefined ? undefined : await spare;
      children = [other, successor].filter((c): c is Child => c !== undefined);
      const mover = children.find((c) => c.pid === again?.pid);
      if (again === undefined || mover === undefined) {
        lost += 1;
        options.hooks.progress(`recovery: ${runId} did not move again after its worker was killed`);
      } else {
        const processedOn = Number(
          await redis.hget(`${prefix}:bull:${RUN_QUEUE}:${advanceJobId(runId, 0)}`, 'processedOn'),
        );
        samples.push({ moving: again.at - killedAt, taken: processedOn - killedAt, bySuccessor: mover === successor });
        mover.send({ op: 'release', runId });
      }
      if (last) break;
      if (children.length !== 2)
        throw new Error(`recovery bench: lane ${prefix} is down to ${children.length} process(es)`);
    }
    // Let the last release land before the step starts are counted.
    await sleep(500);
  } finally {
    await Promise.all(children.map((child) => stopChild(child)));
    await lane.queues.close();
  }
  const extraStarts = measured.reduce(
    (acc, runId) => acc + Math.max(0, lane.steps.filter((s) => s.runId === runId).length - 2),
    0,
  );
  return { samples, extraStarts, lost };
}

async function runPhase(options: {
  redisUrl: string;
  redis: Redis;
  policy: Policy;
  tag: string;
  lanes: number;
  kills: number;
  settings: RecoverySettings;
  hooks: Hooks;
}): Promise<RecoveryPhase> {
  const auditKey = randomBytes(32).toString('hex');
  // Kill numbers dealt round-robin, so every lane's kills spread over the whole renewal period.
  const lanes = Array.from({ length: options.lanes }, (_, lane) =>
    Array.from({ length: options.kills }, (_, kill) => kill).filter((kill) => kill % options.lanes === lane),
  );
  const results = await Promise.all(
    lanes.map((kills, lane) => runLane({ ...options, lane, kills, total: options.kills, auditKey })),
  );
  const samples = results.flatMap((r) => r.samples);
  return {
    settings: options.settings,
    lanes: options.lanes,
    kills: options.kills,
    moving: summarise(samples.map((s) => s.moving)),
    taken: summarise(samples.map((s) => s.taken)),
    extraStarts: results.reduce((acc, r) => acc + r.extraStarts, 0),
    lost: results.reduce((acc, r) => acc + r.lost, 0),
    bySuccessor: samples.filter((s) => s.bySuccessor).length,
  };
}

/** `kills` per setting (default RECOVERY_KILLS; fewer only for a quick trial). */
export async function benchRecovery(
  redisUrl: string,
  hooks: Hooks,
  kills = RECOVERY_KILLS,
): Promise<RecoveryBenchResult> {
  const redis = createRedis(redisUrl, 'command');
  hooks.cleanups.push(async () => {
    for (const child of live) child.process.kill('SIGKILL');
    await Promise.all([...live].map((child) => child.exited));
    redis.disconnect();
  });
  const policy = loadConfig({ REDIS_URL: redisUrl, LOG_LEVEL: 'silent' }, { readFile: () => RECOVERY_POLICY }).policy;
  const startedAt = Date.now();
  hooks.progress(
    `recovery: ${kills} SIGKILLs of a worker process holding a run, with ${describe(RECOVERY)} (${CURRENT_LANES} lanes) and ${describe(BASELINE_RECOVERY)} (${BASELINE_LANES} lanes), side by side`,
  );
  const [current, baseline] = await Promise.all([
    runPhase({ redisUrl, redis, policy, tag: 'c', lanes: CURRENT_LANES, kills, settings: RECOVERY, hooks }),
    runPhase({ redisUrl, redis, policy, tag: 'b', lanes: BASELINE_LANES, kills, settings: BASELINE_RECOVERY, hooks }),
  ]);
  return { current, baseline, wallMs: Date.now() - startedAt, loadAverage: loadavg()[0] ?? Number.NaN };
}

function describe(s: RecoverySettings): string {
  return `lock ${num(s.lockDuration / 1000, 0)} s / stalled check ${num(s.stalledInterval / 1000, 0)} s / maxStalledCount ${s.maxStalledCount}`;
}

/** The design's worst case: the whole lock, then a whole stalled-check interval. */
const worstCase = (s: RecoverySettings): number => s.lockDuration + s.stalledInterval;

export function recoveryRows(r: RecoveryBenchResult): string[][] {
  const a = r.current;
  const b = r.baseline;
  return [
    [
      '7 recovery',
      `SIGKILL → run moving again, p50 (${a.moving.n} / ${b.moving.n} kills)`,
      secs(a.moving.p50),
      secs(b.moving.p50),
      ratio(a.moving.p50, b.moving.p50),
      'a few seconds',
    ],
    [
      '7 recovery',
      'SIGKILL → run moving again, max',
      secs(a.moving.max),
      secs(b.moving.max),
      ratio(a.moving.max, b.moving.max),
      `<= ${secs(worstCase(a.settings) + 1_000)}`,
    ],
    [
      '7 recovery',
      'SIGKILL → job taken by the replacement, p50 / max',
      `${secs(a.taken.p50)} / ${secs(a.taken.max)}`,
      `${secs(b.taken.p50)} / ${secs(b.taken.max)}`,
      '',
      '',
    ],
    [
      '7 recovery',
      'step starts beyond one per kill (double work) / runs not moving again',
      `${a.extraStarts} / ${a.lost}`,
      `${b.extraStarts} / ${b.lost}`,
      '',
      '0 / 0',
    ],
  ];
}

export function recoveryNotes(r: RecoveryBenchResult, out: (line?: string) => void): void {
  out(
    `Section 7: ${r.current.kills} SIGKILLs each; shipgate = ${describe(r.current.settings)}; baseline = ${describe(r.baseline.settings)}`,
  );
  out(
    '(the settings before issue 14). Each kill hits a worker process (the worker role, bench/recovery-worker-process.ts) whose agent step',
  );
  out(
    'holds a fresh run, lockDuration/2 + a spread part of lockDuration/4 after it took the job; "moving again" = the run\'s step started',
  );
  out(
    'in another running worker process of the lane; "taken" = the job\'s processedOn there. The replacement was the idle process, or',
  );
  out(
    `the holder's successor, started meanwhile, when it was ready first (${r.current.bySuccessor} / ${r.baseline.bySuccessor} kills). The design bounds are`,
  );
  out(
    `3/4 of the lock to lock + stalled check: ${secs((r.current.settings.lockDuration * 3) / 4)}–${secs(worstCase(r.current.settings))} (baseline ${secs((r.baseline.settings.lockDuration * 3) / 4)}–${secs(worstCase(r.baseline.settings))}).`,
  );
  out(
    `Both settings' lanes ran side by side (${r.current.lanes} + ${r.baseline.lanes}, one kill at a time each) in ${num(r.wallMs / 1000, 0)} s; 1-minute load average at the end: ${num(r.loadAverage, 1)}.`,
  );
}

export function recoveryVerdicts(
  r: RecoveryBenchResult,
  line: (pass: boolean, target: string, figure: string) => void,
): void {
  const a = r.current;
  const bound = worstCase(a.settings) + 1_000;
  line(
    a.lost === 0 && a.extraStarts === 0 && a.moving.n === a.kills && a.moving.max <= bound,
    `SIGKILL → run moving again in a few seconds (max <= ${secs(bound)}), without double work`,
    `p50 ${secs(a.moving.p50)}, max ${secs(a.moving.max)} over ${a.moving.n} kills (baseline 15 s / 5 s: p50 ${secs(r.baseline.moving.p50)}, max ${secs(r.baseline.moving.max)}); ${a.extraStarts} extra step starts`,
  );
}
