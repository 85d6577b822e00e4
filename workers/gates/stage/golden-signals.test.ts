import { describe, expect, it } from 'vitest';
import { ExternalOutageError, RefusedError } from '../../../src/errors.js';
import type { InstantResult, MetricsQueryPort } from '../../../src/ports/metrics-query.js';
import { MAX_LINE } from './deploy-report.js';
import {
  checkGoldenSignals,
  evaluateGoldenSignals,
  renderGoldenSignalFailure,
  type GoldenSignalBreach,
  type GoldenSignals,
} from './golden-signals.js';

const ERRORS = 'sum(rate(http_requests_total{code=~"5.."}[5m])) / sum(rate(http_requests_total[5m]))';
const LATENCY = 'histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket[5m])))';

const SIGNALS: GoldenSignals = {
  errorRatio: { query: ERRORS, max: 0.01 },
  latencyP95: { query: LATENCY, maxSeconds: 0.5 },
};

const one = (value: number, labels: Record<string, string> = {}): InstantResult => ({
  kind: 'vector',
  samples: [{ labels, value }],
});
const EMPTY: InstantResult = { kind: 'vector', samples: [] };

/** An in-memory port: a scripted result or error per query, and every call recorded. */
function memoryPort(answers: Record<string, InstantResult | Error>): MetricsQueryPort & {
  calls: Array<{ query: string; signal: AbortSignal | undefined }>;
} {
  const calls: Array<{ query: string; signal: AbortSignal | undefined }> = [];
  return {
    calls,
    async instantQuery(query, options) {
      calls.push({ query, signal: options?.signal });
      const answer = answers[query];
      if (answer === undefined) throw new Error(`unscripted query ${query}`);
      if (answer instanceof Error) throw answer;
      return answer;
    },
  };
}

describe('evaluateGoldenSignals', () => {
  it('passes when every value is at or under its threshold', () => {
    const outcome = evaluateGoldenSignals(SIGNALS, {
      errorRatio: one(0.01),
      latencyP95: { kind: 'scalar', value: 0.21 },
    });
    expect(outcome).toEqual({
      state: 'passed',
      summary: 'golden signals within their thresholds: errorRatio 0.01 ≤ 0.01, latencyP95 0.21s ≤ 0.5s',
      readings: [
        { signal: 'errorRatio', query: ERRORS, threshold: 0.01, value: 0.01, labels: {}, series: 1 },
        { signal: 'latencyP95', query: LATENCY, threshold: 0.5, value: 0.21, labels: {}, series: 1 },
      ],
    });
  });

  it('fails on a value over its threshold, with the query, value and threshold', () => {
    const outcome = evaluateGoldenSignals(SIGNALS, { errorRatio: one(0.042), latencyP95: one(0.2) });
    expect(outcome).toEqual({
      state: 'failed',
      summary: 'golden signal over its threshold: errorRatio 0.042 > 0.01',
      breaches: [{ signal: 'errorRatio', query: ERRORS, threshold: 0.01, value: 0.042, labels: {}, series: 1 }],
    });
  });

  it('reports every breach', () => {
    const outcome = evaluateGoldenSignals(SIGNALS, { errorRatio: one(0.5), latencyP95: one(1.25) });
    expect(outcome.state).toBe('failed');
    if (outcome.state !== 'failed') return;
    expect(outcome.breaches.map((b) => [b.signal, b.value])).toEqual([
      ['errorRatio', 0.5],
      ['latencyP95', 1.25],
    ]);
    expect(outcome.summary).toBe('golden signal over its threshold: errorRatio 0.5 > 0.01; latencyP95 1.25s > 0.5s');
  });

  it('takes the worst of several samples and names its labels', () => {
    const perPod: InstantResult = {
      kind: 'vector',
      samples: [
        { labels: { pod: 'shop-1' }, value: 0.002 },
        { labels: { pod: 'shop-3' }, value: 0.09 },
        { labels: { pod: 'shop-2' }, value: 0.03 },
      ],
    };
    const failed = evaluateGoldenSignals({ errorRatio: SIGNALS.errorRatio }, { errorRatio: perPod });
    expect(failed).toMatchObject({
      state: 'failed',
      breaches: [{ signal: 'errorRatio', value: 0.09, labels: { pod: 'shop-3' }, series: 3 }],
    });
    const passed = evaluateGoldenSignals({ errorRatio: { query: ERRORS, max: 0.1 } }, { errorRatio: perPod });
    expect(passed).toMatchObject({
      state: 'passed',
      readings: [{ value: 0.09, labels: { pod: 'shop-3' }, series: 3 }],
    });
  });

  it('waits on an empty result: no data yet is not a pass', () => {
    const outcome = evaluateGoldenSignals(SIGNALS, { errorRatio: EMPTY, latencyP95: one(0.1) });
    expect(outcome).toEqual({
      state: 'pending',
      summary: 'waiting for golden-signal data: errorRatio has no data yet (the query matched no series)',
      waiting: [{ signal: 'errorRatio', query: ERRORS, threshold: 0.01, reason: 'no-data', labels: null, series: 0 }],
    });
  });

  it('waits on NaN (no traffic), naming the series when it has labels', () => {
    expect(evaluateGoldenSignals(SIGNALS, { errorRatio: one(Number.NaN), latencyP95: one(0.1) })).toMatchObject({
      state: 'pending',
      summary: 'waiting for golden-signal data: errorRatio is NaN (no traffic yet?)',
      waiting: [{ signal: 'errorRatio', reason: 'nan', labels: {} }],
    });
    const mixed: InstantResult = {
      kind: 'vector',
      samples: [
        { labels: { pod: 'shop-1' }, value: 0.001 },
        { labels: { pod: 'shop-2' }, value: Number.NaN },
      ],
    };
    expect(evaluateGoldenSignals({ errorRatio: SIGNALS.errorRatio }, { errorRatio: mixed })).toMatchObject({
      state: 'pending',
      summary: 'waiting for golden-signal data: errorRatio is NaN for {pod="shop-2"} (no traffic yet?)',
      waiting: [{ reason: 'nan', labels: { pod: 'shop-2' }, series: 2 }],
    });
    expect(
      evaluateGoldenSignals(SIGNALS, { errorRatio: { kind: 'scalar', value: Number.NaN }, latencyP95: one(0.1) }).state,
    ).toBe('pending');
  });

  it('fails on a breach even when a NaN sample or another signal still waits', () => {
    const mixed: InstantResult = {
      kind: 'vector',
      samples: [
        { labels: { pod: 'shop-1' }, value: Number.NaN },
        { labels: { pod: 'shop-2' }, value: 0.2 },
      ],
    };
    expect(evaluateGoldenSignals({ errorRatio: SIGNALS.errorRatio }, { errorRatio: mixed })).toMatchObject({
      state: 'failed',
      breaches: [{ value: 0.2, labels: { pod: 'shop-2' } }],
    });
    expect(evaluateGoldenSignals(SIGNALS, { errorRatio: EMPTY, latencyP95: one(0.9) })).toMatchObject({
      state: 'failed',
      breaches: [{ signal: 'latencyP95', value: 0.9 }],
    });
  });

  it('counts +Inf (a quantile beyond the largest bucket) as over any threshold', () => {
    expect(
      evaluateGoldenSignals({ latencyP95: SIGNALS.latencyP95 }, { latencyP95: one(Number.POSITIVE_INFINITY) }),
    ).toMatchObject({
      state: 'failed',
      summary: 'golden signal over its threshold: latencyP95 +Inf > 0.5s',
    });
  });

  it('passes with no signal configured, and insists on a result for each configured one', () => {
    expect(evaluateGoldenSignals({}, {})).toEqual({
      state: 'passed',
      summary: 'no golden signals configured',
      readings: [],
    });
    expect(() => evaluateGoldenSignals(SIGNALS, { errorRatio: one(0) })).toThrow(
      /no result for the golden signal latencyP95/u,
    );
  });
});

describe('checkGoldenSignals', () => {
  it("runs each configured query once, with the caller's signal, and decides", async () => {
    const port = memoryPort({ [ERRORS]: one(0.001), [LATENCY]: one(0.7) });
    const controller = new AbortController();
    const outcome = await checkGoldenSignals({ port, signals: SIGNALS, signal: controller.signal });
    expect(outcome).toMatchObject({
      state: 'failed',
      breaches: [{ signal: 'latencyP95', query: LATENCY, value: 0.7 }],
    });
    expect(port.calls).toEqual([
      { query: ERRORS, signal: controller.signal },
      { query: LATENCY, signal: controller.signal },
    ]);
  });

  it('asks only the configured queries', async () => {
    const port = memoryPort({ [LATENCY]: one(0.1) });
    expect(await checkGoldenSignals({ port, signals: { latencyP95: SIGNALS.latencyP95 } })).toMatchObject({
      state: 'passed',
    });
    expect(port.calls.map((c) => c.query)).toEqual([LATENCY]);
    const none = memoryPort({});
    expect(await checkGoldenSignals({ port: none, signals: {} })).toMatchObject({ state: 'passed' });
    expect(none.calls).toEqual([]);
  });

  it("throws the port's errors: an outage to retry, and a refusal before an outage", async () => {
    const outage = new ExternalOutageError('prometheus', 'HTTP 503: unavailable: TSDB not ready');
    const refusal = new RefusedError('Prometheus refused the query (HTTP 400, bad_data: parse error)');
    await expect(
      checkGoldenSignals({ port: memoryPort({ [ERRORS]: outage, [LATENCY]: one(0.1) }), signals: SIGNALS }),
    ).rejects.toBe(outage);
    await expect(
      checkGoldenSignals({ port: memoryPort({ [ERRORS]: outage, [LATENCY]: refusal }), signals: SIGNALS }),
    ).rejects.toBe(refusal);
  });
});

describe('renderGoldenSignalFailure', () => {
  const breach = (over: Partial<GoldenSignalBreach>): GoldenSignalBreach => ({
    signal: 'errorRatio',
    query: ERRORS,
    threshold: 0.01,
    value: 0.042,
    labels: {},
    series: 1,
    ...over,
  });

  it('says which signal is over, by how much, with its query and worst series', () => {
    expect(
      renderGoldenSignalFailure('prod', [
        breach({}),
        breach({
          signal: 'latencyP95',
          query: LATENCY,
          threshold: 0.5,
          value: 0.7312345678,
          labels: { pod: 'shop-2', zone: 'b' },
          series: 3,
        }),
      ]),
    ).toEqual([
      'Deploy gate stage:prod failed.',
      'Golden signal errorRatio over its threshold: 0.042 > max 0.01.',
      `Query: ${ERRORS}`,
      'Golden signal latencyP95 over its threshold: 0.731235s > max 0.5s.',
      `Query: ${LATENCY}`,
      'Worst of 3 series: {pod="shop-2", zone="b"}',
    ]);
  });

  it('never prints a breaching value as equal to its threshold', () => {
    expect(renderGoldenSignalFailure('prod', [breach({ value: 0.0100000001 })])[1]).toBe(
      'Golden signal errorRatio over its threshold: 0.0100000001 > max 0.01.',
    );
  });

  it('keeps a multi-line query on one line and bounds long lines', () => {
    const long = `sum(rate(http_requests_total{code=~"5..",\n  path!~"${'x'.repeat(400)}"}[5m]))`;
    const lines = renderGoldenSignalFailure('prod', [breach({ query: long })]);
    expect(lines[2]).toMatch(/^Query: sum\(rate\(http_requests_total\{code=~"5..", path!~"x+…$/u);
    expect(lines[2]).toHaveLength(MAX_LINE);
  });
});
