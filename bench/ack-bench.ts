import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { createRunStore } from '../src/store/run-store.js';
import { sendSlashCommand } from '../test/helpers/slack-requests.js';
import { startSlackServer, type SlackServer } from '../test/helpers/slack-server.js';
import { startAckServer, type AckServer } from './ack-server-process.js';
import { BOT_TOKEN, SIGNING_SECRET } from './bench-bot.js';
import { fireBurst, type LoadReport } from './load-client.js';
import { analyseWrites, lastWriteAt, rootMessages, type WriteAnalysis } from './slack-writes.js';
import { bytes, ms, num, ratio, summarise, type LatencySummary } from './stats.js';
import { usedMemory } from './store-bench.js';

/**
 * Sections 1 and 2 of `npm run bench` (issue 14: an honest ack figure).
 *
 * What runs where, each in a Node process of its own:
 *   - the bench (this module): redis-server's parent, the fake Slack Web API, the orchestration;
 *   - the load client (bench/load-client.ts), one per burst: signs it, sends it, times every answer;
 *   - the servers under test (bench/ack-server-process.ts): the bare node:http server, the bare
 *     Bolt app and shipgate's web role (SHIPGATE_ROLE=web, its own Redis prefix, no worker role);
 *   - for section 2, a second shipgate web role with a worker role beside it (SHIPGATE_ROLE=worker,
 *     as deployed), on a prefix of their own: the worker posts the cards of a burst sent to it.
 *
 * Section 1: every server gets the same warm-up (sequential commands, then a small concurrent
 * burst), then ROUNDS rounds of the same burst of 200 concurrent signed `/ship` commands, one
 * burst per server per round, the order rotating, so that a change in the machine's load touches
 * all three alike; the table shows the median over the rounds. The Redis work per `/ship` is
 * counted exactly (INFO commandstats, in-script commands included) over the web role's sequential
 * warm-up, while no other process talks to Redis. Section 2's burst is timed too, as the ack with a
 * busy worker role beside the web role.
 */

export const BURST = 200;
/** Rounds of section 1 (each sends one burst to each server). */
export const ROUNDS = 3;
export const ACK_P99_TARGET_MS = 300;
export const ACK_BOLT_RATIO_TARGET = 1.5;
const SEQUENTIAL_WARM = 10;
const CONCURRENT_WARM = 40;
const WRITES_CONCURRENT_WARM = 20;
const CARD_WINDOW_MS = 3_000;
const WRITES_PER_SECOND_LIMIT = 10;
const CHANNEL = 'CDOCS';
const WARM_CHANNEL = 'CWARM';
const PREFIX = 'bench-ack';
const WRITES_PREFIX = 'bench-writes';
const BURST_TIMEOUT_MS = 30_000;

export interface AckHooks {
  progress(message: string): void;
  /** Clean-up steps, run newest first by the caller (also on a watchdog abort). */
  cleanups: (() => Promise<void>)[];
}

const sleep = (milliseconds: number) => new Promise<void>((r) => setTimeout(r, milliseconds));

async function waitUntil(predicate: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`bench: timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(100);
  }
}

/** Waits until no chat write has reached the fake Slack for `quietMs`; false if that took longer than `capMs`. */
async function waitForQuiet(slack: SlackServer, quietMs: number, capMs: number): Promise<boolean> {
  const deadline = Date.now() + capMs;
  for (;;) {
    if (Date.now() - lastWriteAt(slack) >= quietMs) return true;
    if (Date.now() > deadline) return false;
    await sleep(200);
  }
}

const TASKS = [
  'fix the typo in the README',
  'add a /healthz page to the docs',
  'document the retry flag',
  'update the install guide',
];

/** The i-th command of a burst: 40 users, 5 commands each in the measured burst. */
function commandFields(i: number, channel: string, users: string) {
  return {
    text: `acme/docs ${TASKS[i % TASKS.length] ?? 'task'} (#${i})`,
    user_id: `${users}${String(1000 + (i % 40))}`,
    channel_id: channel,
  };
}

const queuedOk = (r: { status: number; body: string }): boolean => r.status === 200 && r.body.includes('Queued run');

/** Calls per Redis command since the server started (INFO commandstats). */
async function commandCalls(redis: Redis): Promise<Map<string, number>> {
  const calls = new Map<string, number>();
  for (const match of (await redis.info('commandstats')).matchAll(/^cmdstat_([\w|]+):calls=(\d+)/gm)) {
    calls.set(match[1] ?? '', Number(match[2]));
  }
  return calls;
}

export interface RedisCalls {
  total: number;
  scripts: number;
  top: string;
}

/** The commands between two snapshots, without the INFO calls that took them. */
function callsBetween(before: Map<string, number>, after: Map<string, number>): RedisCalls {
  const diff = [...after]
    .map(([name, calls]) => [name, calls - (before.get(name) ?? 0) - (name === 'info' ? 1 : 0)] as const)
    .filter(([, d]) => d > 0);
  diff.sort((a, b) => b[1] - a[1]);
  const scripts = diff.filter(([name]) => name === 'eval' || name === 'evalsha').reduce((acc, [, d]) => acc + d, 0);
  return {
    total: diff.reduce((acc, [, d]) => acc + d, 0),
    scripts,
    top: diff.map(([name, d]) => `${name} ${d}`).join(', '),
  };
}

export interface BurstResult {
  latency: LatencySummary;
  /** Answers that said "Queued run". */
  queued: number;
  /** CPU time of the server's process during the burst, per command. */
  cpuMsPerCommand: number;
  /** Client side, first request written to last answer read. */
  wallMs: number;
  otherBodies: string[];
}

/** One server over the rounds: each figure is the median of its rounds. */
export interface TargetResult extends BurstResult {
  rounds: BurstResult[];
}

export interface AckBenchResult {
  shipgate: TargetResult;
  bolt: TargetResult;
  http: TargetResult;
  /** Section 2's burst: the web role acking with its worker role busy beside it. */
  withWorker: BurstResult;
  /** The worker role's CPU time while that burst was acked, per command. */
  workerCpuMsPerCommand: number;
  /** Exact, web role alone, over the sequential warm-up: per `/ship`. */
  perShip: RedisCalls;
  /** Everything Redis did while section 1's last shipgate burst was acked (the web role only), per `/ship`. */
  duringBurst: RedisCalls;
  /** Runs of section 1's bursts in the run store, and "Queued" answers over them. */
  runsCreated: number;
  /** Runs of section 2's burst. */
  writesRunsCreated: number;
  runStates: string;
  writes: WriteAnalysis;
  settled: boolean;
  bytesPerInFlightRun: number;
  unexpected: number;
}

async function burstAt(
  server: AckServer,
  channel: string,
  users: string,
  count: number,
): Promise<{ report: LoadReport; cpuMs: number }> {
  const cpuBefore = await server.cpuMs();
  const report = await fireBurst({
    url: server.url,
    signingSecret: SIGNING_SECRET,
    commands: Array.from({ length: count }, (_, i) => commandFields(i, channel, users)),
    timeoutMs: BURST_TIMEOUT_MS,
  });
  return { report, cpuMs: (await server.cpuMs()) - cpuBefore };
}

function burstResult({ report, cpuMs }: { report: LoadReport; cpuMs: number }): BurstResult {
  return {
    latency: summarise(report.results.map((r) => r.elapsedMs)),
    queued: report.results.filter(queuedOk).length,
    cpuMsPerCommand: cpuMs / report.results.length,
    wallMs: report.wallMs,
    otherBodies: [
      ...new Set(report.results.filter((r) => !queuedOk(r)).map((r) => `${r.status} ${r.body.slice(0, 200)}`)),
    ],
  };
}

const median = (values: readonly number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[mid] ?? Number.NaN)
    : ((sorted[mid - 1] ?? Number.NaN) + (sorted[mid] ?? Number.NaN)) / 2;
};

function overRounds(rounds: BurstResult[]): TargetResult {
  const pick = (f: (r: BurstResult) => number) => median(rounds.map(f));
  return {
    rounds,
    latency: {
      n: pick((r) => r.latency.n),
      p50: pick((r) => r.latency.p50),
      p95: pick((r) => r.latency.p95),
      p99: pick((r) => r.latency.p99),
      max: pick((r) => r.latency.max),
      mean: pick((r) => r.latency.mean),
    },
    queued: rounds.reduce((acc, r) => acc + r.queued, 0),
    cpuMsPerCommand: pick((r) => r.cpuMsPerCommand),
    wallMs: pick((r) => r.wallMs),
    otherBodies: [...new Set(rounds.flatMap((r) => r.otherBodies))],
  };
}

/**
 * The same warm-up for every server: sequential commands (`sequential: false` when they were just
 * sent, for the exact Redis count), then a small concurrent burst, all answered "Queued".
 */
async function warmUp(
  server: AckServer,
  name: string,
  { sequential, concurrent = CONCURRENT_WARM }: { sequential: boolean; concurrent?: number },
): Promise<void> {
  for (let i = 0; sequential && i < SEQUENTIAL_WARM; i++) {
    const r = await sendSlashCommand(server.url, SIGNING_SECRET, commandFields(i, WARM_CHANNEL, 'US'));
    if (!queuedOk(r)) throw new Error(`${name} warm-up answered ${r.status}: ${r.body}`);
  }
  const warm = await burstAt(server, WARM_CHANNEL, 'UW', concurrent);
  const bad = warm.report.results.find((r) => !queuedOk(r));
  if (bad !== undefined) throw new Error(`${name} warm-up burst answered ${bad.status}: ${bad.body}`);
}

async function owned<T extends { stop(): Promise<void> }>(hooks: AckHooks, started: Promise<T>): Promise<T> {
  const value = await started;
  hooks.cleanups.push(() => value.stop());
  return value;
}

export async function benchAck(redisUrl: string, hooks: AckHooks): Promise<AckBenchResult> {
  const progress = (message: string): void => hooks.progress(message);
  const slack = await startSlackServer({ token: BOT_TOKEN });
  hooks.cleanups.push(() => slack.close());
  const probe = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
  hooks.cleanups.push(async () => {
    await probe.quit();
  });

  progress(
    'ack: starting the bare node:http server, the bare Bolt app and two shipgate web roles, each in its process',
  );
  // A fresh prefix per bench run, so a fresh audit key is fine; a prefix's roles share it (one chain).
  const keys = new Map<string, string>();
  const shipgate = (prefix: string) => {
    const auditKey = keys.get(prefix) ?? randomBytes(32).toString('hex');
    keys.set(prefix, auditKey);
    return { kind: 'shipgate', redisUrl, prefix, slackApiUrl: slack.apiUrl, auditKey } as const;
  };
  // Section 2's web role starts now too, and idles (an idle web role sends Redis nothing) until its turn.
  const [http, bolt, web, writesWeb] = await Promise.all([
    owned(hooks, startAckServer({ kind: 'http' })),
    owned(hooks, startAckServer({ kind: 'bolt', slackApiUrl: slack.apiUrl })),
    owned(hooks, startAckServer({ ...shipgate(PREFIX), role: 'web' })),
    owned(hooks, startAckServer({ ...shipgate(WRITES_PREFIX), role: 'web' })),
  ]);

  // The first command loads the create script into Redis (EVAL on a fresh connection): not counted.
  const first = await sendSlashCommand(web.url, SIGNING_SECRET, commandFields(SEQUENTIAL_WARM, WARM_CHANNEL, 'US'));
  if (!queuedOk(first)) throw new Error(`shipgate warm-up answered ${first.status}: ${first.body}`);
  // The exact count: the web role is the only Redis client besides this probe while these run.
  const countBefore = await commandCalls(probe);
  for (let i = 0; i < SEQUENTIAL_WARM; i++) {
    const r = await sendSlashCommand(web.url, SIGNING_SECRET, commandFields(i, WARM_CHANNEL, 'US'));
    if (!queuedOk(r)) throw new Error(`shipgate warm-up answered ${r.status}: ${r.body}`);
  }
  const sequential = callsBetween(countBefore, await commandCalls(probe));
  const perShip: RedisCalls = {
    total: sequential.total / SEQUENTIAL_WARM,
    scripts: sequential.scripts / SEQUENTIAL_WARM,
    top: sequential.top,
  };

  progress('ack: warming up all three (the same sequential commands and concurrent burst)');
  await warmUp(http, 'bare node:http', { sequential: true });
  await warmUp(bolt, 'bare Bolt', { sequential: true });
  await warmUp(web, 'shipgate', { sequential: false });

  const targets = [
    { name: 'bare node:http', server: http, rounds: [] as BurstResult[] },
    { name: 'bare Bolt', server: bolt, rounds: [] as BurstResult[] },
    { name: 'shipgate', server: web, rounds: [] as BurstResult[] },
  ];
  let duringBurst: RedisCalls = { total: 0, scripts: 0, top: '' };
  for (let round = 0; round < ROUNDS; round++) {
    progress(`ack: round ${round + 1} of ${ROUNDS}: ${BURST} concurrent signed /ship commands to each`);
    for (let k = 0; k < targets.length; k++) {
      const target = targets[(round + k) % targets.length];
      if (target === undefined) continue;
      await sleep(300);
      const before = target.server === web ? await commandCalls(probe) : undefined;
      target.rounds.push(burstResult(await burstAt(target.server, CHANNEL, 'U', BURST)));
      if (before !== undefined) {
        const calls = callsBetween(before, await commandCalls(probe));
        duringBurst = { total: calls.total / BURST, scripts: calls.scripts / BURST, top: calls.top };
      }
    }
  }
  const [httpResult, boltResult, shipgateResult] = targets.map((t) => overRounds(t.rounds));
  const store = createRunStore({ redis: probe, prefix: PREFIX, clock: () => new Date() });
  const runsCreated = (await store.listActive()).filter((r) => r.chat.channel === CHANNEL).length;
  await Promise.all([http.stop(), bolt.stop(), web.stop()]);

  progress('writes: starting a worker role beside the second web role (a prefix of their own), warming up');
  const worker = await owned(hooks, startAckServer({ ...shipgate(WRITES_PREFIX), role: 'worker' }));
  // A smaller concurrent warm-up than section 1's: its cards must be posted (10 a second) before the burst.
  await warmUp(writesWeb, 'shipgate (section 2)', { sequential: true, concurrent: WRITES_CONCURRENT_WARM });
  const warmRuns = SEQUENTIAL_WARM + WRITES_CONCURRENT_WARM;
  await waitUntil(
    () => rootMessages(slack, WARM_CHANNEL).length >= warmRuns,
    60_000,
    `the ${warmRuns} warm-up runs to get their cards`,
  );
  await waitForQuiet(slack, 3_500, 30_000);

  progress(`writes: ${BURST} concurrent signed /ship commands, the worker role running`);
  const memBefore = await usedMemory(probe);
  const workerCpuBefore = await worker.cpuMs();
  const burstStart = Date.now();
  const withWorker = burstResult(await burstAt(writesWeb, CHANNEL, 'U', BURST));
  const workerCpu = (await worker.cpuMs()) - workerCpuBefore;
  const writesStore = createRunStore({ redis: probe, prefix: WRITES_PREFIX, clock: () => new Date() });
  const writesRunsCreated = (await writesStore.listActive()).filter((r) => r.chat.channel === CHANNEL).length;

  progress('writes: waiting for every run of the burst to get its root card');
  await waitUntil(() => rootMessages(slack, CHANNEL).length >= BURST, 110_000, `${BURST} root cards`);
  progress('writes: waiting for card updates to settle (4 s without a write)');
  const settled = await waitForQuiet(slack, 4_000, 30_000);
  const memAfter = await usedMemory(probe);
  const states = new Map<string, number>();
  for (const run of (await writesStore.listActive()).filter((r) => r.chat.channel === CHANNEL)) {
    const gate = run.gates.find((g) => g.state !== 'passed' && g.state !== 'skipped');
    const where = gate === undefined ? run.state : `${run.state} at ${gate.name}`;
    states.set(where, (states.get(where) ?? 0) + 1);
  }
  const result: AckBenchResult = {
    shipgate: shipgateResult!,
    bolt: boltResult!,
    http: httpResult!,
    withWorker,
    workerCpuMsPerCommand: workerCpu / BURST,
    perShip,
    duringBurst,
    runsCreated,
    writesRunsCreated,
    runStates: [...states].map(([state, count]) => `${count} ${state}`).join(', '),
    writes: analyseWrites(slack, CHANNEL, burstStart, BURST),
    settled,
    bytesPerInFlightRun: (memAfter - memBefore) / BURST,
    unexpected: slack.unexpected.length,
  };
  await Promise.all([worker.stop(), writesWeb.stop()]);
  return result;
}

/** The ack table: shipgate against both baselines (the writes rows have none). */
export function ackRows(r: AckBenchResult): string[][] {
  const s = r.shipgate;
  const b = r.bolt;
  const h = r.http;
  const row = (label: string, pick: (t: BurstResult) => number, target = ''): string[] => [
    '1 ack',
    label,
    ms(pick(s)),
    ms(pick(b)),
    ms(pick(h)),
    ratio(pick(s), pick(b)),
    ratio(pick(s), pick(h)),
    target,
  ];
  const x = r.writes;
  const w = (metric: string, value: string, target = ''): string[] => [
    '2 writes',
    metric,
    value,
    '',
    '',
    '',
    '',
    target,
  ];
  return [
    row(`p50 (${BURST} concurrent, median of ${ROUNDS} rounds)`, (t) => t.latency.p50),
    row('p95', (t) => t.latency.p95),
    row('p99', (t) => t.latency.p99, `<= ${ACK_P99_TARGET_MS} ms, <= ${ACK_BOLT_RATIO_TARGET}x Bolt`),
    row('max', (t) => t.latency.max),
    row('mean', (t) => t.latency.mean),
    row('burst, first write to last answer (client)', (t) => t.wallMs),
    row('server CPU per command (its process, user + system)', (t) => t.cpuMsPerCommand),
    [
      '1 ack',
      '"Queued run" acks',
      `${s.queued}/${BURST * ROUNDS}`,
      `${b.queued}/${BURST * ROUNDS}`,
      `${h.queued}/${BURST * ROUNDS}`,
      '',
      '',
      'all',
    ],
    ['1 ack', 'runs created (run store)', String(r.runsCreated), '', '', '', '', `= ${BURST * ROUNDS}`],
    [
      '1 ack',
      'Redis commands (incl. in scripts) / script calls per /ship, before the ack',
      `${num(r.perShip.total, 1)} / ${num(r.perShip.scripts, 1)}`,
      '0 / 0',
      '0 / 0',
      '',
      '',
      '',
    ],
    [
      '1 ack',
      'Redis commands / script calls per /ship during a burst',
      `${num(r.duringBurst.total, 1)} / ${num(r.duringBurst.scripts, 1)}`,
      '',
      '',
      '',
      '',
      '',
    ],
    [
      '1 ack',
      'p50 / p99 with the worker role busy beside it (section 2 burst)',
      `${ms(r.withWorker.latency.p50)} / ${ms(r.withWorker.latency.p99)}`,
      '',
      '',
      '',
      '',
      '',
    ],
    [
      '1 ack',
      'web / worker role CPU per command then',
      `${ms(r.withWorker.cpuMsPerCommand)} / ${ms(r.workerCpuMsPerCommand)}`,
      '',
      '',
      '',
      '',
      '',
    ],
    w('runs created / "Queued run" acks', `${r.writesRunsCreated} / ${r.withWorker.queued}`, `${BURST} / ${BURST}`),
    w('root cards posted (chat.postMessage)', String(x.rootPosts), `${BURST}, 1 per run`),
    w('distinct root card keys', String(x.distinctRootKeys), `${BURST}`),
    w('thread replies (chat.postMessage)', String(x.replies)),
    w('card updates (chat.update)', String(x.updates)),
    w('Slack writes total / per run', `${x.total} / ${num(x.perRun, 2)}`),
    w('max updates per message in any 3 s', String(x.maxUpdatesPerMessagePer3s), '<= 1'),
    w('min gap between writes to one message', ms(x.minGapSameMessageMs), `>= ${CARD_WINDOW_MS} ms`),
    w('peak writes per wall-clock second', String(x.peakPerCalendarSecond), `<= ${WRITES_PER_SECOND_LIMIT}`),
    w('peak writes in any sliding 1 s', String(x.peakPerSlidingSecond)),
    w('429s / failed write calls (fake never 429s)', `${x.rateLimited} / ${x.failed}`, '0'),
    w('burst drained (first to last write)', `${num(x.spanMs / 1000, 1)} s${r.settled ? '' : ' (not settled)'}`),
    w('Redis memory per in-flight run (whole bot)', bytes(r.bytesPerInFlightRun)),
  ];
}

export const ACK_HEADERS = ['section', 'metric', 'shipgate', 'bare Bolt', 'bare http', 'vs Bolt', 'vs http', 'target'];

export function ackNotes(r: AckBenchResult, out: (line?: string) => void): void {
  out('Ack (section 1): each server in a Node process of its own: bare node:http (HMAC check + the same JSON), bare');
  out("Bolt (App + its HTTP receiver, a /ship handler that only acks), shipgate's web role (no worker role: it would");
  out("share these 2 cores, not a deployment's). Each load client is a process of its own, timing every request with");
  out(
    `performance.now(); the fake Slack lives in the bench process. The same warm-up, then ${ROUNDS} rounds of the same`,
  );
  out(`burst to each (order rotating); figures are the medians of the rounds. Server CPU is the process's CPU time`);
  out('(user + system) during the burst, which other load on the machine disturbs less than latency.');
  out(`Section 2: a second web role with a worker role beside it (as deployed), its own prefix; warm-up ${SEQUENTIAL_WARM} + ${WRITES_CONCURRENT_WARM}, one burst.`);
  const perRound = (t: TargetResult) => t.rounds.map((round) => ms(round.latency.p99)).join(', ');
  out(`p99 per round: shipgate ${perRound(r.shipgate)}; bare Bolt ${perRound(r.bolt)}; bare http ${perRound(r.http)}`);
  out(`Redis per /ship (web role alone, ${SEQUENTIAL_WARM} sequential): ${r.perShip.top}`);
  out(`Redis during a shipgate burst (${BURST} commands): ${r.duringBurst.top}`);
  out(`run states after the section 2 burst: ${r.runStates || 'none'}`);
  for (const [name, t] of [
    ['shipgate', r.shipgate],
    ['bare Bolt', r.bolt],
    ['bare http', r.http],
    ['shipgate (section 2)', r.withWorker],
  ] as const) {
    if (t.otherBodies.length > 0) out(`other acks from ${name}: ${t.otherBodies.join(' | ')}`);
  }
  if (r.unexpected > 0) out(`fake Slack saw ${r.unexpected} unexpected request(s)`);
}

export function ackVerdicts(r: AckBenchResult, line: (pass: boolean, target: string, figure: string) => void): void {
  const s = r.shipgate.latency;
  const b = r.bolt.latency;
  const x = r.writes;
  line(
    s.p99 <= ACK_P99_TARGET_MS,
    `Slack ack p99 <= ${ACK_P99_TARGET_MS} ms (${BURST} concurrent)`,
    `${ms(s.p99)} (bare Bolt ${ms(b.p99)}, bare http ${ms(r.http.latency.p99)})`,
  );
  line(
    s.p99 <= ACK_BOLT_RATIO_TARGET * b.p99,
    `Slack ack p99 <= ${ACK_BOLT_RATIO_TARGET}x a bare Bolt app`,
    `${ratio(s.p99, b.p99)} (${ms(s.p99)} vs ${ms(b.p99)})`,
  );
  const all = BURST * ROUNDS;
  line(
    r.shipgate.queued === all &&
      r.runsCreated === all &&
      r.withWorker.queued === BURST &&
      r.writesRunsCreated === BURST,
    `one run per command, every command acked "Queued" (${all} + ${BURST})`,
    `${r.runsCreated} runs, ${r.shipgate.queued} acks; section 2: ${r.writesRunsCreated} runs, ${r.withWorker.queued} acks`,
  );
  line(
    x.rootPosts === BURST && x.distinctRootKeys === BURST,
    'one root card per run (no duplicate messages)',
    `${x.rootPosts} root cards, ${x.distinctRootKeys} distinct keys`,
  );
  line(
    x.maxUpdatesPerMessagePer3s <= 1,
    'card updates <= 1 per 3 s per message',
    `${x.maxUpdatesPerMessagePer3s} max (min gap ${ms(x.minGapSameMessageMs)})`,
  );
  line(
    x.rateLimited === 0 && x.peakPerCalendarSecond <= WRITES_PER_SECOND_LIMIT,
    `zero 429s: peak Slack writes <= ${WRITES_PER_SECOND_LIMIT}/s (configured limit)`,
    `${x.peakPerCalendarSecond}/s per wall-clock second, ${x.peakPerSlidingSecond} in the worst sliding 1 s, ${x.rateLimited} 429s`,
  );
}
