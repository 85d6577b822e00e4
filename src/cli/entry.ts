import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/**
 * Whether the module at `moduleUrl` is the process's entry (`npm run audit-log`, `node dist/…`)
 * rather than imported (tests). Node reports the main module by its real path while argv[1] keeps
 * the path as typed, so a checkout or image reached through a symbolic link must compare real paths.
 */
export function isEntryModule(entry: string | undefined, moduleUrl: string): boolean {
  if (entry === undefined) return false;
  const self = fileURLToPath(moduleUrl);
  if (entry === self) return true;
  try {
    return realpathSync(entry) === self;
  } catch {
    return false;
  }
}
