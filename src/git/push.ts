import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { Logger } from '../log.js';
import { pushRefusal, type PushTarget } from './branch-names.js';
import { assertCloneUrl } from './clone-url.js';
import { GitError, PushRefusedError } from './git-errors.js';
import { gitDirOf, scrubGitText, type GitCredentials, type RunGit } from './run-git.js';

/**
 * Pushing the verified commit: only the run's branch, never forced, from a clean
 * bare repository of the bot's own to the clone URL the API gave.
 */

export interface PushInput extends PushTarget {
  dir: string;
  credentials: GitCredentials;
  /** Where to push: the repository's clone URL as the API gave it, never what the workspace's config says. */
  remoteUrl: string;
  /** The commit that was verified (checks, protected paths); exactly this commit is pushed. */
  sha: string;
}

export function createPusher(git: RunGit, log: Logger | undefined): (input: PushInput) => Promise<{ pushed: boolean; sha: string }> {
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
    // A local remote (the local forge) runs receive-pack in this process's user, and git hands it none
    // of our `-c` settings: name it with hooks off, so no hook of the receiving repository ever runs.
    const receivePack = url.startsWith('file:') ? ['--receive-pack=git -c core.hooksPath=/dev/null receive-pack'] : [];
    const result = await git(['--git-dir', gitDir, 'push', '--porcelain', '--no-verify', '--no-follow-tags', ...receivePack, '--', url, refspec], {
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

  return push;
}
