import { randomBytes } from 'node:crypto';
import { copyFile, rm, stat, utimes } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { GitError } from './git-errors.js';
import { gitDirOf, type RunGit } from './run-git.js';

/**
 * Reading a workspace's history and tree: revisions, branches, diffs and file
 * contents. Diffs never run a program the repository configured (no external
 * diff, no textconv), and revisions are refused when git could read them as options.
 */

export interface DiffStatFile {
  path: string;
  insertions: number;
  deletions: number;
  binary: boolean;
}

export interface DiffStat {
  files: DiffStatFile[];
  insertions: number;
  deletions: number;
}

/** A base for diffs: a ref or sha, never something git could read as an option. */
function assertRev(rev: string): void {
  if (rev === '' || rev.startsWith('-') || /[\s\0]/.test(rev)) {
    throw new Error(`invalid revision: ${JSON.stringify(rev)}`);
  }
}

/** Function-valued fields, not methods: the operations are closures meant to be passed around unbound. */
export interface GitInspection {
  revParse: (dir: string, rev: string) => Promise<string | undefined>;
  headSha: (dir: string) => Promise<string>;
  mergeBase: (dir: string, a: string, b: string) => Promise<string>;
  committedFiles: (dir: string, from: string, to: string) => Promise<string[]>;
  submodulePaths: (dir: string, rev: string) => Promise<string[]>;
  readFileAt: (dir: string, rev: string, path: string) => Promise<string | undefined>;
  currentBranch: (dir: string) => Promise<string | undefined>;
  originUrl: (dir: string) => Promise<string | undefined>;
  changedFiles: (dir: string, base?: string) => Promise<string[]>;
  diffStat: (dir: string, base?: string) => Promise<DiffStat>;
}

/** How much of `ls-tree -r` of a whole tree submodulePaths accepts (see there). */
const SUBMODULE_LISTING_CAP = 256 * 1024 * 1024;

export function createInspection(git: RunGit): GitInspection {
  async function revParse(dir: string, rev: string): Promise<string | undefined> {
    const { stdout, code } = await git(['rev-parse', '--verify', '--quiet', '--end-of-options', `${rev}^{commit}`], {
      workspace: dir,
      okCodes: [1],
    });
    return code === 0 ? stdout.trim() : undefined;
  }

  async function headSha(dir: string): Promise<string> {
    const sha = await revParse(resolve(dir), 'HEAD');
    if (sha === undefined) throw new GitError('HEAD does not point at a commit', ['git', 'rev-parse', 'HEAD'], 1, '');
    return sha;
  }

  async function mergeBase(dir: string, a: string, b: string): Promise<string> {
    return (await git(['merge-base', '--end-of-options', a, b], { workspace: resolve(dir) })).stdout.trim();
  }

  async function committedFiles(dir: string, from: string, to: string): Promise<string[]> {
    assertRev(from);
    assertRev(to);
    const stdout = await hardenedDiff(resolve(dir), '--name-only', [from, to]);
    return [...new Set(stdout.split('\0').filter(Boolean))].sort();
  }

  async function submodulePaths(dir: string, rev: string): Promise<string[]> {
    assertRev(rev);
    // The whole tree is listed (a gitlink has no other index), so a monorepo's listing passes the usual
    // cap: 256 MiB is some two million paths, still well inside what one string may hold.
    const { stdout } = await git(['ls-tree', '-r', '-z', '--full-tree', '--end-of-options', rev], {
      workspace: resolve(dir),
      maxOutputBytes: SUBMODULE_LISTING_CAP,
    });
    const paths: string[] = [];
    for (const record of stdout.split('\0')) {
      // "<mode> <type> <object>\t<path>"
      const tab = record.indexOf('\t');
      if (tab > 0 && record.startsWith('160000 ')) paths.push(record.slice(tab + 1));
    }
    return paths.sort();
  }

  async function readFileAt(dir: string, rev: string, path: string): Promise<string | undefined> {
    // `rev:path` cannot start with '-': rev comes from us (origin/<default branch>), path from git's own diff output.
    const { stdout, code } = await git(['cat-file', 'blob', `${rev}:${path}`], { workspace: resolve(dir), okCodes: [128] });
    return code === 0 ? stdout : undefined;
  }

  async function currentBranch(dir: string): Promise<string | undefined> {
    const { stdout, code } = await git(['symbolic-ref', '--quiet', '--short', 'HEAD'], {
      workspace: resolve(dir),
      okCodes: [1],
    });
    return code === 0 ? stdout.trim() : undefined;
  }

  async function originUrl(dir: string): Promise<string | undefined> {
    const { stdout, code } = await git(['config', '--get', 'remote.origin.url'], { workspace: dir, okCodes: [1] });
    return code === 0 ? stdout.trim() : undefined;
  }

  /**
   * Runs `fn` against a scratch index holding the whole working tree (tracked,
   * modified and untracked, minus ignored), so diffs against any base see what
   * a commit would contain without touching the real index. Copying the real
   * index keeps git's stat cache, so unchanged files are not re-hashed.
   */
  async function withWorkingTreeIndex<T>(dir: string, fn: (env: Record<string, string>) => Promise<T>): Promise<T> {
    const indexPath = join(gitDirOf(dir), `shipgate-index-${randomBytes(6).toString('hex')}`);
    const original = join(gitDirOf(dir), 'index');
    try {
      await copyFile(original, indexPath);
      // Racy git: an entry whose file changed in the same second the index was written keeps its old
      // stat data, and git re-reads it only because the index file is not older than the entry. A
      // copy dated now would hide such a change (a same-size edit right after a commit) from every
      // diff taken through it: the copy keeps the original's times.
      const times = await stat(original);
      await utimes(indexPath, times.atime, times.mtime);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
    const env = { GIT_INDEX_FILE: indexPath };
    try {
      await git(['add', '--all', '--force'], { workspace: dir, env });
      return await fn(env);
    } finally {
      await rm(indexPath, { force: true });
      await rm(`${indexPath}.lock`, { force: true });
    }
  }

  /**
   * `git diff` with the flags that keep untrusted repository configuration out of it (no external
   * diff drivers or textconv programs) and renames shown as both paths, so a move out of a
   * protected path is still seen. `range` is `[base]` with `--cached` (working tree) or `[from, to]`.
   */
  async function hardenedDiff(dir: string, format: '--name-only' | '--numstat', range: readonly string[], env?: Record<string, string>): Promise<string> {
    const cached = range.length === 1 ? ['--cached'] : [];
    const args = ['diff', ...cached, format, '-z', '--no-renames', '--no-ext-diff', '--no-textconv', '--end-of-options', ...range, '--'];
    return (await git(args, env === undefined ? { workspace: dir } : { workspace: dir, env })).stdout;
  }

  async function changedFiles(dirInput: string, base = 'HEAD'): Promise<string[]> {
    assertRev(base);
    const dir = resolve(dirInput);
    return withWorkingTreeIndex(dir, async (env) => {
      const stdout = await hardenedDiff(dir, '--name-only', [base], env);
      return [...new Set(stdout.split('\0').filter(Boolean))].sort();
    });
  }

  async function diffStat(dirInput: string, base = 'HEAD'): Promise<DiffStat> {
    assertRev(base);
    const dir = resolve(dirInput);
    return withWorkingTreeIndex(dir, async (env) => {
      const stdout = await hardenedDiff(dir, '--numstat', [base], env);
      const files: DiffStatFile[] = [];
      for (const record of stdout.split('\0')) {
        const match = /^(-|\d+)\t(-|\d+)\t(.+)$/s.exec(record);
        if (match === null) continue;
        const [, added = '-', removed = '-', path = ''] = match;
        const binary = added === '-' || removed === '-';
        files.push({ path, insertions: binary ? 0 : Number(added), deletions: binary ? 0 : Number(removed), binary });
      }
      files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
      return {
        files,
        insertions: files.reduce((sum, f) => sum + f.insertions, 0),
        deletions: files.reduce((sum, f) => sum + f.deletions, 0),
      };
    });
  }

  return { revParse, headSha, mergeBase, committedFiles, submodulePaths, readFileAt, currentBranch, originUrl, changedFiles, diffStat };
}
