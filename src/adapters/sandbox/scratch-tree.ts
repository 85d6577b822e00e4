import { spawn } from 'node:child_process';
import { chmod, mkdtemp } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * The throwaway copy of a working tree that one sandboxed command gets. The
 * command may write anything there; the copy is deleted afterwards, so only
 * the agent's own edits (made by the bot's editor tool in the real tree) can
 * ever be committed.
 */

export interface ScratchTree {
  /** The scratch directory (holds `repo/` and whatever else the adapter puts beside it). */
  dir: string;
  /** The copy of the tree. */
  repo: string;
  remove(): Promise<void>;
}

function run(file: string, args: readonly string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, [...args], { stdio: ['ignore', 'ignore', 'pipe'], env: { PATH: '/usr/bin:/bin', LC_ALL: 'C' } });
    let stderr = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => {
      stderr = (stderr + chunk).slice(-2_000);
    });
    child.once('error', reject);
    child.once('close', (code) => {
      if (code === 0) resolve();
      else reject(new Error(`${file} failed (exit ${code ?? 'signal'}): ${stderr.trim().split('\n').at(-1) ?? ''}`));
    });
  });
}

export const SCRATCH_PREFIX = 'shipgate-sandbox-';

/**
 * Deletes a tree a check may have shaped to resist deletion (directories without permissions,
 * paths longer than PATH_MAX that defeat Node's recursive rm): GNU rm walks it relative to each
 * directory, and `--one-file-system` keeps it from descending into anything mounted inside.
 */
export async function removeTree(dir: string): Promise<void> {
  await run('chmod', ['-R', 'u+rwX', '--', dir]).catch(() => undefined);
  await run('rm', ['-rf', '--one-file-system', '--', dir]);
}

/**
 * Copies `tree` to a new directory under `parent`. `cp -a` keeps modes and
 * symbolic links as links (a link never gets followed on the host side);
 * `owner` hands the copy to the sandbox's unprivileged user.
 */
export async function createScratchTree(tree: string, parent: string, owner?: { uid: number; gid: number }): Promise<ScratchTree> {
  const dir = await mkdtemp(join(parent, SCRATCH_PREFIX));
  const repo = join(dir, 'repo');
  const remove = (): Promise<void> => removeTree(dir);
  try {
    await run('cp', ['-a', '--no-target-directory', '--', tree, repo]);
    if (owner !== undefined) {
      // The launcher runs as the sandbox user and must reach the bind sources: search, not read.
      await chmod(dir, 0o711);
      await run('chown', ['-R', '--no-dereference', `${owner.uid}:${owner.gid}`, '--', repo]);
    }
  } catch (error) {
    await remove();
    throw error;
  }
  return { dir, repo, remove };
}
