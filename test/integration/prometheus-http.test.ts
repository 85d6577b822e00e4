import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createPrometheusHttp } from '../../src/adapters/prometheus/prometheus-http.js';
import { ExternalOutageError, RefusedError } from '../../src/errors.js';
import { createMetrics, type Metrics } from '../../src/metrics.js';
import type { MetricsQueryPort } from '../../src/ports/metrics-query.js';
import { startPrometheusServer, type PrometheusServer } from '../helpers/prometheus-server.js';

const ERROR_RATIO =
  'sum(rate(http_requests_total{job="shop",code=~"5.."}[5m])) / sum(rate(http_requests_total{job="shop"}[5m]))';
const LATENCY = `histogram_quantile(0.95,
  sum by (le) (rate(http_request_duration_seconds_bucket{job="shop"}[5m])))`;

async function externalCalls(metrics: Metrics): Promise<Record<string, number>> {
  const metric = await metrics.registry.getSingleMetric('shipgate_external_calls_total')?.get();
  const counts: Record<string, number> = {};
  for (const value of metric?.values ?? []) {
    if (value.labels.system === 'prometheus') counts[String(value.labels.status)] = value.value;
  }
  return counts;
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected a rejection');
}

describe('Prometheus HTTP adapter against the Prometheus test server', () => {
  let server: PrometheusServer;
  let metrics: Metrics;
  let prometheus: MetricsQueryPort;

  beforeEach(async () => {
    server = await startPrometheusServer();
    metrics = createMetrics();
    prometheus = createPrometheusHttp({ baseUrl: server.url, metrics, timeoutMs: 2_000 });
  });

  afterEach(async () => {
    expect(server.unexpected).toEqual([]);
    await server.close();
  });

  it('asks one instant query with a POST form and parses a vector with labels', async () => {
    server.answer(ERROR_RATIO, {
      vector: [
        { labels: { pod: 'shop-1' }, value: 0.002 },
        { labels: { pod: 'shop-2' }, value: 0.0125 },
      ],
    });
    const result = await prometheus.instantQuery(ERROR_RATIO);
    expect(result).toEqual({
      kind: 'vector',
      samples: [
        { labels: { pod: 'shop-1' }, value: 0.002 },
        { labels: { pod: 'shop-2' }, value: 0.0125 },
      ],
    });
    expect(server.requests).toEqual([
      {
        method: 'POST',
        path: '/api/v1/query',
        query: ERROR_RATIO,
        params: { query: ERROR_RATIO },
        contentType: 'application/x-www-form-urlencoded',
      },
    ]);
    expect(await externalCalls(metrics)).toEqual({ '200': 1 });
  });

  it('keeps a multi-line query intact, and takes a base URL with a trailing slash', async () => {
    server.answer(LATENCY, 0.21);
    const port = createPrometheusHttp({ baseUrl: `${server.url}/`, metrics });
    expect(await port.instantQuery(LATENCY)).toEqual({ kind: 'vector', samples: [{ labels: {}, value: 0.21 }] });
    expect(server.count(LATENCY)).toBe(1);
  });

  it('parses a scalar', async () => {
    server.answer('scalar(vector(0.5))', { scalar: 0.5 });
    expect(await prometheus.instantQuery('scalar(vector(0.5))')).toEqual({ kind: 'scalar', value: 0.5 });
  });

  it('keeps NaN and ±Inf, which Prometheus sends as the strings "NaN", "+Inf" and "-Inf"', async () => {
    server.answer(ERROR_RATIO, 'nan');
    server.answer(LATENCY, {
      vector: [
        { labels: { le: 'a' }, value: '+Inf' },
        { labels: { le: 'b' }, value: '-Inf' },
        { labels: { le: 'c' }, value: 'NaN' },
      ],
    });
    server.answer('scalar(x)', { scalar: '+Inf' });
    expect(await prometheus.instantQuery(ERROR_RATIO)).toEqual({
      kind: 'vector',
      samples: [{ labels: {}, value: Number.NaN }],
    });
    expect(await prometheus.instantQuery(LATENCY)).toEqual({
      kind: 'vector',
      samples: [
        { labels: { le: 'a' }, value: Number.POSITIVE_INFINITY },
        { labels: { le: 'b' }, value: Number.NEGATIVE_INFINITY },
        { labels: { le: 'c' }, value: Number.NaN },
      ],
    });
    expect(await prometheus.instantQuery('scalar(x)')).toEqual({ kind: 'scalar', value: Number.POSITIVE_INFINITY });
  });

  it('answers an empty vector as no samples (not as zero)', async () => {
    server.answer(ERROR_RATIO, 'empty');
    expect(await prometheus.instantQuery(ERROR_RATIO)).toEqual({ kind: 'vector', samples: [] });
  });

  it("refuses a query Prometheus cannot parse (400 bad_data), with Prometheus' message and the query", async () => {
    const bad = 'sum(rate(http_requests_total[5m])';
    server.answer(bad, {
      status: 400,
      errorType: 'bad_data',
      error: 'invalid parameter "query": 1:34: parse error: unclosed left parenthesis',
    });
    const error = await rejection(prometheus.instantQuery(bad));
    expect(error).toBeInstanceOf(RefusedError);
    expect(error).not.toBeInstanceOf(ExternalOutageError);
    expect(String(error)).toContain(
      'HTTP 400, bad_data: invalid parameter "query": 1:34: parse error: unclosed left parenthesis',
    );
    expect(String(error)).toContain(bad);
    expect(await externalCalls(metrics)).toEqual({ '400': 1 });
  });

  it('refuses a query that cannot be executed (422 execution)', async () => {
    server.answer(ERROR_RATIO, {
      status: 422,
      errorType: 'execution',
      error: 'found duplicate series for the match group {pod="shop-1"} on the right hand-side of the operation',
    });
    const error = await rejection(prometheus.instantQuery(ERROR_RATIO));
    expect(error).toBeInstanceOf(RefusedError);
    expect(String(error)).toContain('found duplicate series');
  });

  it('refuses results a threshold cannot be read from: a range vector, native histograms', async () => {
    server.answer('http_requests_total[5m]', { matrix: [{ labels: { pod: 'shop-1' }, values: [1, 2, 3] }] });
    server.answer('http_request_duration_seconds', {
      raw: {
        status: 200,
        contentType: 'application/json',
        body: JSON.stringify({
          status: 'success',
          data: {
            resultType: 'vector',
            result: [{ metric: {}, histogram: [1_700_000_000, { count: '3', sum: '0.9', buckets: [] }] }],
          },
        }),
      },
    });
    const range = await rejection(prometheus.instantQuery('http_requests_total[5m]'));
    expect(range).toBeInstanceOf(RefusedError);
    expect(String(range)).toMatch(/range vector/u);
    const histograms = await rejection(prometheus.instantQuery('http_request_duration_seconds'));
    expect(histograms).toBeInstanceOf(RefusedError);
    expect(String(histograms)).toMatch(/native histograms/u);
  });

  it('reports 503 (Prometheus not ready, or its own query timeout) as an outage', async () => {
    server.answer(ERROR_RATIO, { status: 503, errorType: 'unavailable', error: 'TSDB not ready' });
    const error = await rejection(prometheus.instantQuery(ERROR_RATIO));
    expect(error).toBeInstanceOf(ExternalOutageError);
    expect(error).toMatchObject({ system: 'prometheus' });
    expect(String(error)).toContain('HTTP 503: unavailable: TSDB not ready');
    expect(await externalCalls(metrics)).toEqual({ '503': 1 });
  });

  it("reports a proxy's non-JSON 502 page, and a 200 that is not Prometheus' envelope, as outages", async () => {
    server.answer(ERROR_RATIO, {
      raw: { status: 502, body: '<html>\n<body>502 Bad Gateway</body>\n</html>', contentType: 'text/html' },
    });
    server.answer(LATENCY, { raw: { status: 200, body: 'OK', contentType: 'text/plain' } });
    const gateway = await rejection(prometheus.instantQuery(ERROR_RATIO));
    expect(gateway).toBeInstanceOf(ExternalOutageError);
    expect(String(gateway)).toContain('HTTP 502: <html> <body>502 Bad Gateway</body> </html>');
    const garbled = await rejection(prometheus.instantQuery(LATENCY));
    expect(garbled).toBeInstanceOf(ExternalOutageError);
    expect(await externalCalls(metrics)).toEqual({ '502': 1, '200': 1 });
  });

  it('gives up on a hung server after timeoutMs with an outage', async () => {
    server.answer(ERROR_RATIO, 'hang');
    const port = createPrometheusHttp({ baseUrl: server.url, metrics, timeoutMs: 200 });
    const started = Date.now();
    const error = await rejection(port.instantQuery(ERROR_RATIO));
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(error).toBeInstanceOf(ExternalOutageError);
    expect(String(error)).toMatch(/timed out after 200 ms \(no answer\)/u);
    expect(await externalCalls(metrics)).toEqual({ timeout: 1 });
  });

  it("rejects with the caller's own abort reason when the caller cancels (not an outage)", async () => {
    server.answer(ERROR_RATIO, 'hang');
    const controller = new AbortController();
    const pending = prometheus.instantQuery(ERROR_RATIO, { signal: controller.signal });
    const cancelled = new Error('run cancelled');
    setTimeout(() => controller.abort(cancelled), 50);
    expect(await rejection(pending)).toBe(cancelled);
    expect(await externalCalls(metrics)).toEqual({ aborted: 1 });
    // An already aborted signal sends nothing.
    expect(await rejection(prometheus.instantQuery(ERROR_RATIO, { signal: controller.signal }))).toBe(cancelled);
    expect(server.count(ERROR_RATIO)).toBe(1);
  });

  it('reports an unreachable Prometheus as an outage', async () => {
    const gone = await startPrometheusServer();
    await gone.close();
    const port = createPrometheusHttp({ baseUrl: gone.url, metrics });
    const error = await rejection(port.instantQuery(ERROR_RATIO));
    expect(error).toBeInstanceOf(ExternalOutageError);
    expect(String(error)).toMatch(/no answer.*ECONNREFUSED/u);
    expect(await externalCalls(metrics)).toEqual({ network_error: 1 });
  });

  it('refuses a base URL that is not an http(s) URL at creation', () => {
    expect(() => createPrometheusHttp({ baseUrl: 'prometheus:9090' })).toThrow(RefusedError);
    expect(() => createPrometheusHttp({ baseUrl: 'not a url' })).toThrow(/PROMETHEUS_URL must be an http\(s\) URL/u);
  });
});

describe('the Prometheus test server', () => {
  it('answers GET too, and records what it was not scripted for', async () => {
    const server = await startPrometheusServer();
    try {
      server.answer('up', { vector: [{ labels: { job: 'shop' }, value: 1 }] });
      const response = await fetch(`${server.url}/api/v1/query?query=up`);
      expect(response.status).toBe(200);
      expect(await response.json()).toMatchObject({
        status: 'success',
        data: { resultType: 'vector', result: [{ metric: { job: 'shop' }, value: [expect.any(Number), '1'] }] },
      });
      const unscripted = await fetch(`${server.url}/api/v1/query?query=down`);
      expect(unscripted.status).toBe(400);
      await fetch(`${server.url}/api/v1/query_range?query=up`);
      expect(server.unexpected.map((u) => u.reason)).toEqual(['no scripted answer for "down"', 'unknown path']);
    } finally {
      await server.close();
    }
  });
});
