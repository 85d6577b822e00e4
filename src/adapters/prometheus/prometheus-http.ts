import { z } from 'zod';
import { ExternalOutageError, RefusedError } from '../../errors.js';
import type { Metrics } from '../../metrics.js';
import type { InstantResult, MetricsQueryPort, MetricsSample } from '../../ports/metrics-query.js';

/**
 * The metrics-query port over Prometheus' HTTP API (`POST {baseUrl}/api/v1/query`, form-encoded):
 * plain `fetch`, no client library. POST rather than GET because golden-signal queries can be long
 * and a URL has length limits along the way (proxies, Prometheus' own server); Prometheus and the
 * compatible servers (Thanos, Mimir, VictoriaMetrics) take both.
 *
 * Every answer is counted by its HTTP status (`metrics.externalCall('prometheus', status)`), counted
 * when the headers arrive, so an answer whose body then stalls is still one call; a call with no
 * answer is counted as `network_error`, `timeout` or `aborted`. How failures map to the port's two
 * error kinds is described in src/ports/metrics-query.ts; the choices per status are next to
 * `toFailure` below.
 */

export interface PrometheusHttpOptions {
  /** `PROMETHEUS_URL`; may carry a path prefix (`https://thanos.example/prometheus`). */
  baseUrl: string;
  fetch?: typeof fetch;
  metrics?: Pick<Metrics, 'externalCall'>;
  /** For the whole call, body included; default 10 s. */
  timeoutMs?: number;
}

const SYSTEM = 'prometheus';
const DEFAULT_TIMEOUT_MS = 10_000;
/** How much of a query, or of a non-JSON error body (a proxy's HTML page), goes into a message. */
const MAX_QUOTED = 300;

/**
 * Sample values travel as strings. Prometheus writes them with Go's `strconv.FormatFloat(v, 'f', -1,
 * 64)`, whose special values are `NaN`, `+Inf` and `-Inf`; `Number('+Inf')` is NaN, so they are
 * mapped by name. Other compatible servers may use an exponent (`1e-07`); both forms are accepted,
 * anything else (including an empty string, which `Number` would read as 0) is not a value.
 */
const DECIMAL = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/u;

const sampleValueSchema = z.string().transform((text, ctx) => {
  if (text === 'NaN') return Number.NaN;
  if (text === '+Inf' || text === 'Inf') return Number.POSITIVE_INFINITY;
  if (text === '-Inf') return Number.NEGATIVE_INFINITY;
  if (DECIMAL.test(text)) return Number(text);
  ctx.addIssue({ code: 'custom', message: `not a sample value: ${JSON.stringify(text)}` });
  return z.NEVER;
});

/** `[<unix time>, "<value>"]`: only the value is used. */
const pointSchema = z.tuple([z.unknown(), sampleValueSchema]);

const vectorSampleSchema = z.object({
  metric: z.record(z.string(), z.string()).default({}),
  // Absent for a native-histogram sample, which carries `histogram` instead.
  value: pointSchema.optional(),
});

/** The response envelope (https://prometheus.io/docs/prometheus/latest/querying/api/#format-overview). */
const envelopeSchema = z.object({
  status: z.enum(['success', 'error']),
  data: z.object({ resultType: z.string(), result: z.unknown() }).optional(),
  errorType: z.string().optional(),
  error: z.string().optional(),
});

type Envelope = z.infer<typeof envelopeSchema>;

/**
 * `errorType`s that say the query itself is wrong: `bad_data` (400: it does not parse, or a
 * parameter is wrong) and `execution` (422: it parses but cannot be evaluated, e.g. many-to-many
 * matching or a sample limit, which is the query's shape, not the server's health). The rest
 * (`timeout`, `canceled`, `internal`, `unavailable`) are the server's trouble.
 */
const QUERY_ERROR_TYPES: ReadonlySet<string> = new Set(['bad_data', 'execution']);
/** 4xx statuses that are about the moment, not the request: a proxy's rate limit or timeout, Prometheus' 499 for a cancelled query. */
const TRANSIENT_4XX: ReadonlySet<number> = new Set([408, 429, 499]);

export function createPrometheusHttp(options: PrometheusHttpOptions): MetricsQueryPort {
  // `prometheus:9090` parses as a URL with the scheme `prometheus:`: only http(s) is a base URL.
  if (!URL.canParse(options.baseUrl) || !/^https?:$/u.test(new URL(options.baseUrl).protocol)) {
    throw new RefusedError(
      `PROMETHEUS_URL must be an http(s) URL, e.g. http://prometheus:9090 (got ${options.baseUrl})`,
    );
  }
  const endpoint = `${options.baseUrl.replace(/\/+$/u, '')}/api/v1/query`;
  const fetchImpl = options.fetch ?? fetch;
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const count = (status: string): void => options.metrics?.externalCall(SYSTEM, status);

  async function instantQuery(query: string, callOptions?: { signal?: AbortSignal }): Promise<InstantResult> {
    const caller = callOptions?.signal;
    caller?.throwIfAborted();
    const timeout = AbortSignal.timeout(timeoutMs);
    const signal = caller ? AbortSignal.any([caller, timeout]) : timeout;

    let status: number | undefined;
    let text: string;
    try {
      const response = await fetchImpl(endpoint, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
        body: new URLSearchParams({ query }).toString(),
        signal,
      });
      status = response.status;
      count(String(status));
      text = await response.text();
    } catch (error) {
      // The caller's cancel is not an outage: it leaves as the caller's own abort reason.
      if (caller?.aborted) {
        if (status === undefined) count('aborted');
        caller.throwIfAborted();
      }
      const stage = status === undefined ? 'no answer' : `HTTP ${status}, reading the answer`;
      if (timeout.aborted) {
        if (status === undefined) count('timeout');
        throw new ExternalOutageError(SYSTEM, `query timed out after ${timeoutMs} ms (${stage}): ${quote(query)}`, {
          cause: error,
        });
      }
      if (status === undefined) count('network_error');
      throw new ExternalOutageError(SYSTEM, `query failed (${stage}): ${networkReason(error)}`, { cause: error });
    }

    const envelope = envelopeSchema.safeParse(parseJson(text));
    const ok = status >= 200 && status < 300;
    if (!ok || envelope.data?.status === 'error') throw toFailure(status, envelope.data, text, query);
    if (!envelope.success) {
      throw new ExternalOutageError(SYSTEM, `HTTP ${status} is not a Prometheus answer: ${quote(text)}`, {
        cause: envelope.error,
      });
    }
    return toResult(envelope.data, query);
  }

  return { instantQuery };
}

/**
 * Refused: the `errorType`s that blame the query, and any other 4xx but the transient ones (a
 * proxy's 401/403/404 is a wrong URL or credentials: the configuration, which a retry does not
 * change). Outage: 5xx (503 is Prometheus' timeout and not-ready answer), 408/429/499, and a 2xx
 * `status: "error"` whose type blames the server.
 */
function toFailure(status: number, envelope: Envelope | undefined, text: string, query: string): Error {
  const errorType = envelope?.errorType;
  const detail =
    envelope?.error !== undefined ? `${errorType ?? 'error'}: ${envelope.error}` : quote(text) || 'no error message';
  const refused =
    errorType !== undefined && QUERY_ERROR_TYPES.has(errorType)
      ? true
      : status >= 400 && status < 500 && !TRANSIENT_4XX.has(status);
  if (refused) return new RefusedError(`Prometheus refused the query (HTTP ${status}, ${detail}): ${quote(query)}`);
  return new ExternalOutageError(SYSTEM, `HTTP ${status}: ${detail}`);
}

function toResult(envelope: Envelope, query: string): InstantResult {
  const data = envelope.data;
  if (data === undefined) throw new ExternalOutageError(SYSTEM, 'a success answer without data');
  switch (data.resultType) {
    case 'vector': {
      const parsed = z.array(vectorSampleSchema).safeParse(data.result);
      if (!parsed.success) throw unexpected('vector', parsed.error);
      const samples: MetricsSample[] = [];
      for (const sample of parsed.data) {
        if (sample.value === undefined) {
          throw new RefusedError(
            `the query returns native histograms, not numbers (wrap it in histogram_quantile or histogram_count): ${quote(query)}`,
          );
        }
        samples.push({ labels: sample.metric, value: sample.value[1] });
      }
      return { kind: 'vector', samples };
    }
    case 'scalar': {
      const parsed = pointSchema.safeParse(data.result);
      if (!parsed.success) throw unexpected('scalar', parsed.error);
      return { kind: 'scalar', value: parsed.data[1] };
    }
    case 'matrix':
      throw new RefusedError(
        `the query returns a range vector, which has no single value to compare (drop the [range] or wrap it, e.g. in rate()): ${quote(query)}`,
      );
    case 'string':
      throw new RefusedError(`the query returns a string, not a number: ${quote(query)}`);
    default:
      throw new ExternalOutageError(SYSTEM, `unknown resultType ${JSON.stringify(data.resultType)}`);
  }
}

function unexpected(resultType: string, error: z.ZodError): ExternalOutageError {
  return new ExternalOutageError(SYSTEM, `unexpected ${resultType} result: ${z.prettifyError(error)}`, {
    cause: error,
  });
}

function parseJson(text: string): unknown {
  try {
    const value: unknown = JSON.parse(text);
    return value;
  } catch {
    return undefined;
  }
}

/** fetch's network failures are a bare `TypeError: fetch failed`; the reason (ECONNREFUSED, …) is its cause. */
function networkReason(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const cause = error.cause instanceof Error ? `: ${error.cause.message}` : '';
  return `${error.message}${cause}`;
}

/** One line, bounded: queries are often written over several lines in YAML, and error pages can be long. */
function quote(text: string): string {
  const line = text.replace(/\s*\n\s*/gu, ' ').trim();
  return line.length > MAX_QUOTED ? `${line.slice(0, MAX_QUOTED - 1)}…` : line;
}
