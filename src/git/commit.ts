import { resolve } from 'node:path';
import { GitError } from './git-errors.js';
import type { GitInspection } from './inspection.js';
import type { RunGit } from './run-git.js';

/**
 * Committing the whole working tree as the bot, with plumbing (`write-tree`,
 * `commit-tree`): no hooks, no trailer commands, the trailers the bot's own lines.
 */

export interface GitIdentity {
  name: string;
  email: string;
}

export const DEFAULT_IDENTITY: GitIdentity = {
  name: 'shipgate[bot]',
  email: 'shipgate-bot@users.noreply.github.com',
};

export interface CommitAllInput {
  dir: string;
  message: string;
  /** Appended as git trailers, e.g. `{ 'Shipgate-Run': runId, 'Requested-by': 'Ada <U123>' }`. */
  trailers: Record<string, string>;
  identity?: GitIdentity | undefined;
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

export function createCommitter(git: RunGit, inspect: GitInspection, defaultIdentity: GitIdentity): (input: CommitAllInput) => Promise<{ sha: string; created: boolean }> {
  assertIdentity(defaultIdentity);
  const { headSha, currentBranch } = inspect;

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

  return commitAll;
}
