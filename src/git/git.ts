import type { Logger } from '../log.js';
import { createLocalRepositoryGit, type LocalRepositoryGit } from './local-repository.js';
import { createCommitter, DEFAULT_IDENTITY, type CommitAllInput, type GitIdentity } from './commit.js';
import { createInspection, type DiffStat } from './inspection.js';
import { createPusher, type PushInput } from './push.js';
import { createPathRestorer } from './restore-paths.js';
import { createGitRunner } from './run-git.js';
import { createWorkspaces, type PrepareWorkspaceInput, type PrepareWorkspaceResult } from './workspace.js';

/**
 * The git layer (SPEC §4, Git bullet). Every run works in its own clone on
 * `shipgate/<run-id>-<slug>`; this module is the only code that talks to git,
 * and it is where the branch guarantees live: whatever the model, the
 * repository content or the chat says, nothing here pushes anything but the
 * run's own branch, and nothing here ever forces.
 *
 * Repository content is untrusted, and so is anything in a working tree
 * (SPEC §4, "The workspace's git state is untrusted"). The working tree has no
 * `.git`: the git directory is the bot's own, beside it (`<dir>.git`), and
 * nothing else ever writes there; checks run on a copy of the tree in the
 * sandbox. git runs with no global or system config, a throwaway HOME, hooks,
 * fsmonitor and replace objects disabled, every attribute the tree's
 * `.gitattributes` could set (filters, eol conversion, encodings, ident)
 * neutralised by the git directory's own `info/attributes`, commits made with
 * plumbing (`commit-tree`: no hooks, no trailer commands, trailers written by
 * the bot), and only PATH from our environment. Credentials reach git only through the environment of the one
 * network command that needs them (never argv, never .git/config, never the
 * remote URL) and are scrubbed from every error.
 *
 * Every operation is idempotent so a worker killed between clone, commit and
 * push resumes without a second branch or commit.
 */

export { BRANCH_PREFIX, branchName, isRunBranch, isSafeBranchName, pushRefusal, slugify, type PushTarget } from './branch-names.js';
export { cloneUrlProblem } from './clone-url.js';
export { DEFAULT_IDENTITY, type CommitAllInput, type GitIdentity } from './commit.js';
export { GitError, PushRefusedError, type GitErrorKind } from './git-errors.js';
export type { DiffStat, DiffStatFile } from './inspection.js';
export type { PushInput } from './push.js';
export type { LocalRepositoryGit } from './local-repository.js';
export { gitDirOf, scrubGitText, type GitCredentials } from './run-git.js';
export type { PrepareWorkspaceInput, PrepareWorkspaceResult } from './workspace.js';

export interface GitOptions {
  log?: Logger | undefined;
  /** Default bot identity for commits. */
  identity?: GitIdentity | undefined;
  /** The git binary (default `git` on PATH). */
  gitPath?: string | undefined;
  /** Per-command timeout (default 10 minutes: clones of big repositories are slow). */
  timeoutMs?: number | undefined;
  /** PATH for git (the process's own, passed in by the entry point; default a fixed system PATH). */
  path?: string | undefined;
}

export interface Git {
  /** Clone (or reuse) the run's workspace on `branch`. Idempotent: call it again after any crash. */
  prepareWorkspace(input: PrepareWorkspaceInput): Promise<PrepareWorkspaceResult>;
  /** Paths that differ between `base` (default HEAD) and the working tree: staged, unstaged and untracked, not ignored. Sorted. */
  changedFiles(dir: string, base?: string): Promise<string[]>;
  /** Line counts per file between `base` (default HEAD) and the working tree, untracked files included. */
  diffStat(dir: string, base?: string): Promise<DiffStat>;
  /** Commit the whole working tree as the bot with trailers; nothing to commit returns HEAD with `created: false`. */
  commitAll(input: CommitAllInput): Promise<{ sha: string; created: boolean }>;
  /** Push HEAD to the run branch, never forced; `pushed: false` when the remote branch already is HEAD. */
  push(input: PushInput): Promise<{ pushed: boolean; sha: string }>;
  headSha(dir: string): Promise<string>;
  /** The best common ancestor of two commits (the run branch's fork point from the default branch). */
  mergeBase(dir: string, a: string, b: string): Promise<string>;
  /** Paths changed between two commits (no working tree involved), without rename detection. */
  committedFiles(dir: string, from: string, to: string): Promise<string[]>;
  /** Paths of submodules (gitlinks) in `rev`'s tree: their directories are not the bot's to write, and git would not commit into them. */
  submodulePaths(dir: string, rev: string): Promise<string[]>;
  /** A file's text at `rev` (e.g. `origin/main`), or undefined when it did not exist there. */
  readFileAt(dir: string, rev: string, path: string): Promise<string | undefined>;
  /**
   * Makes each named path of the working tree what `rev` has there: its bytes and mode, or gone (with
   * directories `rev` lacks that only held it). HEAD and the index stay as they are.
   */
  restorePaths(dir: string, rev: string, paths: readonly string[]): Promise<void>;
  currentBranch(dir: string): Promise<string | undefined>;
  removeWorkspace(dir: string): Promise<void>;
  /** The local forge's repositories on disk (SPEC §8): seeding, reading and fast-forward merges. */
  local: LocalRepositoryGit;
  /** Remove the throwaway HOME. */
  close(): Promise<void>;
}

export function createGit(options: GitOptions = {}): Git {
  const log = options.log;
  const runner = createGitRunner({ log, gitPath: options.gitPath ?? 'git', timeoutMs: options.timeoutMs ?? 10 * 60_000, path: options.path });
  const inspect = createInspection(runner.run);
  const { prepareWorkspace, removeWorkspace } = createWorkspaces(runner.run, inspect, log);
  const { changedFiles, diffStat, headSha, mergeBase, committedFiles, submodulePaths, readFileAt, currentBranch } = inspect;
  return {
    prepareWorkspace,
    changedFiles,
    diffStat,
    commitAll: createCommitter(runner.run, inspect, options.identity ?? DEFAULT_IDENTITY),
    push: createPusher(runner.run, log),
    headSha,
    mergeBase,
    committedFiles,
    submodulePaths,
    readFileAt,
    restorePaths: createPathRestorer(runner.run, inspect),
    currentBranch,
    removeWorkspace,
    local: createLocalRepositoryGit(runner.run),
    close: runner.close,
  };
}
