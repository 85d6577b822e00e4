/**
 * Whether one segment of a path names the repository's `.git` on some filesystem. git itself
 * refuses such a segment anywhere in a path it is asked to add or check out (core.protectNTFS and
 * core.protectHFS are on by default): an exact `.git` in any case, `.git` with trailing spaces or
 * dots or an NTFS stream suffix (`.git.`, `.GIT `, `.git::$INDEX_ALLOCATION`), the NTFS short name
 * (`git~1`), and `.git` with code points HFS+ ignores inside it (`.g\u200Cit`). A tool that let such
 * a name into the tree would leave a file git cannot add: every later `git add` of the workspace
 * fails, and on such a filesystem the name would reach the real git directory.
 *
 * This rule is git's, stated here independently and a little wider (any short-name number, the
 * ignorable code points removed before the NTFS rule too): refusing a few more names costs nothing,
 * missing one breaks the workspace.
 */

/** Code points HFS+ drops when it compares names: joiners, directional marks, deprecated format characters, the BOM. */
const HFS_IGNORABLE = /[\u200C-\u200F\u202A-\u202E\u206A-\u206F\uFEFF]/gu;

/** After `.git` or `git~N`: only spaces and dots, then the end or an NTFS stream (`:`...). */
const DOT_GIT_ALIAS = /^(?:\.git|git~[0-9]+)[. ]*(?::.*)?$/isu;

export function isDotGitName(segment: string): boolean {
  // NTFS also ends a name at a backslash, and git (protectNTFS) checks each part between them:
  // `a\.git` and `.git\x` are refused as surely as `.git` itself.
  return segment
    .replace(HFS_IGNORABLE, '')
    .split('\\')
    .some((part) => DOT_GIT_ALIAS.test(part));
}
