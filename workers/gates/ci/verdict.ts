import type { CheckRunInfo, CiSnapshot, CommitStatusInfo } from '../../../src/ports/github.js';

/**
 * The CI gate's verdict for one head SHA (SPEC §1 gate 3, §5). Pure: the caller
 * fetches the snapshot and the required names; this only decides.
 *
 * Decisions (each one is a judgement call the issue left open):
 *
 * - Every reported check counts, not only the required ones: a red optional
 *   check still fails the gate, because the agent's change should not be merged
 *   on "red but not required" (that is a human's call to make in the PR, not the
 *   bot's). Required names add two things: they must report at all, and
 *   `neutral`/`skipped` are not good enough for them.
 * - A failure decides `failed` at once, even while other checks are still
 *   running, so the agent starts on the fix earlier. The still-running names
 *   stay in `pending`, so a caller that prefers to wait for the full picture can.
 * - A name reported both as a check run and as a commit status counts once:
 *   the check run wins unless the status is strictly newer (checks carry richer
 *   failure details; a newer status means that CI system re-reported since).
 * - `pending` lists running checks and required names that have not reported;
 *   `missingRequired` is the subset that has not reported at all.
 * - An unknown conclusion fails (fail closed): a new GitHub conclusion must not
 *   silently count as green.
 */

export interface FailedCheck {
  source: 'check' | 'status';
  name: string;
  /** The check run's conclusion, or `failure`/`error` for a commit status. */
  conclusion: string;
  checkRunId: number | null;
  detailsUrl: string | null;
  appSlug: string | null;
  title: string | null;
  summary: string | null;
  /** The CI itself broke or gave up (cancelled, timed out, never started, stale, status `error`): offer a re-run. */
  infrastructure: boolean;
}

export interface CiVerdict {
  state: 'pending' | 'passed' | 'failed';
  /** Distinct checks expected: every reported name plus required names that have not reported. */
  total: number;
  succeeded: number;
  /** Sorted names still running or (required but) not reported yet. */
  pending: string[];
  /** Sorted by name. */
  failed: FailedCheck[];
  /** Sorted required names with neither a check run nor a status yet. */
  missingRequired: string[];
  /** True when there is at least one failure and every failure is infrastructure. */
  infrastructureOnly: boolean;
  /** One line for the card and the thread, e.g. `3/4 checks passed, 1 failed: lint`. */
  summary: string;
}

/** Conclusions that mean the CI run itself did not do its job, rather than the code failing it. */
const INFRASTRUCTURE_CONCLUSIONS: ReadonlySet<string> = new Set(['cancelled', 'timed_out', 'startup_failure', 'stale']);
/** Pass only when the check is not required (issue: "neutral and skipped count as passing only for checks that are not required"). */
const SOFT_PASS_CONCLUSIONS: ReadonlySet<string> = new Set(['neutral', 'skipped']);

type Outcome = { kind: 'pending' } | { kind: 'passed' } | { kind: 'failed'; failure: FailedCheck };

interface Reported {
  name: string;
  /** Milliseconds; -Infinity when unknown. */
  at: number;
  outcome: (required: boolean) => Outcome;
}

export function evaluateCi(input: { snapshot: CiSnapshot; required: readonly string[] | undefined }): CiVerdict {
  const required = new Set(input.required ?? []);
  const checks = latestCheckRuns(input.snapshot.checkRuns);
  const statuses = latestStatuses(input.snapshot.statuses);

  const byName = new Map<string, Reported>();
  for (const run of checks.values()) byName.set(run.name, fromCheckRun(run));
  for (const status of statuses.values()) {
    const fromStatus = fromCommitStatus(status);
    const existing = byName.get(status.context);
    if (existing === undefined || fromStatus.at > existing.at) byName.set(status.context, fromStatus);
  }

  const pending: string[] = [];
  const failed: FailedCheck[] = [];
  let succeeded = 0;
  for (const reported of byName.values()) {
    const outcome = reported.outcome(required.has(reported.name));
    if (outcome.kind === 'passed') succeeded += 1;
    else if (outcome.kind === 'pending') pending.push(reported.name);
    else failed.push(outcome.failure);
  }
  const missingRequired = [...required].filter((name) => !byName.has(name)).sort(compareStrings);
  pending.push(...missingRequired);
  pending.sort(compareStrings);
  failed.sort((a, b) => compareStrings(a.name, b.name));

  const total = byName.size + missingRequired.length;
  // Nothing reported is never green: CI may simply not have started yet.
  const state: CiVerdict['state'] =
    failed.length > 0 ? 'failed' : pending.length > 0 || byName.size === 0 ? 'pending' : 'passed';
  const infrastructureOnly = failed.length > 0 && failed.every((f) => f.infrastructure);
  const summary =
    byName.size === 0 ? 'waiting for CI to report' : summarise(state, { total, succeeded, pending, failed });

  return { state, total, succeeded, pending, failed, missingRequired, infrastructureOnly, summary };
}

/**
 * Latest check run per name: a re-run creates a new check run with the same
 * name, and only the newest one speaks for the commit. Ordered by completion
 * (or start) time, then id; a run with neither time is treated as the newest,
 * because GitHub only leaves both empty on a just-requested run.
 */
function latestCheckRuns(runs: readonly CheckRunInfo[]): Map<string, CheckRunInfo> {
  const latest = new Map<string, CheckRunInfo>();
  for (const run of runs) {
    const current = latest.get(run.name);
    if (current === undefined || compareCheckRuns(run, current) > 0) latest.set(run.name, run);
  }
  return latest;
}

function compareCheckRuns(a: CheckRunInfo, b: CheckRunInfo): number {
  const at = checkRunTime(a, Number.POSITIVE_INFINITY);
  const bt = checkRunTime(b, Number.POSITIVE_INFINITY);
  if (at !== bt) return at > bt ? 1 : -1;
  return a.id - b.id;
}

function checkRunTime(run: CheckRunInfo, unknown: number): number {
  return parseTime(run.completedAt) ?? parseTime(run.startedAt) ?? unknown;
}

/**
 * Latest status per context by `updatedAt`. GitHub lists statuses newest
 * first, so on a tie the earlier entry in the list wins.
 */
function latestStatuses(statuses: readonly CommitStatusInfo[]): Map<string, CommitStatusInfo> {
  const latest = new Map<string, CommitStatusInfo>();
  for (const status of statuses) {
    const current = latest.get(status.context);
    if (current === undefined) {
      latest.set(status.context, status);
      continue;
    }
    const t = parseTime(status.updatedAt) ?? Number.NEGATIVE_INFINITY;
    const ct = parseTime(current.updatedAt) ?? Number.NEGATIVE_INFINITY;
    if (t > ct) latest.set(status.context, status);
  }
  return latest;
}

function fromCheckRun(run: CheckRunInfo): Reported {
  return {
    name: run.name,
    // For the check-versus-status comparison an unknown time must not beat a real one.
    at: checkRunTime(run, Number.NEGATIVE_INFINITY),
    outcome(required) {
      // `completed` without a conclusion should not happen; waiting is safer than guessing.
      if (run.status !== 'completed' || run.conclusion === null) return { kind: 'pending' };
      const conclusion = run.conclusion;
      if (conclusion === 'success') return { kind: 'passed' };
      if (SOFT_PASS_CONCLUSIONS.has(conclusion) && !required) return { kind: 'passed' };
      return {
        kind: 'failed',
        failure: {
          source: 'check',
          name: run.name,
          conclusion,
          checkRunId: run.id,
          detailsUrl: run.detailsUrl,
          appSlug: run.appSlug,
          title: run.output.title,
          summary: run.output.summary,
          infrastructure: INFRASTRUCTURE_CONCLUSIONS.has(conclusion),
        },
      };
    },
  };
}

function fromCommitStatus(status: CommitStatusInfo): Reported {
  return {
    name: status.context,
    at: parseTime(status.updatedAt) ?? Number.NEGATIVE_INFINITY,
    outcome() {
      if (status.state === 'pending') return { kind: 'pending' };
      if (status.state === 'success') return { kind: 'passed' };
      return {
        kind: 'failed',
        failure: {
          source: 'status',
          name: status.context,
          conclusion: status.state,
          checkRunId: null,
          detailsUrl: status.targetUrl,
          appSlug: null,
          title: null,
          summary: status.description,
          // The statuses API's `error` is the CI system reporting its own trouble, not a red test.
          infrastructure: status.state === 'error',
        },
      };
    },
  };
}

function summarise(
  state: CiVerdict['state'],
  counts: { total: number; succeeded: number; pending: readonly string[]; failed: readonly FailedCheck[] },
): string {
  const { total, succeeded, pending, failed } = counts;
  if (state === 'passed') return `${succeeded}/${total} checks passed`;
  if (state === 'pending') {
    return `${total - pending.length}/${total} checks done, waiting for: ${listNames(pending)}`;
  }
  const still = pending.length > 0 ? `, ${pending.length} pending` : '';
  return `${succeeded}/${total} checks passed, ${failed.length} failed: ${listNames(failed.map((f) => f.name))}${still}`;
}

/** A few names, then a count: the summary is one line on a card. */
function listNames(names: readonly string[], max = 3): string {
  if (names.length <= max) return names.join(', ');
  return `${names.slice(0, max).join(', ')} +${names.length - max} more`;
}

function parseTime(value: string | null): number | undefined {
  if (value === null) return undefined;
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? undefined : ms;
}

/** Locale-independent, so the order (and the summary) is the same on every worker. */
function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
