import type Anthropic from '@anthropic-ai/sdk';
import { z } from 'zod';
import { SandboxUnavailableError, type SandboxPort } from '../ports/sandbox.js';
import { ToolRefusal } from './repo-files.js';
import type { ToolProvider, ToolResult } from './toolbox.js';

const RUN_CHECK_DESCRIPTION =
  "Run one of the repository's configured checks (for example lint or test) by name, in /repo, and get its exit " +
  'code and the end of its output. Only checks configured for this repository in the shipgate policy can be run; ' +
  'there is no shell and no other command. Checks run in a sandbox on a copy of /repo (what they write is discarded), ' +
  'without network or credentials and with a time limit. When you finish, ' +
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
  /** The working tree the checks see (a copy of it, at /repo). */
  root: string;
  /** Check name → shell command, from the repository policy (`checks`). */
  checks: Record<string, string>;
  timeoutMs: number;
  outputCapBytes: number;
  /** Where the commands run: every check is repository code, so it never runs outside the sandbox port. */
  sandbox: SandboxPort;
  /** Removes secret values and token shapes from the output before anyone (the model, chat, logs) sees it. */
  scrub: (text: string) => string;
}

export interface CheckRunner {
  readonly names: string[];
  /** Rejects with a ToolRefusal for an unknown name, and with the abort reason once an aborted check really stopped. */
  run(name: string, signal?: AbortSignal): Promise<CheckResult>;
}

function shorten(text: string, max = 60): string {
  return text.length <= max ? text : `${text.slice(0, max)}…`;
}

/**
 * Runs the repository's configured checks (SPEC §4): a fixed command from the
 * policy, never one from the model, in the sandbox (a copy of the tree, no
 * credentials, nothing left running afterwards), with a timeout and the
 * output capped to its tail, where failures are reported, and scrubbed.
 */
export function createCheckRunner(options: CheckRunnerOptions): CheckRunner {
  const { root, checks, timeoutMs, outputCapBytes, sandbox } = options;
  const { scrub } = options;
  const names = Object.keys(checks);

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
    let result;
    try {
      result = await sandbox.run({ tree: root, command, timeoutMs, outputCapBytes, signal });
    } catch (error) {
      if (signal?.aborted) throw signal.reason instanceof Error ? signal.reason : new Error(`check "${name}" was aborted`);
      if (error instanceof SandboxUnavailableError) throw error;
      // The error's own message may name the real scratch path.
      throw new Error(`check "${name}" could not start (${error instanceof Error ? error.name : 'unknown error'})`, { cause: error });
    }
    // Scrubbed after the tail is joined, so a secret split across two chunks is still seen whole.
    let output = scrub(result.output);
    if (result.outputBytes > outputCapBytes) {
      output = `[output truncated: the first ${result.outputBytes - Buffer.byteLength(result.output)} bytes are omitted]\n${output}`;
    }
    return {
      name,
      command,
      exitCode: result.exitCode,
      signal: result.signal,
      timedOut: result.timedOut,
      output,
      durationMs: result.durationMs,
    };
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

/** `run_check` as a toolbox provider, naming the runner's checks in its definition. */
export function createCheckProvider(runner: CheckRunner): ToolProvider {
  return { name: 'checks', tools: [runCheckToolFor(runner.names)], call: async (_tool, input, signal) => runCheckTool(runner, input, signal) };
}
