import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RefusedError } from '../../src/errors.js';
import { cloneUrlProblem } from '../../src/git/clone-url.js';
import { createCommitter, DEFAULT_IDENTITY } from '../../src/git/commit.js';
import { GitError, PushRefusedError } from '../../src/git/git-errors.js';
import { createInspection } from '../../src/git/inspection.js';
import { createPusher } from '../../src/git/push.js';
import { createGitRunner, type RunGit, type RunOptions, type RunResult } from '../../src/git/run-git.js';

/** An in-memory git: records every command and answers from `answer` (default: empty success). */
function fakeGit(answer: (args: readonly string[], options: RunOptions) => Partial<RunResult> | undefined = () => undefined) {
  const calls: { args: readonly string[]; options: RunOptions }[] = [];
  const run: RunGit = async (args, options = {}) => {
    calls.push({ args, options });
    return { stdout: '', stderr: '', code: 0, ...answer(args, options) };
  };
  return { run, calls };
}

describe('clone URLs', () => {
  it('accepts plain http(s) and file URLs, and nothing carrying credentials or able to run commands', () => {
    expect(cloneUrlProblem('https://github.com/acme/shop.git')).toBeUndefined();
    expect(cloneUrlProblem('file:///srv/git/shop.git')).toBeUndefined();
    expect(cloneUrlProblem('https://x-access-token:ghs_abc@github.com/acme/shop.git')).toBe('the URL carries credentials');
    expect(cloneUrlProblem('ext::sh -c touch% /tmp/pwned')).toMatch(/protocol ext: is not allowed/);
    expect(cloneUrlProblem('ssh://git@github.com/acme/shop.git')).toBe('protocol ssh: is not allowed');
    expect(cloneUrlProblem('shop.git')).toBe('not an absolute URL');
  });
});

describe('running git (against a stand-in binary)', () => {
  let dir: string;
  let fake: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'shipgate-run-git-'));
    fake = join(dir, 'git');
    // Prints its arguments and environment; `fail` exits 1 echoing the auth header, `hang` sleeps.
    writeFileSync(
      fake,
      ['#!/bin/sh', 'for a in "$@"; do echo "arg:$a"; done', 'env | sort | sed "s/^/env:/"', 'case "$*" in *fail*) echo "fatal: $GIT_CONFIG_VALUE_0" >&2; exit 1;; *hang*) sleep 5;; *answer*) exit 1;; esac', ''].join('\n'),
    );
    chmodSync(fake, 0o755);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('pins git to the bot’s git directory, passes the safe config first, and builds the environment from nothing', async () => {
    const runner = createGitRunner({ gitPath: fake, timeoutMs: 5_000 });
    try {
      const workspace = join(dir, 'sg-1');
      mkdirSync(workspace, { recursive: true });
      const { stdout } = await runner.run(['status'], { workspace });
      const args = stdout.split('\n').filter((l) => l.startsWith('arg:')).map((l) => l.slice(4));
      expect(args.slice(0, 4)).toEqual(['--git-dir', `${workspace}.git`, '--work-tree', workspace]);
      expect(args).toContain('core.hooksPath=/dev/null');
      expect(args).toContain('credential.helper=');
      expect(args.at(-1)).toBe('status');
      const env = stdout.split('\n').filter((l) => l.startsWith('env:')).map((l) => l.slice(4).split('=')[0]);
      expect(env.filter((name) => !['PWD', 'SHLVL', '_'].includes(name ?? ''))).toEqual(['GIT_ATTR_NOSYSTEM', 'GIT_CONFIG_GLOBAL', 'GIT_CONFIG_NOSYSTEM', 'GIT_NO_REPLACE_OBJECTS', 'GIT_TERMINAL_PROMPT', 'HOME', 'LC_ALL', 'PATH']);
    } finally {
      await runner.close();
    }
  });

  it('gives credentials through this one command’s environment, never argv, and scrubs them from errors', async () => {
    const runner = createGitRunner({ gitPath: fake, timeoutMs: 5_000 });
    const credentials = { username: 'x-access-token', password: 'ghs_verysecretinstallationtoken' };
    try {
      const { stdout } = await runner.run(['fetch'], { credentials });
      expect(stdout).not.toMatch(/arg:.*ghs_/);
      expect(stdout).toContain('env:GIT_CONFIG_KEY_0=http.extraHeader');
      const failure = await runner.run(['fail'], { credentials }).catch((error: unknown) => error);
      expect(failure).toBeInstanceOf(GitError);
      const text = failure instanceof GitError ? `${failure.message}\n${failure.stderr}` : '';
      expect(text).toContain('[REDACTED]');
      expect(text).not.toContain(Buffer.from(`${credentials.username}:${credentials.password}`).toString('base64'));
    } finally {
      await runner.close();
    }
  });

  it('treats okCodes as answers and stops a hung command with a timeout error', async () => {
    const runner = createGitRunner({ gitPath: fake, timeoutMs: 300 });
    try {
      expect((await runner.run(['answer'], { okCodes: [1] })).code).toBe(1);
      const hung = await runner.run(['hang']).catch((error: unknown) => error);
      expect(hung).toBeInstanceOf(GitError);
      expect(hung instanceof GitError && hung.kind).toBe('timeout');
    } finally {
      await runner.close();
    }
  });
});

describe('inspection (over an in-memory git)', () => {
  it('diffs with the flags that keep repository config out, and without rename detection', async () => {
    const git = fakeGit((args) => (args[0] === 'diff' ? { stdout: 'b.ts\0a.ts\0a.ts\0' } : undefined));
    const inspect = createInspection(git.run);
    expect(await inspect.committedFiles('/w/run', 'base', 'head')).toEqual(['a.ts', 'b.ts']);
    expect(git.calls[0]?.args).toEqual(['diff', '--name-only', '-z', '--no-renames', '--no-ext-diff', '--no-textconv', '--end-of-options', 'base', 'head', '--']);
    expect(git.calls[0]?.options.workspace).toBe('/w/run');
  });

  it('diffs the working tree through a scratch index holding everything, ignored files included', async () => {
    const git = fakeGit((args) => (args[0] === 'diff' ? { stdout: '3\t1\tsrc/a.ts\0-\t-\tlogo.png\0' } : undefined));
    const stat = await createInspection(git.run).diffStat('/nonexistent/run', 'base');
    expect(stat).toEqual({ files: [{ path: 'logo.png', insertions: 0, deletions: 0, binary: true }, { path: 'src/a.ts', insertions: 3, deletions: 1, binary: false }], insertions: 3, deletions: 1 });
    const [add, diff] = git.calls;
    expect(add?.args).toEqual(['add', '--all', '--force']);
    const index = add?.options.env?.GIT_INDEX_FILE ?? '';
    expect(index).toMatch(/^\/nonexistent\/run\.git\/shipgate-index-[0-9a-f]{12}$/);
    expect(diff?.options.env?.GIT_INDEX_FILE).toBe(index);
    expect(diff?.args.slice(0, 2)).toEqual(['diff', '--cached']);
  });

  it('refuses a revision git could read as an option before running anything', async () => {
    const git = fakeGit();
    const inspect = createInspection(git.run);
    await expect(inspect.changedFiles('/w', '--output=/etc/passwd')).rejects.toThrow(/invalid revision/);
    await expect(inspect.committedFiles('/w', 'a b', 'c')).rejects.toThrow(/invalid revision/);
    await expect(inspect.submodulePaths('/w', '')).rejects.toThrow(/invalid revision/);
    expect(git.calls).toEqual([]);
  });

  it('lists gitlinks as submodule paths, and reads a missing file as undefined', async () => {
    const git = fakeGit((args) => {
      if (args[0] === 'ls-tree') return { stdout: ['100644 blob aaa\tsrc/a.ts', '160000 commit bbb\tvendor/lib', '040000 tree ccc\tdocs', ''].join('\0') };
      if (args[0] === 'cat-file') return { code: 128 };
      return undefined;
    });
    const inspect = createInspection(git.run);
    expect(await inspect.submodulePaths('/w', 'HEAD')).toEqual(['vendor/lib']);
    expect(await inspect.readFileAt('/w', 'origin/main', 'gone.ts')).toBeUndefined();
    expect(git.calls.at(-1)?.options.okCodes).toEqual([128]);
  });
});

describe('commit (over an in-memory git)', () => {
  const head = 'h'.repeat(40);
  function committingGit(tree: string) {
    return fakeGit((args) => {
      if (args[0] === 'write-tree') return { stdout: `${tree}\n` };
      if (args[0] === 'rev-parse' && args.includes(`${head}^{tree}`)) return { stdout: 'tree-at-head\n' };
      if (args[0] === 'rev-parse') return { stdout: `${head}\n` };
      if (args[0] === 'commit-tree') return { stdout: `${'c'.repeat(40)}\n` };
      if (args[0] === 'symbolic-ref') return { stdout: 'shipgate/sg-1-x\n' };
      return undefined;
    });
  }

  it('commits with plumbing as the bot, trailers last and on one line, and moves the branch by compare-and-swap', async () => {
    const git = committingGit('new-tree');
    const commit = createCommitter(git.run, createInspection(git.run), DEFAULT_IDENTITY);
    expect(await commit({ dir: '/w', message: ' Add it \n', trailers: { 'Shipgate-Run': 'sg-1', 'Requested-by': 'Ada\nSigned-off-by: Eve <U1>' } })).toEqual({ sha: 'c'.repeat(40), created: true });
    const commitTree = git.calls.find((c) => c.args[0] === 'commit-tree');
    expect(commitTree?.options.input).toBe('Add it\n\nShipgate-Run: sg-1\nRequested-by: Ada Signed-off-by: Eve <U1>\n');
    expect(commitTree?.options.config).toContain('user.name=shipgate[bot]');
    expect(git.calls.at(-1)?.args).toEqual(['update-ref', '-m', 'shipgate: commit', '--', 'refs/heads/shipgate/sg-1-x', 'c'.repeat(40), head]);
    expect(git.calls.some((c) => c.args[0] === 'commit')).toBe(false);
  });

  it('makes no commit when the tree is HEAD’s (nothing changed, or committed before a restart)', async () => {
    const git = committingGit('tree-at-head');
    const commit = createCommitter(git.run, createInspection(git.run), DEFAULT_IDENTITY);
    expect(await commit({ dir: '/w', message: 'm', trailers: {} })).toEqual({ sha: head, created: false });
    expect(git.calls.some((c) => c.args[0] === 'commit-tree')).toBe(false);
  });

  it('refuses a trailer key that is not a token, an empty message and an identity with angle brackets', async () => {
    const git = committingGit('new-tree');
    const commit = createCommitter(git.run, createInspection(git.run), DEFAULT_IDENTITY);
    await expect(commit({ dir: '/w', message: 'm', trailers: { 'Bad key': 'x' } })).rejects.toThrow(/invalid trailer key/);
    await expect(commit({ dir: '/w', message: '  ', trailers: {} })).rejects.toThrow(/empty/);
    expect(() => createCommitter(git.run, createInspection(git.run), { name: 'Eve <eve@x>', email: 'e@x' })).toThrow(/invalid git identity/);
  });
});

describe('push (over an in-memory git)', () => {
  const target = { dir: '/w/run', defaultBranch: 'main', credentials: { username: 'u', password: 'p' }, remoteUrl: 'https://github.com/acme/shop.git', sha: 'a'.repeat(40) };

  it('refuses another branch, an unusable URL or a short sha before running git at all', async () => {
    const git = fakeGit();
    const push = createPusher(git.run, undefined);
    await expect(push({ ...target, branch: 'main' })).rejects.toBeInstanceOf(PushRefusedError);
    await expect(push({ ...target, branch: 'shipgate/sg-1-x', runId: 'sg-2' })).rejects.toThrow(/not run sg-2's branch/);
    await expect(push({ ...target, branch: 'shipgate/sg-1-x', remoteUrl: 'https://u:p@github.com/acme/shop.git' })).rejects.toBeInstanceOf(RefusedError);
    await expect(push({ ...target, branch: 'shipgate/sg-1-x', sha: 'abc' })).rejects.toThrow(/not a full sha/);
    expect(git.calls).toEqual([]);
  });

  it('pushes exactly the verified sha from a clean repository, never forced, with the credentials on that command only', async () => {
    const git = fakeGit((args) => {
      if (args.includes('rev-parse')) return { stdout: `${'a'.repeat(40)}\n` };
      if (args.includes('push')) return { stdout: `To https://github.com/acme/shop.git\n*\t${'a'.repeat(40)}:refs/heads/shipgate/sg-1-x\t[new branch]\nDone\n` };
      return undefined;
    });
    const push = createPusher(git.run, undefined);
    expect(await push({ ...target, branch: 'shipgate/sg-1-x', runId: 'sg-1' })).toEqual({ pushed: true, sha: 'a'.repeat(40) });
    const pushCall = git.calls.find((c) => c.args.includes('push'));
    expect(pushCall?.args.slice(-2)).toEqual(['https://github.com/acme/shop.git', `${'a'.repeat(40)}:refs/heads/shipgate/sg-1-x`]);
    expect(pushCall?.args.join(' ')).not.toMatch(/--force|\+/);
    expect(git.calls.filter((c) => c.options.credentials !== undefined)).toEqual([pushCall]);
    expect(git.calls.find((c) => c.args.includes('fetch'))?.args).toContain('/w/run.git');
  });

  it('refuses when the workspace branch moved after verification', async () => {
    const git = fakeGit((args) => (args.includes('rev-parse') ? { stdout: `${'b'.repeat(40)}\n` } : undefined));
    await expect(createPusher(git.run, undefined)({ ...target, branch: 'shipgate/sg-1-x' })).rejects.toThrow(/moved after verification/);
    expect(git.calls.some((c) => c.args.includes('push'))).toBe(false);
  });
});
