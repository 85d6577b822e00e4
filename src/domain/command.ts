import { code, rich, type RichText } from '../render/view.js';

/**
 * Parses the text after the slash command (SPEC §2). Pure: no policy lookups
 * beyond the channel default passed in. Sub-command keywords only win when the
 * rest of the text matches their grammar exactly, so a task such as
 * "status page shows 500s" in a channel with a default repository stays a task.
 */

export const RUN_ID_PATTERN = /^sg-[a-z0-9]{8}$/;
const REPO_PATTERN = /^[A-Za-z0-9_.-]+\/[A-Za-z0-9_.-]+$/;
/** Longest task we accept; it ends up in prompts, PR bodies and cards. */
export const MAX_TASK_LENGTH = 4_000;

export type ParsedCommand =
  | { kind: 'help' }
  | { kind: 'status'; runId?: string | undefined }
  | { kind: 'cancel'; runId: string }
  | { kind: 'retry'; runId: string }
  | { kind: 'audit'; runId: string }
  /** Ends the caller's own runs that cannot continue (`all`: every active run of theirs). */
  | { kind: 'clear'; all: boolean }
  | { kind: 'run'; repo: string; task: string; repoFromChannelDefault: boolean }
  | { kind: 'error'; message: RichText };

const RUN_ID_COMMANDS = ['cancel', 'retry', 'audit'] as const;

export function parseCommand(text: string, options: { command: string; channelDefaultRepo?: string | undefined }): ParsedCommand {
  const trimmed = text.trim();
  const words = trimmed.split(/\s+/).filter((w) => w !== '');
  const [first, ...rest] = words;
  const usage = rich`Type ${code(`${options.command} help`)} for usage.`;

  if (first === undefined) {
    return { kind: 'error', message: rich`Tell me what to do: ${code(`${options.command} <owner/repo> <task…>`)}. ${usage}` };
  }
  const keyword = first.toLowerCase();

  if (keyword === 'help' && rest.length === 0) return { kind: 'help' };
  if (keyword === 'clear' && rest.length === 0) return { kind: 'clear', all: false };
  if (keyword === 'clear' && rest.length === 1 && rest[0]?.toLowerCase() === 'all') return { kind: 'clear', all: true };
  if (keyword === 'status' && rest.length === 0) return { kind: 'status' };
  const idShaped = /^sg-/i.test(rest[0] ?? '');
  if (keyword === 'status' && rest.length === 1 && RUN_ID_PATTERN.test(rest[0] ?? '')) {
    return { kind: 'status', runId: rest[0] };
  }
  if (keyword === 'status' && idShaped) {
    return { kind: 'error', message: rich`${code(`${options.command} status`)} takes a run id like ${code('sg-1a2b3c4d')}. ${usage}` };
  }
  for (const name of RUN_ID_COMMANDS) {
    if (keyword !== name) continue;
    if (rest.length === 1 && RUN_ID_PATTERN.test(rest[0] ?? '')) return { kind: name, runId: rest[0] ?? '' };
    // Without a default repository these words cannot start a task, so a malformed id is an error, not a task.
    if (options.channelDefaultRepo === undefined || rest.length === 0 || idShaped) {
      return {
        kind: 'error',
        message: rich`${code(`${options.command} ${name}`)} needs a run id like ${code('sg-1a2b3c4d')} (see ${code(`${options.command} status`)}). ${usage}`,
      };
    }
  }

  if (REPO_PATTERN.test(first)) {
    const task = rest.join(' ');
    return taskOrError(first, task, false, options.command);
  }
  if (first.includes('/') && !first.includes(' ') && /^[^/]+\/[^/]+$/.test(first)) {
    return { kind: 'error', message: rich`${code(first)} is not a valid repository name; use ${code('owner/name')}. ${usage}` };
  }
  if (options.channelDefaultRepo !== undefined) {
    return taskOrError(options.channelDefaultRepo, trimmed.replace(/\s+/g, ' '), true, options.command);
  }
  return {
    kind: 'error',
    message: rich`Name the repository first: ${code(`${options.command} <owner/repo> ${trimmed.slice(0, 60)}`)}. This channel has no default repository. ${usage}`,
  };
}

function taskOrError(repo: string, task: string, fromDefault: boolean, command: string): ParsedCommand {
  if (task.trim() === '') {
    return { kind: 'error', message: rich`Say what to change in ${repo}: ${code(`${command} ${repo} <task…>`)}.` };
  }
  if (task.length > MAX_TASK_LENGTH) {
    return {
      kind: 'error',
      message: rich`The task is ${task.length} characters long; keep it under ${MAX_TASK_LENGTH} and link to details instead.`,
    };
  }
  return { kind: 'run', repo, task: task.trim(), repoFromChannelDefault: fromDefault };
}
