import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { scrubSecrets, type Logger } from '../log.js';
import { GitError } from './git-errors.js';

/**
 * Running git safely: every command of the git layer goes through `GitRunner.run`,
 * with no global or system config, a throwaway HOME, hooks, fsmonitor and
 * replace objects disabled, and only PATH from our environment. Credentials
 * reach git only through the environment of the one command that needs them
 * (never argv, never .git/config, never the remote URL) and are scrubbed from
 * every error.
 */

/** HTTP Basic credentials for the remote (for GitHub: `x-access-token` and an installation token). */
export interface GitCredentials {
  username: string;
  password: string;
}

/**
 * Passed to every invocation. `-c` on the command line beats the repository's
 * .git/config, so a hooksPath or fsmonitor a check may have written there
 * still never runs; `credential.helper=` empties the helper list so nothing
 * can store a credential; automatic gc would detach a process that outlives
 * the workspace.
 */
const SAFE_CONFIG = [
  'core.hooksPath=/dev/null',
  'core.attributesFile=/dev/null',
  'core.excludesFile=/dev/null',
  'core.autocrlf=false',
  'core.safecrlf=false',
  'core.symlinks=true',
  'core.sparseCheckout=false',
  'core.fsmonitor=false',
  'credential.helper=',
  'protocol.ext.allow=never',
  'submodule.recurse=false',
  'gc.auto=0',
  'maintenance.auto=false',
  'advice.detachedHead=false',
  'commit.gpgSign=false',
  'tag.gpgSign=false',
  'push.gpgSign=false',
];

/**
 * Most bytes of output taken from one command. Past it the command is stopped and fails: every
 * caller parses the output (file lists, trees, diffs), and a list cut short would silently leave
 * out the paths past the cut.
 */
const STDOUT_CAP = 64 * 1024 * 1024;
const STDERR_TAIL = 8 * 1024;

export interface RunOptions {
  /** The workspace the command works on; pins git to it (no discovery of an enclosing repository). */
  workspace?: string;
  cwd?: string;
  /** Exit codes that are answers rather than failures (`diff --quiet` → 1). */
  okCodes?: readonly number[];
  credentials?: GitCredentials | undefined;
  env?: Record<string, string>;
  input?: string;
  config?: readonly string[];
  /** A larger output cap than the runner's, for the one listing that grows with the whole tree. */
  maxOutputBytes?: number;
}

export interface RunResult {
  stdout: string;
  stderr: string;
  code: number;
}

/** The bot's own git directory for a working tree: beside it, never inside (the tree has no `.git`). */
export function gitDirOf(dir: string): string {
  return `${resolve(dir)}.git`;
}

function basicAuthHeader(credentials: GitCredentials): string {
  return `Authorization: Basic ${Buffer.from(`${credentials.username}:${credentials.password}`).toString('base64')}`;
}

function secretsOf(credentials: GitCredentials | undefined): string[] {
  if (credentials === undefined) return [];
  const pair = `${credentials.username}:${credentials.password}`;
  return [
    pair,
    Buffer.from(pair).toString('base64'),
    encodeURIComponent(credentials.password),
    credentials.password,
  ].filter((secret) => secret.length >= 4);
}

/** Removes the given secrets, URL userinfo, Authorization headers and token-shaped strings. */
export function scrubGitText(text: string, secrets: readonly string[] = []): string {
  let out = text;
  // Longest first, so a secret that contains another is removed whole.
  for (const secret of [...secrets].sort((a, b) => b.length - a.length)) out = out.split(secret).join('[REDACTED]');
  out = out.replace(/(\b[a-z][a-z0-9+.-]*:\/\/)[^/\s@]+@/gi, '$1[REDACTED]@');
  out = out.replace(/(authorization:\s*)\S+(\s+\S+)?/gi, '$1[REDACTED]');
  return scrubSecrets(out);
}

function tail(text: string): string {
  return text.length > STDERR_TAIL ? text.slice(-STDERR_TAIL) : text;
}

/** Runs one git command; rejects with a scrubbed `GitError` on failure (an exit code in `okCodes` is an answer). */
export type RunGit = (args: readonly string[], options?: RunOptions) => Promise<RunResult>;

export interface GitRunner {
  run: RunGit;
  /** Remove the throwaway HOME. */
  close: () => Promise<void>;
}

/** Where git and the few tools it runs are found when the composition root names no PATH. */
const DEFAULT_PATH = '/usr/local/bin:/usr/bin:/bin';

export function createGitRunner(options: {
  log?: Logger | undefined;
  gitPath: string;
  timeoutMs: number;
  path?: string | undefined;
  /** Only for tests: a smaller output cap than STDOUT_CAP. */
  stdoutCapBytes?: number | undefined;
}): GitRunner {
  const { log, gitPath, timeoutMs } = options;
  const stdoutCap = options.stdoutCapBytes ?? STDOUT_CAP;
  const path = options.path ?? DEFAULT_PATH;
  let home: Promise<string> | undefined;
  const getHome = () => (home ??= mkdtemp(join(tmpdir(), 'shipgate-git-home-')));

  async function git(args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
    const secrets = secretsOf(opts.credentials);
    const env: Record<string, string> = {
      // Built from nothing: no token, key or GIT_* variable of ours reaches git or its children.
      PATH: path,
      HOME: await getHome(),
      GIT_CONFIG_GLOBAL: '/dev/null',
      GIT_CONFIG_NOSYSTEM: '1',
      GIT_TERMINAL_PROMPT: '0',
      // Stable English messages, so errors read the same everywhere.
      LC_ALL: 'C',
      // A refs/replace/* object would let one tree be shown in place of another.
      GIT_NO_REPLACE_OBJECTS: '1',
      GIT_ATTR_NOSYSTEM: '1',
      ...opts.env,
    };
    if (opts.credentials !== undefined) {
      // Config through the environment (git ≥ 2.31) rather than `-c`: argv is world-readable in /proc,
      // this process's environment is not, and it lives only as long as this one command.
      env.GIT_CONFIG_COUNT = '1';
      env.GIT_CONFIG_KEY_0 = 'http.extraHeader';
      env.GIT_CONFIG_VALUE_0 = basicAuthHeader(opts.credentials);
    }
    const pin =
      opts.workspace === undefined ? [] : ['--git-dir', gitDirOf(opts.workspace), '--work-tree', opts.workspace];
    const fullArgs = [...pin, ...[...SAFE_CONFIG, ...(opts.config ?? [])].flatMap((c) => ['-c', c]), ...args];
    const shown = ['git', ...args.map((a) => scrubGitText(a, secrets))];
    const started = Date.now();
    const outputCap = opts.maxOutputBytes ?? stdoutCap;

    const result = await new Promise<RunResult & { timedOut: boolean; overflowed: boolean }>((resolveRun, reject) => {
      const child = spawn(gitPath, fullArgs, {
        cwd: opts.cwd ?? opts.workspace ?? tmpdir(),
        env,
        stdio: ['pipe', 'pipe', 'pipe'],
      });
      const out: Buffer[] = [];
      let outLength = 0;
      let err = '';
      let timedOut = false;
      let overflowed = false;
      const timer = setTimeout(() => {
        timedOut = true;
        child.kill('SIGKILL');
      }, timeoutMs);
      child.stdout.on('data', (chunk: Buffer) => {
        if (overflowed) return;
        outLength += chunk.length;
        if (outLength <= outputCap) {
          out.push(chunk);
          return;
        }
        // Nothing past the cap is of use: stop the command now instead of reading the rest.
        overflowed = true;
        out.length = 0;
        child.kill('SIGKILL');
      });
      child.stderr.setEncoding('utf8');
      child.stderr.on('data', (chunk: string) => {
        err = tail(err + chunk);
      });
      child.on('error', (error) => {
        clearTimeout(timer);
        reject(error);
      });
      child.on('close', (code) => {
        clearTimeout(timer);
        resolveRun({ stdout: Buffer.concat(out).toString('utf8'), stderr: err, code: code ?? -1, timedOut, overflowed });
      });
      // stdin is always a pipe that is closed at once, so nothing can ever wait for a prompt answer.
      child.stdin.on('error', () => undefined);
      child.stdin.end(opts.input ?? '');
    }).catch((error: unknown) => {
      throw new GitError(
        `could not run git: ${error instanceof Error ? error.message : String(error)}`,
        shown,
        null,
        '',
      );
    });

    const stderr = scrubGitText(result.stderr.trim(), secrets);
    log?.debug({ git: shown.slice(1, 3).join(' '), code: result.code, ms: Date.now() - started }, 'git');
    if (result.timedOut) {
      throw new GitError(
        `${shown.slice(0, 2).join(' ')} timed out after ${timeoutMs} ms`,
        shown,
        null,
        stderr,
        'timeout',
      );
    }
    if (result.overflowed) {
      throw new GitError(
        `${shown.slice(0, 2).join(' ')} printed more than ${outputCap} bytes: its output is not used cut short`,
        shown,
        null,
        stderr,
      );
    }
    if (result.code !== 0 && !(opts.okCodes ?? []).includes(result.code)) {
      const lastLine = stderr.split('\n').filter(Boolean).at(-1) ?? `exit code ${result.code}`;
      throw new GitError(`${shown.slice(0, 2).join(' ')} failed: ${lastLine}`, shown, result.code, stderr);
    }
    return { stdout: result.stdout, stderr, code: result.code };
  }

  async function close(): Promise<void> {
    if (home === undefined) return;
    const path = await home;
    home = undefined;
    await rm(path, { recursive: true, force: true });
  }

  return { run: git, close };
}
