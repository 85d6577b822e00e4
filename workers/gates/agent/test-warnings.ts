import { constants } from 'node:fs';
import { lstat, open } from 'node:fs/promises';
import { join } from 'node:path';
import { concernsTests, detectTestWeakening } from './test-weakening.js';
import type { Git } from '../../../src/git/git.js';

/** Largest file the test-weakening check reads; bigger ones are not tests a person wrote. */
const MAX_COMPARED_BYTES = 1024 * 1024;

/**
 * A working-tree file's text for the test-weakening check, read without following links: the tree
 * holds what the base branch (or someone pushing to the run branch) put there, and a symlink to a
 * host file or to /dev/zero must not be read by the bot.
 */
export async function readTreeText(dir: string, path: string): Promise<string | undefined> {
  const full = join(dir, path);
  const info = await lstat(full).catch(() => undefined);
  if (info === undefined || !info.isFile() || info.size > MAX_COMPARED_BYTES) return undefined;
  const handle = await open(full, constants.O_RDONLY | constants.O_NOFOLLOW).catch(() => undefined);
  if (handle === undefined) return undefined;
  try {
    return await handle.readFile('utf8');
  } finally {
    await handle.close();
  }
}

/**
 * Whether the change deletes, skips or loosens tests (each warning a line for the thread): such a
 * fix is pushed only with a visible flag. Compares each changed file at `base` with the tree.
 */
export async function testWarningsOf(git: Pick<Git, 'readFileAt'>, dir: string, base: string, changed: readonly string[]): Promise<string[]> {
  return detectTestWeakening(
    await Promise.all(
      // Only what the detector looks at is read: a large file the change replaced (a data file, an
      // asset) is never loaded whole for nothing, nor its base version from git.
      changed.filter(concernsTests).map(async (path) => {
        const before = await git.readFileAt(dir, base, path);
        const after = await readTreeText(dir, path);
        const status = before === undefined ? 'added' : after === undefined ? 'deleted' : 'modified';
        return { path, status, before, after } as const;
      }),
    ),
  );
}
