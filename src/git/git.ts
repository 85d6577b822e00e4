import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readdir, realpath, rm, stat, writeFile } from 'node:fs/promises';
import { homedir, tmpdir } from 'node:os';
import { dirname, isAbsolute, join, parse as parsePath, resolve } from 'node:path';
import picomatch from 'picomatch';
import { RefusedError } from '../errors.js';
import { scrubSecrets, type Logger } from '../log.js';

/**
 * The git layer (SPEC §4, Git bullet). Every run works in its own clone on
 * `shipgate/<run-id>-<slug>`; this module is the only code that talks to git,
 * and it is where the branch guarantees live: whatever the model, the
 * repository content or the chat says, nothing here pushes anything but the
 * run's own branch, and nothing here ever forces.
 *
 * Repository content is untrusted, and so is anything in a working tree
 * (SPEC §4, "The workspace's git state is untrusted"). The working tree has no
 * `.git`: the git directory is the bot's own, beside it (`<dir>.git`), and
 * nothing else ever writes there; checks run on a copy of the tree in the
 * sandbox. git runs with no global or system config, a throwaway HOME, hooks,
 * fsmonitor and replace objects disabled, every attribute the tree's
 * `.gitattributes` could set (filters, eol conversion, encodings, ident)
 * neutralised by the git directory's own `info/attributes`, commits made with
 * plumbing (`commit-tree`: no hooks, no trailer commands, trailers written by
 * the bot), and only PATH from our environment. Credentials reach git only through the environment of the one
 * network command that needs them (never argv, never .git/config, never the
 * remote URL) and are scrubbed from every error.
 *
 * Every operation is idempotent so a worker killed between clone, commit and
 * push resumes without a second branch or commit.
 */

export const BRANCH_PREFIX = 'shipgate/';
const SLUG_MAX = 40;
const SLUG_FALLBACK = 'change';

export interface GitIdentity {
  name: string;
  email: string;
}

export const DEFAULT_IDENTITY: GitIdentity = {
  name: 'shipgate[bot]',
  email: 'shipgate-bot@users.noreply.github.com',
};

/** HTTP Basic credentials for the remote (for GitHub: `x-access-token` and an installation token). */
export interface GitCredentials {
  username: string;
  password: string;
}

export type GitErrorKind = 'failed' | 'rejected' | 'timeout';

/**
 * A git command failed. `command` and `stderr` are scrubbed of the credentials
 * passed to the command and of anything that looks like a secret, so the error
 * can be logged and shown in chat as is. `kind` is `rejected` when the remote
 * refused the update (non-fast-forward and the like): retrying cannot help and
 * forcing is never an option.
 */
export class GitError extends Error {
  override name = 'GitError';
  constructor(
    message: string,
    readonly command: readonly string[],
    readonly exitCode: number | null,
    readonly stderr: string,
    readonly kind: GitErrorKind = 'failed',
  ) {
    super(message);
  }
}

/** The git layer refused to push (not the run's branch, default or protected branch): a policy refusal, not retryable. */
export class PushRefusedError extends RefusedError {
  override name = 'PushRefusedError';
  constructor(
    readonly branch: string,
    reason: string,
  ) {
    super(`refusing to push to ${JSON.stringify(branch)}: ${reason}`);
  }
}

// ---------------------------------------------------------------------------
// Branch names

const RUN_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9-]{0,63}$/;
const SLUG_PATTERN = /^[a-z0-9]+(?:-[a-z0-9]+)*$/;

/** Lower-case kebab of the task's first words: at most 40 characters of [a-z0-9-], never empty. */
export function slugify(task: string): string {
  const words = task
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '') // "café" → "cafe" rather than "caf"
    .toLowerCase()
    .split(/[^a-z0-9]+/)
    .filter((word) => word !== '');
  let slug = '';
  for (const word of words) {
    const next = slug === '' ? word : `${slug}-${word}`;
    if (next.length > SLUG_MAX) {
      // Cut at a word boundary; only a single over-long first word gets truncated.
      if (slug === '') slug = word.slice(0, SLUG_MAX);
      break;
    }
    slug = next;
  }
  return slug === '' ? SLUG_FALLBACK : slug;
}

/** `shipgate/<runId>-<slug>`: the run id right after the prefix so a branch always leads back to its run. */
export function branchName(runId: string, task: string): string {
  if (!RUN_ID_PATTERN.test(runId)) throw new Error(`not a usable run id for a branch name: ${JSON.stringify(runId)}`);
  return `${BRANCH_PREFIX}${runId}-${slugify(task)}`;
}

/** Whether `ref` (`shipgate/…` or `refs/heads/shipgate/…`) is a branch `branchName` could have made for `runId`. */
export function isRunBranch(ref: string, runId: string): boolean {
  if (!RUN_ID_PATTERN.test(runId)) return false;
  const branch = ref.startsWith('refs/heads/') ? ref.slice('refs/heads/'.length) : ref;
  const prefix = `${BRANCH_PREFIX}${runId}-`;
  if (!branch.startsWith(prefix)) return false;
  const slug = branch.slice(prefix.length);
  return slug.length <= SLUG_MAX && SLUG_PATTERN.test(slug);
}

/**
 * A conservative subset of git's ref-name rules (git-check-ref-format): the
 * name ends up in a refspec, so nothing that could change the refspec's
 * meaning (`+`, `:`, `*`, whitespace, a leading `-`) gets through.
 */
export function isSafeBranchName(branch: string): boolean {
  if (branch.length === 0 || branch.length > 200) return false;
  if (!/^[A-Za-z0-9._/-]+$/.test(branch)) return false;
  if (branch.startsWith('-') || branch.includes('..') || branch.includes('//')) return false;
  if (branch.startsWith('/') || branch.endsWith('/') || branch.endsWith('.')) return false;
  return branch.split('/').every((part) => !part.startsWith('.') && !part.endsWith('.lock'));
}

export interface PushTarget {
  branch: string;
  defaultBranch: string;
  /** Exact names or globs (`release/*`); compared case-insensitively so `Main` does not slip past `main`. */
  protectedBranches?: readonly string[] | undefined;
  /** When given, the branch must also be this run's branch. */
  runId?: string | undefined;
}

/** Why the git layer would refuse to push to `branch`, or undefined when the push is allowed. */
export function pushRefusal(target: PushTarget): string | undefined {
  const { branch, defaultBranch } = target;
  if (!isSafeBranchName(branch)) return 'not a valid branch name';
  if (!branch.startsWith(BRANCH_PREFIX) || branch.length === BRANCH_PREFIX.length) {
    return `only ${BRANCH_PREFIX}* branches may be pushed`;
  }
  if (branch.toLowerCase() === defaultBranch.toLowerCase()) return 'it is the default branch';
  for (const pattern of target.protectedBranches ?? []) {
    if (
      branch.toLowerCase() === pattern.toLowerCase() ||
      picomatch.isMatch(branch, pattern, { nocase: true, dot: true })
    ) {
      return `it is a protected branch (${pattern})`;
    }
  }
  if (target.runId !== undefined && !isRunBranch(branch, target.runId)) return `it is not run ${target.runId}'s branch`;
  return undefined;
}

// ---------------------------------------------------------------------------
// Clone URLs

const ALLOWED_PROTOCOLS = new Set(['https:', 'http:', 'file:']);

/**
 * The clone URL is stored in .git/config verbatim, so it must carry no
 * credentials; and only transports that cannot run commands are accepted
 * (`ext::`, and ssh whose prompts and agent we do not control, are out).
 */
export function cloneUrlProblem(cloneUrl: string): string | undefined {
  let url: URL;
  try {
    url = new URL(cloneUrl);
  } catch {
    return 'not an absolute URL';
  }
  if (!ALLOWED_PROTOCOLS.has(url.protocol)) return `protocol ${url.protocol} is not allowed`;
  if (url.username !== '' || url.password !== '') return 'the URL carries credentials';
  if (/[\s\0]/.test(cloneUrl)) return 'the URL contains whitespace';
  return undefined;
}

function assertCloneUrl(cloneUrl: string): void {
  const problem = cloneUrlProblem(cloneUrl);
  // The URL itself is not echoed back: a URL with userinfo is exactly what must not reach a log.
  if (problem !== undefined) throw new RefusedError(`unusable clone URL: ${problem}`);
}

// ---------------------------------------------------------------------------
// Running git

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
 * `$GIT_DIR/info/attributes` has the highest precedence of all attribute
 * files, so these lines override whatever the tree's `.gitattributes` says:
 * bytes go into the repository exactly as they are in the tree (no filter,
 * no eol or encoding conversion, no `$Id$` expansion) and out of it the same
 * way, so what is committed and pushed is what the checks saw.
 */
const NEUTRAL_ATTRIBUTES = '* -text -filter -ident !eol !working-tree-encoding !diff !merge !export-ignore !export-subst\n';

const STDOUT_CAP = 64 * 1024 * 1024;
const STDERR_TAIL = 8 * 1024;

interface RunOptions {
  /** The workspace the command works on; pins git to it (no discovery of an enclosing repository). */
  workspace?: string;
  cwd?: string;
  /** Exit codes that are answers rather than failures (`diff --quiet` → 1). */
  okCodes?: readonly number[];
  credentials?: GitCredentials | undefined;
  env?: Record<string, string>;
  input?: string;
  config?: readonly string[];
}

interface RunResult {
  stdout: string;
  stderr: string;
  code: number;
}

export interface GitOptions {
  log?: Logger | undefined;
  /** Default bot identity for commits. */
  identity?: GitIdentity | undefined;
  /** The git binary (default `git` on PATH). */
  gitPath?: string | undefined;
  /** Per-command timeout (default 10 minutes: clones of big repositories are slow). */
  timeoutMs?: number | undefined;
}

export interface PrepareWorkspaceInput {
  dir: string;
  cloneUrl: string;
  defaultBranch: string;
  branch: string;
  /** For private repositories: supplied to clone/fetch the same transient way as to push, never stored. */
  credentials?: GitCredentials | undefined;
}

export interface PrepareWorkspaceResult {
  /** True when earlier work of the run was picked up (an existing workspace or the pushed run branch). */
  resumed: boolean;
  /** Where the run branch came from. */
  source: 'existing-workspace' | 'remote-run-branch' | 'default-branch';
  head: string;
}

export interface CommitAllInput {
  dir: string;
  message: string;
  /** Appended as git trailers, e.g. `{ 'Shipgate-Run': runId, 'Requested-by': 'Ada <U123>' }`. */
  trailers: Record<string, string>;
  identity?: GitIdentity | undefined;
}

export interface PushInput extends PushTarget {
  dir: string;
  credentials: GitCredentials;
  /** Where to push: the repository's clone URL as the API gave it, never what the workspace's config says. */
  remoteUrl: string;
  /** The commit that was verified (checks, protected paths); exactly this commit is pushed. */
  sha: string;
}

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

/** The bot's own git directory for a working tree: beside it, never inside (the tree has no `.git`). */
export function gitDirOf(dir: string): string {
  return `${resolve(dir)}.git`;
}

export interface Git {
  /** Clone (or reuse) the run's workspace on `branch`. Idempotent: call it again after any crash. */
  prepareWorkspace(input: PrepareWorkspaceInput): Promise<PrepareWorkspaceResult>;
  /** Paths that differ between `base` (default HEAD) and the working tree: staged, unstaged and untracked, not ignored. Sorted. */
  changedFiles(dir: string, base?: string): Promise<string[]>;
  /** Line counts per file between `base` (default HEAD) and the working tree, untracked files included. */
  diffStat(dir: string, base?: string): Promise<DiffStat>;
  /** Commit the whole working tree as the bot with trailers; nothing to commit returns HEAD with `created: false`. */
  commitAll(input: CommitAllInput): Promise<{ sha: string; created: boolean }>;
  /** Push HEAD to the run branch, never forced; `pushed: false` when the remote branch already is HEAD. */
  push(input: PushInput): Promise<{ pushed: boolean; sha: string }>;
  headSha(dir: string): Promise<string>;
  /** The best common ancestor of two commits (the run branch's fork point from the default branch). */
  mergeBase(dir: string, a: string, b: string): Promise<string>;
  /** Paths changed between two commits (no working tree involved), without rename detection. */
  committedFiles(dir: string, from: string, to: string): Promise<string[]>;
  /** Paths of submodules (gitlinks) in `rev`'s tree: their directories are not the bot's to write, and git would not commit into them. */
  submodulePaths(dir: string, rev: string): Promise<string[]>;
  /** A file's text at `rev` (e.g. `origin/main`), or undefined when it did not exist there. */
  readFileAt(dir: string, rev: string, path: string): Promise<string | undefined>;
  currentBranch(dir: string): Promise<string | undefined>;
  removeWorkspace(dir: string): Promise<void>;
  /** Remove the throwaway HOME. */
  close(): Promise<void>;
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

/** rm -rf with guards: a bug upstream must not turn into deleting a home directory or `/`. */
function assertRemovable(dir: string): string {
  if (!isAbsolute(dir)) throw new Error(`workspace path must be absolute: ${dir}`);
  const full = resolve(dir);
  const depth = full.slice(parsePath(full).root.length).split(/[\\/]/).filter(Boolean).length;
  if (depth < 2 || full === resolve(homedir()) || full === resolve(tmpdir())) {
    throw new Error(`refusing to remove ${full} as a workspace`);
  }
  return full;
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

function singleLine(value: string): string {
  // Trailer values come from chat (display names): one line, no control characters.
  // eslint-disable-next-line no-control-regex
  return value.replace(/[\u0000-\u001f\u007f]+/g, ' ').trim();
}

function assertIdentity(identity: GitIdentity): void {
  for (const value of [identity.name, identity.email]) {
    // eslint-disable-next-line no-control-regex
    if (value.trim() === '' || /[<>\u0000-\u001f]/.test(value))
      throw new Error(`invalid git identity: ${JSON.stringify(identity)}`);
  }
}

/** A base for diffs: a ref or sha, never something git could read as an option. */
function assertRev(rev: string): void {
  if (rev === '' || rev.startsWith('-') || /[\s\0]/.test(rev)) {
    throw new Error(`invalid revision: ${JSON.stringify(rev)}`);
  }
}

export function createGit(options: GitOptions = {}): Git {
  const log = options.log;
  const gitPath = options.gitPath ?? 'git';
  const timeoutMs = options.timeoutMs ?? 10 * 60_000;
  const defaultIdentity = options.identity ?? DEFAULT_IDENTITY;
  assertIdentity(defaultIdentity);

  let home: Promise<string> | undefined;
  const getHome = () => (home ??= mkdtemp(join(tmpdir(), 'shipgate-git-home-')));

  async function git(args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
    const secrets = secretsOf(opts.credentials);
    const env: Record<string, string> = {
      // Built from nothing: no token, key or GIT_* variable of ours reaches git or its children.
      PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin',
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

    const result = await new Promise<RunResult & { timedOut: boolean }>((resolveRun, reject) => {
      const child = spawn(gitPath, fullArgs, {
        cwd: opts.cwd ?? opts.workspace ?? tmpdir(),
        env,
        stdio: ['pipe', 'pipe', 'pipe'],
      });
      const out: Buffer[] = [];
      let outLength = 0;
      let err = '';
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        child.kill('SIGKILL');
      }, timeoutMs);
      child.stdout.on('data', (chunk: Buffer) => {
        outLength += chunk.length;
        if (outLength <= STDOUT_CAP) out.push(chunk);
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
        resolveRun({ stdout: Buffer.concat(out).toString('utf8'), stderr: err, code: code ?? -1, timedOut });
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
    if (result.code !== 0 && !(opts.okCodes ?? []).includes(result.code)) {
      const lastLine = stderr.split('\n').filter(Boolean).at(-1) ?? `exit code ${result.code}`;
      throw new GitError(`${shown.slice(0, 2).join(' ')} failed: ${lastLine}`, shown, result.code, stderr);
    }
    return { stdout: result.stdout, stderr, code: result.code };
  }

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
    const { stdout } = await git(['ls-tree', '-r', '-z', '--full-tree', '--end-of-options', rev], { workspace: resolve(dir) });
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

  /** The workspace is reusable only if it is exactly this run's clone, on the run branch, with a commit checked out. */
  async function reusable(dir: string, cloneUrl: string, branch: string): Promise<string | undefined> {
    const gitDir = gitDirOf(dir);
    if (!(await exists(join(gitDir, 'HEAD'))) || !(await exists(dir))) return undefined;
    // A `.git` in the tree was never ours (the tree is made without one): start over.
    if (await exists(join(dir, '.git'))) return undefined;
    try {
      if ((await realpath(gitDir)) !== `${await realpath(dir)}.git`) return undefined;
      if ((await originUrl(dir)) !== cloneUrl) return undefined;
      if ((await currentBranch(dir)) !== branch) return undefined;
      return await revParse(dir, 'HEAD');
    } catch (error) {
      // A half-written clone can make git fail outright: treat it as partial and clone again.
      if (error instanceof GitError) return undefined;
      throw error;
    }
  }

  /**
   * A worker killed mid-`add` or mid-`commit` leaves lock files behind that make every later command
   * fail. One run's workspace is only ever used by the worker holding that run's job, so at
   * prepare time any lock is stale.
   */
  async function removeStaleLocks(dir: string, branch: string): Promise<void> {
    const gitDir = gitDirOf(dir);
    const locks = ['index.lock', 'HEAD.lock', 'config.lock', 'packed-refs.lock', `refs/heads/${branch}.lock`];
    await Promise.all(locks.map((lock) => rm(join(gitDir, lock), { force: true })));
    for (const entry of await readdir(gitDir)) {
      if (entry.startsWith('shipgate-index-')) await rm(join(gitDir, entry), { force: true });
    }
  }

  async function fetchDefaultBranch(dir: string, defaultBranch: string, credentials: GitCredentials | undefined): Promise<void> {
    const ref = `refs/remotes/origin/${defaultBranch}`;
    // `+`: the local copy of the default branch follows the remote wherever it went; it is never pushed.
    await git(['fetch', '--quiet', '--no-tags', '--no-write-fetch-head', 'origin', `+refs/heads/${defaultBranch}:${ref}`], {
      workspace: dir,
      credentials,
    });
  }

  async function remoteBranchSha(
    dir: string,
    branch: string,
    credentials: GitCredentials | undefined,
  ): Promise<string | undefined> {
    const ref = `refs/heads/${branch}`;
    const { stdout } = await git(['ls-remote', '--refs', 'origin', ref], { workspace: dir, credentials });
    // ls-remote patterns match ref tails; only the exact ref counts.
    for (const line of stdout.split('\n')) {
      const [sha, name] = line.split('\t');
      if (name === ref && sha !== undefined && /^[0-9a-f]{40,64}$/.test(sha)) return sha;
    }
    return undefined;
  }

  async function prepareWorkspace(input: PrepareWorkspaceInput): Promise<PrepareWorkspaceResult> {
    const { cloneUrl, defaultBranch, branch, credentials } = input;
    assertCloneUrl(cloneUrl);
    if (!isSafeBranchName(defaultBranch))
      throw new RefusedError(`invalid default branch name: ${JSON.stringify(defaultBranch)}`);
    const refusal = pushRefusal({ branch, defaultBranch });
    // A workspace on a branch the run could never push is a bug upstream; fail before cloning.
    if (refusal !== undefined) throw new PushRefusedError(branch, refusal);
    const dir = assertRemovable(input.dir);

    const existing = await reusable(dir, cloneUrl, branch);
    if (existing !== undefined) {
      await removeStaleLocks(dir, branch);
      // Diffs are taken against the base branch as the remote has it now, not as a cached copy says.
      await fetchDefaultBranch(dir, defaultBranch, credentials);
      log?.info({ dir, branch }, 'git: reusing workspace');
      return { resumed: true, source: 'existing-workspace', head: existing };
    }

    // Whatever is there is a partial clone (or something else entirely): start over.
    const gitDir = gitDirOf(dir);
    await Promise.all([rm(dir, { recursive: true, force: true }), rm(gitDir, { recursive: true, force: true })]);
    await mkdir(dirname(dir), { recursive: true });
    // `--template=` copies no sample hooks; bare, because the work tree is always named explicitly.
    await git(['init', '--quiet', '--bare', '--template=', '--', gitDir], { cwd: dirname(dir) });
    await mkdir(join(gitDir, 'info'), { recursive: true });
    await writeFile(join(gitDir, 'info', 'attributes'), NEUTRAL_ATTRIBUTES);
    await mkdir(dir);
    await git(['config', 'core.bare', 'false'], { workspace: dir });
    await git(['config', 'remote.origin.url', cloneUrl], { workspace: dir });
    await fetchDefaultBranch(dir, defaultBranch, credentials);

    // An earlier attempt may have pushed the run branch before dying: continue from it instead of
    // growing a second, divergent history from the default branch.
    const remoteSha = await remoteBranchSha(dir, branch, credentials);
    let start = `refs/remotes/origin/${defaultBranch}`;
    if (remoteSha !== undefined) {
      start = `refs/remotes/origin/${branch}`;
      await git(['fetch', '--no-tags', '--no-write-fetch-head', 'origin', `refs/heads/${branch}:${start}`], {
        workspace: dir,
        credentials,
      });
    }
    await git(['checkout', '--quiet', '--no-track', '-b', branch, start], { workspace: dir });
    const head = await headSha(dir);
    log?.info({ dir, branch, fromRemote: remoteSha !== undefined }, 'git: workspace ready');
    return remoteSha === undefined
      ? { resumed: false, source: 'default-branch', head }
      : { resumed: true, source: 'remote-run-branch', head };
  }

  /**
   * Runs `fn` against a scratch index holding the whole working tree (tracked,
   * modified and untracked, minus ignored), so diffs against any base see what
   * a commit would contain without touching the real index. Copying the real
   * index keeps git's stat cache, so unchanged files are not re-hashed.
   */
  async function withWorkingTreeIndex<T>(dir: string, fn: (env: Record<string, string>) => Promise<T>): Promise<T> {
    const indexPath = join(gitDirOf(dir), `shipgate-index-${randomBytes(6).toString('hex')}`);
    try {
      await copyFile(join(gitDirOf(dir), 'index'), indexPath);
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

  async function commitAll(input: CommitAllInput): Promise<{ sha: string; created: boolean }> {
    const dir = resolve(input.dir);
    const identity = input.identity ?? defaultIdentity;
    assertIdentity(identity);
    const message = input.message.trim();
    if (message === '') throw new Error('commit message is empty');
    const trailerLines = Object.entries(input.trailers).map(([key, value]) => {
      if (!/^[A-Za-z0-9][A-Za-z0-9-]*$/.test(key)) throw new Error(`invalid trailer key: ${JSON.stringify(key)}`);
      return `${key}: ${singleLine(value)}`;
    });

    // The whole tree, ignored files included: exactly what the checks saw is what gets committed.
    await git(['add', '--all', '--force'], { workspace: dir });
    const tree = (await git(['write-tree'], { workspace: dir })).stdout.trim();
    const head = await headSha(dir);
    const headTree = (await git(['rev-parse', '--verify', `${head}^{tree}`], { workspace: dir })).stdout.trim();
    if (tree === headTree) {
      // Nothing to commit: either nothing changed or this commit already happened before a restart.
      return { sha: head, created: false };
    }
    // Plumbing, not `git commit`: no hooks, no `trailer.*.cmd`, no commit template; the trailers are the
    // bot's own lines in the last paragraph, so they are the only trailers the commit has.
    const body = trailerLines.length === 0 ? `${message}\n` : `${message}\n\n${trailerLines.join('\n')}\n`;
    const sha = (
      await git(['commit-tree', tree, '-p', head, '-F', '-'], {
        workspace: dir,
        input: body,
        // Per command, not written anywhere: the bot's identity never depends on a global config.
        config: [`user.name=${identity.name}`, `user.email=${identity.email}`, 'user.useConfigOnly=true'],
      })
    ).stdout.trim();
    const branch = await currentBranch(dir);
    if (branch === undefined) throw new GitError('HEAD is not on a branch; refusing to commit', ['git', 'commit-tree'], 1, '');
    // Compare-and-swap on the branch: a concurrent writer would make this fail rather than lose a commit.
    await git(['update-ref', '-m', 'shipgate: commit', '--', `refs/heads/${branch}`, sha, head], { workspace: dir });
    return { sha, created: true };
  }

  async function push(input: PushInput): Promise<{ pushed: boolean; sha: string }> {
    const { branch, credentials } = input;
    const refusal = pushRefusal(input);
    if (refusal !== undefined) throw new PushRefusedError(branch, refusal);
    const dir = resolve(input.dir);

    assertCloneUrl(input.remoteUrl);
    const url = input.remoteUrl;
    const sha = input.sha;
    if (!/^[0-9a-f]{40}$/.test(sha)) throw new PushRefusedError(branch, 'the commit to push is not a full sha');

    // The workspace is not trusted at push time: repository checks ran code in it, and that code could
    // have rewritten .git/config (remote URL, url.*.insteadOf, http.proxy) to send our token elsewhere,
    // or moved the branch. So the verified commit is copied into a bare repository of our own, with no
    // configuration but ours, and pushed from there to the URL the API gave us.
    const clean = await mkdtemp(join(tmpdir(), 'shipgate-push-'));
    try {
      await git(['init', '--quiet', '--bare', '--template=', clean]);
      try {
        await git(['--git-dir', clean, 'fetch', '--quiet', '--no-tags', '--', gitDirOf(dir), `refs/heads/${branch}:refs/shipgate/candidate`]);
      } catch (error) {
        if (error instanceof GitError) throw new PushRefusedError(branch, 'the workspace has no such branch to push');
        throw error;
      }
      const fetched = (await git(['--git-dir', clean, 'rev-parse', '--verify', 'refs/shipgate/candidate^{commit}'])).stdout.trim();
      if (fetched !== sha) {
        throw new PushRefusedError(branch, `the workspace branch moved after verification (${fetched.slice(0, 12)} is not ${sha.slice(0, 12)})`);
      }
      return await pushFrom(clean, url, sha, branch, credentials);
    } finally {
      await rm(clean, { recursive: true, force: true });
    }
  }

  async function pushFrom(gitDir: string, url: string, sha: string, branch: string, credentials: GitCredentials): Promise<{ pushed: boolean; sha: string }> {
    // Explicit source sha and destination ref, no `+`, no --force: the remote fast-forwards or says no.
    const refspec = `${sha}:refs/heads/${branch}`;
    const result = await git(['--git-dir', gitDir, 'push', '--porcelain', '--no-verify', '--no-follow-tags', '--', url, refspec], {
      credentials,
      okCodes: [1],
    });
    // Porcelain lines: "<flag>\t<from>:<to>\t<summary>"; `=` up to date, `*` new, ` ` fast-forward, `!` rejected.
    const line = result.stdout
      .split('\n')
      .find((l) => l.includes(`\trefs/heads/${branch}`) || l.includes(`:refs/heads/${branch}\t`));
    const flag = line?.charAt(0);
    const shown = ['git', 'push', '--porcelain', '--no-verify', '--no-follow-tags', '--', scrubGitText(url), refspec];
    if (flag === '!' || (result.code !== 0 && flag !== undefined && flag !== '=')) {
      const summary = line?.split('\t')[2] ?? 'rejected';
      throw new GitError(`push to ${branch} was rejected: ${summary}`, shown, result.code, result.stderr, 'rejected');
    }
    if (result.code !== 0 || flag === undefined) {
      const lastLine = result.stderr.split('\n').filter(Boolean).at(-1) ?? `exit code ${result.code}`;
      throw new GitError(`push to ${branch} failed: ${lastLine}`, shown, result.code, result.stderr);
    }
    const pushed = flag !== '=';
    log?.info({ branch, sha, pushed }, 'git: pushed');
    return { pushed, sha };
  }

  async function removeWorkspace(dir: string): Promise<void> {
    const full = assertRemovable(dir);
    await Promise.all([rm(full, { recursive: true, force: true }), rm(gitDirOf(full), { recursive: true, force: true })]);
  }

  async function close(): Promise<void> {
    if (home === undefined) return;
    const path = await home;
    home = undefined;
    await rm(path, { recursive: true, force: true });
  }

  return { prepareWorkspace, changedFiles, diffStat, commitAll, push, headSha, mergeBase, committedFiles, submodulePaths, readFileAt, currentBranch, removeWorkspace, close };
}
