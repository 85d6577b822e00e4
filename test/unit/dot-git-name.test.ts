import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createProtectedPaths } from '../../src/agent/protected-paths.js';
import { createRepoFiles, ToolRefusal } from '../../src/agent/repo-files.js';
import { isDotGitName } from '../../src/git/dot-git-name.js';

/**
 * The spellings of `.git` (hostile review M1): names git refuses to add (core.protectNTFS, on by
 * default) or that HFS+ reads as `.git`. A tool that let one into the tree would break every later
 * `git add` of the workspace.
 */

const ALIASES = [
  '.git',
  '.GIT',
  '.Git',
  '.git.',
  '.git..',
  '.GIT ',
  '.git. .',
  '.git::$INDEX_ALLOCATION',
  '.git:stream',
  'git~1',
  'GIT~1',
  'git~2',
  'git~12',
  'git~1. ',
  'git~1::$INDEX_ALLOCATION',
  // Code points HFS+ ignores, inside or around the name.
  '.g\u200Cit',
  '.gi\u200Dt',
  '\u200E.git',
  '.git\u200F',
  '.\u202Agit',
  '.g\u202Eit',
  '.gi\u206At',
  '.git\u206F',
  '\uFEFF.git',
  '.G\u200CIT.',
  // NTFS ends a name at a backslash too: each part counts (git 2.39 refuses all of these).
  'a\\.git',
  '.git\\x',
  'x\\git~1',
  'x\\.GIT.',
  '.g\u200Cit\\x',
];

const ORDINARY = [
  'git',
  '.gitignore',
  '.gitattributes',
  '.gitmodules',
  '.github',
  '.gitlab-ci.yml',
  '.git-blame-ignore-revs',
  '.git.bak',
  'x.git',
  '..git',
  'git~',
  'git~x',
  'git~1x',
  'gitx~1',
  '.git~1',
  'src',
  'b\\c',
  'a\\.gitignore',
];

describe('isDotGitName', () => {
  it.each(ALIASES)('%j is .git', (name) => {
    expect(isDotGitName(name)).toBe(true);
  });

  it.each(ORDINARY)('%j is an ordinary name', (name) => {
    expect(isDotGitName(name)).toBe(false);
  });
});

describe('the editor refuses every spelling of .git', () => {
  const root = mkdtempSync(join(tmpdir(), 'shipgate-dot-git-'));
  afterAll(() => rmSync(root, { recursive: true, force: true }));
  mkdirSync(join(root, 'src'));
  writeFileSync(join(root, '.gitignore'), 'dist\n');
  const files = createRepoFiles({ root, protectedPaths: createProtectedPaths([]) });

  it.each([
    '.git./hooks/pre-commit',
    'src/.GIT /x',
    'git~1/config',
    'a/.g\u200Cit/hooks/x',
    '.git::$INDEX_ALLOCATION/x',
    'src/a\\.git',
    '.git\\hooks',
  ])('%j is refused for reading and writing', async (path) => {
    for (const intent of ['read', 'write'] as const) {
      await expect(files.resolve(`/repo/${path}`, intent)).rejects.toThrow(ToolRefusal);
      await expect(files.resolve(`/repo/${path}`, intent)).rejects.toThrow(/inside \.git/);
    }
  });

  it('names that only start like .git are the repository’s own files', async () => {
    await expect(files.resolve('/repo/.gitignore', 'write')).resolves.toMatchObject({ relativePath: '.gitignore' });
    await expect(files.resolve('/repo/src/.git.bak/x', 'write')).resolves.toMatchObject({
      relativePath: 'src/.git.bak/x',
    });
  });
});
