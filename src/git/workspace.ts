import { mkdir, readdir, realpath, rm, stat, writeFile } from 'node:fs/promises';
import { homedir, tmpdir } from 'node:os';
import { dirname, isAbsolute, join, parse as parsePath, resolve } from 'node:path';
import { RefusedError } from '../errors.js';
import type { Logger } from '../log.js';
import { isSafeBranchName, pushRefusal } from './branch-names.js';
import { assertCloneUrl } from './clone-url.js';
import { GitError, PushRefusedError } from './git-errors.js';
import type { GitInspection } from './inspection.js';
import { gitDirOf, type GitCredentials, type RunGit } from './run-git.js';

/**
 * A run's workspace: the working tree (no `.git`) and the bot's own git
 * directory beside it, cloned or resumed idempotently, and removed with guards.
 */

/**
 * `$GIT_DIR/info/attributes` has the highest precedence of all attribute
 * files, so these lines override whatever the tree's `.gitattributes` says:
 * bytes go into the repository exactly as they are in the tree (no filter,
 * no eol or encoding conversion, no `$Id$` expansion) and out of it the same
 * way, so what is committed and pushed is what the checks saw.
 */
const NEUTRAL_ATTRIBUTES = '* -text -filter -ident !eol !working-tree-encoding !diff !merge !export-ignore !export-subst\n';

export interface PrepareWorkspaceInput {
  dir: string;
  cloneUrl: string;
  defaultBranch: string;
  branch: string;
  /** For private repositories: supplied to clone/fetch the same transient way as to push, never stored. */
  credentials?: GitCredentials | undefined;
}

export interface PrepareWorkspaceResult {
  /** True when earlier work of the run was picked up (an existing workspace or the pushed run branch). */
  resumed: boolean;
  /** Where the run branch came from. */
  source: 'existing-workspace' | 'remote-run-branch' | 'default-branch';
  head: string;
}

/** rm -rf with guards: a bug upstream must not turn into deleting a home directory or `/`. */
function assertRemovable(dir: string): string {
  if (!isAbsolute(dir)) throw new Error(`workspace path must be absolute: ${dir}`);
  const full = resolve(dir);
  const depth = full.slice(parsePath(full).root.length).split(/[\\/]/).filter(Boolean).length;
  if (depth < 2 || full === resolve(homedir()) || full === resolve(tmpdir())) {
    throw new Error(`refusing to remove ${full} as a workspace`);
  }
  return full;
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Function-valued fields, not methods: the operations are closures meant to be passed around unbound. */
export interface GitWorkspaces {
  prepareWorkspace: (input: PrepareWorkspaceInput) => Promise<PrepareWorkspaceResult>;
  removeWorkspace: (dir: string) => Promise<void>;
}

export function createWorkspaces(git: RunGit, inspect: GitInspection, log: Logger | undefined): GitWorkspaces {
  const { revParse, headSha, currentBranch, originUrl } = inspect;

  /** The workspace is reusable only if it is exactly this run's clone, on the run branch, with a commit checked out. */
  async function reusable(dir: string, cloneUrl: string, branch: string): Promise<string | undefined> {
    const gitDir = gitDirOf(dir);
    if (!(await exists(join(gitDir, 'HEAD'))) || !(await exists(dir))) return undefined;
    // A `.git` in the tree was never ours (the tree is made without one): start over.
    if (await exists(join(dir, '.git'))) return undefined;
    try {
      if ((await realpath(gitDir)) !== `${await realpath(dir)}.git`) return undefined;
      if ((await originUrl(dir)) !== cloneUrl) return undefined;
      if ((await currentBranch(dir)) !== branch) return undefined;
      return await revParse(dir, 'HEAD');
    } catch (error) {
      // A half-written clone can make git fail outright: treat it as partial and clone again.
      if (error instanceof GitError) return undefined;
      throw error;
    }
  }

  /**
   * A worker killed mid-`add` or mid-`commit` leaves lock files behind that make every later command
   * fail. One run's workspace is only ever used by the worker holding that run's job, so at
   * prepare time any lock is stale.
   */
  async function removeStaleLocks(dir: string, branch: string): Promise<void> {
    const gitDir = gitDirOf(dir);
    const locks = ['index.lock', 'HEAD.lock', 'config.lock', 'packed-refs.lock', `refs/heads/${branch}.lock`];
    await Promise.all(locks.map((lock) => rm(join(gitDir, lock), { force: true })));
    for (const entry of await readdir(gitDir)) {
      if (entry.startsWith('shipgate-index-')) await rm(join(gitDir, entry), { force: true });
    }
  }

  async function fetchDefaultBranch(dir: string, defaultBranch: string, credentials: GitCredentials | undefined): Promise<void> {
    const ref = `refs/remotes/origin/${defaultBranch}`;
    // `+`: the local copy of the default branch follows the remote wherever it went; it is never pushed.
    await git(['fetch', '--quiet', '--no-tags', '--no-write-fetch-head', 'origin', `+refs/heads/${defaultBranch}:${ref}`], {
      workspace: dir,
      credentials,
    });
  }

  async function remoteBranchSha(
    dir: string,
    branch: string,
    credentials: GitCredentials | undefined,
  ): Promise<string | undefined> {
    const ref = `refs/heads/${branch}`;
    const { stdout } = await git(['ls-remote', '--refs', 'origin', ref], { workspace: dir, credentials });
    // ls-remote patterns match ref tails; only the exact ref counts.
    for (const line of stdout.split('\n')) {
      const [sha, name] = line.split('\t');
      if (name === ref && sha !== undefined && /^[0-9a-f]{40,64}$/.test(sha)) return sha;
    }
    return undefined;
  }

  async function prepareWorkspace(input: PrepareWorkspaceInput): Promise<PrepareWorkspaceResult> {
    const { cloneUrl, defaultBranch, branch, credentials } = input;
    assertCloneUrl(cloneUrl);
    if (!isSafeBranchName(defaultBranch))
      throw new RefusedError(`invalid default branch name: ${JSON.stringify(defaultBranch)}`);
    const refusal = pushRefusal({ branch, defaultBranch });
    // A workspace on a branch the run could never push is a bug upstream; fail before cloning.
    if (refusal !== undefined) throw new PushRefusedError(branch, refusal);
    const dir = assertRemovable(input.dir);

    const existing = await reusable(dir, cloneUrl, branch);
    if (existing !== undefined) {
      await removeStaleLocks(dir, branch);
      // Diffs are taken against the base branch as the remote has it now, not as a cached copy says.
      await fetchDefaultBranch(dir, defaultBranch, credentials);
      log?.info({ dir, branch }, 'git: reusing workspace');
      return { resumed: true, source: 'existing-workspace', head: existing };
    }

    // Whatever is there is a partial clone (or something else entirely): start over.
    const gitDir = gitDirOf(dir);
    await Promise.all([rm(dir, { recursive: true, force: true }), rm(gitDir, { recursive: true, force: true })]);
    await mkdir(dirname(dir), { recursive: true });
    // `--template=` copies no sample hooks; bare, because the work tree is always named explicitly.
    await git(['init', '--quiet', '--bare', '--template=', '--', gitDir], { cwd: dirname(dir) });
    await mkdir(join(gitDir, 'info'), { recursive: true });
    await writeFile(join(gitDir, 'info', 'attributes'), NEUTRAL_ATTRIBUTES);
    await mkdir(dir);
    await git(['config', 'core.bare', 'false'], { workspace: dir });
    await git(['config', 'remote.origin.url', cloneUrl], { workspace: dir });
    await fetchDefaultBranch(dir, defaultBranch, credentials);

    // An earlier attempt may have pushed the run branch before dying: continue from it instead of
    // growing a second, divergent history from the default branch.
    const remoteSha = await remoteBranchSha(dir, branch, credentials);
    let start = `refs/remotes/origin/${defaultBranch}`;
    if (remoteSha !== undefined) {
      start = `refs/remotes/origin/${branch}`;
      await git(['fetch', '--no-tags', '--no-write-fetch-head', 'origin', `refs/heads/${branch}:${start}`], {
        workspace: dir,
        credentials,
      });
    }
    await git(['checkout', '--quiet', '--no-track', '-b', branch, start], { workspace: dir });
    const head = await headSha(dir);
    log?.info({ dir, branch, fromRemote: remoteSha !== undefined }, 'git: workspace ready');
    return remoteSha === undefined
      ? { resumed: false, source: 'default-branch', head }
      : { resumed: true, source: 'remote-run-branch', head };
  }

  async function removeWorkspace(dir: string): Promise<void> {
    const full = assertRemovable(dir);
    await Promise.all([rm(full, { recursive: true, force: true }), rm(gitDirOf(full), { recursive: true, force: true })]);
  }

  return { prepareWorkspace, removeWorkspace };
}
