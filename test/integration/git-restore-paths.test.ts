import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { branchName, createGit } from '../../src/git/git.js';
import { createInspection } from '../../src/git/inspection.js';
import { createPathRestorer } from '../../src/git/restore-paths.js';
import { createGitRunner } from '../../src/git/run-git.js';
import { gitIn } from '../helpers/world.js';

/**
 * `Git.restorePaths` (src/git/restore-paths.ts): named paths of a run's working tree made what a
 * commit has there, by git itself — the way back to the head after a write-back into the tree failed
 * part way. Real git, a workspace cloned by the bot's own git layer.
 */

const RUN_ID = 'sg-restore01';
const BINARY = Buffer.from([0x00, 0xff, 0xfe, 0x80, 0x0a, 0x00]);

const cleanup: Array<() => void> = [];
afterEach(() => {
  for (const fn of cleanup.splice(0)) fn();
});

async function workspace() {
  const root = mkdtempSync(join(tmpdir(), 'shipgate-restore-'));
  cleanup.push(() => rmSync(root, { recursive: true, force: true }));
  const bare = join(root, 'shop.git');
  const seed = join(root, 'seed');
  gitIn(root, 'init', '-q', '--bare', '--initial-branch=main', bare);
  gitIn(root, 'clone', '-q', bare, seed);
  mkdirSync(join(seed, 'src'));
  writeFileSync(join(seed, 'src/server.js'), 'server\n');
  writeFileSync(join(seed, 'run.sh'), '#!/bin/sh\n');
  chmodSync(join(seed, 'run.sh'), 0o755);
  writeFileSync(join(seed, 'data.bin'), BINARY);
  symlinkSync('src/server.js', join(seed, 'link.js'));
  gitIn(seed, 'add', '-A');
  gitIn(seed, 'commit', '-q', '-m', 'initial');
  gitIn(seed, 'push', '-q', 'origin', 'main');
  const git = createGit();
  cleanup.push(() => void git.close());
  const dir = join(root, 'work', RUN_ID);
  const { head } = await git.prepareWorkspace({
    dir,
    cloneUrl: `file://${bare}`,
    defaultBranch: 'main',
    branch: branchName(RUN_ID, 'restore paths'),
  });
  const ws = (...args: string[]) => gitIn(dir, '--git-dir', `${dir}.git`, ...args);
  return { root, dir, head, git, ws };
}

describe('restorePaths', () => {
  it('puts bytes, modes and links back, removes what the commit lacks, and leaves HEAD and the index alone', async () => {
    const { dir, head, git, ws } = await workspace();
    const index = readFileSync(`${dir}.git/index`);
    writeFileSync(join(dir, 'data.bin'), 'text now\n');
    chmodSync(join(dir, 'run.sh'), 0o644);
    rmSync(join(dir, 'link.js'));
    writeFileSync(join(dir, 'link.js'), 'a file now\n');
    // A file where the commit has a directory, and a new directory the commit does not have.
    rmSync(join(dir, 'src'), { recursive: true });
    writeFileSync(join(dir, 'src'), 'in the way\n');
    mkdirSync(join(dir, 'new/deeper'), { recursive: true });
    writeFileSync(join(dir, 'new/deeper/file.js'), 'new\n');

    await git.restorePaths(dir, head, await git.changedFiles(dir, head));

    expect(await git.changedFiles(dir, head)).toEqual([]);
    expect(readFileSync(join(dir, 'data.bin')).equals(BINARY)).toBe(true);
    expect(statSync(join(dir, 'run.sh')).mode & 0o111).not.toBe(0);
    expect(readlinkSync(join(dir, 'link.js'))).toBe('src/server.js');
    expect(readFileSync(join(dir, 'src/server.js'), 'utf8')).toBe('server\n');
    expect(existsSync(join(dir, 'new'))).toBe(false);
    expect(ws('rev-parse', 'HEAD')).toBe(head);
    expect(readFileSync(`${dir}.git/index`).equals(index)).toBe(true);
    expect(ws('status', '--porcelain', '--ignored')).toBe('');
  });

  it('never follows a link in the tree: a path beyond one is not there to remove', async () => {
    const { root, dir, head, git } = await workspace();
    const outside = join(root, 'outside');
    mkdirSync(outside);
    writeFileSync(join(outside, 'keep.js'), 'keep\n');
    symlinkSync(outside, join(dir, 'escape'));
    await git.restorePaths(dir, head, ['escape/keep.js', 'escape']);
    expect(readFileSync(join(outside, 'keep.js'), 'utf8')).toBe('keep\n');
    // The link itself is a path the commit lacks: it goes, its target stays.
    expect(existsSync(join(dir, 'escape'))).toBe(false);
    expect(lstatSync(outside).isDirectory()).toBe(true);
  });

  it('refuses a path git would not spell, and a revision that is not a commit', async () => {
    const { dir, head, git } = await workspace();
    for (const path of ['../x', '/abs', 'a//b', '.git/config', 'src/./x', 'a\0b']) {
      await expect(git.restorePaths(dir, head, [path]), path).rejects.toThrow(/not a repository path/);
    }
    // Every spelling of .git git itself refuses (core.protectNTFS), or HFS+ reads as .git.
    for (const path of [
      '.git./x',
      'src/.GIT /x',
      'git~1/x',
      '.git::$INDEX_ALLOCATION',
      'a/.g\u200Dit/x',
      '.GIT\u202E',
    ]) {
      await expect(git.restorePaths(dir, head, [path]), path).rejects.toThrow(/not a repository path/);
    }
    await expect(git.restorePaths(dir, '--output=/tmp/x', ['src/server.js'])).rejects.toThrow();
  });
});

describe('restorePaths on a large tree (hostile review L1, L2)', () => {
  it('lists only the wanted paths: a tree whose full listing is over the output cap is still put back', async () => {
    const { dir, root } = await workspace();
    // A commit whose whole listing is far over a small output cap; the wanted path sorts last.
    const seed = join(root, 'seed');
    mkdirSync(join(seed, 'many'));
    for (let i = 0; i < 200; i++) writeFileSync(join(seed, 'many', `a-rather-long-file-name-${i}.txt`), `${i}\n`);
    mkdirSync(join(seed, 'zz/deep'), { recursive: true });
    writeFileSync(join(seed, 'zz/deep/last.js'), 'last\n');
    gitIn(seed, 'add', '-A');
    gitIn(seed, 'commit', '-q', '-m', 'many');
    const head = gitIn(seed, 'rev-parse', 'HEAD');
    gitIn(seed, 'push', '-q', 'origin', 'main');
    gitIn(dir, '--git-dir', `${dir}.git`, 'fetch', '-q', 'origin', 'main');
    gitIn(dir, '--git-dir', `${dir}.git`, '--work-tree', dir, 'checkout', '-q', head, '--', '.');

    const runner = createGitRunner({ gitPath: 'git', timeoutMs: 30_000, stdoutCapBytes: 4096 });
    try {
      const restorePaths = createPathRestorer(runner.run, createInspection(runner.run));
      writeFileSync(join(dir, 'zz/deep/last.js'), 'changed\n');
      mkdirSync(join(dir, 'zz/deep/new'));
      writeFileSync(join(dir, 'zz/deep/new/file.js'), 'new\n');
      // A wanted directory the commit has: it stays, and its contents are not listed.
      await restorePaths(dir, head, ['zz/deep/last.js', 'zz/deep/new/file.js', 'many']);
      expect(readFileSync(join(dir, 'zz/deep/last.js'), 'utf8')).toBe('last\n');
      expect(existsSync(join(dir, 'zz/deep/new'))).toBe(false);
      // The directories the commit has on the way stay.
      expect(lstatSync(join(dir, 'zz/deep')).isDirectory()).toBe(true);
      expect(existsSync(join(dir, 'many/a-rather-long-file-name-199.txt'))).toBe(true);
      // A name that looks like a pattern is only itself.
      writeFileSync(join(dir, 'many/*'), 'star\n');
      await restorePaths(dir, head, ['many/*']);
      expect(existsSync(join(dir, 'many/*'))).toBe(false);
      expect(existsSync(join(dir, 'many/a-rather-long-file-name-0.txt'))).toBe(true);
    } finally {
      await runner.close();
    }
  });

  it('removes the empty directories on the way to a path that is not there (a write that failed after mkdir)', async () => {
    const { dir, head, git } = await workspace();
    mkdirSync(join(dir, 'n1/n2'), { recursive: true });
    mkdirSync(join(dir, 'src/made'), { recursive: true });
    await git.restorePaths(dir, head, ['n1/n2/leaf.js', 'src/made/deeper/leaf.js']);
    expect(existsSync(join(dir, 'n1'))).toBe(false);
    expect(existsSync(join(dir, 'src/made'))).toBe(false);
    // The commit's own directory stays.
    expect(readFileSync(join(dir, 'src/server.js'), 'utf8')).toBe('server\n');
  });
});
