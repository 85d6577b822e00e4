import { loadOrCreateLocalAuditKey, type LocalAuditKey } from '../audit/audit-key.js';
import { ConfigError, type AuditKeySource } from '../config/config.js';
import type { Logger } from '../log.js';

/**
 * The audit chain's key: SHIPGATE_AUDIT_KEY, or in local mode the key file,
 * generated on first start (config only names the file; the I/O is here).
 * A key that cannot be used stops the start-up with a ConfigError, before any connection is opened.
 */
export function resolveAuditKey(source: AuditKeySource, log: Logger): Buffer {
  if (source.kind === 'env') return source.key;
  let local: LocalAuditKey;
  try {
    local = loadOrCreateLocalAuditKey(source.path);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new ConfigError([
      `SHIPGATE_AUDIT_KEY: is unset and the local audit key cannot be used (${reason}). Fix: set SHIPGATE_AUDIT_KEY, or repair ${source.path} (deleting it makes a new key, and the existing audit log then fails verification)`,
    ]);
  }
  if (local.created) log.warn({ path: local.path }, 'SHIPGATE_AUDIT_KEY is unset: generated a local audit key');
  else log.info({ path: local.path }, 'SHIPGATE_AUDIT_KEY is unset: using the local audit key');
  if (local.readableByOthers)
    log.warn({ path: local.path }, 'the local audit key file is readable by other users: chmod 600 it');
  return local.key;
}
