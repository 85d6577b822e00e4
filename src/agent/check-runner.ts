import type Anthropic from '@anthropic-ai/sdk';
import { spawn } from 'node:child_process';
import { realpathSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { z } from 'zod';
import type { ToolResult } from './editor-tool.js';
import { ToolRefusal, VIRTUAL_ROOT } from './repo-files.js';

const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

const RUN_CHECK_DESCRIPTION =
  "Run one of the repository's configured checks (for example lint or test) by name, in /repo, and get its exit " +
  'code and the end of its output. Only checks configured for this repository in the shipgate policy can be run; ' +
  'there is no shell and no other command. Checks run with a time limit and without credentials. When you finish, ' +
  'the bot runs every configured check again itself.';

/** The tool in its generic form; prefer `runCheckToolFor`, which names the repository's checks. */
export const RUN_CHECK_TOOL: Anthropic.Tool = {
  name: 'run_check',
  description: RUN_CHECK_DESCRIPTION,
  input_schema: {
    type: 'object',
    properties: { name: { type: 'string', description: 'Name of a configured check.' } },
    required: ['name'],
  },
};

/** `run_check` with the repository's check names in the description and as an enum, so the model need not guess. */
export function runCheckToolFor(names: readonly string[]): Anthropic.Tool {
  if (names.length === 0) {
    return { ...RUN_CHECK_TOOL, description: `${RUN_CHECK_DESCRIPTION} This repository has no checks configured.` };
  }
  return {
    name: RUN_CHECK_TOOL.name,
    description: `${RUN_CHECK_DESCRIPTION} Configured checks: ${names.join(', ')}.`,
    input_schema: {
      type: 'object',
      properties: { name: { type: 'string', enum: [...names], description: 'Name of a configured check.' } },
      required: ['name'],
    },
  };
}

export interface CheckResult {
  name: string;
  command: string;
  /** Null when the process was ended by a signal (timeout, abort, or its own crash). */
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  /** Combined stdout and stderr in arrival order, tail-capped, with the workspace path shown as /repo. */
  output: string;
  durationMs: number;
}

export interface CheckRunnerOptions {
  root: string;
  /** Check name → shell command, from the repository policy (`checks`). */
  checks: Record<string, string>;
  timeoutMs: number;
  outputCapBytes: number;
  /** Only its PATH is used; it exists so that callers (and tests) can choose the PATH. */
  baseEnv?: Record<string, string>;
}

export interface CheckRunner {
  readonly names: string[];
  /** Rejects with a ToolRefusal for an unknown name, and with the abort reason once an aborted check really stopped. */
  run(name: string, signal?: AbortSignal): Promise<CheckResult>;
}

function shorten(text: string, max = 60): string {
  return text.length <= max ? text : `${text.slice(0, max)}…`;
}

/** Keeps the last `cap` bytes of a stream, and how many bytes there were in all. */
function createTail(cap: number) {
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

function killGroup(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    // Negative pid: the whole process group the detached shell leads, so `npm test`'s
    // grandchildren die with it instead of running on unsupervised.
    process.kill(-pid, 'SIGKILL');
  } catch {
    // ESRCH: the group is already gone.
  }
}

/**
 * Runs the repository's configured checks (SPEC §4): a fixed command from the
 * policy, never one from the model; a scrubbed environment that carries no
 * token or key of the worker; a timeout and an abort that kill the whole
 * process group; output capped to its tail, where failures are reported.
 */
export function createCheckRunner(options: CheckRunnerOptions): CheckRunner {
  const { root, checks, timeoutMs, outputCapBytes } = options;
  const names = Object.keys(checks);
  const rootSpellings = [...new Set([realpathSync.native(root), root.replace(/\/+$/, '')])]
    .filter((spelling) => spelling.length > 1)
    .sort((a, b) => b.length - a.length);
  // Slack so that a path cut at the tail's edge is still redacted whole.
  const margin = Math.max(0, ...rootSpellings.map((spelling) => Buffer.byteLength(spelling)));

  function redact(text: string, home: string): string {
    let result = text;
    for (const spelling of rootSpellings) result = result.split(spelling).join(VIRTUAL_ROOT);
    return result.split(home).join('$HOME');
  }

  async function run(name: string, signal?: AbortSignal): Promise<CheckResult> {
    if (!Object.hasOwn(checks, name)) {
      throw new ToolRefusal(
        names.length === 0
          ? `Refused: there is no check "${shorten(name)}"; this repository has no checks configured.`
          : `Refused: there is no check "${shorten(name)}". Configured checks: ${names.join(', ')}.`,
      );
    }
    const command = checks[name] ?? '';
    signal?.throwIfAborted();

    const home = await mkdtemp(join(tmpdir(), 'shipgate-check-home-'));
    // Built from nothing: process.env holds the bot's Slack, GitHub and Anthropic credentials,
    // and a check runs repository code the model may have written.
    const env: Record<string, string> = {
      PATH: options.baseEnv?.PATH ?? process.env.PATH ?? DEFAULT_PATH,
      HOME: home,
      LANG: 'C.UTF-8',
      LC_ALL: 'C.UTF-8',
      CI: 'true',
    };
    const started = performance.now();
    const tail = createTail(outputCapBytes + margin);
    try {
      const outcome = await new Promise<{ exitCode: number | null; signal: NodeJS.Signals | null; timedOut: boolean }>(
        (resolve, reject) => {
          const child = spawn('/bin/sh', ['-c', command], {
            cwd: root,
            env,
            detached: true,
            stdio: ['ignore', 'pipe', 'pipe'],
          });
          let timedOut = false;
          let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
          const timer = setTimeout(() => {
            timedOut = true;
            killGroup(child.pid);
          }, timeoutMs);
          const onAbort = (): void => killGroup(child.pid);
          signal?.addEventListener('abort', onAbort, { once: true });
          const finish = (): void => {
            clearTimeout(timer);
            signal?.removeEventListener('abort', onAbort);
          };

          child.stdout.on('data', (chunk: Buffer) => tail.push(chunk));
          child.stderr.on('data', (chunk: Buffer) => tail.push(chunk));
          child.once('error', (error: NodeJS.ErrnoException) => {
            finish();
            killGroup(child.pid);
            // The error's own message names the real workspace path.
            reject(new Error(`check "${name}" could not start (${error.code ?? error.name})`));
          });
          child.once('exit', (code, exitSignal) => {
            exit = { code, signal: exitSignal };
            // Background processes the check left behind would hold the output pipes open
            // (and outlive the check): end the rest of the group now.
            killGroup(child.pid);
          });
          child.once('close', (code, closeSignal) => {
            finish();
            if (signal?.aborted) {
              reject(signal.reason instanceof Error ? signal.reason : new Error(`check "${name}" was aborted`));
              return;
            }
            resolve({ exitCode: exit?.code ?? code, signal: exit?.signal ?? closeSignal, timedOut });
          });
        },
      );

      let output = redact(tail.bytes().toString('utf8'), home);
      if (tail.total > outputCapBytes) {
        const bytes = Buffer.from(output, 'utf8');
        output =
          bytes.length > outputCapBytes ? bytes.subarray(bytes.length - outputCapBytes).toString('utf8') : output;
        output = `[output truncated: the first ${tail.total - outputCapBytes} bytes are omitted]\n${output}`;
      }
      return {
        name,
        command,
        exitCode: outcome.exitCode,
        signal: outcome.signal,
        timedOut: outcome.timedOut,
        output,
        durationMs: Math.round(performance.now() - started),
      };
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  }

  return { names, run };
}

const runCheckInput = z.object({
  name: z.string({ error: 'name is required (the name of a configured check)' }).min(1, 'name must not be empty'),
});

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

/**
 * The `run_check` tool for the model. A check that fails is a normal result
 * (the model should read it and fix the code), so only a refused or unstartable
 * check is `isError`. An abort propagates: the run is being cancelled.
 */
export async function runCheckTool(runner: CheckRunner, input: unknown, signal?: AbortSignal): Promise<ToolResult> {
  const parsed = runCheckInput.safeParse(input);
  if (!parsed.success) {
    const why = parsed.error.issues.map((issue) => issue.message).join('; ');
    return {
      content: `Error: invalid input for run_check: ${why}. Configured checks: ${runner.names.join(', ') || 'none'}.`,
      isError: true,
    };
  }
  let result: CheckResult;
  try {
    result = await runner.run(parsed.data.name, signal);
  } catch (error) {
    if (signal?.aborted) throw error;
    if (error instanceof ToolRefusal) return { content: error.message, isError: true };
    return { content: `Error: ${error instanceof Error ? error.message : 'the check could not run'}.`, isError: true };
  }
  const verdict = result.timedOut
    ? `timed out after ${seconds(result.durationMs)} and was stopped (its processes were killed)`
    : result.exitCode === 0
      ? `passed (exit code 0) in ${seconds(result.durationMs)}`
      : result.exitCode === null
        ? `was killed by ${result.signal ?? 'a signal'} after ${seconds(result.durationMs)}`
        : `failed with exit code ${result.exitCode} after ${seconds(result.durationMs)}`;
  const output = result.output.trim() === '' ? '(no output)' : result.output;
  return {
    content: `Check "${result.name}" (\`${result.command}\`) ${verdict}.\nOutput:\n${output}`,
    isError: false,
  };
}
