import { execFileSync } from 'node:child_process';
import { execFile, spawn } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RefusedError } from '../../src/errors.js';
import {
  branchName,
  createGit,
  GitError,
  isRunBranch,
  PushRefusedError,
  pushRefusal,
  scrubGitText,
  slugify,
  type Git,
} from '../../src/git/git.js';

/**
 * The git layer against real git (SPEC §4 Git bullet, §9): bare repositories in
 * temporary directories are the remotes, over file:// and, for credentials,
 * over smart HTTP served by git's own http-backend.
 */


/** What the agent step passes: the clone URL the workspace came from (as the API gave it) and the verified HEAD. */
function target(dir: string): { remoteUrl: string; sha: string } {
  const read = (...args: string[]) =>
    execFileSync('git', ['--git-dir', `${dir}.git`, ...args], { env: { PATH: process.env.PATH ?? '', GIT_CONFIG_GLOBAL: '/dev/null', GIT_CONFIG_NOSYSTEM: '1' } })
      .toString()
      .trim();
  return { remoteUrl: read('config', '--get', 'remote.origin.url'), sha: read('rev-parse', 'HEAD') };
}

const execFileAsync = promisify(execFile);

const RUN_ID = 'sg-abc12345';
const TASK = 'Fix the login redirect loop';
const BRANCH = branchName(RUN_ID, TASK);
const CREDENTIALS = { username: 'x-access-token', password: 'pw-SECRET-7f3a9c1e5b' };
const TRAILERS = { 'Shipgate-Run': RUN_ID, 'Requested-by': 'Ada Lovelace <U012ADA>' };

let root: string;
let git: Git;

/** Test-side git: isolated like the bot's, with its own identity, so the fixture never depends on this machine. */
async function sh(cwd: string, ...args: string[]): Promise<string> {
  const { stdout } = await execFileAsync(
    'git',
    ['-c', 'user.name=Seed Person', '-c', 'user.email=seed@example.test', '-c', 'init.defaultBranch=main', ...args],
    {
      cwd,
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        HOME: root,
        GIT_CONFIG_GLOBAL: '/dev/null',
        GIT_CONFIG_NOSYSTEM: '1',
        GIT_TERMINAL_PROMPT: '0',
        LC_ALL: 'C',
      },
    },
  );
  return stdout.trim();
}

/** git on a workspace: the bot's git directory lives beside the tree (`<dir>.git`), never inside it. */
async function ws(dir: string, ...args: string[]): Promise<string> {
  return sh(dir, '--git-dir', `${dir}.git`, '--work-tree', dir, ...args);
}

interface Remote {
  bare: string;
  url: string;
}

/** A bare repository with `main` holding one commit (plus whatever `files` says). */
async function makeRemote(name = 'remote', files: Record<string, string> = {}): Promise<Remote> {
  const bare = join(root, `${name}.git`);
  await sh(root, 'init', '--quiet', '--bare', '--initial-branch=main', bare);
  const seed = join(root, `${name}-seed`);
  await sh(root, 'init', '--quiet', '--initial-branch=main', seed);
  await writeFile(join(seed, 'README.md'), '# demo\n');
  await writeFile(join(seed, '.gitignore'), 'ignored.log\n');
  for (const [path, content] of Object.entries(files)) {
    await mkdir(join(seed, path, '..'), { recursive: true });
    await writeFile(join(seed, path), content);
    if (path.includes('hooks/')) await chmod(join(seed, path), 0o755);
  }
  await sh(seed, 'add', '--all');
  await sh(seed, 'commit', '--quiet', '-m', 'Initial commit');
  await sh(seed, 'push', '--quiet', bare, 'main:refs/heads/main');
  return { bare, url: pathToFileURL(bare).href };
}

async function remoteRefs(bare: string): Promise<string> {
  return sh(bare, 'for-each-ref', '--format=%(refname) %(objectname)');
}

async function remoteSha(bare: string, ref: string): Promise<string> {
  return sh(bare, 'rev-parse', '--verify', ref);
}

/** Every file under `dir`, recursively. */
async function allFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await allFiles(path)));
    else if (entry.isFile()) out.push(path);
  }
  return out;
}

async function fileExists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'shipgate-git-test-'));
  git = createGit();
});

afterEach(async () => {
  await git.close();
  await rm(root, { recursive: true, force: true });
});

describe('branch names', () => {
  it('puts the run id right after shipgate/ and kebabs the first words of the task', () => {
    expect(BRANCH).toBe('shipgate/sg-abc12345-fix-the-login-redirect-loop');
    expect(branchName('sg-1', 'Ajoute un café à la page « Contact » !')).toBe(
      'shipgate/sg-1-ajoute-un-cafe-a-la-page-contact',
    );
    expect(branchName('sg-1', '   ')).toBe('shipgate/sg-1-change');
    expect(branchName('sg-1', '🚀🚀')).toBe('shipgate/sg-1-change');
    const long = slugify('Refactor the payment reconciliation service to use the new ledger API everywhere');
    expect(long.length).toBeLessThanOrEqual(40);
    expect(long).toBe('refactor-the-payment-reconciliation');
    expect(slugify('x'.repeat(80))).toBe('x'.repeat(40));
    expect(() => branchName('../main', 'x')).toThrow();
  });

  it('recognises a run branch and nothing else', () => {
    expect(isRunBranch(BRANCH, RUN_ID)).toBe(true);
    expect(isRunBranch(`refs/heads/${BRANCH}`, RUN_ID)).toBe(true);
    expect(isRunBranch(BRANCH, 'sg-other000')).toBe(false);
    expect(isRunBranch('main', RUN_ID)).toBe(false);
    expect(isRunBranch(`shipgate/${RUN_ID}-Has-Caps`, RUN_ID)).toBe(false);
    expect(isRunBranch(`shipgate/${RUN_ID}-x:refs/heads/main`, RUN_ID)).toBe(false);
  });

  it('refuses anything but a valid shipgate/ branch that is neither default nor protected', () => {
    expect(pushRefusal({ branch: BRANCH, defaultBranch: 'main' })).toBeUndefined();
    expect(pushRefusal({ branch: 'main', defaultBranch: 'main' })).toMatch(/shipgate/);
    expect(pushRefusal({ branch: 'shipgate/x', defaultBranch: 'shipgate/x' })).toMatch(/default branch/);
    expect(
      pushRefusal({ branch: 'shipgate/release', defaultBranch: 'main', protectedBranches: ['shipgate/rel*'] }),
    ).toMatch(/protected/);
    expect(pushRefusal({ branch: 'shipgate/x:refs/heads/main', defaultBranch: 'main' })).toMatch(/valid/);
    expect(pushRefusal({ branch: '+shipgate/x', defaultBranch: 'main' })).toMatch(/valid/);
    expect(pushRefusal({ branch: 'shipgate/../main', defaultBranch: 'main' })).toMatch(/valid/);
    expect(pushRefusal({ branch: 'shipgate/', defaultBranch: 'main' })).toBeDefined();
    expect(pushRefusal({ branch: 'shipgate', defaultBranch: 'main' })).toMatch(/shipgate/);
    expect(pushRefusal({ branch: 'shipgate/sg-other-x', defaultBranch: 'main', runId: RUN_ID })).toMatch(/not run/);
  });

  it('scrubs credentials from text', () => {
    const basic = Buffer.from(`${CREDENTIALS.username}:${CREDENTIALS.password}`).toString('base64');
    const text = `fatal: https://u:${CREDENTIALS.password}@example.test/x.git Authorization: Basic ${basic} ${CREDENTIALS.password}`;
    const scrubbed = scrubGitText(text, [CREDENTIALS.password, basic]);
    expect(scrubbed).not.toContain(CREDENTIALS.password);
    expect(scrubbed).not.toContain(basic);
  });
});

describe('racy git', () => {
  it('a same-size edit in the second the index was written is still a change (the diff index keeps the index file\'s times)', async () => {
    const remote = await makeRemote('racy', { 'src/health.js': "module.exports = 'a';\n" });
    const dir = join(root, 'work', 'sg-racy0001');
    await git.prepareWorkspace({ dir, cloneUrl: remote.url, defaultBranch: 'main', branch: 'shipgate/sg-racy0001-racy' });
    const file = join(dir, 'src', 'health.js');
    // The entry's recorded mtime and the index file's mtime fall in one second, as after a fast commit; the
    // edit keeps size and mtime, so only git's racy-entry check can see it.
    const second = new Date(Math.floor(Date.now() / 1000) * 1000 - 60_000);
    await utimes(file, second, second);
    await ws(dir, 'update-index', '--refresh');
    await ws(dir, 'add', '--all');
    await utimes(join(`${dir}.git`, 'index'), second, second);
    await writeFile(file, "module.exports = 'b';\n");
    await utimes(file, second, second);
    expect(await git.changedFiles(dir)).toEqual(['src/health.js']);
    expect((await git.diffStat(dir)).files.map((f) => f.path)).toEqual(['src/health.js']);
  });
});

describe('workspace, commit and push over file://', () => {
  it('clones, branches from the default branch, commits as the bot with trailers and pushes only the run branch', async () => {
    const remote = await makeRemote();
    const mainBefore = await remoteSha(remote.bare, 'refs/heads/main');
    const dir = join(root, 'work', RUN_ID);

    const prepared = await git.prepareWorkspace({ dir, cloneUrl: remote.url, defaultBranch: 'main', branch: BRANCH });
    expect(prepared).toEqual({ resumed: false, source: 'default-branch', head: mainBefore });
    expect(await git.currentBranch(dir)).toBe(BRANCH);
    expect(await ws(dir, 'config', '--get', 'remote.origin.url')).toBe(remote.url);
    // The clone is single-branch and tagless: only main was fetched.
    const refs = (await ws(dir, 'for-each-ref', '--format=%(refname)', 'refs/remotes', 'refs/tags')).split('\n');
    expect(refs.filter((ref) => ref !== 'refs/remotes/origin/HEAD')).toEqual(['refs/remotes/origin/main']);

    await writeFile(join(dir, 'README.md'), '# demo\n\nFixed.\n');
    await mkdir(join(dir, 'src'));
    await writeFile(join(dir, 'src', 'new file.ts'), 'export const x = 1;\nexport const y = 2;\n');
    // Ignored files count too: the checks saw the whole tree, so the whole tree is what gets committed.
    await writeFile(join(dir, 'ignored.log'), 'noise\n');
    expect(await git.changedFiles(dir)).toEqual(['README.md', 'ignored.log', 'src/new file.ts']);
    const stat1 = await git.diffStat(dir);
    expect(stat1).toEqual({
      files: [
        { path: 'README.md', insertions: 2, deletions: 0, binary: false },
        { path: 'ignored.log', insertions: 1, deletions: 0, binary: false },
        { path: 'src/new file.ts', insertions: 2, deletions: 0, binary: false },
      ],
      insertions: 5,
      deletions: 0,
    });
    // Stat-ing did not stage anything.
    expect(await ws(dir, 'diff', '--cached', '--name-only')).toBe('');

    const commit = await git.commitAll({
      dir,
      message: 'Fix the login redirect loop\n\nThe agent did it.',
      trailers: TRAILERS,
    });
    expect(commit.created).toBe(true);
    expect(await git.changedFiles(dir)).toEqual([]);
    expect(await git.changedFiles(dir, 'origin/main')).toEqual(['README.md', 'ignored.log', 'src/new file.ts']);
    expect((await git.diffStat(dir, 'origin/main')).insertions).toBe(5);
    // Committing again (a restart after the commit) makes no second commit.
    expect(await git.commitAll({ dir, message: 'again', trailers: TRAILERS })).toEqual({
      sha: commit.sha,
      created: false,
    });

    const pushed = await git.push({
      ...target(dir),
      dir,
      branch: BRANCH,
      defaultBranch: 'main',
      credentials: CREDENTIALS,
      runId: RUN_ID,
    });
    expect(pushed).toEqual({ pushed: true, sha: commit.sha });
    expect(await remoteSha(remote.bare, `refs/heads/${BRANCH}`)).toBe(commit.sha);
    expect(await remoteSha(remote.bare, 'refs/heads/main')).toBe(mainBefore);

    const logged = await sh(remote.bare, 'log', '-1', '--format=%an%n%ae%n%cn%n%ce%n%B', `refs/heads/${BRANCH}`);
    expect(logged.split('\n')).toEqual([
      'shipgate[bot]',
      'shipgate-bot@users.noreply.github.com',
      'shipgate[bot]',
      'shipgate-bot@users.noreply.github.com',
      'Fix the login redirect loop',
      '',
      'The agent did it.',
      '',
      `Shipgate-Run: ${RUN_ID}`,
      'Requested-by: Ada Lovelace <U012ADA>',
    ]);
    const trailers = await sh(remote.bare, 'log', '-1', '--format=%(trailers:only,unfold)', `refs/heads/${BRANCH}`);
    expect(trailers).toBe(`Shipgate-Run: ${RUN_ID}\nRequested-by: Ada Lovelace <U012ADA>`);

    // The same HEAD again is a no-op.
    expect(await git.push({ ...target(dir), dir, branch: BRANCH, defaultBranch: 'main', credentials: CREDENTIALS })).toEqual({
      pushed: false,
      sha: commit.sha,
    });
    expect(await sh(remote.bare, 'rev-list', '--count', `refs/heads/${BRANCH}`)).toBe('2');

    await git.removeWorkspace(dir);
    expect(await fileExists(dir)).toBe(false);
  });

  it('uses a configured identity and keeps trailer values on one line', async () => {
    const remote = await makeRemote();
    const dir = join(root, 'work', RUN_ID);
    const custom = createGit({ identity: { name: 'Acme Shipper', email: 'ship@acme.test' } });
    try {
      await custom.prepareWorkspace({ dir, cloneUrl: remote.url, defaultBranch: 'main', branch: BRANCH });
      await writeFile(join(dir, 'a.txt'), 'a\n');
      await custom.commitAll({
        dir,
        message: 'Add a',
        trailers: { 'Shipgate-Run': RUN_ID, 'Requested-by': 'Mallory\nSigned-off-by: x' },
      });
      expect(await ws(dir, 'log', '-1', '--format=%an <%ae>%n%(trailers:only)')).toBe(
        `Acme Shipper <ship@acme.test>\nShipgate-Run: ${RUN_ID}\nRequested-by: Mallory Signed-off-by: x`,
      );
      await expect(custom.commitAll({ dir, message: 'x', trailers: { 'Bad key': 'v' } })).rejects.toThrow(
        /trailer key/,
      );
    } finally {
      await custom.close();
    }
  });

  it('refuses the default branch, non-shipgate branches and protected branches itself, leaving the remote unchanged', async () => {
    const remote = await makeRemote();
    const dir = join(root, 'work', RUN_ID);
    await git.prepareWorkspace({ dir, cloneUrl: remote.url, defaultBranch: 'main', branch: BRANCH });
    await writeFile(join(dir, 'evil.txt'), 'x\n');
    await git.commitAll({ dir, message: 'Change', trailers: TRAILERS });
    const before = await remoteRefs(remote.bare);

    const attempts = [
      { branch: 'main', defaultBranch: 'main' },
      { branch: 'feature/x', defaultBranch: 'main' },
      { branch: 'shipgate/release', defaultBranch: 'main', protectedBranches: ['shipgate/release'] },
      { branch: BRANCH, defaultBranch: 'main', protectedBranches: ['shipgate/**'] },
      { branch: BRANCH, defaultBranch: BRANCH },
      { branch: `${BRANCH}:refs/heads/main`, defaultBranch: 'main' },
      { branch: `+${BRANCH}`, defaultBranch: 'main' },
      { branch: BRANCH, defaultBranch: 'main', runId: 'sg-someone00' },
    ];
    for (const attempt of attempts) {
      const error = await git.push({ ...target(dir), dir, credentials: CREDENTIALS, ...attempt }).catch((e: unknown) => e);
      expect(error, attempt.branch).toBeInstanceOf(PushRefusedError);
      expect(error).toBeInstanceOf(RefusedError);
    }
    // A valid shipgate branch that is not what the workspace has checked out: its HEAD is not that branch's work.
    const other = branchName('sg-other000', 'other');
    await expect(
      git.push({ ...target(dir), dir, branch: other, defaultBranch: 'main', credentials: CREDENTIALS }),
    ).rejects.toBeInstanceOf(PushRefusedError);
    expect(await remoteRefs(remote.bare)).toBe(before);

    // Nor can a workspace be prepared on such a branch in the first place.
    await expect(
      git.prepareWorkspace({ dir: join(root, 'other'), cloneUrl: remote.url, defaultBranch: 'main', branch: 'main' }),
    ).rejects.toBeInstanceOf(PushRefusedError);
  });

  it('reports a non-fast-forward as an error and never forces', async () => {
    const remote = await makeRemote();
    const dir = join(root, 'work', RUN_ID);
    await git.prepareWorkspace({ dir, cloneUrl: remote.url, defaultBranch: 'main', branch: BRANCH });

    // Someone else puts a different commit on the run branch meanwhile.
    const intruder = join(root, 'intruder');
    await sh(root, 'clone', '--quiet', remote.bare, intruder);
    await writeFile(join(intruder, 'theirs.txt'), 'theirs\n');
    await sh(intruder, 'add', '--all');
    await sh(intruder, 'commit', '--quiet', '-m', 'Theirs');
    await sh(intruder, 'push', '--quiet', 'origin', `HEAD:refs/heads/${BRANCH}`);
    const theirs = await remoteSha(remote.bare, `refs/heads/${BRANCH}`);

    await writeFile(join(dir, 'ours.txt'), 'ours\n');
    await git.commitAll({ dir, message: 'Ours', trailers: TRAILERS });
    const error = await git
      .push({ ...target(dir), dir, branch: BRANCH, defaultBranch: 'main', credentials: CREDENTIALS })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(GitError);
    expect(error).not.toBeInstanceOf(PushRefusedError);
    expect((error as GitError).kind).toBe('rejected');
    expect((error as GitError).message).toMatch(/rejected/);
    expect((error as GitError).command.join(' ')).not.toMatch(/--force|\+/);
    expect(await remoteSha(remote.bare, `refs/heads/${BRANCH}`)).toBe(theirs);
  });

  it('resumes: reuses the workspace, and after losing it continues from the pushed run branch', async () => {
    const remote = await makeRemote();
    const dir = join(root, 'work', RUN_ID);
    const input = { dir, cloneUrl: remote.url, defaultBranch: 'main', branch: BRANCH };

    await git.prepareWorkspace(input);
    await writeFile(join(dir, 'wip.txt'), 'work in progress\n');
    const again = await git.prepareWorkspace(input);
    expect(again.resumed).toBe(true);
    expect(again.source).toBe('existing-workspace');
    expect(await readFile(join(dir, 'wip.txt'), 'utf8')).toBe('work in progress\n');

    // Killed in the middle of a commit: the lock left behind does not wedge the resumed run.
    await writeFile(`${dir}.git/index.lock`, '');
    expect((await git.prepareWorkspace(input)).source).toBe('existing-workspace');
    const first = await git.commitAll({ dir, message: 'First', trailers: TRAILERS });
    await git.push({ ...target(dir), dir, branch: BRANCH, defaultBranch: 'main', credentials: CREDENTIALS });

    // The worker dies and the workspace is gone; the run branch is on the remote.
    await rm(dir, { recursive: true, force: true });
    const resumed = await git.prepareWorkspace(input);
    expect(resumed).toEqual({ resumed: true, source: 'remote-run-branch', head: first.sha });
    expect(await git.currentBranch(dir)).toBe(BRANCH);
    expect(await readFile(join(dir, 'wip.txt'), 'utf8')).toBe('work in progress\n');
    expect(await ws(dir, 'config', '--get', 'remote.origin.url')).toBe(remote.url);
    // The resumed step re-commits and re-pushes: both are no-ops.
    expect(await git.commitAll({ dir, message: 'First', trailers: TRAILERS })).toEqual({
      sha: first.sha,
      created: false,
    });
    expect((await git.push({ ...target(dir), dir, branch: BRANCH, defaultBranch: 'main', credentials: CREDENTIALS })).pushed).toBe(
      false,
    );

    await writeFile(join(dir, 'more.txt'), 'more\n');
    const second = await git.commitAll({ dir, message: 'Second', trailers: TRAILERS });
    expect(await ws(dir, 'rev-parse', 'HEAD~1')).toBe(first.sha);
    expect((await git.push({ ...target(dir), dir, branch: BRANCH, defaultBranch: 'main', credentials: CREDENTIALS })).pushed).toBe(
      true,
    );

    expect(await sh(remote.bare, 'for-each-ref', '--format=%(refname)', 'refs/heads/shipgate/')).toBe(
      `refs/heads/${BRANCH}`,
    );
    expect(await remoteSha(remote.bare, `refs/heads/${BRANCH}`)).toBe(second.sha);
    expect(await sh(remote.bare, 'rev-list', '--count', `refs/heads/${BRANCH}`)).toBe('3');
  });

  it('replaces a partial workspace: junk, a clone of another URL, a clone still on the default branch', async () => {
    const remote = await makeRemote();
    const other = await makeRemote('other');
    const dir = join(root, 'work', RUN_ID);
    const input = { dir, cloneUrl: remote.url, defaultBranch: 'main', branch: BRANCH };

    await mkdir(join(dir, '.git'), { recursive: true });
    await writeFile(join(dir, '.git', 'HEAD'), 'garbage');
    await writeFile(join(dir, 'junk'), 'x');
    expect((await git.prepareWorkspace(input)).source).toBe('default-branch');
    expect(await fileExists(join(dir, 'junk'))).toBe(false);

    await git.removeWorkspace(dir);
    await git.prepareWorkspace({ ...input, cloneUrl: other.url });
    expect((await git.prepareWorkspace(input)).source).toBe('default-branch');
    expect(await ws(dir, 'config', '--get', 'remote.origin.url')).toBe(remote.url);

    // Died between clone and checkout.
    await ws(dir, 'checkout', '--quiet', '--detach', 'origin/main');
    expect((await git.prepareWorkspace(input)).source).toBe('default-branch');
    expect(await git.currentBranch(dir)).toBe(BRANCH);

    // A plain directory inside another repository is not mistaken for a workspace.
    const nested = join(dir, 'sub', 'ws');
    await mkdir(nested, { recursive: true });
    await expect(git.headSha(nested)).rejects.toBeInstanceOf(GitError);
  });

  it('refuses clone URLs with credentials or unsafe transports', async () => {
    const dir = join(root, 'work', RUN_ID);
    for (const cloneUrl of [
      `https://x-access-token:${CREDENTIALS.password}@github.com/o/r.git`,
      'https://token@github.com/o/r.git',
      'ext::sh -c touch% /tmp/pwned',
      'git@github.com:o/r.git',
      '--upload-pack=touch /tmp/pwned',
    ]) {
      const error = await git
        .prepareWorkspace({ dir, cloneUrl, defaultBranch: 'main', branch: BRANCH })
        .catch((e: unknown) => e);
      expect(error, cloneUrl).toBeInstanceOf(RefusedError);
      expect((error as Error).message).not.toContain(CREDENTIALS.password);
    }
    expect(await fileExists(dir)).toBe(false);
  });

  it('writes credentials nowhere under .git and passes git nothing from the bot environment', async () => {
    const remote = await makeRemote();
    const dir = join(root, 'work', RUN_ID);
    // A wrapper records the environment and arguments of every git invocation.
    const realGit = (await execFileAsync('sh', ['-c', 'command -v git'])).stdout.trim();
    const dumps = join(root, 'dumps');
    await mkdir(dumps);
    const wrapper = join(root, 'git-wrapper.sh');
    await writeFile(
      wrapper,
      `#!/bin/sh\nn=$(date +%s%N)-$$\nenv > '${dumps}'/env-$n\nprintf '%s\\n' "$@" > '${dumps}'/args-$n\nexec '${realGit}' "$@"\n`,
    );
    await chmod(wrapper, 0o755);

    const saved = { ...process.env };
    process.env.SHIPGATE_FAKE_TOKEN = 'ghs_shouldNeverReachGit0000000000';
    process.env.GIT_DIR = '/nonexistent';
    process.env.GITHUB_TOKEN = 'ghs_alsoNeverReachGit00000000000000';
    const wrapped = createGit({ gitPath: wrapper });
    try {
      await wrapped.prepareWorkspace({ dir, cloneUrl: remote.url, defaultBranch: 'main', branch: BRANCH });
      await writeFile(join(dir, 'f.txt'), 'f\n');
      await wrapped.commitAll({ dir, message: 'F', trailers: TRAILERS });
      await wrapped.push({ ...target(dir), dir, branch: BRANCH, defaultBranch: 'main', credentials: CREDENTIALS });
    } finally {
      process.env = saved;
      await wrapped.close();
    }

    const basic = Buffer.from(`${CREDENTIALS.username}:${CREDENTIALS.password}`).toString('base64');
    for (const file of await allFiles(`${dir}.git`)) {
      const content = await readFile(file, 'latin1');
      expect(content, file).not.toContain(CREDENTIALS.password);
      expect(content, file).not.toContain(basic);
    }
    expect(await ws(dir, 'config', '--get', 'remote.origin.url')).toBe(remote.url);
    expect(await ws(dir, 'config', '--local', '--list')).not.toMatch(/extraheader|credential|password/i);

    const allowed = new Set([
      'PATH',
      'HOME',
      'GIT_CONFIG_GLOBAL',
      'GIT_CONFIG_NOSYSTEM',
      'GIT_TERMINAL_PROMPT',
      'LC_ALL',
      'GIT_NO_REPLACE_OBJECTS',
      'GIT_ATTR_NOSYSTEM',
      'GIT_INDEX_FILE',
      'GIT_CONFIG_COUNT',
      'GIT_CONFIG_KEY_0',
      'GIT_CONFIG_VALUE_0',
      // Set by the shell running the wrapper itself.
      'PWD',
      'SHLVL',
      'OLDPWD',
      '_',
    ]);
    const names = (await readdir(dumps)).filter((n) => n.startsWith('env-'));
    expect(names.length).toBeGreaterThan(5);
    let withCredentials = 0;
    for (const name of names) {
      const env = await readFile(join(dumps, name), 'utf8');
      const args = await readFile(join(dumps, name.replace('env-', 'args-')), 'utf8');
      const keys = env
        .split('\n')
        .filter(Boolean)
        .map((line) => line.split('=')[0] ?? '');
      expect(
        keys.filter((k) => !allowed.has(k)),
        name,
      ).toEqual([]);
      expect(env).toContain('GIT_CONFIG_GLOBAL=/dev/null');
      expect(env).not.toContain('shouldNeverReachGit');
      expect(args, 'credentials never in argv').not.toContain(basic);
      expect(args).not.toContain(CREDENTIALS.password);
      expect(args).toContain('core.hooksPath=/dev/null');
      if (env.includes(basic)) {
        withCredentials++;
        expect(args.split('\n')).toContain('push');
      }
    }
    // Exactly the one push command saw the credentials.
    expect(withCredentials).toBe(1);
  });

  it('runs no hook from the repository or from a hooksPath a check may have configured', async () => {
    const hook = (name: string) => `#!/bin/sh\ntouch '${join(root, 'ran-')}${name}'\n`;
    const remote = await makeRemote('hooked', {
      '.githooks/pre-commit': hook('pre-commit'),
      '.githooks/commit-msg': hook('commit-msg'),
      '.githooks/pre-push': hook('pre-push'),
      '.githooks/post-checkout': hook('post-checkout'),
      '.githooks/post-commit': hook('post-commit'),
      '.githooks/reference-transaction': hook('reference-transaction'),
    });
    const dir = join(root, 'work', RUN_ID);
    await git.prepareWorkspace({ dir, cloneUrl: remote.url, defaultBranch: 'main', branch: BRANCH });
    // What a `husky install`-style check would leave behind: repository config pointing at the
    // committed hooks, and hooks copied into .git/hooks.
    await ws(dir, 'config', 'core.hooksPath', '.githooks');
    await mkdir(`${dir}.git/hooks`, { recursive: true });
    for (const name of ['pre-commit', 'pre-push', 'post-checkout', 'post-commit']) {
      await writeFile(`${dir}.git/hooks/${name}`, hook(`git-hooks-${name}`));
      await chmod(`${dir}.git/hooks/${name}`, 0o755);
    }

    await writeFile(join(dir, 'change.txt'), 'x\n');
    await git.changedFiles(dir);
    await git.commitAll({ dir, message: 'Change', trailers: TRAILERS });
    await git.push({ ...target(dir), dir, branch: BRANCH, defaultBranch: 'main', credentials: CREDENTIALS });
    await rm(dir, { recursive: true, force: true });
    await git.prepareWorkspace({ dir, cloneUrl: remote.url, defaultBranch: 'main', branch: BRANCH });
    expect((await readdir(root)).filter((n) => n.startsWith('ran-'))).toEqual([]);

    // Control: the same setup with plain git does run them, so the assertion above means something.
    const control = join(root, 'control');
    await sh(root, 'clone', '--quiet', remote.bare, control);
    await sh(control, 'config', 'core.hooksPath', '.githooks');
    await writeFile(join(control, 'c.txt'), 'c\n');
    await sh(control, 'add', '--all');
    await sh(control, 'commit', '--quiet', '-m', 'Control');
    expect((await readdir(root)).filter((n) => n.startsWith('ran-'))).toContain('ran-pre-commit');
  });
});

// ---------------------------------------------------------------------------
// Smart HTTP: git's own http-backend behind a Node server that demands Basic auth for pushes.

interface SeenRequest {
  service: 'upload-pack' | 'receive-pack';
  authorization: string | undefined;
}

async function startGitHttpServer(
  projectRoot: string,
  expectedAuth: string,
): Promise<{ server: Server; url: string; seen: SeenRequest[] }> {
  const seen: SeenRequest[] = [];
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const service =
      url.searchParams.get('service') === 'git-receive-pack' || url.pathname.endsWith('/git-receive-pack')
        ? 'receive-pack'
        : 'upload-pack';
    seen.push({ service, authorization: req.headers.authorization });
    if (service === 'receive-pack' && req.headers.authorization !== expectedAuth) {
      res.writeHead(401, { 'WWW-Authenticate': 'Basic realm="test"' }).end();
      req.resume();
      return;
    }
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: projectRoot,
      GIT_CONFIG_GLOBAL: '/dev/null',
      GIT_CONFIG_NOSYSTEM: '1',
      GIT_PROJECT_ROOT: projectRoot,
      GIT_HTTP_EXPORT_ALL: '1',
      REQUEST_METHOD: req.method ?? 'GET',
      PATH_INFO: url.pathname,
      QUERY_STRING: url.search.slice(1),
      CONTENT_TYPE: req.headers['content-type'] ?? '',
      REMOTE_USER: 'tester',
      REMOTE_ADDR: '127.0.0.1',
    };
    if (req.headers['content-length'] !== undefined) env.CONTENT_LENGTH = req.headers['content-length'];
    if (req.headers['content-encoding'] !== undefined) env.HTTP_CONTENT_ENCODING = req.headers['content-encoding'];
    const protocol = req.headers['git-protocol'];
    if (typeof protocol === 'string') env.GIT_PROTOCOL = protocol;
    const cgi = spawn('git', ['http-backend'], { env });
    req.pipe(cgi.stdin);
    let head = Buffer.alloc(0);
    let headersDone = false;
    cgi.stdout.on('data', (chunk: Buffer) => {
      if (headersDone) {
        res.write(chunk);
        return;
      }
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end === -1) return;
      headersDone = true;
      let status = 200;
      for (const line of head.subarray(0, end).toString('latin1').split('\r\n')) {
        const colon = line.indexOf(':');
        const name = line.slice(0, colon).trim();
        const value = line.slice(colon + 1).trim();
        if (name.toLowerCase() === 'status') status = Number(value.split(' ')[0]);
        else res.setHeader(name, value);
      }
      res.writeHead(status);
      res.write(head.subarray(end + 4));
    });
    cgi.on('close', () => res.end());
  });
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  return { server, url: `http://127.0.0.1:${port}`, seen };
}

describe('credentials over smart HTTP', () => {
  let http: Awaited<ReturnType<typeof startGitHttpServer>> | undefined;

  afterEach(async () => {
    await new Promise((done) => http?.server.close(done) ?? done(undefined));
    http = undefined;
  });

  it('sends the credentials with the push and only with the push', async () => {
    const remote = await makeRemote('served');
    const basic = Buffer.from(`${CREDENTIALS.username}:${CREDENTIALS.password}`).toString('base64');
    http = await startGitHttpServer(root, `Basic ${basic}`);
    const cloneUrl = `${http.url}/served.git`;
    const dir = join(root, 'work', RUN_ID);

    await git.prepareWorkspace({ dir, cloneUrl, defaultBranch: 'main', branch: BRANCH });
    await writeFile(join(dir, 'over-http.txt'), 'hello\n');
    const commit = await git.commitAll({ dir, message: 'Over HTTP', trailers: TRAILERS });

    // Wrong credentials: refused by the server, reported without the password.
    const wrong = { username: CREDENTIALS.username, password: 'pw-WRONG-0c9d8e7f6a' };
    const error = await git
      .push({ ...target(dir), dir, branch: BRANCH, defaultBranch: 'main', credentials: wrong })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(GitError);
    expect((error as GitError).kind).toBe('failed');
    const { message, command, stderr } = error as GitError;
    expect(JSON.stringify({ message, command, stderr })).not.toContain(wrong.password);

    http.seen.length = 0;
    expect(await git.push({ ...target(dir), dir, branch: BRANCH, defaultBranch: 'main', credentials: CREDENTIALS })).toEqual({
      pushed: true,
      sha: commit.sha,
    });
    expect(await remoteSha(remote.bare, `refs/heads/${BRANCH}`)).toBe(commit.sha);
    expect(http.seen.length).toBeGreaterThan(0);
    expect(http.seen.every((r) => r.service === 'receive-pack' && r.authorization === `Basic ${basic}`)).toBe(true);

    // Reads (clone, ls-remote, fetch of the run branch) carried no credentials.
    http.seen.length = 0;
    await rm(dir, { recursive: true, force: true });
    expect((await git.prepareWorkspace({ dir, cloneUrl, defaultBranch: 'main', branch: BRANCH })).head).toBe(
      commit.sha,
    );
    expect(http.seen.length).toBeGreaterThan(0);
    expect(http.seen.every((r) => r.service === 'upload-pack' && r.authorization === undefined)).toBe(true);
    for (const file of await allFiles(`${dir}.git`)) {
      expect(await readFile(file, 'latin1'), file).not.toContain(basic);
    }
  });
});

describe('the workspace git state is the bot’s own (SPEC §4)', () => {
  it('keeps the git directory out of the tree, so nothing that runs in the tree can reach it', async () => {
    const remote = await makeRemote();
    const dir = join(root, 'work', RUN_ID);
    await git.prepareWorkspace({ dir, cloneUrl: remote.url, defaultBranch: 'main', branch: BRANCH });
    expect(await fileExists(join(dir, '.git'))).toBe(false);
    expect(await fileExists(`${dir}.git/HEAD`)).toBe(true);
    // A `.git` that appears in the tree is not ours: the workspace is rebuilt rather than trusted.
    await mkdir(join(dir, '.git'));
    await writeFile(join(dir, '.git', 'config'), '[core]\n\thooksPath = /tmp\n');
    expect((await git.prepareWorkspace({ dir, cloneUrl: remote.url, defaultBranch: 'main', branch: BRANCH })).source).toBe('default-branch');
    expect(await fileExists(join(dir, '.git'))).toBe(false);
  });

  it('commits the tree byte for byte whatever its .gitattributes asks for', async () => {
    const marker = join(root, 'filter-ran');
    const remote = await makeRemote('attributes', {
      '.gitattributes': '* text eol=crlf ident filter=evil\n',
      'lf.txt': 'one\ntwo $Id$\n',
    });
    const dir = join(root, 'work', RUN_ID);
    await git.prepareWorkspace({ dir, cloneUrl: remote.url, defaultBranch: 'main', branch: BRANCH });
    // Checkout converted nothing: the tree holds the blob's bytes.
    expect(await readFile(join(dir, 'lf.txt'), 'utf8')).toBe('one\ntwo $Id$\n');
    // A filter driver can only come from config, which is the bot's; even one configured there does not run.
    await ws(dir, 'config', 'filter.evil.clean', `touch ${marker}; cat`);
    await ws(dir, 'config', 'filter.evil.smudge', `touch ${marker}; cat`);
    const bytes = Buffer.from('mixed\r\nendings\nand $Id$ \u00e9\n', 'utf8');
    await writeFile(join(dir, 'lf.txt'), bytes);
    await writeFile(join(dir, 'new.bin'), Buffer.from([0, 1, 2, 13, 10, 255]));
    const commit = await git.commitAll({ dir, message: 'Bytes', trailers: TRAILERS });
    expect(Buffer.compare(await blob(dir, `${commit.sha}:lf.txt`), bytes)).toBe(0);
    expect(Buffer.compare(await blob(dir, `${commit.sha}:new.bin`), Buffer.from([0, 1, 2, 13, 10, 255]))).toBe(0);
    expect(await fileExists(marker)).toBe(false);
  });

  it('ignores replace objects: a protected change cannot hide behind refs/replace', async () => {
    const remote = await makeRemote('replace', { '.github/workflows/ci.yml': 'on: push\n' });
    const dir = join(root, 'work', RUN_ID);
    await git.prepareWorkspace({ dir, cloneUrl: remote.url, defaultBranch: 'main', branch: BRANCH });
    const base = await ws(dir, 'rev-parse', 'HEAD');
    await writeFile(join(dir, '.github/workflows/ci.yml'), 'on: push\njobs: { pwn: { runs-on: x, steps: [{ run: curl evil }] } }\n');
    const commit = await git.commitAll({ dir, message: 'Sneak', trailers: TRAILERS });
    // Plant a replacement that makes the commit look like its parent's tree.
    const fake = await ws(dir, 'commit-tree', `${base}^{tree}`, '-p', base, '-m', 'innocent');
    await ws(dir, 'replace', commit.sha, fake);
    expect(await ws(dir, 'diff', '--name-only', base, commit.sha)).toBe('');
    // The bot's own view is not fooled.
    expect(await git.committedFiles(dir, base, commit.sha)).toEqual(['.github/workflows/ci.yml']);
    expect(await git.changedFiles(dir, base)).toEqual(['.github/workflows/ci.yml']);
  });

  it('lists submodule paths, which the agent step protects (git would not commit into them)', async () => {
    const remote = await makeRemote();
    const dir = join(root, 'work', RUN_ID);
    await git.prepareWorkspace({ dir, cloneUrl: remote.url, defaultBranch: 'main', branch: BRANCH });
    expect(await git.submodulePaths(dir, 'HEAD')).toEqual([]);
    const head = await ws(dir, 'rev-parse', 'HEAD');
    await ws(dir, 'update-index', '--add', '--cacheinfo', `160000,${head},vendor/lib`);
    await ws(dir, 'commit', '--quiet', '-m', 'add a submodule');
    expect(await git.submodulePaths(dir, 'HEAD')).toEqual(['vendor/lib']);
  });

  it('writes only the bot’s trailers, with no trailer command from any config', async () => {
    const marker = join(root, 'trailer-cmd-ran');
    const remote = await makeRemote();
    const dir = join(root, 'work', RUN_ID);
    await git.prepareWorkspace({ dir, cloneUrl: remote.url, defaultBranch: 'main', branch: BRANCH });
    await ws(dir, 'config', 'trailer.sign.cmd', `touch ${marker}; echo forged`);
    await ws(dir, 'config', 'trailer.sign.key', 'Requested-by');
    await ws(dir, 'config', 'trailer.sign.ifMissing', 'add');
    await writeFile(join(dir, 'a.txt'), 'a\n');
    const commit = await git.commitAll({ dir, message: 'Add a', trailers: TRAILERS });
    expect(await ws(dir, 'log', '-1', '--format=%(trailers:only)', commit.sha)).toBe(`Shipgate-Run: ${RUN_ID}\nRequested-by: Ada Lovelace <U012ADA>`);
    expect(await fileExists(marker)).toBe(false);
  });
});

/** A blob's raw bytes from the bot's git directory. */
async function blob(dir: string, spec: string): Promise<Buffer> {
  const { stdout } = await execFileAsync('git', ['--git-dir', `${dir}.git`, 'cat-file', 'blob', spec], { encoding: 'buffer', env: { PATH: process.env.PATH ?? '', GIT_CONFIG_GLOBAL: '/dev/null', GIT_CONFIG_NOSYSTEM: '1', GIT_NO_REPLACE_OBJECTS: '1' } });
  return stdout;
}
