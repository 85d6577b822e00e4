import type { ProtectedPaths } from '../../../src/agent/protected-paths.js';
import { taskTitle, type Run } from '../../../src/domain/run.js';
import type { DiffStat, Git } from '../../../src/git/git.js';
import { quotedForCommit } from '../../../src/security/model-text.js';

/** A gate failure: the change is not committed (or not pushed), and why. */
export interface Refusal {
  kind: 'failed';
  summary: string;
}

function saidSuffix(summary: string): string {
  return summary === '' ? '' : `. It said: ${summary.slice(0, 500)}`;
}

/**
 * What the agent changed since `base`, or why it cannot be committed: nothing changed, a protected
 * path changed, or (on a later iteration) nothing changed since the previous commit.
 */
export async function reviewChange(
  git: Pick<Git, 'changedFiles'>,
  input: { dir: string; base: string; protectedPaths: ProtectedPaths; previousCommitSha: string | undefined; summary: string },
): Promise<{ kind: 'changed'; changed: string[] } | Refusal> {
  const { dir, base, protectedPaths, previousCommitSha, summary } = input;
  const changed = await git.changedFiles(dir, base);
  if (changed.length === 0) return { kind: 'failed', summary: `the agent finished without changing anything${saidSuffix(summary)}` };
  const forbidden = changed.filter((path) => protectedPaths.isProtected(path));
  if (forbidden.length > 0) {
    // The editor refuses these writes and checks only ever see a copy; this is the belt to those braces.
    return { kind: 'failed', summary: `refused: the change touches protected paths: ${forbidden.join(', ')}` };
  }
  if (previousCommitSha !== undefined && (await git.changedFiles(dir, previousCommitSha)).length === 0) {
    return { kind: 'failed', summary: `the agent made no further change in this iteration${saidSuffix(summary)}` };
  }
  return { kind: 'changed', changed };
}

/**
 * The commit message: the task's first line, then the model's summary quoted and neutralised (no
 * mentions, closing keywords or trailer lines), so the bot's trailers are the only ones the commit has.
 */
export function commitMessage(task: string, summary: string, scrub: (text: string) => string): string {
  return summary.trim() === '' ? taskTitle(task) : `${taskTitle(task)}\n\nThe agent's summary (model output, quoted):\n\n${quotedForCommit(scrub(summary))}`;
}

/** The bot's trailers. A display name comes from chat: no angle brackets, so it cannot pose as another id. */
export function commitTrailers(run: Pick<Run, 'id' | 'requester'>): Record<string, string> {
  return { 'Shipgate-Run': run.id, 'Requested-by': `${(run.requester.name ?? run.requester.userId).replace(/[<>]/g, '')} <${run.requester.userId}>` };
}

export function diffStatText(stat: DiffStat): string {
  return [
    ...stat.files.map((f) => `${f.path} | ${f.binary ? 'binary' : `+${f.insertions} -${f.deletions}`}`),
    `${stat.files.length} file(s) changed, +${stat.insertions} -${stat.deletions}`,
  ].join('\n');
}

/**
 * Commits the whole tree as the bot, then checks the commit itself for protected paths: what goes
 * out is the commit, not the working tree, and it is read in the bot's own git directory (no
 * replace objects), so what was verified is exactly what is pushed.
 */
export async function commitChange(
  git: Pick<Git, 'commitAll' | 'committedFiles'>,
  input: { dir: string; base: string; protectedPaths: ProtectedPaths; message: string; trailers: Record<string, string> },
): Promise<{ kind: 'committed'; sha: string } | Refusal> {
  const committed = await git.commitAll({ dir: input.dir, message: input.message, trailers: input.trailers });
  const inCommit = await git.committedFiles(input.dir, input.base, committed.sha);
  const sneaked = inCommit.filter((path) => input.protectedPaths.isProtected(path));
  if (sneaked.length > 0) return { kind: 'failed', summary: `refused: the commit touches protected paths: ${sneaked.join(', ')}` };
  return { kind: 'committed', sha: committed.sha };
}
