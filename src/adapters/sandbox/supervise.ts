import { spawn } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import type { SandboxResult } from '../../ports/sandbox.js';

/**
 * Runs one sandbox launcher process (bwrap, or the shell for `sandbox: none`)
 * under supervision: output tail-capped, a wall-clock timeout and an abort
 * that kill the launcher's whole process group, and settles only once the
 * process is gone and its pipes are closed.
 */

/** The PATH a check gets, in the sandbox or not: fixed, never the worker's. */
export const CHECK_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export interface SuperviseInput {
  file: string;
  args: readonly string[];
  cwd: string;
  env: Record<string, string>;
  timeoutMs: number;
  /** Bytes of output kept (the tail); a little more is kept so that redaction at the edge still sees whole paths. */
  keepBytes: number;
  signal?: AbortSignal | undefined;
  /** Host user and group to start the launcher as (only when the worker is root). */
  uid?: number | undefined;
  gid?: number | undefined;
  /** Descriptors handed to the launcher as fd 3, 4, … (e.g. bubblewrap's seccomp program). */
  extraFds?: readonly number[] | undefined;
  /** Looked at while the launcher runs; a reason returned stops it (a limit the kernel does not enforce). */
  watchdog?: Watchdog | undefined;
  /** Called with the pid once the launcher started (tests use it; so could metrics). */
  onSpawn?: ((pid: number) => void) | undefined;
}

export interface Watchdog {
  intervalMs: number;
  check(): Promise<string | undefined>;
}

export interface SupervisedOutcome {
  /** Why the watchdog stopped the process, when it did. */
  stoppedBecause?: string | undefined;
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  output: Buffer;
  outputBytes: number;
  durationMs: number;
}

/** Keeps the last `cap` bytes of a stream, and how many bytes there were in all. */
export function createTail(cap: number) {
  let chunks: Buffer[] = [];
  let kept = 0;
  let total = 0;
  return {
    push(chunk: Buffer): void {
      chunks.push(chunk);
      kept += chunk.length;
      total += chunk.length;
      if (kept > cap * 2) {
        const joined = Buffer.concat(chunks);
        chunks = [joined.subarray(joined.length - cap)];
        kept = cap;
      }
    },
    get total(): number {
      return total;
    },
    bytes(): Buffer {
      const joined = Buffer.concat(chunks);
      return joined.length > cap ? joined.subarray(joined.length - cap) : joined;
    },
  };
}

/** How long output may still arrive after the launcher exited. */
const PIPE_GRACE_MS = 1_000;

function killGroup(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    // Negative pid: the launcher's whole process group (it was started detached, as its leader).
    process.kill(-pid, 'SIGKILL');
  } catch {
    // ESRCH: the group is already gone.
  }
}

export class LaunchError extends Error {
  override name = 'LaunchError';
  constructor(readonly code: string) {
    super(`could not start (${code})`);
  }
}

export function supervise(input: SuperviseInput): Promise<SupervisedOutcome> {
  const { signal } = input;
  const started = performance.now();
  const tail = createTail(input.keepBytes);
  return new Promise<SupervisedOutcome>((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
      return;
    }
    const child = spawn(input.file, [...input.args], {
      cwd: input.cwd,
      env: input.env,
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe', ...(input.extraFds ?? [])],
      ...(input.uid === undefined ? {} : { uid: input.uid }),
      ...(input.gid === undefined ? {} : { gid: input.gid }),
    });
    if (child.pid !== undefined) input.onSpawn?.(child.pid);
    let timedOut = false;
    let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(child.pid);
    }, input.timeoutMs);
    let stoppedBecause: string | undefined;
    let watching = false;
    const watch =
      input.watchdog === undefined
        ? undefined
        : setInterval(() => {
            if (watching || input.watchdog === undefined) return;
            watching = true;
            input.watchdog
              .check()
              .then((reason) => {
                if (reason !== undefined && stoppedBecause === undefined) {
                  stoppedBecause = reason;
                  killGroup(child.pid);
                }
              })
              .catch(() => undefined)
              .finally(() => {
                watching = false;
              });
          }, input.watchdog.intervalMs);
    const onAbort = (): void => killGroup(child.pid);
    signal?.addEventListener('abort', onAbort, { once: true });
    const finish = (): void => {
      clearTimeout(timer);
      if (watch !== undefined) clearInterval(watch);
      signal?.removeEventListener('abort', onAbort);
    };
    child.stdout?.on('data', (chunk: Buffer) => tail.push(chunk));
    child.stderr?.on('data', (chunk: Buffer) => tail.push(chunk));
    child.once('error', (error: NodeJS.ErrnoException) => {
      finish();
      killGroup(child.pid);
      reject(new LaunchError(error.code ?? error.name));
    });
    child.once('exit', (code, exitSignal) => {
      exit = { code, signal: exitSignal };
      // Whatever else is left in the group would hold the pipes open: end it now.
      killGroup(child.pid);
      // A process that left the group (setsid) can still hold them: stop reading after a grace period.
      setTimeout(() => {
        child.stdout?.destroy();
        child.stderr?.destroy();
      }, PIPE_GRACE_MS).unref();
    });
    child.once('close', (code, closeSignal) => {
      finish();
      if (signal?.aborted) {
        reject(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
        return;
      }
      resolve({
        stoppedBecause,
        exitCode: exit?.code ?? code,
        signal: exit?.signal ?? closeSignal,
        timedOut,
        output: tail.bytes(),
        outputBytes: tail.total,
        durationMs: Math.round(performance.now() - started),
      });
    });
  });
}

/** The port's answer from a supervised run and the output as the adapter rewrote it (paths shown as /repo). */
export function sandboxResult(outcome: SupervisedOutcome, output: string): SandboxResult {
  return {
    exitCode: outcome.exitCode,
    signal: outcome.signal,
    timedOut: outcome.timedOut,
    output,
    outputBytes: outcome.outputBytes,
    durationMs: outcome.durationMs,
  };
}
