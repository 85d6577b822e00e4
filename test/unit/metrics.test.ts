import { describe, expect, it } from 'vitest';
import { createMetrics } from '../../src/metrics.js';

/**
 * SPEC §8, issue 12: shipgate's own metrics are `shipgate_*`; prom-client's default Node.js
 * metrics keep their standard names, so stock Node.js dashboards and alerts work unchanged.
 */

describe('metric names', () => {
  it('exports the Node.js process metrics under their standard, unprefixed names', async () => {
    const metrics = createMetrics();
    const names = (await metrics.registry.getMetricsAsJSON()).map((metric) => metric.name);
    for (const name of [
      'process_cpu_seconds_total',
      'process_resident_memory_bytes',
      'process_start_time_seconds',
      'nodejs_eventloop_lag_seconds',
      'nodejs_heap_size_used_bytes',
      'nodejs_gc_duration_seconds',
    ]) {
      expect(names).toContain(name);
    }
    expect(names.filter((name) => name.startsWith('shipgate_process_') || name.startsWith('shipgate_nodejs_'))).toEqual(
      [],
    );
  });

  it("keeps the shipgate_ prefix on shipgate's own metrics, and every other name is a Node.js default", async () => {
    const metrics = createMetrics();
    const names = (await metrics.registry.getMetricsAsJSON()).map((metric) => metric.name);
    expect(names.filter((name) => name.startsWith('shipgate_')).sort()).toEqual([
      'shipgate_external_calls_total',
      'shipgate_gate_duration_seconds',
      'shipgate_model_cost_usd_total',
      'shipgate_model_tokens_total',
      'shipgate_queue_jobs',
      'shipgate_runs_active',
      'shipgate_runs_ended_total',
      'shipgate_runs_requested_total',
    ]);
    expect(names.filter((name) => !name.startsWith('shipgate_') && !/^(process|nodejs)_/.test(name))).toEqual([]);
  });

  it('keeps one registry per call, so two processes in one test never share counters', async () => {
    const first = createMetrics();
    const second = createMetrics();
    first.runRequested();
    expect(await first.registry.getSingleMetricAsString('shipgate_runs_requested_total')).toMatch(/ 1$/m);
    expect(await second.registry.getSingleMetricAsString('shipgate_runs_requested_total')).toMatch(/ 0$/m);
  });
});
