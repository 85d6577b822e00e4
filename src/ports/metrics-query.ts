/**
 * The metrics-query port: one PromQL instant query (SPEC §5, golden signals against
 * `PROMETHEUS_URL`). Only what the golden-signal checks use crosses it: the value of each series at
 * the evaluation instant, already parsed. No wire shapes (the `[time, "value"]` pairs, the envelope)
 * leave the adapter (src/adapters/prometheus/).
 *
 * Values are JavaScript numbers with Prometheus' special values kept, not dropped: `NaN` (a 0/0
 * error ratio when there was no traffic, `histogram_quantile` over no observations) and `±Infinity`
 * (a quantile that falls into the `+Inf` bucket). What they mean for a threshold is the caller's to
 * decide (workers/gates/stage/golden-signals.ts), so the adapter reports them as they are.
 *
 * Failures leave as the two error kinds the queue understands (src/errors.ts):
 * - `RefusedError`: Prometheus says the query itself is wrong (HTTP 400 `bad_data`, 422
 *   `execution`) or answers with something a threshold cannot be read from (a range vector, a
 *   string, native histograms). Retrying cannot help; the message carries Prometheus' own `error`
 *   and the query, so whoever owns the pipeline config can fix it.
 * - `ExternalOutageError` (system `prometheus`): unreachable, timed out, 5xx/503, rate-limited, or
 *   an answer that is not Prometheus' envelope. The queue retries the step with backoff.
 * An abort through the caller's `signal` rejects with that signal's reason, as `fetch` does.
 */

export interface MetricsSample {
  /** The series' labels (`__name__` included when the query keeps it); empty for an aggregate such as `sum(...)`. */
  labels: Record<string, string>;
  /** May be `NaN`, `Infinity` or `-Infinity`. */
  value: number;
}

export type InstantResult = { kind: 'vector'; samples: MetricsSample[] } | { kind: 'scalar'; value: number };

export interface MetricsQueryPort {
  instantQuery(query: string, options?: { signal?: AbortSignal }): Promise<InstantResult>;
}
