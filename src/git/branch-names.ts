import picomatch from 'picomatch';

/**
 * The branch rules of the git layer: whatever the model, the repository content
 * or the chat says, only a run's own `shipgate/<run-id>-<slug>` branch is ever
 * pushed, never the default or a protected branch, and every name that reaches
 * a refspec is one git cannot read as anything else.
 */

export const BRANCH_PREFIX = 'shipgate/';
const SLUG_MAX = 40;
const SLUG_FALLBACK = 'change';

const RUN_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9-]{0,63}$/;
const SLUG_PATTERN = /^[a-z0-9]+(?:-[a-z0-9]+)*$/;

/** Lower-case kebab of the task's first words: at most 40 characters of [a-z0-9-], never empty. */
export function slugify(task: string): string {
  const words = task
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '') // "café" → "cafe" rather than "caf"
    .toLowerCase()
    .split(/[^a-z0-9]+/)
    .filter((word) => word !== '');
  let slug = '';
  for (const word of words) {
    const next = slug === '' ? word : `${slug}-${word}`;
    if (next.length > SLUG_MAX) {
      // Cut at a word boundary; only a single over-long first word gets truncated.
      if (slug === '') slug = word.slice(0, SLUG_MAX);
      break;
    }
    slug = next;
  }
  return slug === '' ? SLUG_FALLBACK : slug;
}

/** `shipgate/<runId>-<slug>`: the run id right after the prefix so a branch always leads back to its run. */
export function branchName(runId: string, task: string): string {
  if (!RUN_ID_PATTERN.test(runId)) throw new Error(`not a usable run id for a branch name: ${JSON.stringify(runId)}`);
  return `${BRANCH_PREFIX}${runId}-${slugify(task)}`;
}

/** Whether `ref` (`shipgate/…` or `refs/heads/shipgate/…`) is a branch `branchName` could have made for `runId`. */
export function isRunBranch(ref: string, runId: string): boolean {
  if (!RUN_ID_PATTERN.test(runId)) return false;
  const branch = ref.startsWith('refs/heads/') ? ref.slice('refs/heads/'.length) : ref;
  const prefix = `${BRANCH_PREFIX}${runId}-`;
  if (!branch.startsWith(prefix)) return false;
  const slug = branch.slice(prefix.length);
  return slug.length <= SLUG_MAX && SLUG_PATTERN.test(slug);
}

/**
 * A conservative subset of git's ref-name rules (git-check-ref-format): the
 * name ends up in a refspec, so nothing that could change the refspec's
 * meaning (`+`, `:`, `*`, whitespace, a leading `-`) gets through.
 */
export function isSafeBranchName(branch: string): boolean {
  if (branch.length === 0 || branch.length > 200) return false;
  if (!/^[A-Za-z0-9._/-]+$/.test(branch)) return false;
  if (branch.startsWith('-') || branch.includes('..') || branch.includes('//')) return false;
  if (branch.startsWith('/') || branch.endsWith('/') || branch.endsWith('.')) return false;
  return branch.split('/').every((part) => !part.startsWith('.') && !part.endsWith('.lock'));
}

export interface PushTarget {
  branch: string;
  defaultBranch: string;
  /** Exact names or globs (`release/*`); compared case-insensitively so `Main` does not slip past `main`. */
  protectedBranches?: readonly string[] | undefined;
  /** When given, the branch must also be this run's branch. */
  runId?: string | undefined;
}

/** Why the git layer would refuse to push to `branch`, or undefined when the push is allowed. */
export function pushRefusal(target: PushTarget): string | undefined {
  const { branch, defaultBranch } = target;
  if (!isSafeBranchName(branch)) return 'not a valid branch name';
  if (!branch.startsWith(BRANCH_PREFIX) || branch.length === BRANCH_PREFIX.length) {
    return `only ${BRANCH_PREFIX}* branches may be pushed`;
  }
  if (branch.toLowerCase() === defaultBranch.toLowerCase()) return 'it is the default branch';
  for (const pattern of target.protectedBranches ?? []) {
    if (
      branch.toLowerCase() === pattern.toLowerCase() ||
      picomatch.isMatch(branch, pattern, { nocase: true, dot: true })
    ) {
      return `it is a protected branch (${pattern})`;
    }
  }
  if (target.runId !== undefined && !isRunBranch(branch, target.runId)) return `it is not run ${target.runId}'s branch`;
  return undefined;
}
