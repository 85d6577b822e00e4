import { lstat, realpath } from 'node:fs/promises';
import { realpathSync } from 'node:fs';
import { basename, dirname, join, posix, relative, sep } from 'node:path';
import { isDotGitName } from '../git/dot-git-name.js';
import type { ProtectedPaths } from './protected-paths.js';

/** Where the model sees the repository (SPEC §4): stable across runs, so prompts cache and never leak worker paths. */
export const VIRTUAL_ROOT = '/repo';

/**
 * A tool call the bot refuses. The message is written for the model (it becomes
 * an `is_error` tool result) and names paths only as `/repo/...`.
 */
export class ToolRefusal extends Error {
  override name = 'ToolRefusal';
}

export type PathIntent = 'read' | 'write';

export interface ResolvedPath {
  /** Absolute path on the worker's disk, symlinks in existing components resolved. Never show it to the model. */
  realPath: string;
  /** Repo-relative path as requested (normalised); '' for the root. */
  relativePath: string;
  /** `/repo/...` form of `relativePath`, for messages to the model. */
  virtualPath: string;
}

export interface RepoFiles {
  /** Real path of the repository root (symlinks resolved). For the tools' own use, never for the model. */
  readonly realRoot: string;
  resolve(path: string, intent: PathIntent): Promise<ResolvedPath>;
  /** `/repo/<relative>` for a repo-relative path. */
  toVirtual(relativePath: string): string;
  /** Replaces every spelling of the real root in `text` with `/repo`, for text that came from the disk or a process. */
  redact(text: string): string;
}

function isGitInternal(relativePath: string): boolean {
  // Any `.git` component, not just the top one: submodules and worktrees have their own, and
  // hooks in any of them run on the bot's git commands. Every spelling a filesystem may take for
  // `.git` (`.GIT`, `.git.`, `git~1`, ...): on such a filesystem it is the same directory, and git
  // refuses to add such a path, so a file written there would break every later commit of the tree.
  return relativePath.split('/').some(isDotGitName);
}

function errorCode(error: unknown): string | undefined {
  if (typeof error === 'object' && error !== null && 'code' in error && typeof error.code === 'string') {
    return error.code;
  }
  return undefined;
}

function toPosix(path: string): string {
  return sep === '/' ? path : path.split(sep).join('/');
}

export function createRepoFiles(options: { root: string; protectedPaths: ProtectedPaths }): RepoFiles {
  const { protectedPaths } = options;
  // Resolved once: the workspace root itself may sit behind a symlink (e.g. /tmp on macOS).
  const realRoot = realpathSync.native(options.root);
  const rootSpellings = [...new Set([realRoot, options.root.replace(/\/+$/, '')])]
    .filter((spelling) => spelling.length > 1)
    .sort((a, b) => b.length - a.length);

  const toVirtual = (relativePath: string): string =>
    relativePath === '' ? VIRTUAL_ROOT : `${VIRTUAL_ROOT}/${relativePath}`;

  /** Virtual path → repo-relative path; refuses anything that is not under /repo once normalised. */
  function toRelative(path: string): string {
    if (path.includes('\0')) throw new ToolRefusal('Refused: the path contains a NUL byte.');
    if (path.trim() === '')
      throw new ToolRefusal(`Refused: the path is empty; use ${VIRTUAL_ROOT} or a path under it.`);
    // Relative paths resolve against /repo; normalising before the prefix check is what
    // defeats `/repo/../etc` and `../../etc/passwd`.
    const absolute = posix.normalize(path.startsWith('/') ? path : `${VIRTUAL_ROOT}/${path}`).replace(/\/+$/, '');
    if (absolute === VIRTUAL_ROOT) return '';
    if (!absolute.startsWith(`${VIRTUAL_ROOT}/`)) {
      throw new ToolRefusal(
        `Refused: ${absolute === '' ? '/' : absolute} is outside the repository. Only paths under ${VIRTUAL_ROOT} can be used.`,
      );
    }
    return absolute.slice(VIRTUAL_ROOT.length + 1);
  }

  /**
   * Real path of `candidate`: the deepest existing ancestor resolved with realpath
   * (following every symlink on the way), plus the components that do not exist yet.
   */
  async function realPathOf(candidate: string, virtualPath: string): Promise<string> {
    const missing: string[] = [];
    let current = candidate;
    for (;;) {
      try {
        const resolved = await realpath(current);
        return missing.length === 0 ? resolved : join(resolved, ...missing.reverse());
      } catch (error) {
        const code = errorCode(error);
        if (code === 'ELOOP') throw new ToolRefusal(`Refused: ${virtualPath} goes through a symbolic link loop.`);
        if (code !== 'ENOENT' && code !== 'ENOTDIR') {
          throw new ToolRefusal(`Refused: ${virtualPath} cannot be resolved (${code ?? 'unknown error'}).`);
        }
      }
      // realpath failed: either `current` does not exist, or it is a symlink whose target does
      // not. Writing through a dangling link would create its target wherever it points.
      const isDanglingLink = await lstat(current).then(
        (stats) => stats.isSymbolicLink(),
        () => false,
      );
      if (isDanglingLink) {
        throw new ToolRefusal(`Refused: ${virtualPath} goes through a symbolic link whose target does not exist.`);
      }
      if (current === realRoot || current === dirname(current)) {
        throw new ToolRefusal(`Refused: the repository root is not available.`);
      }
      missing.push(basename(current));
      current = dirname(current);
    }
  }

  return {
    realRoot,
    toVirtual,
    redact(text: string): string {
      let result = text;
      for (const spelling of rootSpellings) result = result.split(spelling).join(VIRTUAL_ROOT);
      return result;
    },
    async resolve(path: string, intent: PathIntent): Promise<ResolvedPath> {
      const relativePath = toRelative(path);
      const virtualPath = toVirtual(relativePath);
      if (isGitInternal(relativePath)) {
        throw new ToolRefusal(
          `Refused: ${virtualPath} is inside .git; git internals are managed by shipgate, not by tools.`,
        );
      }
      if (intent === 'write') {
        if (relativePath === '')
          throw new ToolRefusal(`Refused: ${VIRTUAL_ROOT} is the repository root directory, not a file.`);
        if (protectedPaths.isProtected(relativePath)) {
          throw new ToolRefusal(
            `Refused: ${virtualPath} is a protected path (the pipeline's own gates, the policy file or a path the repository protects). No tool can change it; leave it as it is.`,
          );
        }
      }

      const realPath = await realPathOf(join(realRoot, ...relativePath.split('/')), virtualPath);
      const realRelative = relative(realRoot, realPath);
      if (realRelative === '..' || realRelative.startsWith(`..${sep}`) || realRelative.startsWith(sep)) {
        throw new ToolRefusal(
          `Refused: ${virtualPath} resolves outside the repository through a symbolic link. Only files inside ${VIRTUAL_ROOT} can be used.`,
        );
      }
      // A symlink inside the repository may lead to a protected file or into .git: the checks
      // above looked at the name the model used, these look at where the bytes really are.
      const canonical = toPosix(realRelative);
      if (isGitInternal(canonical)) {
        throw new ToolRefusal(
          `Refused: ${virtualPath} leads into .git through a symbolic link; git internals are off limits.`,
        );
      }
      if (intent === 'write' && canonical !== relativePath && protectedPaths.isProtected(canonical)) {
        throw new ToolRefusal(
          `Refused: ${virtualPath} leads to the protected path ${toVirtual(canonical)} through a symbolic link. No tool can change it.`,
        );
      }
      if (intent === 'write' && canonical === '') {
        throw new ToolRefusal(`Refused: ${virtualPath} is the repository root directory, not a file.`);
      }
      return { realPath, relativePath, virtualPath };
    },
  };
}

/** Largest file a tool writes (and that search or edits read): bigger files are generated or data, not code to edit. */
export const MAX_FILE_BYTES = 1024 * 1024;

/** Largest tool result text; more would crowd the context window for little use. */
export const MAX_OUTPUT_CHARS = 16_000;

/**
 * Text of a file, or undefined when it is binary: a NUL byte (git's own test)
 * or bytes that are not UTF-8. A byte-order mark is kept so that an edit
 * writes it back.
 */
export function decodeText(bytes: Uint8Array): string | undefined {
  if (bytes.includes(0)) return undefined;
  try {
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    return undefined;
  }
}

/** Cuts `text` to `max` characters (at a line break when one is near) with a note saying how much is missing and what to do. */
export function truncateOutput(text: string, max: number, hint: string): string {
  if (text.length <= max) return text;
  let cut = text.lastIndexOf('\n', max);
  if (cut < max / 2) cut = max;
  const omitted = text.length - cut;
  return `${text.slice(0, cut)}\n[output truncated: ${omitted} more characters; ${hint}]`;
}

/**
 * A filesystem error in words for the model. Node's own messages contain the
 * real path, so only the error code is used.
 */
export function describeFsError(error: unknown, virtualPath: string): string {
  const code = errorCode(error);
  switch (code) {
    case 'ENOENT':
      return `${virtualPath} does not exist.`;
    case 'ENOTDIR':
      return `a parent of ${virtualPath} is a file, not a directory.`;
    case 'EISDIR':
      return `${virtualPath} is a directory.`;
    case 'EEXIST':
      return `${virtualPath} (or one of its parents) already exists as a different kind of entry.`;
    case 'EACCES':
    case 'EPERM':
      return `permission denied for ${virtualPath}.`;
    case 'ENOSPC':
      return 'the workspace disk is full.';
    case 'ENAMETOOLONG':
      return `the path ${virtualPath} is too long.`;
    default:
      return `an unexpected error (${code ?? (error instanceof Error ? error.name : 'unknown')}) occurred on ${virtualPath}.`;
  }
}
