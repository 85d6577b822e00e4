/**
 * Flags a fix that makes CI green by weakening the tests instead of fixing the
 * code (issue 4: "flagged in the thread and not pushed silently"). These are
 * deliberately simple, line-based heuristics, tuned to over-report: a finding
 * asks a human to look, it does not block on its own. What is checked:
 *
 * - a deleted test file (unless a test file with the same base name was added
 *   in the same change: that is a move, and the two are compared instead);
 * - more skip/focus markers in a test file than before (counted per marker, so
 *   editing a line that was already skipped is not a finding);
 * - fewer assertion lines in a test file than before (commented-out lines do
 *   not count as assertions, so commenting one out is caught);
 * - fewer exact matchers and more loose ones in the same test file
 *   (`toEqual(` → `toBeTruthy()`, `assertEqual` → `assertTrue`);
 * - an added or changed line in a test runner's configuration that mentions a
 *   way to exclude tests (`exclude`, `testPathIgnorePatterns`,
 *   `--passWithNoTests`, …), or a changed `test` script in package.json.
 */

export interface FileChange {
  path: string;
  status: 'added' | 'modified' | 'deleted';
  before: string | undefined;
  after: string | undefined;
}

interface Marker {
  label: string;
  pattern: RegExp;
}

const SKIP_MARKERS: readonly Marker[] = [
  { label: '.skip(', pattern: /\.skip\s*\(/g },
  { label: '.skipIf(', pattern: /\.skipIf\s*\(/g },
  { label: '.only(', pattern: /\.only\s*\(/g },
  { label: '.todo(', pattern: /\b(?:it|test|describe)\.todo\s*\(/g },
  { label: 'xit(', pattern: /(?<![\w$.])xit\s*\(/g },
  { label: 'xtest(', pattern: /(?<![\w$.])xtest\s*\(/g },
  { label: 'xdescribe(', pattern: /(?<![\w$.])xdescribe\s*\(/g },
  { label: 'fit(', pattern: /(?<![\w$.])fit\s*\(/g },
  { label: 'fdescribe(', pattern: /(?<![\w$.])fdescribe\s*\(/g },
  { label: 'pending(', pattern: /(?<![\w$.])pending\s*\(/g },
  { label: '@pytest.mark.skip', pattern: /@pytest\.mark\.skip/g },
  { label: '@pytest.mark.xfail', pattern: /@pytest\.mark\.xfail/g },
  { label: 'pytest.skip(', pattern: /(?<!@)\bpytest\.skip\s*\(/g },
  { label: '@unittest.skip', pattern: /@unittest\.skip/g },
  { label: '@unittest.expectedFailure', pattern: /@unittest\.expectedFailure/g },
  { label: '@Disabled', pattern: /@Disabled\b/g },
  { label: '@Ignore', pattern: /@Ignore\b/g },
  { label: 't.Skip(', pattern: /\bt\.Skip(?:f|Now)?\s*\(/g },
  { label: '#[ignore]', pattern: /#\[ignore\b/g },
];

/** One line counts once however many assertions it holds: the issue speaks of "assertion lines". */
const ASSERTION_LINE = /\bexpect\s*\(|\bassert|\bshould\.|\bt\.(?:Error|Fatal)|\brequire\./;

const EXACT_MATCHERS: readonly Marker[] = [
  { label: 'toBe(', pattern: /\.toBe\s*\(/g },
  { label: 'toEqual(', pattern: /\.toEqual\s*\(/g },
  { label: 'toStrictEqual(', pattern: /\.toStrictEqual\s*\(/g },
  { label: 'toThrow(…)', pattern: /(?<!not)\.toThrow\s*\(\s*[^)\s]/g },
  { label: 'assertEqual', pattern: /\bassertEquals?\s*\(/g },
  { label: 'assertIs(', pattern: /\bassertIs\s*\(/g },
  { label: 'assert.Equal', pattern: /\b(?:assert|require)\.Equal(?:Values)?\s*\(/g },
  { label: 'assert_eq!', pattern: /\bassert_eq!/g },
  { label: 'isEqualTo(', pattern: /\.isEqualTo\s*\(/g },
];

const LOOSE_MATCHERS: readonly Marker[] = [
  { label: 'toBeTruthy()', pattern: /\.toBeTruthy\s*\(/g },
  { label: 'toBeFalsy()', pattern: /\.toBeFalsy\s*\(/g },
  { label: 'toBeDefined()', pattern: /\.toBeDefined\s*\(/g },
  { label: 'not.toThrow', pattern: /\.not\.toThrow\b/g },
  { label: 'expect.anything()', pattern: /\bexpect\.any(?:thing)?\s*\(/g },
  { label: 'assertTrue', pattern: /\bassertTrue\s*\(/g },
  { label: 'assertIsNotNone', pattern: /\bassertIsNotNone\s*\(/g },
  { label: 'assert.True/NotNil', pattern: /\b(?:assert|require)\.(?:True|NotNil|NotEmpty)\s*\(/g },
  { label: 'isNotNull()', pattern: /\.isNotNull\s*\(/g },
];

/** Exclusion keywords that only mean "run fewer tests" wherever they appear. */
const EXCLUSION_KEYWORDS = [
  /testPathIgnorePatterns/,
  /modulePathIgnorePatterns/,
  /testIgnore/,
  /passWithNoTests/,
  /--ignore\b/,
  /--deselect\b/,
  /collect_ignore/,
  /norecursedirs/,
  /-k\s+["']?not\b/,
  /--exclude\b/,
  /--testNamePattern|--grep\b|\btestNamePattern\b/,
];

/** Test runner configurations, where a bare `exclude` is about tests too. */
const RUNNER_CONFIG =
  /^(?:jest|vitest|vite|playwright|cypress|karma|ava|mocha|jasmine)\.(?:config|workspace)\.[cm]?[jt]s(?:on)?$|^\.mocharc\.|^jasmine\.json$|^pytest\.ini$|^conftest\.py$/;
/** General project files that may carry test runner settings; only the explicit keywords count there. */
const SHARED_CONFIG = /^(?:package\.json|pyproject\.toml|setup\.cfg|tox\.ini)$/;

/** Whether detectTestWeakening looks at this path at all (a test file or a configuration that can exclude tests). */
export function concernsTests(path: string): boolean {
  const base = baseName(path);
  return isTestFile(path) || RUNNER_CONFIG.test(base) || SHARED_CONFIG.test(base);
}

export function isTestFile(path: string): boolean {
  const segments = path.split('/').filter((s) => s !== '');
  const base = segments.at(-1) ?? '';
  if (/\.(?:test|spec)\.[^/]+$/.test(base)) return true;
  if (/_test\.go$/.test(base) || /^test_.*\.py$/.test(base) || /_test\.py$/.test(base)) return true;
  if (/Tests?\.java$/.test(base)) return true;
  return segments
    .slice(0, -1)
    .some((dir) => dir === 'test' || dir === 'tests' || dir === '__tests__' || dir === 'spec');
}

export function detectTestWeakening(changes: readonly FileChange[]): string[] {
  // A move shows up as delete + add: pair them by base name and compare the two rather than cry "deleted".
  const movedTo = new Map<FileChange, FileChange>();
  const pairedAdds = new Set<FileChange>();
  for (const deleted of changes.filter((c) => c.status === 'deleted' && isTestFile(c.path))) {
    const added = changes.find(
      (c) =>
        c.status === 'added' && isTestFile(c.path) && !pairedAdds.has(c) && baseName(c.path) === baseName(deleted.path),
    );
    if (added === undefined) continue;
    movedTo.set(deleted, added);
    pairedAdds.add(added);
  }

  const findings: string[] = [];
  for (const change of changes) {
    if (isTestFile(change.path) && !pairedAdds.has(change)) {
      if (change.status === 'deleted') {
        const moved = movedTo.get(change);
        if (moved === undefined) findings.push(`test file deleted: ${change.path}`);
        else findings.push(...compareTestFile(`${change.path} → ${moved.path}`, change.before, moved.after));
      } else {
        findings.push(...compareTestFile(change.path, change.before, change.after));
      }
    }
    findings.push(...compareTestConfig(change));
  }
  return findings;
}

function compareTestFile(label: string, before: string | undefined, after: string | undefined): string[] {
  if (after === undefined) return [];
  const findings: string[] = [];
  const beforeText = before ?? '';

  for (const marker of SKIP_MARKERS) {
    const added = count(after, marker.pattern) - count(beforeText, marker.pattern);
    if (added > 0) {
      const example = addedLines(beforeText, after).find((line) => matches(line, marker.pattern));
      const where = example !== undefined ? `: ${quote(example)}` : '';
      findings.push(`${label}: adds ${added} skip/focus marker${added === 1 ? '' : 's'} ${marker.label}${where}`);
    }
  }

  if (before !== undefined) {
    const was = assertionLines(before);
    const now = assertionLines(after);
    if (now < was) {
      const removed = was - now;
      findings.push(`${label}: ${removed} assertion line${removed === 1 ? '' : 's'} removed (${was} → ${now})`);
    }

    const fewerExact = changedCounts(EXACT_MATCHERS, before, after).filter((c) => c.delta < 0);
    const moreLoose = changedCounts(LOOSE_MATCHERS, before, after).filter((c) => c.delta > 0);
    if (fewerExact.length > 0 && moreLoose.length > 0) {
      const from = fewerExact.map((c) => `${c.label} ×${-c.delta}`).join(', ');
      const to = moreLoose.map((c) => `${c.label} ×${c.delta}`).join(', ');
      findings.push(`${label}: assertions loosened (${from} replaced by ${to})`);
    }
  }
  return findings;
}

function compareTestConfig(change: FileChange): string[] {
  if (change.after === undefined) return [];
  const base = baseName(change.path);
  const runnerConfig = RUNNER_CONFIG.test(base);
  const sharedConfig = SHARED_CONFIG.test(base);
  if (!runnerConfig && !sharedConfig) return [];

  const findings: string[] = [];
  for (const line of addedLines(change.before ?? '', change.after)) {
    const excludes = EXCLUSION_KEYWORDS.some((k) => k.test(line)) || (runnerConfig && /\bexclude\b/.test(line));
    if (excludes) findings.push(`${change.path}: test configuration may exclude tests: ${quote(line)}`);
    else if (base === 'package.json' && /"test(?::[^"]*)?"\s*:/.test(line)) {
      findings.push(`${change.path}: test script changed: ${quote(line)}`);
    }
  }
  return findings;
}

function assertionLines(text: string): number {
  return text.split('\n').filter((line) => !isComment(line) && ASSERTION_LINE.test(line)).length;
}

function isComment(line: string): boolean {
  return /^\s*(?:\/\/|#(?!\[)|\/\*|\*|--|<!--)/.test(line);
}

function changedCounts(
  markers: readonly Marker[],
  before: string,
  after: string,
): Array<{ label: string; delta: number }> {
  return markers.map((m) => ({ label: m.label, delta: count(after, m.pattern) - count(before, m.pattern) }));
}

/** Occurrences outside comment lines (a commented-out `it.skip(` skips nothing). */
function count(text: string, pattern: RegExp): number {
  let total = 0;
  for (const line of text.split('\n')) {
    if (isComment(line)) continue;
    total += line.match(pattern)?.length ?? 0;
  }
  return total;
}

function matches(line: string, pattern: RegExp): boolean {
  // Global regexes keep `lastIndex` between `test` calls; match() resets it.
  return (line.match(pattern)?.length ?? 0) > 0;
}

/** Lines of `after` that `before` did not have (as a multiset, ignoring indentation). */
function addedLines(before: string, after: string): string[] {
  const remaining = new Map<string, number>();
  for (const line of before.split('\n')) {
    const key = line.trim();
    remaining.set(key, (remaining.get(key) ?? 0) + 1);
  }
  const added: string[] = [];
  for (const line of after.split('\n')) {
    const key = line.trim();
    const left = remaining.get(key) ?? 0;
    if (left > 0) remaining.set(key, left - 1);
    else if (key !== '') added.push(key);
  }
  return added;
}

function baseName(path: string): string {
  return path.split('/').at(-1) ?? path;
}

function quote(line: string): string {
  const trimmed = line.length > 120 ? `${line.slice(0, 119)}…` : line;
  return `\`${trimmed}\``;
}
