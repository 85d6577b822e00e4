import { lstat, mkdir, mkdtemp, open, readdir, readlink, rm, statfs, writeFile, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SandboxUnavailableError, type SandboxPort, type SandboxRequest, type SandboxResult } from '../../ports/sandbox.js';
import { createScratchTree, removeTree, SCRATCH_PREFIX } from './scratch-tree.js';
import { seccompProgram } from './seccomp-filter.js';
import { CHECK_PATH, LaunchError, sandboxResult, supervise, type Watchdog } from './supervise.js';

/**
 * Runs repository code under bubblewrap (SPEC §4, "Checks are arbitrary code").
 *
 * Each command gets new user, PID, network, IPC, UTS and cgroup namespaces;
 * bubblewrap's own init is PID 1 of the new PID namespace, so when the
 * command exits (or the launcher is killed: `--die-with-parent`) every
 * process it started is gone, `setsid` or not. The network namespace has only
 * its own loopback: not the host's, so not Redis or the worker's ports.
 *
 * The filesystem is built from nothing: system directories read-only, a fresh
 * `/proc` that shows only the sandbox's processes, a minimal `/dev`, a private
 * `/tmp`, synthetic `/etc/passwd`, `/etc/group` and `/etc/hosts`, and the
 * copy of the working tree at `/repo` as the one writable place. Nothing of
 * the worker's home, temp files, git directories, `/run`, `/var/run/secrets`
 * or environment is there. When the worker is root, bubblewrap is started as
 * an unprivileged host user (default 65534), so even a namespace escape lands
 * without privileges; bubblewrap sets no-new-privileges and drops every
 * capability. prlimit caps CPU time, address space, processes, file size and
 * open files.
 */

export interface SandboxLimits {
  /** RLIMIT_AS, bytes (default 4 GiB): memory a process may map. */
  memoryBytes: number;
  /** Size of the private /tmp (tmpfs, counted as memory), bytes (default 512 MiB). */
  tmpBytes: number;
  /** Growth of the tree copy on disk before the check is stopped, bytes (default 2 GiB). */
  diskBytes: number;
  /** The check is stopped when the scratch file system has less free space than this (default 1 GiB). */
  minFreeDiskBytes: number;
  /** RLIMIT_NPROC for the sandbox user (default 512). */
  processes: number;
  /** RLIMIT_FSIZE, bytes (default 1 GiB): the largest file a command may write. */
  fileSizeBytes: number;
  /** RLIMIT_NOFILE (default 4096). */
  openFiles: number;
}

export const DEFAULT_SANDBOX_LIMITS: SandboxLimits = {
  memoryBytes: 4 * 1024 ** 3,
  tmpBytes: 512 * 1024 ** 2,
  diskBytes: 2 * 1024 ** 3,
  minFreeDiskBytes: 1024 ** 3,
  processes: 512,
  fileSizeBytes: 1024 ** 3,
  openFiles: 4096,
};

export interface BubblewrapOptions {
  /** The bwrap binary (default `bwrap` from PATH). */
  bwrapPath?: string | undefined;
  /** Host user the launcher drops to when the worker runs as root (default 65534, "nobody"). */
  sandboxUid?: number | undefined;
  sandboxGid?: number | undefined;
  /** The worker's user id (process.getuid()); injected so tests can reason about it. */
  workerUid: number;
  /** Where scratch copies live (default the system temp directory). */
  scratchParent?: string | undefined;
  limits?: Partial<SandboxLimits> | undefined;
  /** PATH on the host for finding bwrap (the command inside always gets a fixed PATH). */
  hostPath?: string | undefined;
  /** Told about a scratch copy that could not be removed (the run goes on; start-up sweeps leftovers). */
  onCleanupError?: ((error: unknown) => void) | undefined;
  /** `process.arch`, for the seccomp filter's system call numbers. */
  arch?: string | undefined;
}

/** System directories offered read-only; on merged-/usr systems most are symbolic links into /usr. */
const SYSTEM_DIRS = ['/usr', '/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32'];

/** The few /etc entries programs need to start and to speak TLS; never all of /etc (mounted secrets live there too). */
const ETC_ENTRIES = [
  '/etc/alternatives',
  '/etc/ca-certificates',
  '/etc/ssl',
  '/etc/ld.so.cache',
  '/etc/ld.so.conf',
  '/etc/ld.so.conf.d',
  '/etc/localtime',
  '/etc/nsswitch.conf',
  '/etc/mime.types',
];

const PROBE_MARKER = 'shipgate-sandbox-ok';

async function systemMounts(): Promise<string[]> {
  const args: string[] = [];
  for (const dir of SYSTEM_DIRS) {
    const info = await lstat(dir).catch(() => undefined);
    if (info === undefined) continue;
    if (info.isSymbolicLink()) args.push('--symlink', await readlink(dir), dir);
    else if (info.isDirectory()) args.push('--ro-bind', dir, dir);
  }
  for (const entry of ETC_ENTRIES) args.push('--ro-bind-try', entry, entry);
  return args;
}

function describeLaunchFailure(output: string): string {
  const text = output.trim();
  if (/No permissions to creat|Operation not permitted|setting up uid map|user namespace/i.test(text)) {
    return (
      `bubblewrap cannot create namespaces here (${text.split('\n').at(-1) ?? ''}). Fix: allow unprivileged user namespaces ` +
      '(sysctl kernel.unprivileged_userns_clone=1; on Ubuntu 24.04 also kernel.apparmor_restrict_unprivileged_userns=0), ' +
      'or in a container allow them (see README, "Running workers in Kubernetes"); or, knowingly, set `sandbox: none` in the policy'
    );
  }
  return `bubblewrap could not run a command (${text.split('\n').at(-1) ?? 'no output'}). Fix: check that bwrap works for the worker's user, or, knowingly, set \`sandbox: none\` in the policy`;
}

/**
 * Closes every inherited descriptor above 3 (3 carries the seccomp program) before the launcher
 * starts: a descriptor the worker inherited from its own supervisor without close-on-exec (a log
 * pipe, an activation socket) would otherwise be writable by repository code. bash, because dash
 * cannot name descriptors above 9.
 */
const CLOSE_INHERITED =
  'for fd in /proc/self/fd/*; do n=${fd##*/}; case $n in 0|1|2|3) ;; *) eval "exec $n>&-" 2>/dev/null ;; esac; done; exec "$@"';

export function createBubblewrapSandbox(options: BubblewrapOptions): SandboxPort {
  const bwrap = options.bwrapPath ?? 'bwrap';
  const limits = { ...DEFAULT_SANDBOX_LIMITS, ...options.limits };
  const scratchParent = options.scratchParent ?? tmpdir();
  const dropPrivileges = options.workerUid === 0;
  const uid = dropPrivileges ? (options.sandboxUid ?? 65534) : options.workerUid;
  const gid = dropPrivileges ? (options.sandboxGid ?? options.sandboxUid ?? 65534) : options.workerUid;
  const hostEnv = { PATH: options.hostPath ?? CHECK_PATH, LC_ALL: 'C' };
  const seccomp = seccompProgram(options.arch ?? process.arch);
  // The host's system directories do not change while the worker runs: look them up once, not per check.
  let mounts: Promise<string[]> | undefined;

  async function launch(request: SandboxRequest): Promise<SandboxResult> {
    const scratch = await createScratchTree(request.tree, scratchParent, dropPrivileges ? { uid, gid } : undefined);
    let seccompFile: FileHandle | undefined;
    try {
      const etc = join(scratch.dir, 'etc');
      await mkdir(etc, { mode: 0o755 });
      await writeFile(join(etc, 'passwd'), `root:x:0:0:root:/root:/bin/sh\nsandbox:x:${uid}:${gid}:shipgate sandbox:/tmp/home:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n`, { mode: 0o644 });
      await writeFile(join(etc, 'group'), `root:x:0:\nsandbox:x:${gid}:\nnogroup:x:65534:\n`, { mode: 0o644 });
      await writeFile(join(etc, 'hosts'), '127.0.0.1 localhost\n::1 localhost\n', { mode: 0o644 });
      if (seccomp !== undefined) {
        await writeFile(join(scratch.dir, 'seccomp.bpf'), seccomp, { mode: 0o600 });
        seccompFile = await open(join(scratch.dir, 'seccomp.bpf'), 'r');
      }
      const cpuSeconds = Math.max(1, Math.ceil(request.timeoutMs / 1000));
      const args = [
        '--unshare-all',
        // Mandatory (--unshare-all only tries), so that --disable-userns can close the door behind us:
        // a check cannot make namespaces of its own and reach the kernel's "root in a namespace" paths.
        '--unshare-user',
        '--disable-userns',
        '--die-with-parent',
        '--new-session',
        '--cap-drop', 'ALL',
        '--hostname', 'sandbox',
        ...(seccompFile === undefined ? [] : ['--seccomp', '3']),
        '--clearenv',
        '--setenv', 'PATH', CHECK_PATH,
        '--setenv', 'HOME', '/tmp/home',
        '--setenv', 'TMPDIR', '/tmp',
        '--setenv', 'LANG', 'C.UTF-8',
        '--setenv', 'LC_ALL', 'C.UTF-8',
        '--setenv', 'CI', 'true',
        '--uid', String(uid),
        '--gid', String(gid),
        ...(await (mounts ??= systemMounts())),
        '--ro-bind', join(etc, 'passwd'), '/etc/passwd',
        '--ro-bind', join(etc, 'group'), '/etc/group',
        '--ro-bind', join(etc, 'hosts'), '/etc/hosts',
        '--proc', '/proc',
        // /dev read-only but for a small /dev/shm; tmpfs is memory, so every tmpfs has a size.
        '--dev', '/dev',
        '--size', String(64 * 1024 ** 2), '--tmpfs', '/dev/shm',
        '--remount-ro', '/dev',
        '--size', String(limits.tmpBytes), '--tmpfs', '/tmp',
        '--dir', '/tmp/home',
        '--bind', scratch.repo, '/repo',
        '--chdir', '/repo',
        '--',
        '/usr/bin/prlimit',
        `--cpu=${cpuSeconds}`,
        `--as=${limits.memoryBytes}`,
        `--nproc=${limits.processes}`,
        `--fsize=${limits.fileSizeBytes}`,
        `--nofile=${limits.openFiles}`,
        '--core=0',
        '--',
        '/bin/sh',
        '-c',
        request.command,
      ];
      const outcome = await supervise({
        file: 'bash',
        args: ['-c', CLOSE_INHERITED, 'shipgate-sandbox', bwrap, ...args],
        cwd: scratch.dir,
        env: hostEnv,
        timeoutMs: request.timeoutMs,
        keepBytes: request.outputCapBytes,
        signal: request.signal,
        ...(seccompFile === undefined ? {} : { extraFds: [seccompFile.fd] }),
        // libuv drops supplementary groups with the uid; bubblewrap then sets no-new-privileges.
        ...(dropPrivileges ? { uid, gid } : {}),
        watchdog: diskWatchdog(scratchParent, limits),
      });
      // /proc/self/mountinfo names the scratch copy's host path: people and the model see /repo.
      let output = outcome.output.toString('utf8').split(scratch.repo).join('/repo').split(scratch.dir).join('/sandbox');
      if (outcome.stoppedBecause !== undefined) output += `\n[shipgate stopped the check: ${outcome.stoppedBecause}]\n`;
      return sandboxResult(outcome, output);
    } catch (error) {
      if (error instanceof LaunchError) {
        throw new SandboxUnavailableError(
          error.code === 'ENOENT'
            ? `bubblewrap (${bwrap}) or bash is not installed. Fix: install them (Debian/Ubuntu: apt-get install bubblewrap bash), or, knowingly, set \`sandbox: none\` in the policy`
            : `bubblewrap (${bwrap}) could not be started (${error.code})`,
        );
      }
      throw error;
    } finally {
      await seccompFile?.close();
      // A check can make its copy hard to remove; that must never replace the check's result.
      await scratch.remove().catch((error: unknown) => options.onCleanupError?.(error));
    }
  }

  return {
    kind: 'bubblewrap',
    isolated: true,
    run: launch,
    async probe() {
      if (!(await commandExists(bwrap, hostEnv.PATH))) {
        throw new SandboxUnavailableError(`bubblewrap (${bwrap}) is not installed. Fix: install it (Debian/Ubuntu: apt-get install bubblewrap), or, knowingly, set \`sandbox: none\` in the policy`);
      }
      await sweepStaleScratch(scratchParent);
      const probeTree = await mkdtemp(join(scratchParent, 'shipgate-probe-'));
      try {
        const result = await launch({ tree: probeTree, command: `echo ${PROBE_MARKER}`, timeoutMs: 20_000, outputCapBytes: 4_096 });
        if (result.exitCode !== 0 || !result.output.includes(PROBE_MARKER)) {
          throw new SandboxUnavailableError(describeLaunchFailure(result.output));
        }
      } finally {
        await rm(probeTree, { recursive: true, force: true });
      }
    },
  };
}

/** Stops a check whose tree copy grows past its budget or that leaves the scratch file system nearly full. */
function diskWatchdog(scratchParent: string, limits: SandboxLimits): Watchdog {
  let startFree: number | undefined;
  return {
    intervalMs: 1_000,
    async check() {
      const stats = await statfs(scratchParent).catch(() => undefined);
      if (stats === undefined) return undefined;
      const free = stats.bavail * stats.bsize;
      startFree ??= free;
      if (startFree - free > limits.diskBytes) return `it wrote more than ${Math.round(limits.diskBytes / 1024 ** 2)} MiB to disk`;
      if (free < limits.minFreeDiskBytes) return 'the disk the sandbox works on is nearly full';
      return undefined;
    },
  };
}

async function commandExists(file: string, path: string): Promise<boolean> {
  const candidates = file.includes('/') ? [file] : path.split(':').map((dir) => join(dir, file));
  for (const candidate of candidates) {
    if ((await lstat(candidate).catch(() => undefined)) !== undefined) return true;
  }
  return false;
}

/** A worker killed mid-check leaves its copy behind; anything this old is no live check's (checks time out long before). */
const STALE_SCRATCH_MS = 6 * 3_600_000;

async function sweepStaleScratch(parent: string): Promise<void> {
  const entries = await readdir(parent).catch(() => [] as string[]);
  for (const name of entries) {
    if (!name.startsWith(SCRATCH_PREFIX)) continue;
    const path = join(parent, name);
    const info = await lstat(path).catch(() => undefined);
    if (info === undefined || !info.isDirectory() || Date.now() - info.mtimeMs < STALE_SCRATCH_MS) continue;
    await removeTree(path).catch(() => undefined);
  }
}
