import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { GitError } from '../../src/git/git-errors.js';
import { createGitRunner } from '../../src/git/run-git.js';

/**
 * The output cap of one git command (hostile review L1): every caller parses what git prints (file
 * lists, trees, diffs), so output past the cap fails the command instead of being cut silently — a
 * list cut short would leave out the paths past the cut.
 */

describe('git output and its cap', () => {
  const dir = mkdtempSync(join(tmpdir(), 'shipgate-git-cap-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  // A stand-in git: `print <n> [linger]` prints n bytes, then with `linger` keeps running for a while.
  const fake = join(dir, 'git');
  writeFileSync(
    fake,
    '#!/bin/sh\nwhile [ "$1" != print ]; do shift; done\nhead -c "$2" /dev/zero | tr "\\0" "x"\n[ "$3" = linger ] && sleep 5\nexit 0\n',
  );
  chmodSync(fake, 0o755);

  it('past the cap the command fails with a GitError, stopped at once', async () => {
    const runner = createGitRunner({ gitPath: fake, timeoutMs: 20_000, stdoutCapBytes: 64 * 1024 });
    const started = Date.now();
    const failure = await runner.run(['print', String(1024 * 1024), 'linger']).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(GitError);
    expect(failure instanceof GitError ? failure.message : failure).toMatch(/print printed more than 65536 bytes/);
    // Not waited out: the command was stopped when the cap was passed.
    expect(Date.now() - started).toBeLessThan(4_000);
    await runner.close();
  });

  it('output up to the cap is given whole', async () => {
    const runner = createGitRunner({ gitPath: fake, timeoutMs: 20_000, stdoutCapBytes: 1000 });
    expect((await runner.run(['print', '1000'])).stdout).toBe('x'.repeat(1000));
    await expect(runner.run(['print', '1001'])).rejects.toThrow(GitError);
    await runner.close();
  });

  it('a call may allow more (the whole-tree listing of a monorepo), and is held to that', async () => {
    const runner = createGitRunner({ gitPath: fake, timeoutMs: 20_000, stdoutCapBytes: 1000 });
    expect((await runner.run(['print', '5000'], { maxOutputBytes: 5000 })).stdout).toHaveLength(5000);
    await expect(runner.run(['print', '5001'], { maxOutputBytes: 5000 })).rejects.toThrow(/more than 5000 bytes/);
    await runner.close();
  });
});
