import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  realpathSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createCheckRunner, runCheckTool, runCheckToolFor } from '../../src/agent/check-runner.js';
import { EDITOR_TOOL, runEditorCommand } from '../../src/agent/editor-tool.js';
import type { ToolResult } from '../../src/agent/toolbox.js';
import { BUILT_IN_PROTECTED, createProtectedPaths } from '../../src/agent/protected-paths.js';
import { ToolRefusal, createRepoFiles, type RepoFiles } from '../../src/agent/repo-files.js';
import { SEARCH_TOOL, runSearch } from '../../src/agent/search-tool.js';
import { createBubblewrapSandbox } from '../../src/adapters/sandbox/bubblewrap-sandbox.js';
import { createUnsandboxed } from '../../src/adapters/sandbox/unsandboxed.js';
import type { SandboxPort } from '../../src/ports/sandbox.js';
import { eventually } from '../helpers/eventually.js';

/** Marks every temp path, so a leaked real path is easy to spot in any text given to the model. */
const PREFIX = 'shipgate-agent-tools-';

let base: string;
let root: string;
let outside: string;
let files: RepoFiles;

const INDEX_TS = ['export function greet(name: string): string {', '  return `hello ${name}`; // needle', '}', ''].join(
  '\n',
);

function read(relative: string): string {
  return readFileSync(join(root, relative), 'utf8');
}

function expectNoRealPath(result: ToolResult | string): void {
  const text = typeof result === 'string' ? result : result.content;
  expect(text).not.toContain(PREFIX);
  expect(text).not.toContain(base);
}

function expectRefused(result: ToolResult, why?: RegExp): void {
  expect(result.isError).toBe(true);
  expectNoRealPath(result);
  if (why) expect(result.content).toMatch(why);
}

beforeEach(() => {
  base = realpathSync(mkdtempSync(join(tmpdir(), PREFIX)));
  root = join(base, 'repo');
  outside = join(base, 'outside');
  mkdirSync(outside);
  writeFileSync(join(outside, 'secret.txt'), 'needle outside the repository\n');
  mkdirSync(join(root, 'src'), { recursive: true });
  writeFileSync(join(root, 'src/index.ts'), INDEX_TS);
  writeFileSync(join(root, 'README.md'), '# demo\nneedle in the readme\n');
  mkdirSync(join(root, '.github/workflows'), { recursive: true });
  writeFileSync(join(root, '.github/workflows/ci.yml'), 'on: push\n');
  writeFileSync(join(root, 'CODEOWNERS'), '* @acme/platform\n');
  mkdirSync(join(root, 'deploy'));
  writeFileSync(join(root, 'deploy/values.yaml'), 'replicas: 2\n');
  mkdirSync(join(root, '.git'));
  writeFileSync(join(root, '.git/config'), '[core]\n# needle in git internals\n');
  mkdirSync(join(root, 'node_modules/pkg'), { recursive: true });
  writeFileSync(join(root, 'node_modules/pkg/index.js'), '// needle in a dependency\n');
  writeFileSync(join(root, 'logo.bin'), Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x00, 0x01, 0x02]));
  symlinkSync('/etc', join(root, 'link'));
  symlinkSync(join(outside, 'secret.txt'), join(root, 'outside-file'));
  symlinkSync(outside, join(root, 'outside-dir'));
  symlinkSync('.github/workflows', join(root, 'ci-link'));
  symlinkSync(join(outside, 'created-through-dangling-link.txt'), join(root, 'dangling'));
  files = createRepoFiles({ root, protectedPaths: createProtectedPaths(['deploy/**']) });
});

afterEach(() => {
  rmSync(base, { recursive: true, force: true });
});

describe('protected paths', () => {
  const paths = createProtectedPaths(['deploy/**', '/secrets/*.pem']);

  it('protects the gates, the policy file and git internals out of the box', () => {
    for (const path of [
      '.github/workflows/ci.yml',
      '.github/actions/setup/action.yml',
      'CODEOWNERS',
      '.github/CODEOWNERS',
      'docs/CODEOWNERS',
      'shipgate.yaml',
      '.git/config',
      '.git',
      // SPEC §4: the other common CI systems and submodules.
      '.gitlab-ci.yml',
      'Jenkinsfile',
      '.circleci/config.yml',
      '.buildkite/pipeline.yml',
      'azure-pipelines.yml',
      '.gitmodules',
    ]) {
      expect(paths.isProtected(path), path).toBe(true);
    }
    for (const path of ['src/Jenkinsfile.md', 'docs/gitlab-ci.md', 'circleci.txt']) expect(paths.isProtected(path), path).toBe(false);
    expect(paths.patterns.slice(0, BUILT_IN_PROTECTED.length)).toEqual([...BUILT_IN_PROTECTED]);
  });

  it('adds the configured globs, a directory pattern covering the directory itself', () => {
    expect(paths.isProtected('deploy')).toBe(true);
    expect(paths.isProtected('deploy/values.yaml')).toBe(true);
    expect(paths.isProtected('deploy/.hidden/x')).toBe(true);
    expect(paths.isProtected('secrets/tls.pem')).toBe(true);
    expect(paths.isProtected('.github/workflows')).toBe(true);
  });

  it('normalises ./ and duplicate slashes before matching', () => {
    expect(paths.isProtected('./.github//workflows/ci.yml')).toBe(true);
    expect(paths.isProtected('deploy/')).toBe(true);
  });

  it('leaves ordinary files alone', () => {
    for (const path of ['src/index.ts', 'deployment.md', 'src/deploy/x.ts', '.github/dependabot.yml', 'README.md']) {
      expect(paths.isProtected(path), path).toBe(false);
    }
  });
});

describe('text editor tool: refusals', () => {
  it('is declared as Anthropic’s text editor tool', () => {
    expect(EDITOR_TOOL).toMatchObject({ type: 'text_editor_20250728', name: 'str_replace_based_edit_tool' });
  });

  it.each([
    ['../../etc/passwd', /outside the repository/],
    ['/etc/passwd', /outside the repository/],
    ['/repo/../x', /outside the repository/],
    ['/repository/x', /outside the repository/],
    ['link/passwd', /symbolic link/],
    ['/repo/outside-file', /symbolic link/],
    ['outside-dir/secret.txt', /symbolic link/],
    ['/repo/.git/config', /\.git/],
    ['.GIT/config', /\.git/],
    ['src/\0index.ts', /NUL/],
  ])('refuses to view %s, saying why and without a real path', async (path, why) => {
    const result = await runEditorCommand(files, { command: 'view', path });
    expectRefused(result, why);
    expect(result.content).not.toContain('root:'); // no /etc/passwd content either
  });

  it('refuses to write through a symlinked directory to outside the repository', async () => {
    const result = await runEditorCommand(files, {
      command: 'create',
      path: 'outside-dir/planted.txt',
      file_text: 'x',
    });
    expectRefused(result, /symbolic link/);
    expect(existsSync(join(outside, 'planted.txt'))).toBe(false);
  });

  it('refuses to overwrite a file outside through a symlink to it', async () => {
    const result = await runEditorCommand(files, {
      command: 'str_replace',
      path: 'outside-file',
      old_str: 'needle',
      new_str: 'pwned',
    });
    expectRefused(result, /symbolic link/);
    expect(readFileSync(join(outside, 'secret.txt'), 'utf8')).toContain('needle');
  });

  it('refuses to write through a dangling symlink', async () => {
    const result = await runEditorCommand(files, { command: 'create', path: 'dangling', file_text: 'x' });
    expectRefused(result);
    expect(existsSync(join(outside, 'created-through-dangling-link.txt'))).toBe(false);
  });

  it.each([
    ['create', '.github/workflows/ci.yml', { file_text: 'on: workflow_dispatch\n' }],
    ['create', '.github/workflows/new.yml', { file_text: 'on: push\n' }],
    ['str_replace', '/repo/.github/workflows/ci.yml', { old_str: 'push', new_str: 'pull_request_target' }],
    ['insert', '.github/workflows/ci.yml', { insert_line: 0, insert_text: 'permissions: write-all\n' }],
    ['create', 'CODEOWNERS', { file_text: '* @attacker\n' }],
    ['create', './.github/../CODEOWNERS', { file_text: '* @attacker\n' }],
    ['create', 'deploy/values.yaml', { file_text: 'replicas: 0\n' }],
    ['create', 'deploy', { file_text: 'x' }],
    ['create', 'deploy/new/file.yaml', { file_text: 'x' }],
    ['create', 'shipgate.yaml', { file_text: 'repos: {}\n' }],
    ['create', '.git/config', { file_text: '[core]\nhooksPath = /tmp\n' }],
    ['create', '.git/hooks/pre-commit', { file_text: '#!/bin/sh\n' }],
    ['create', 'ci-link/evil.yml', { file_text: 'on: push\n' }],
  ])('refuses %s on the protected path %s', async (command, path, fields) => {
    const result = await runEditorCommand(files, { command, path, ...fields });
    expectRefused(result, /protected|\.git/);
  });

  it('leaves protected files untouched after refusing', async () => {
    await runEditorCommand(files, { command: 'create', path: '.github/workflows/ci.yml', file_text: 'evil' });
    await runEditorCommand(files, { command: 'create', path: 'CODEOWNERS', file_text: 'evil' });
    await runEditorCommand(files, { command: 'create', path: 'ci-link/evil.yml', file_text: 'evil' });
    expect(read('.github/workflows/ci.yml')).toBe('on: push\n');
    expect(read('CODEOWNERS')).toBe('* @acme/platform\n');
    expect(existsSync(join(root, '.github/workflows/evil.yml'))).toBe(false);
    expect(read('.git/config')).toContain('[core]');
  });

  it('allows reading a protected (non-git) file, since only writes are refused', async () => {
    const result = await runEditorCommand(files, { command: 'view', path: '/repo/.github/workflows/ci.yml' });
    expect(result.isError).toBe(false);
    expect(result.content).toContain('on: push');
  });

  it('refuses binary files and oversized writes', async () => {
    expectRefused(await runEditorCommand(files, { command: 'view', path: 'logo.bin' }), /binary/);
    const big = 'x'.repeat(1024 * 1024 + 1);
    expectRefused(await runEditorCommand(files, { command: 'create', path: 'big.txt', file_text: big }), /limit/);
    expect(existsSync(join(root, 'big.txt'))).toBe(false);
  });

  it.each([
    [null, /command/],
    ['view /etc/passwd', /command/],
    [{ command: 'undo_edit', path: 'src/index.ts' }, /not supported/],
    [{ command: 'view' }, /path/],
    [{ command: 'create', path: 'a.txt' }, /file_text/],
    [{ command: 'insert', path: 'src/index.ts', insert_line: -1, insert_text: 'x' }, /insert_line/],
    [{ command: 'insert', path: 'src/index.ts', insert_line: 1 }, /insert_text/],
    [{ command: 'view', path: 'src/index.ts', view_range: [9, 12] }, /view_range/],
  ])('answers malformed input %j with an error that says why', async (input, why) => {
    expectRefused(await runEditorCommand(files, input), why);
  });
});

describe('text editor tool: editing', () => {
  it('views a file with cat -n numbering, honouring view_range', async () => {
    const whole = await runEditorCommand(files, { command: 'view', path: '/repo/src/index.ts' });
    expect(whole.isError).toBe(false);
    expect(whole.content).toContain('/repo/src/index.ts');
    expect(whole.content).toContain('     1\texport function greet');
    expect(whole.content).toContain('     3\t}');
    expectNoRealPath(whole);

    const range = await runEditorCommand(files, { command: 'view', path: 'src/index.ts', view_range: [2, -1] });
    expect(range.content).not.toContain('export function');
    expect(range.content).toContain('     2\t  return');
    expect(range.content).toContain('     3\t}');
  });

  it('views a directory two levels deep, without .git, node_modules or following symlinks', async () => {
    const result = await runEditorCommand(files, { command: 'view', path: '/repo' });
    expect(result.isError).toBe(false);
    expect(result.content).toContain('/repo/src/index.ts');
    expect(result.content).toContain('/repo/.github/workflows/');
    expect(result.content).toContain('/repo/link@');
    expect(result.content).not.toContain('.git/config');
    expect(result.content).not.toContain('/repo/node_modules');
    expect(result.content).not.toContain('passwd');
    expectNoRealPath(result);
  });

  it('truncates a long view with a note pointing at view_range', async () => {
    writeFileSync(join(root, 'long.txt'), Array.from({ length: 3000 }, (_, i) => `line number ${i}`).join('\n'));
    const result = await runEditorCommand(files, { command: 'view', path: 'long.txt' });
    expect(result.isError).toBe(false);
    expect(result.content.length).toBeLessThan(16_500);
    expect(result.content).toMatch(/\[output truncated: \d+ more characters; use view_range/);
  });

  it('creates a new file with its parent directories, and overwrites an existing one', async () => {
    const created = await runEditorCommand(files, {
      command: 'create',
      path: '/repo/lib/util/math.ts',
      file_text: 'export const one = 1;\n',
    });
    expect(created).toEqual({ content: 'File created successfully at: /repo/lib/util/math.ts', isError: false });
    expect(read('lib/util/math.ts')).toBe('export const one = 1;\n');

    const overwritten = await runEditorCommand(files, { command: 'create', path: 'README.md', file_text: '# new\n' });
    expect(overwritten.isError).toBe(false);
    expect(read('README.md')).toBe('# new\n');
  });

  it('replaces exactly one occurrence, literally', async () => {
    const result = await runEditorCommand(files, {
      command: 'str_replace',
      path: 'src/index.ts',
      old_str: 'return `hello ${name}`;',
      new_str: "return `hi ${name}` + '$&';",
    });
    expect(result.isError).toBe(false);
    expect(result.content).toContain('has been edited');
    expect(result.content).toContain('     2\t');
    expect(read('src/index.ts')).toContain("return `hi ${name}` + '$&'; // needle");
  });

  it('refuses str_replace when old_str matches nothing or more than once', async () => {
    const none = await runEditorCommand(files, {
      command: 'str_replace',
      path: 'src/index.ts',
      old_str: 'goodbye',
      new_str: 'x',
    });
    expectRefused(none, /did not appear verbatim/);

    writeFileSync(join(root, 'twice.txt'), 'a = 1\nb = 2\na = 1\n');
    const twice = await runEditorCommand(files, {
      command: 'str_replace',
      path: 'twice.txt',
      old_str: 'a = 1',
      new_str: 'a = 3',
    });
    expectRefused(twice, /occurs 2 times.*lines 1, 3/);
    expect(read('twice.txt')).toBe('a = 1\nb = 2\na = 1\n');
  });

  it('inserts after a line, at the start with 0, and accepts new_str as the documented alias', async () => {
    writeFileSync(join(root, 'list.txt'), 'one\ntwo\nthree\n');
    expect(
      (
        await runEditorCommand(files, {
          command: 'insert',
          path: 'list.txt',
          insert_line: 1,
          insert_text: 'one and a half',
        })
      ).isError,
    ).toBe(false);
    expect(read('list.txt')).toBe('one\none and a half\ntwo\nthree\n');
    await runEditorCommand(files, { command: 'insert', path: 'list.txt', insert_line: 0, new_str: 'zero\n' });
    expect(read('list.txt')).toBe('zero\none\none and a half\ntwo\nthree\n');
    await runEditorCommand(files, { command: 'insert', path: 'list.txt', insert_line: 5, insert_text: 'four' });
    expect(read('list.txt')).toBe('zero\none\none and a half\ntwo\nthree\nfour\n');
    expectRefused(
      await runEditorCommand(files, { command: 'insert', path: 'list.txt', insert_line: 99, insert_text: 'x' }),
      /past the end/,
    );
  });

  it('keeps CRLF line endings when the model quotes lines with \\n', async () => {
    writeFileSync(join(root, 'win.txt'), 'alpha\r\nbeta\r\ngamma\r\n');
    const result = await runEditorCommand(files, {
      command: 'str_replace',
      path: 'win.txt',
      old_str: 'alpha\nbeta',
      new_str: 'alpha\nBETA',
    });
    expect(result.isError).toBe(false);
    expect(read('win.txt')).toBe('alpha\r\nBETA\r\ngamma\r\n');
  });

  it('follows a symlink that stays inside the repository', async () => {
    symlinkSync('src/index.ts', join(root, 'index-link.ts'));
    const result = await runEditorCommand(files, { command: 'view', path: 'index-link.ts' });
    expect(result.isError).toBe(false);
    expect(result.content).toContain('export function greet');
  });
});

describe('repo files', () => {
  it('resolves /repo, /repo/x and x, and throws ToolRefusal outside', async () => {
    expect((await files.resolve('/repo', 'read')).relativePath).toBe('');
    expect(await files.resolve('src/index.ts', 'read')).toMatchObject({
      relativePath: 'src/index.ts',
      virtualPath: '/repo/src/index.ts',
      realPath: join(root, 'src/index.ts'),
    });
    expect((await files.resolve('/repo//src/./index.ts', 'write')).relativePath).toBe('src/index.ts');
    await expect(files.resolve('/tmp', 'read')).rejects.toBeInstanceOf(ToolRefusal);
    await expect(files.resolve('/repo', 'write')).rejects.toBeInstanceOf(ToolRefusal);
  });
});

describe('search tool', () => {
  it('is declared with a pattern input', () => {
    expect(SEARCH_TOOL.name).toBe('search_repository');
    expect(SEARCH_TOOL.input_schema.required).toEqual(['pattern']);
  });

  it('finds matching lines with virtual paths, skipping .git, node_modules and symlinks leading outside', async () => {
    const result = await runSearch(files, { pattern: 'needle' });
    expect(result.isError).toBe(false);
    expect(result.content).toContain('/repo/src/index.ts:2:   return `hello ${name}`; // needle');
    expect(result.content).toContain('/repo/README.md:2: needle in the readme');
    expect(result.content).not.toContain('git internals');
    expect(result.content).not.toContain('dependency');
    expect(result.content).not.toContain('outside the repository');
    expectNoRealPath(result);
  });

  it('supports regular expressions, case folding and path globs', async () => {
    const regex = await runSearch(files, { pattern: '^export function \\w+', regex: true });
    expect(regex.content).toContain('/repo/src/index.ts:1:');
    expect(regex.content).not.toContain('README');

    const folded = await runSearch(files, { pattern: 'NEEDLE', ignore_case: true, path_glob: '*.md' });
    expect(folded.content).toContain('/repo/README.md:2:');
    expect(folded.content).not.toContain('index.ts');

    const inDir = await runSearch(files, { pattern: 'needle', path_glob: '/repo/src' });
    expect(inDir.content).toContain('/repo/src/index.ts');
    expect(inDir.content).not.toContain('README');
  });

  it('caps the results with a note', async () => {
    writeFileSync(join(root, 'many.txt'), 'hit\n'.repeat(500));
    const result = await runSearch(files, { pattern: 'hit', max_results: 5 });
    expect(result.content.match(/^\/repo\/many\.txt:\d+: hit$/gm)).toHaveLength(5);
    expect(result.content).toContain('[results truncated at 5 matches');
  });

  it('says so when nothing matches', async () => {
    const result = await runSearch(files, { pattern: 'no such text anywhere' });
    expect(result).toMatchObject({ isError: false });
    expect(result.content).toMatch(/No matches/);
  });

  it('refuses long patterns, invalid regexes and stops catastrophic backtracking', async () => {
    expectRefused(await runSearch(files, { pattern: 'x'.repeat(201) }), /at most 200/);
    expectRefused(await runSearch(files, { pattern: '(unclosed', regex: true }), /not a valid/);
    expectRefused(await runSearch(files, {}), /pattern/);

    writeFileSync(join(root, 'evil.txt'), `${'a'.repeat(40)}!\n`);
    const started = Date.now();
    const result = await runSearch(files, { pattern: '^(a+)+$', regex: true, path_glob: 'evil.txt' });
    expectRefused(result, /took longer/);
    expect(Date.now() - started).toBeLessThan(10_000);
  });
});

const SANDBOXES: [string, () => SandboxPort][] = [
  ['bubblewrap', () => createBubblewrapSandbox({ workerUid: process.getuid?.() ?? 0 })],
  ['none', () => createUnsandboxed()],
];

describe.each(SANDBOXES)('check runner (sandbox: %s)', (kind, makeSandbox) => {
  const sandbox = makeSandbox();
  const planted = {
    GITHUB_TOKEN: 'ghs_plantedtoken',
    ANTHROPIC_API_KEY: 'sk-ant-plantedkey',
    SLACK_SIGNING_SECRET: 'plantedsecret',
  };
  const saved: Record<string, string | undefined> = {};

  beforeAll(() => {
    for (const [key, value] of Object.entries(planted)) {
      saved[key] = process.env[key];
      process.env[key] = value;
    }
  });
  afterAll(() => {
    for (const key of Object.keys(planted)) {
      const previous = saved[key];
      if (previous === undefined) Reflect.deleteProperty(process.env, key);
      else process.env[key] = previous;
    }
  });

  function runner(checks: Record<string, string>, overrides: { timeoutMs?: number; outputCapBytes?: number } = {}) {
    return createCheckRunner({
      root,
      checks,
      timeoutMs: overrides.timeoutMs ?? 10_000,
      outputCapBytes: overrides.outputCapBytes ?? 64_000,
      sandbox,
      scrub: (text) => text,
    });
  }

  /** Alive and not a zombie waiting to be reaped (PID 1 in a container may never reap it). */
  function isAlive(pid: number): boolean {
    if (existsSync('/proc/self/stat')) {
      try {
        return !/^\d+ \(.*\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
      } catch {
        return false;
      }
    }
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  }

  it('runs a check with a scrubbed environment: no token, key or secret reaches it', async () => {
    const result = await runner({ env: 'env' }).run('env');
    expect(result.exitCode).toBe(0);
    const names = result.output
      .split('\n')
      .filter((line) => line.includes('='))
      .map((line) => line.slice(0, line.indexOf('=')));
    expect(names).toContain('PATH');
    expect(names).toContain('CI');
    expect(names.filter((name) => /TOKEN|KEY|SECRET/i.test(name))).toEqual([]);
    for (const value of Object.values(planted)) expect(result.output).not.toContain(value);
    expect(
      names.every((name) => ['PATH', 'HOME', 'TMPDIR', 'LANG', 'LC_ALL', 'CI', 'PWD', 'OLDPWD', 'SHLVL', '_'].includes(name)),
    ).toBe(true);
  });

  it('shows the workspace as /repo in the output', async () => {
    const result = await runner({ where: 'pwd' }).run('where');
    expect(result.output.trim()).toBe('/repo');
    expectNoRealPath(result.output);
  });

  it('works on a copy: what a check writes never reaches the tree', async () => {
    writeFileSync(join(root, 'kept.txt'), 'original\n');
    const result = await runner({ write: 'echo changed > kept.txt; echo new > planted.txt; mkdir -p .git && echo x > .git/config; cat kept.txt' }).run('write');
    expect(result.exitCode).toBe(0);
    expect(result.output).toContain('changed');
    expect(read('kept.txt')).toBe('original\n');
    expect(existsSync(join(root, 'planted.txt'))).toBe(false);
    expect(read('.git/config')).toBe('[core]\n# needle in git internals\n');
  });

  it('scrubs the output with the injected scrubber', async () => {
    const checks = createCheckRunner({ root, checks: { leak: 'echo "token=hunter2-very-secret"' }, timeoutMs: 10_000, outputCapBytes: 64_000, sandbox, scrub: (text) => text.split('hunter2-very-secret').join('[REDACTED]') });
    const result = await checks.run('leak');
    expect(result.output).toContain('token=[REDACTED]');
    expect(result.output).not.toContain('hunter2');
  });

  it.runIf(kind === 'none')('kills a check that outlives its timeout, children included', async () => {
    const pidFile = join(base, 'child.pid');
    const started = Date.now();
    const result = await runner({ slow: `sleep 30 & echo $! > ${pidFile}; sleep 30` }, { timeoutMs: 500 }).run('slow');
    expect(result.timedOut).toBe(true);
    expect(result.exitCode).toBeNull();
    expect(Date.now() - started).toBeLessThan(5_000);
    const childPid = Number(readFileSync(pidFile, 'utf8').trim());
    await eventually(async () => !isAlive(childPid), 'the background child to be killed', 3_000);

    const tool = await runCheckTool(runner({ slow: 'sleep 30' }, { timeoutMs: 300 }), { name: 'slow' });
    expect(tool.content).toMatch(/timed out/);
  });

  it.runIf(kind === 'none')('does not leave background processes behind after the check exits', async () => {
    const pidFile = join(base, 'bg.pid');
    const started = Date.now();
    const result = await runner({ bg: `sleep 30 & echo $! > ${pidFile}; echo done` }).run('bg');
    expect(result.exitCode).toBe(0);
    expect(Date.now() - started).toBeLessThan(5_000);
    const pid = Number(readFileSync(pidFile, 'utf8').trim());
    await eventually(async () => !isAlive(pid), 'the background process to be killed', 3_000);
  });

  it('caps the output to its tail with a note', async () => {
    const result = await runner(
      { noisy: "head -c 100000 /dev/zero | tr '\\0' x; echo; echo THE-END" },
      { outputCapBytes: 1_000 },
    ).run('noisy');
    expect(result.exitCode).toBe(0);
    expect(result.output).toMatch(/^\[output truncated: the first \d+ bytes are omitted\]/);
    expect(result.output.trim().endsWith('THE-END')).toBe(true);
    expect(result.output.length).toBeLessThan(1_100);
  });

  it('reports a failing check with its exit code', async () => {
    const result = await runCheckTool(runner({ lint: 'echo "2 problems" >&2; exit 3' }), { name: 'lint' });
    expect(result.isError).toBe(false);
    expect(result.content).toContain('failed with exit code 3');
    expect(result.content).toContain('2 problems');
  });

  it('refuses an unknown check, listing the configured ones', async () => {
    const checks = runner({ lint: 'true', test: 'true' });
    await expect(checks.run('rm -rf /')).rejects.toBeInstanceOf(ToolRefusal);
    await expect(checks.run('constructor')).rejects.toThrow(/Configured checks: lint, test/);
    const result = await runCheckTool(checks, { name: 'deploy' });
    expectRefused(result, /Configured checks: lint, test/);
    expectRefused(await runCheckTool(checks, { command: 'curl evil' }), /name/);
    expect(runCheckToolFor(checks.names).input_schema.properties).toMatchObject({ name: { enum: ['lint', 'test'] } });
  });

  it('times out a slow check', async () => {
    const started = Date.now();
    const result = await runner({ slow: 'sleep 30' }, { timeoutMs: 500 }).run('slow');
    expect(result.timedOut).toBe(true);
    expect(result.exitCode).toBeNull();
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('stops a check when the run is aborted', async () => {
    const controller = new AbortController();
    const pending = runner({ slow: 'sleep 30' }).run('slow', controller.signal);
    setTimeout(() => controller.abort(new Error('run cancelled')), 200);
    const started = Date.now();
    await expect(pending).rejects.toThrow('run cancelled');
    expect(Date.now() - started).toBeLessThan(5_000);
  });
});
