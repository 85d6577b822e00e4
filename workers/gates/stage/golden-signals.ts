import type { StagePolicy } from '../../../src/config/policy.js';
import { RefusedError } from '../../../src/errors.js';
import type { InstantResult, MetricsQueryPort } from '../../../src/ports/metrics-query.js';
import { MAX_LINE, MAX_LINES } from './deploy-report.js';

/**
 * The optional golden-signal check of a stage (SPEC §1 gate 8, §5): each configured PromQL query
 * against `PROMETHEUS_URL`, its value compared with the stage's threshold (`errorRatio.max`,
 * `latencyP95.maxSeconds`). `evaluateGoldenSignals` is the pure decision over query results;
 * `checkGoldenSignals` runs the queries through the metrics-query port and decides.
 *
 * Decisions:
 *
 * - A value passes when it is ≤ its threshold (equal passes: `max` is the largest allowed value).
 *   `+Inf` is a number over any threshold: `histogram_quantile` answers it when the quantile falls
 *   in the `+Inf` bucket, i.e. latency beyond the largest bucket, which is a real breach.
 * - No data is not a pass. An empty vector (no series matched) waits with "no data yet": a fresh
 *   deployment may not have been scraped, or served, yet. The gate step bounds that wait; when it
 *   runs out, "no data" is what it reports, so a query that can never match does not pass silently.
 * - NaN is not a pass either, and waits the same way: it is what a ratio of two zero rates (no
 *   traffic) or a quantile over no observations gives, i.e. no data under another name.
 * - Several samples (a query that keeps labels, e.g. per pod): the worst one decides, and its labels
 *   are named. Worst means: any sample over the threshold fails (the largest is reported); else any
 *   NaN sample waits (a series without traffic is not known to be fine); else the largest value is
 *   the reading. A scalar is one sample without labels.
 * - Several signals: any breach fails the check, even while another signal still waits (a breach
 *   now is already an answer); every breach is reported. Otherwise any wait keeps it pending.
 * - No signal configured (`goldenSignals: {}`) passes: there is nothing to hold the stage on.
 */

export type GoldenSignals = NonNullable<StagePolicy['goldenSignals']>;
export type GoldenSignalName = 'errorRatio' | 'latencyP95';
export type GoldenSignalResults = Partial<Record<GoldenSignalName, InstantResult>>;

export interface GoldenSignalReading {
  signal: GoldenSignalName;
  query: string;
  threshold: number;
  /** The worst value (see the decisions above). */
  value: number;
  /** The labels of the series that gave `value`; empty for an aggregate or a scalar. */
  labels: Record<string, string>;
  /** How many series the query returned. */
  series: number;
}

export type GoldenSignalBreach = GoldenSignalReading;

export interface GoldenSignalWait {
  signal: GoldenSignalName;
  query: string;
  threshold: number;
  reason: 'no-data' | 'nan';
  /** The NaN series' labels (`nan`), null for an empty result. */
  labels: Record<string, string> | null;
  series: number;
}

export type GoldenSignalsOutcome =
  | { state: 'passed'; summary: string; readings: GoldenSignalReading[] }
  | { state: 'pending'; summary: string; waiting: GoldenSignalWait[] }
  | { state: 'failed'; summary: string; breaches: GoldenSignalBreach[] };

interface ConfiguredSignal {
  signal: GoldenSignalName;
  query: string;
  threshold: number;
}

/** The stage's configured signals, in a fixed order (error ratio first), with their thresholds. */
export function configuredSignals(signals: GoldenSignals): ConfiguredSignal[] {
  const configured: ConfiguredSignal[] = [];
  if (signals.errorRatio)
    configured.push({ signal: 'errorRatio', query: signals.errorRatio.query, threshold: signals.errorRatio.max });
  if (signals.latencyP95)
    configured.push({
      signal: 'latencyP95',
      query: signals.latencyP95.query,
      threshold: signals.latencyP95.maxSeconds,
    });
  return configured;
}

type Judgement = { kind: 'pass' | 'breach'; reading: GoldenSignalReading } | { kind: 'wait'; wait: GoldenSignalWait };

function judge(configured: ConfiguredSignal, result: InstantResult): Judgement {
  const samples = result.kind === 'scalar' ? [{ labels: {}, value: result.value }] : result.samples;
  const base = { ...configured, series: samples.length };
  if (samples.length === 0) return { kind: 'wait', wait: { ...base, reason: 'no-data', labels: null } };
  let worst: (typeof samples)[number] | undefined;
  let nan: (typeof samples)[number] | undefined;
  for (const sample of samples) {
    if (Number.isNaN(sample.value)) nan ??= sample;
    else if (worst === undefined || sample.value > worst.value) worst = sample;
  }
  if (worst !== undefined && worst.value > configured.threshold) {
    return { kind: 'breach', reading: { ...base, value: worst.value, labels: worst.labels } };
  }
  if (nan !== undefined) return { kind: 'wait', wait: { ...base, reason: 'nan', labels: nan.labels } };
  if (worst === undefined) throw new Error('unreachable: samples without a value');
  return { kind: 'pass', reading: { ...base, value: worst.value, labels: worst.labels } };
}

/** Decides from the results of the configured queries; a configured signal must have its result. */
export function evaluateGoldenSignals(signals: GoldenSignals, results: GoldenSignalResults): GoldenSignalsOutcome {
  const configured = configuredSignals(signals);
  if (configured.length === 0) return { state: 'passed', summary: 'no golden signals configured', readings: [] };
  const judgements = configured.map((c) => {
    const result = results[c.signal];
    if (result === undefined) throw new Error(`no result for the golden signal ${c.signal}`);
    return judge(c, result);
  });

  const breaches = judgements.flatMap((j) => (j.kind === 'breach' ? [j.reading] : []));
  if (breaches.length > 0) {
    const over = breaches.map(
      (b) => `${b.signal} ${formatValue(b.signal, b.value, b.threshold)} > ${formatThreshold(b.signal, b.threshold)}`,
    );
    return { state: 'failed', summary: `golden signal over its threshold: ${over.join('; ')}`, breaches };
  }
  const waiting = judgements.flatMap((j) => (j.kind === 'wait' ? [j.wait] : []));
  if (waiting.length > 0) {
    const why = waiting.map((w) =>
      w.reason === 'no-data'
        ? `${w.signal} has no data yet (the query matched no series)`
        : `${w.signal} is NaN${w.labels && Object.keys(w.labels).length > 0 ? ` for ${formatLabels(w.labels)}` : ''} (no traffic yet?)`,
    );
    return { state: 'pending', summary: `waiting for golden-signal data: ${why.join('; ')}`, waiting };
  }
  const readings = judgements.flatMap((j) => (j.kind === 'pass' ? [j.reading] : []));
  const within = readings.map(
    (r) => `${r.signal} ${formatValue(r.signal, r.value, r.threshold)} ≤ ${formatThreshold(r.signal, r.threshold)}`,
  );
  return { state: 'passed', summary: `golden signals within their thresholds: ${within.join(', ')}`, readings };
}

/**
 * Runs the stage's queries (in parallel) and decides. Errors are the port's: a refusal of either
 * query wins over an outage of the other, since retrying cannot fix the refused one; otherwise the
 * first error is thrown (an outage: the queue retries the step).
 */
export async function checkGoldenSignals(input: {
  port: MetricsQueryPort;
  signals: GoldenSignals;
  signal?: AbortSignal;
}): Promise<GoldenSignalsOutcome> {
  const configured = configuredSignals(input.signals);
  const options = input.signal ? { signal: input.signal } : undefined;
  const settled = await Promise.allSettled(configured.map((c) => input.port.instantQuery(c.query, options)));
  const errors = settled.flatMap((s): unknown[] => (s.status === 'rejected' ? [s.reason] : []));
  const refusal = errors.find((e) => e instanceof RefusedError);
  if (refusal !== undefined) throw refusal;
  if (errors.length > 0) throw errors[0];
  const results: GoldenSignalResults = {};
  settled.forEach((s, i) => {
    const c = configured[i];
    if (s.status === 'fulfilled' && c !== undefined) results[c.signal] = s.value;
  });
  return evaluateGoldenSignals(input.signals, results);
}

/**
 * A red golden-signal check as neutral plain-text lines, in deploy-report.ts' style and bounds
 * (SPEC §1: "the query and its value"): per breach, the value against the threshold, the query, and
 * the worst series' labels when the query kept any.
 */
export function renderGoldenSignalFailure(stage: string, breaches: readonly GoldenSignalBreach[]): string[] {
  const lines = [`Deploy gate stage:${stage} failed.`];
  for (const b of breaches) {
    lines.push(
      `Golden signal ${b.signal} over its threshold: ${formatValue(b.signal, b.value, b.threshold)} > max ${formatThreshold(b.signal, b.threshold)}.`,
      `Query: ${oneLine(b.query)}`,
    );
    if (Object.keys(b.labels).length > 0) {
      lines.push(`${b.series > 1 ? `Worst of ${b.series} series` : 'Series'}: ${formatLabels(b.labels)}`);
    }
  }
  const bounded =
    lines.length > MAX_LINES
      ? [...lines.slice(0, MAX_LINES - 1), `… ${lines.length - MAX_LINES + 1} more lines`]
      : lines;
  return bounded.map(cut);
}

const unit = (signal: GoldenSignalName): string => (signal === 'latencyP95' ? 's' : '');

function number(value: number): string {
  if (Number.isNaN(value)) return 'NaN';
  if (value === Number.POSITIVE_INFINITY) return '+Inf';
  if (value === Number.NEGATIVE_INFINITY) return '-Inf';
  return String(Number(value.toPrecision(6)));
}

/** Six significant digits, unless that would print the value equal to its threshold (0.0100001 vs 0.01). */
function formatValue(signal: GoldenSignalName, value: number, threshold: number): string {
  const short = number(value);
  const text = short === number(threshold) && value !== threshold ? String(value) : short;
  // "+Infs" reads as a typo: the unit goes on finite numbers only.
  return Number.isFinite(value) ? `${text}${unit(signal)}` : text;
}

function formatThreshold(signal: GoldenSignalName, threshold: number): string {
  return `${number(threshold)}${unit(signal)}`;
}

/** PromQL's own notation, keys sorted, so the series can be pasted into a query. */
function formatLabels(labels: Record<string, string>): string {
  const pairs = Object.keys(labels)
    .sort()
    .map((key) => `${key}=${JSON.stringify(labels[key])}`);
  return `{${pairs.join(', ')}}`;
}

/** Queries are often written over several lines in YAML: one line each here. */
function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/gu, ' ').trim();
}

function cut(line: string): string {
  return line.length > MAX_LINE ? `${line.slice(0, MAX_LINE - 1)}…` : line;
}
