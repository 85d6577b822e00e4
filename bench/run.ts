import { ACK_HEADERS, ackNotes, ackRows, ackVerdicts, benchAck, type AckBenchResult } from './ack-bench.js';
import { spawnRedis } from '../test/helpers/global-redis.js';
import { benchPolicy } from './bench-bot.js';
import { benchDeployGates, deployNotes, deployRows, deployVerdicts, type DeployBenchResult } from './deploy-bench.js';
import { benchRecovery, recoveryNotes, recoveryRows, recoveryVerdicts, type RecoveryBenchResult } from './recovery-bench.js';
import { bytes, num, ratio, renderTable } from './stats.js';
import { benchRunStore, type StoreBenchResult } from './store-bench.js';

/**
 * `npm run bench`: the SPEC §10 targets that a single process on loopback can
 * measure, each next to a baseline measured in the same run. Prints a table
 * and one PASS/MISS line per target; exits 0 on misses (benchmarks report,
 * they do not gate) and 1 when the benchmark itself fails.
 *
 *   1. Slack ack latency for 200 concurrent signed `/ship` commands vs a bare Bolt app that only
 *      acks and a bare node:http server that verifies the signature and answers the same JSON,
 *      each server, the load client and the fake Slack in processes of their own (bench/ack-bench.ts).
 *   2. Slack writes caused by that burst, as recorded by the fake Slack Web API.
 *   3. Run store throughput (1,000 runs) vs plain SET/GET, and Redis memory per run.
 *   4–6. The deploy gates (bench/deploy-bench.ts): gate change → thread reply with informer events vs
 *      10 s polling, LIST/WATCH per kind with 100 runs in flight, memory per waiting run (1,000 runs).
 *   7. Crash recovery (bench/recovery-bench.ts): SIGKILL of a worker process → its run moving again in
 *      another, 20 kills with today's lock and stall settings vs 20 with the earlier 15 s / 5 s.
 *
 * `npm run bench -- --only ack` runs sections 1 and 2 alone (a loaded machine disturbs them least).
 */

const STORE_RUNS = 1_000;
const STORE_ROUNDS = 3;
/** `--only ack` (or `--only=ack`): sections 1 and 2 alone. */
const only = ((): string | undefined => {
  const at = process.argv.findIndex((arg) => arg === '--only' || arg.startsWith('--only='));
  if (at === -1) return undefined;
  const value = process.argv[at]?.startsWith('--only=') === true ? process.argv[at]?.slice('--only='.length) : process.argv[at + 1];
  if (value !== 'ack') throw new Error(`bench: --only takes "ack", not ${String(value)}`);
  return value;
})();
/**
 * Everything must be done (or abandoned and cleaned up) within 4 minutes: the ack section alone
 * starts five server processes and a load client per burst (a minute or more on a busy 2-core machine).
 */
const HARD_LIMIT_MS = 480_000;

const startedAt = performance.now();
const progress = (message: string): void => {
  process.stderr.write(`[bench ${((performance.now() - startedAt) / 1000).toFixed(1).padStart(5)} s] ${message}\n`);
};

const cleanups: (() => Promise<void>)[] = [];
/** Runs the clean-up steps registered after the first `keep` ones (newest first). */
async function cleanUp(keep = 0): Promise<void> {
  while (cleanups.length > keep) {
    const step = cleanups.pop();
    try {
      await step?.();
    } catch (error) {
      progress(`clean-up step failed: ${String(error)}`);
    }
  }
}

async function main(): Promise<number> {
  const watchdog = setTimeout(() => {
    progress(`exceeded ${HARD_LIMIT_MS / 1000} s; cleaning up and aborting`);
    void cleanUp().finally(() => process.exit(1));
  }, HARD_LIMIT_MS);
  watchdog.unref();
  const abort = () => {
    progress('interrupted; cleaning up');
    void cleanUp().finally(() => process.exit(1));
  };
  process.once('SIGINT', abort);
  process.once('SIGTERM', abort);

  try {
    progress('starting a throwaway redis-server');
    const redis = await spawnRedis();
    cleanups.push(() => redis.stop());

    // --- 3. run store (first, on an idle Redis, so memory deltas are only the store's) ---
    let store: { seq: StoreBenchResult; par: StoreBenchResult } | undefined;
    if (only === undefined) {
      const policy = benchPolicy(redis.url);
      progress(`run store: ${STORE_ROUNDS} x ${STORE_RUNS} runs, sequential`);
      const seq = await benchRunStore(redis.url, policy, { runs: STORE_RUNS, concurrency: 1, tag: 's', rounds: STORE_ROUNDS });
      progress(`run store: ${STORE_ROUNDS} x ${STORE_RUNS} runs, 32 in flight`);
      const par = await benchRunStore(redis.url, policy, { runs: STORE_RUNS, concurrency: 32, tag: 'p', rounds: STORE_ROUNDS });
      store = { seq, par };
    }

    // --- 1, 2. ack latency and the Slack writes of its burst (bench/ack-bench.ts) ---
    const ack = await benchAck(redis.url, { progress, cleanups });

    // --- 4–6. deploy gates (the ack section's servers stopped first; Redis, cleanups[0], stays) ---
    progress('stopping the ack section (its processes and the fake Slack)');
    await cleanUp(1);
    const deploy = only === undefined ? await benchDeployGates(redis.url, { progress, cleanups }) : undefined;

    // --- 7. crash recovery (the deploy section's processes stopped first; Redis stays) ---
    await cleanUp(1);
    const recovery = only === undefined ? await benchRecovery(redis.url, { progress, cleanups }) : undefined;

    progress('stopping everything and Redis');
    await cleanUp();
    report(ack, store, deploy, recovery);
    return 0;
  } finally {
    clearTimeout(watchdog);
    await cleanUp();
  }
}

function report(
  ack: AckBenchResult,
  store: { seq: StoreBenchResult; par: StoreBenchResult } | undefined,
  deploy: DeployBenchResult | undefined,
  recovery: RecoveryBenchResult | undefined,
): void {
  const out = (line = ''): void => {
    process.stdout.write(`${line}\n`);
  };
  out();
  out(renderTable(ACK_HEADERS, ackRows(ack)));
  out();
  out('vs = shipgate / baseline (lower is better). Figures from this machine as it is: other work on it shows up in them.');
  ackNotes(ack, out);
  out();
  const rows: string[][] = [];
  if (store !== undefined) rows.push(...storeRows(store.seq, store.par));
  if (deploy !== undefined) rows.push(...deployRows(deploy));
  if (recovery !== undefined) rows.push(...recoveryRows(recovery));
  if (rows.length > 0) {
    out(renderTable(['section', 'metric', 'shipgate', 'baseline', 'ratio', 'target'], rows));
    out();
    out('ratio = shipgate / baseline (latency: lower is better; ops/s: higher is better).');
  }
  if (store !== undefined) out(`Store figures: median of ${store.seq.rounds} rounds of ${store.seq.runs} fresh runs.`);
  if (deploy !== undefined) {
    out();
    deployNotes(deploy, out);
  }
  if (recovery !== undefined) {
    out();
    recoveryNotes(recovery, out);
  }
  out();

  const line = (pass: boolean, target: string, figure: string): void => out(`${pass ? 'PASS' : 'MISS'}  ${target}: ${figure}`);
  ackVerdicts(ack, line);
  if (store !== undefined) storeVerdict(store.seq, ack.bytesPerInFlightRun, line);
  if (deploy !== undefined) deployVerdicts(deploy, line);
  if (recovery !== undefined) recoveryVerdicts(recovery, line);
}

function storeRows(seq: StoreBenchResult, par: StoreBenchResult): string[][] {
  const rows: string[][] = [];
  for (const r of [seq, par]) {
    const mode = r.concurrency === 1 ? 'sequential' : `${r.concurrency} in flight`;
    rows.push(
      ['3 store', `create ops/s (${mode}) vs SET`, num(r.store.createOps), num(r.baseline.createOps), ratio(r.store.createOps, r.baseline.createOps), ''],
      ['3 store', `get ops/s (${mode}) vs GET+parse`, num(r.store.getOps), num(r.baseline.getOps), ratio(r.store.getOps, r.baseline.getOps), ''],
      ['3 store', `create+get ops/s (${mode})`, num(r.store.totalOps), num(r.baseline.totalOps), ratio(r.store.totalOps, r.baseline.totalOps), ''],
    );
  }
  rows.push(
    ['3 store', `Redis memory per run (${seq.runs} runs) vs per SET key`, bytes(seq.storeBytesPerRun), bytes(seq.baselineBytesPerRun), ratio(seq.storeBytesPerRun, seq.baselineBytesPerRun), 'fixed'],
    ['3 store', 'per run: first half / second half', `${bytes(seq.storeBytesPerRunFirstHalf)} / ${bytes(seq.storeBytesPerRunSecondHalf)}`, '', '', ''],
  );
  return rows;
}

function storeVerdict(seq: StoreBenchResult, wholeBotBytesPerRun: number, line: (pass: boolean, target: string, figure: string) => void): void {
  const halves = [seq.storeBytesPerRunFirstHalf, seq.storeBytesPerRunSecondHalf];
  const spread = Math.abs(halves[0]! - halves[1]!) / Math.max(halves[0]!, halves[1]!);
  line(
    spread <= 0.25,
    `${seq.runs} runs in flight at a fixed memory per run`,
    `${bytes(seq.storeBytesPerRun)}/run in the store (halves ${bytes(halves[0]!)} / ${bytes(halves[1]!)}); whole bot ${bytes(wholeBotBytesPerRun)}/run`,
  );
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`bench failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(1);
  },
);
