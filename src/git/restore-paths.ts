import { randomBytes } from 'node:crypto';
import { lstat, rm, rmdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { isDotGitName } from './dot-git-name.js';
import { GitError } from './git-errors.js';
import type { GitInspection } from './inspection.js';
import { gitDirOf, type RunGit } from './run-git.js';

/**
 * Putting named paths of a working tree back as a commit has them, byte for byte and mode for
 * mode, without moving HEAD or touching the real index: the way back to a known tree after a
 * write into it failed part way. git writes the files itself (checkout-index from a scratch
 * index), so binary files come back exactly and nothing is written through a symbolic link.
 */

function errorCode(error: unknown): string | undefined {
  return typeof error === 'object' && error !== null && 'code' in error && typeof error.code === 'string'
    ? error.code
    : undefined;
}

/**
 * A repository-relative path in git's spelling, or an error: anything else is a bug upstream, never
 * guessed at. No segment may be a spelling of `.git` (git refuses those, and on some filesystems
 * they are the git directory).
 */
function segmentsOf(path: string): string[] {
  const segments = path.split('/');
  if (path.includes('\0') || segments.some((s) => s === '' || s === '.' || s === '..' || isDotGitName(s))) {
    throw new Error(`not a repository path: ${JSON.stringify(path.slice(0, 200))}`);
  }
  return segments;
}

/** lstat, with "nothing there" as undefined. */
async function lstatOrNothing(path: string) {
  try {
    return await lstat(path);
  } catch (error) {
    const code = errorCode(error);
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw error;
  }
}

/** Most bytes of paths given to one ls-tree: far below the kernel's limits on a command line. */
const ARGV_BYTES = 64 * 1024;

/** The paths in order, in groups whose command line stays under ARGV_BYTES. */
function batches(paths: readonly string[]): string[][] {
  const groups: string[][] = [];
  let current: string[] = [];
  let bytes = 0;
  for (const path of paths) {
    const size = Buffer.byteLength(path) + 1;
    if (current.length > 0 && bytes + size > ARGV_BYTES) {
      groups.push(current);
      current = [];
      bytes = 0;
    }
    current.push(path);
    bytes += size;
  }
  if (current.length > 0) groups.push(current);
  return groups;
}

export type RestorePaths = (dir: string, rev: string, paths: readonly string[]) => Promise<void>;

export function createPathRestorer(git: RunGit, inspect: Pick<GitInspection, 'revParse'>): RestorePaths {
  return async function restorePaths(dirInput, rev, paths) {
    if (paths.length === 0) return;
    const dir = resolve(dirInput);
    const commit = await inspect.revParse(dir, rev);
    if (commit === undefined) throw new GitError(`${rev} is not a commit`, ['git', 'rev-parse', rev], 1, '');
    const wanted = [...new Set(paths)].map((path) => ({ path, segments: segmentsOf(path) }));

    // What the commit has at each wanted path (a file, link or submodule, a directory, or nothing) and
    // every directory it has on the way there. Only these paths are listed: a listing of the whole tree
    // could be of any size. `-t` without `-r` names the trees on the way to each path and each path
    // itself, never the contents of a wanted directory; literal pathspecs, so a name is never a pattern.
    const blobs = new Set<string>();
    const directories = new Set<string>();
    for (const batch of batches(wanted.map(({ path }) => path))) {
      const { stdout } = await git(['ls-tree', '-t', '-z', '--full-tree', '--end-of-options', commit, '--', ...batch], {
        workspace: dir,
        env: { GIT_LITERAL_PATHSPECS: '1' },
      });
      for (const record of stdout.split('\0')) {
        // "<mode> <type> <object>\t<path>"
        const tab = record.indexOf('\t');
        if (tab < 0) continue;
        const path = record.slice(tab + 1);
        const [, type] = record.slice(0, tab).split(' ');
        // A submodule's directory is not the bot's to write or remove.
        if (type === 'blob') blobs.add(path);
        else directories.add(path);
        const segments = path.split('/');
        for (let i = 1; i < segments.length; i++) directories.add(segments.slice(0, i).join('/'));
      }
    }

    // First what the commit does not have goes, so that a file in the way of one of its directories is gone.
    for (const { path, segments } of wanted) {
      if (blobs.has(path)) continue;
      // How many leading segments are directories of the tree; a file or a link on the way means that
      // git sees nothing of this path: there is nothing of it to remove (and a link must never be
      // followed out of the tree).
      let present = 0;
      let reachable = true;
      for (const segment of segments.slice(0, -1)) {
        const stats = await lstatOrNothing(join(dir, ...segments.slice(0, present), segment));
        if (stats === undefined) break;
        if (!stats.isDirectory()) {
          reachable = false;
          break;
        }
        present += 1;
      }
      if (!reachable) continue;
      if (present === segments.length - 1) {
        const full = join(dir, ...segments);
        const stats = await lstatOrNothing(full);
        if (stats?.isDirectory() === true) {
          // A directory the commit also has holds paths of their own; one it lacks goes only if empty.
          if (!directories.has(path)) await rmdir(full).catch(() => undefined);
        } else if (stats !== undefined) {
          await rm(full, { force: true });
        }
      }
      // Directories the commit lacks that only held this path go too, also when the path itself is not
      // there (a write-back that made the directories and failed before the file): git would not see
      // them, but a check would.
      for (let depth = present; depth > 0; depth--) {
        const parent = segments.slice(0, depth).join('/');
        if (directories.has(parent)) break;
        const removed = await rmdir(join(dir, ...segments.slice(0, depth))).then(
          () => true,
          () => false,
        );
        if (!removed) break;
      }
    }

    const restored = wanted.filter(({ path }) => blobs.has(path)).map(({ path }) => path);
    if (restored.length === 0) return;
    // A scratch index holding the commit: checkout-index writes from it (replacing a directory, file or
    // link in the way, as git does), and the workspace's own index stays as it was. The name is one
    // the workspace's stale-lock sweep removes if a worker dies here.
    const indexPath = join(gitDirOf(dir), `shipgate-index-${randomBytes(6).toString('hex')}`);
    const env = { GIT_INDEX_FILE: indexPath };
    try {
      await git(['read-tree', '--end-of-options', commit], { workspace: dir, env });
      await git(['checkout-index', '--force', '-z', '--stdin'], {
        workspace: dir,
        env,
        input: restored.map((path) => `${path}\0`).join(''),
      });
    } finally {
      await rm(indexPath, { force: true });
      await rm(`${indexPath}.lock`, { force: true });
    }
  };
}
