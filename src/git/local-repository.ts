import { mkdir, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { GitIdentity } from './commit.js';
import { GitError } from './git-errors.js';
import type { RunGit } from './run-git.js';
import { isSafeBranchName } from './branch-names.js';

/**
 * The git of the local forge (SPEC §8): a repository on disk that plays the part of GitHub's copy.
 * Everything is plumbing on its git directory (no working tree is touched, no hook runs: plumbing
 * runs none, and the push layer starts the remote's receive-pack with hooks off), and the one write
 * besides seeding it — a merge — is a fast-forward only, compare-and-swap on the old value.
 */
export interface LocalRepositoryGit {
  /** Whether `path` holds a git repository (bare, or a `.git` inside). */
  exists(path: string): Promise<boolean>;
  /** Creates a bare repository at `path` whose `branch` holds one commit of `files` (path → text). */
  seedBare(
    path: string,
    branch: string,
    files: Readonly<Record<string, string>>,
    message: string,
    identity: GitIdentity,
  ): Promise<string>;
  /** The branch HEAD names (the repository's default branch). */
  defaultBranch(path: string): Promise<string>;
  /** The commit `refs/heads/<branch>` points at, or undefined when there is no such branch. */
  branchSha(path: string, branch: string): Promise<string | undefined>;
  /** The unified diff from the merge base of `base` and `head` to `head`, cut at `maxBytes`. */
  diff(path: string, base: string, head: string, maxBytes: number): Promise<string>;
  /** Moves `branch` from `from` to `to` when that is a fast-forward and nobody moved it meanwhile. */
  fastForward(path: string, branch: string, from: string, to: string): Promise<'merged' | 'not-fast-forward' | 'moved'>;
}

const SHA = /^[0-9a-f]{40}([0-9a-f]{24})?$/;
/** The empty tree's id (SHA-1 repositories). */
const EMPTY_TREE = '4b825dc642cb6eb9a060e54bf8d69288fbee4904';

function gitDirArgs(path: string): string[] {
  return ['--git-dir', path];
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

/** Where the git directory of `path` is: the path itself when bare, else its `.git`. */
async function gitDirOfRepository(path: string): Promise<string> {
  return (await isDirectory(`${path}/.git`)) ? `${path}/.git` : path;
}

interface TreeNode {
  files: Map<string, string>;
  dirs: Map<string, TreeNode>;
}

function treeOf(files: Readonly<Record<string, string>>): TreeNode {
  const root: TreeNode = { files: new Map(), dirs: new Map() };
  for (const [path, text] of Object.entries(files)) {
    const parts = path.split('/');
    const name = parts.pop();
    if (name === undefined || name === '' || parts.some((p) => p === '' || p === '.' || p === '..'))
      throw new Error(`bad sample path ${path}`);
    let node = root;
    for (const part of parts) {
      let next = node.dirs.get(part);
      if (next === undefined) {
        next = { files: new Map(), dirs: new Map() };
        node.dirs.set(part, next);
      }
      node = next;
    }
    node.files.set(name, text);
  }
  return root;
}

export function createLocalRepositoryGit(git: RunGit): LocalRepositoryGit {
  async function run(
    path: string,
    args: readonly string[],
    options: { input?: string; okCodes?: readonly number[]; env?: Record<string, string> } = {},
  ) {
    const gitDir = await gitDirOfRepository(path);
    // cwd at the git directory: no work tree around it whose .gitattributes could be read.
    return git([...gitDirArgs(gitDir), ...args], { cwd: gitDir, ...options });
  }

  async function writeTree(path: string, node: TreeNode): Promise<string> {
    const entries: string[] = [];
    for (const [name, text] of node.files) {
      const blob = (await run(path, ['hash-object', '-w', '--stdin'], { input: text })).stdout.trim();
      entries.push(`100644 blob ${blob}\t${name}`);
    }
    for (const [name, child] of node.dirs) entries.push(`040000 tree ${await writeTree(path, child)}\t${name}`);
    return (await run(path, ['mktree'], { input: `${entries.join('\n')}\n` })).stdout.trim();
  }

  return {
    async exists(path) {
      if (!(await isDirectory(path))) return false;
      const result = await run(path, ['rev-parse', '--git-dir'], { okCodes: [128] });
      return result.code === 0;
    },

    async seedBare(path, branch, files, message, identity) {
      if (!isSafeBranchName(branch)) throw new Error(`bad branch name ${branch}`);
      await mkdir(dirname(path), { recursive: true });
      await git(['init', '--bare', '--quiet', `--initial-branch=${branch}`, path]);
      const tree = await writeTree(path, treeOf(files));
      const env = {
        GIT_AUTHOR_NAME: identity.name,
        GIT_AUTHOR_EMAIL: identity.email,
        GIT_COMMITTER_NAME: identity.name,
        GIT_COMMITTER_EMAIL: identity.email,
      };
      const commit = (await run(path, ['commit-tree', tree, '-m', message], { env })).stdout.trim();
      // Created only when absent: two workers seeding at once keep the first commit.
      await run(path, ['update-ref', `refs/heads/${branch}`, commit, '0'.repeat(40)], { okCodes: [128] });
      return commit;
    },

    async defaultBranch(path) {
      const ref = (await run(path, ['symbolic-ref', '--quiet', 'HEAD'])).stdout.trim();
      if (!ref.startsWith('refs/heads/'))
        throw new GitError(`HEAD of ${path} names no branch`, ['git', 'symbolic-ref', 'HEAD'], null, '');
      return ref.slice('refs/heads/'.length);
    },

    async branchSha(path, branch) {
      if (!isSafeBranchName(branch)) return undefined;
      const result = await run(path, ['rev-parse', '--verify', '--quiet', `refs/heads/${branch}^{commit}`], {
        okCodes: [1],
      });
      const sha = result.stdout.trim();
      return result.code === 0 && SHA.test(sha) ? sha : undefined;
    },

    async diff(path, base, head, maxBytes) {
      if (!SHA.test(base) || !SHA.test(head)) throw new Error('diff takes commit ids');
      // Neutral: no external diff driver, textconv or colour a repository's config could name, and every
      // file as text (a `-diff` or `binary` attribute cannot hide a change from the reviewer); attributes
      // from the tree (git ≥ 2.42 reads HEAD's in a bare repository) point at the empty tree.
      const text = (
        await run(path, [
          '-c',
          'diff.external=',
          '-c',
          `attr.tree=${EMPTY_TREE}`,
          'diff',
          '--no-ext-diff',
          '--no-textconv',
          '--text',
          '--no-color',
          '--stat',
          '--patch',
          `${base}...${head}`,
        ])
      ).stdout;
      if (Buffer.byteLength(text, 'utf8') <= maxBytes) return text;
      return `${Buffer.from(text, 'utf8').subarray(0, maxBytes).toString('utf8')}\n[diff cut at ${maxBytes} bytes]`;
    },

    async fastForward(path, branch, from, to) {
      if (!isSafeBranchName(branch) || !SHA.test(from) || !SHA.test(to))
        throw new Error('fastForward takes a branch and commit ids');
      const ancestor = await run(path, ['merge-base', '--is-ancestor', from, to], { okCodes: [1] });
      if (ancestor.code !== 0) return 'not-fast-forward';
      // The old value makes it a compare-and-swap: a branch someone moved meanwhile is left alone.
      const moved = await run(path, ['update-ref', `refs/heads/${branch}`, to, from], { okCodes: [128] });
      return moved.code === 0 ? 'merged' : 'moved';
    },
  };
}
