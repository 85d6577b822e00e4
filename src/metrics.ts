import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/**
 * Prometheus metrics (SPEC §8). One registry per process, injected, so tests
 * can read it and nothing relies on prom-client's global default. shipgate's
 * own metrics are named `shipgate_*`; the Node.js process metrics keep
 * prom-client's standard names (`process_cpu_seconds_total`,
 * `nodejs_eventloop_lag_seconds`, …) so stock Node.js dashboards and alerts
 * work unchanged (the scrape's `job`/`pod` labels say which process it is).
 */
export interface Metrics {
  registry: Registry;
  runEnded(state: string): void;
  runRequested(): void;
  /** Starts a gate timer; call the result with the outcome when the gate decides. */
  gateTimer(gateKind: string): (outcome: string) => void;
  externalCall(system: string, status: string): void;
  usage(tokens: { input: number; output: number; cacheRead: number; cacheWrite: number }, costUsd: number): void;
  /** Registers a callback that reports gauges at scrape time (queue depth, active runs). */
  onCollect(collect: (set: { queueDepth(queue: string, state: string, value: number): void; activeRuns(state: string, value: number): void }) => Promise<void>): void;
}

export function createMetrics(): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const collectors: Array<Parameters<Metrics['onCollect']>[0]> = [];

  const runsEnded = new Counter({ name: 'shipgate_runs_ended_total', help: 'Runs that reached a terminal state', labelNames: ['state'], registers: [registry] });
  const runsRequested = new Counter({ name: 'shipgate_runs_requested_total', help: 'Runs created from chat commands', registers: [registry] });
  const gateDuration = new Histogram({
    name: 'shipgate_gate_duration_seconds',
    help: 'Time a gate evaluation took, by gate kind and outcome',
    labelNames: ['gate', 'outcome'],
    buckets: [0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600],
    registers: [registry],
  });
  const external = new Counter({ name: 'shipgate_external_calls_total', help: 'Calls to outside systems by system and status', labelNames: ['system', 'status'], registers: [registry] });
  const tokens = new Counter({ name: 'shipgate_model_tokens_total', help: 'Model tokens by kind', labelNames: ['kind'], registers: [registry] });
  const cost = new Counter({ name: 'shipgate_model_cost_usd_total', help: 'Model cost in USD', registers: [registry] });
  // prom-client collects metrics of one scrape in parallel: both gauges share one collection pass.
  let collecting: Promise<void> | undefined;
  const collectOnce = (): Promise<void> => {
    collecting ??= (async () => {
      activeRuns.reset();
      for (const collect of collectors) {
        await collect({
          queueDepth: (queue, state, value) => queueDepth.set({ queue, state }, value),
          activeRuns: (state, value) => activeRuns.set({ state }, value),
        });
      }
    })().finally(() => {
      collecting = undefined;
    });
    return collecting;
  };
  const activeRuns: Gauge = new Gauge({
    name: 'shipgate_runs_active',
    help: 'Runs not yet in a terminal state, by state',
    labelNames: ['state'],
    registers: [registry],
    collect: collectOnce,
  });
  const queueDepth: Gauge = new Gauge({
    name: 'shipgate_queue_jobs',
    help: 'Jobs in each queue by state',
    labelNames: ['queue', 'state'],
    registers: [registry],
    collect: collectOnce,
  });

  return {
    registry,
    runEnded: (state) => runsEnded.inc({ state }),
    runRequested: () => runsRequested.inc(),
    gateTimer(gateKind) {
      const end = gateDuration.startTimer({ gate: gateKind });
      return (outcome) => end({ outcome });
    },
    externalCall: (system, status) => external.inc({ system, status }),
    usage(t, usd) {
      tokens.inc({ kind: 'input' }, t.input);
      tokens.inc({ kind: 'output' }, t.output);
      tokens.inc({ kind: 'cache_read' }, t.cacheRead);
      tokens.inc({ kind: 'cache_write' }, t.cacheWrite);
      cost.inc(usd);
    },
    onCollect(collect) {
      collectors.push(collect);
    },
  };
}
