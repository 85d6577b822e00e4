import picomatch from 'picomatch';

/**
 * Paths no tool may write and no diff may touch (SPEC §4): the gates the agent
 * must never edit (workflows, composite actions, code owners), the policy file,
 * and git's own internals (hooks and config there would run with the bot's
 * identity on the next git command).
 */
export const BUILT_IN_PROTECTED: readonly string[] = [
  '.github/workflows/**',
  '.github/actions/**',
  'CODEOWNERS',
  '.github/CODEOWNERS',
  'docs/CODEOWNERS',
  'shipgate.yaml',
  '.shipgate.yaml',
  '.git/**',
  '.git',
  // Submodules: a changed URL or pinned commit pulls code from elsewhere into the build.
  '.gitmodules',
  // The pipelines of the other common CI systems: the agent never edits its own gates, whichever they are.
  '.gitlab-ci.yml',
  '.gitlab/ci/**',
  'Jenkinsfile',
  '.circleci/**',
  '.buildkite/**',
  'azure-pipelines.yml',
  '.azure-pipelines/**',
  'bitbucket-pipelines.yml',
  '.travis.yml',
  '.drone.yml',
  '.woodpecker.yml',
  '.woodpecker/**',
  '.gitea/workflows/**',
  '.forgejo/workflows/**',
  '.tekton/**',
];

export interface ProtectedPaths {
  /** True when the repo-relative path (or, for a directory pattern, the directory itself) is protected. */
  isProtected(relativePath: string): boolean;
  /** Every pattern in force: the built-in list followed by the repository's `protectedPaths`. */
  readonly patterns: string[];
}

/**
 * Canonical repo-relative form: `/`-separated, no `./` segments, no duplicate
 * or leading/trailing slashes. `..` is left in place (and then matches no
 * pattern): resolving it is the job of repo-files, which refuses it outright.
 */
export function normaliseRelativePath(path: string): string {
  return path
    .split('/')
    .filter((segment) => segment !== '' && segment !== '.')
    .join('/');
}

/**
 * Patterns are matched with picomatch against the path from the repository root
 * (anchored, like the policy file's examples: `deploy/**`, not gitignore-style
 * "anywhere"). Case-sensitive, as git and GitHub are; on a case-insensitive
 * filesystem repo-files also checks the canonical (realpath) spelling.
 */
export function createProtectedPaths(extra: readonly string[]): ProtectedPaths {
  const patterns = [...BUILT_IN_PROTECTED, ...extra].map(normaliseRelativePath).filter((p) => p !== '');
  const matchers = patterns.flatMap((pattern) => {
    // `deploy/**` must also protect `deploy` itself (deleting or replacing the directory
    // is an edit of everything in it), and a bare `deploy` protects what is inside it.
    const variants = new Set([pattern]);
    if (pattern.endsWith('/**')) variants.add(pattern.slice(0, -3));
    else variants.add(`${pattern}/**`);
    return [...variants].map((variant) => picomatch(variant, { dot: true }));
  });
  return {
    patterns,
    isProtected(relativePath: string): boolean {
      const path = normaliseRelativePath(relativePath);
      if (path === '') return false;
      return matchers.some((match) => match(path));
    },
  };
}
