import { createHmac, randomBytes } from 'node:crypto';
import { linkSync, mkdirSync, readFileSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

/**
 * The audit chain's HMAC key (SPEC §7, `SHIPGATE_AUDIT_KEY`). Redis never
 * holds it, so someone who can write to Redis cannot re-hash a rewritten log.
 *
 * Accepted forms of the value (after trimming):
 *   - 64 or more hex digits, even count: decoded, so `openssl rand -hex 32` gives a 32-byte key;
 *   - anything else of at least 32 bytes (UTF-8): used as its bytes (`openssl rand -base64 32` works).
 * A hex-only value shorter than 64 digits is refused: it holds fewer than 32 bytes of secret.
 */

export const MIN_AUDIT_KEY_BYTES = 32;

/** The HMAC the chain uses; recorded in every event as `alg`. */
export const AUDIT_CHAIN_ALG = 'hmac-sha256';

export type ParsedAuditKey = { ok: true; key: Buffer } | { ok: false; reason: string };

export function parseAuditKey(value: string): ParsedAuditKey {
  const text = value.trim();
  if (/^[0-9a-fA-F]+$/.test(text)) {
    if (text.length % 2 === 0 && text.length >= MIN_AUDIT_KEY_BYTES * 2)
      return { ok: true, key: Buffer.from(text, 'hex') };
    return {
      ok: false,
      reason: `looks like hex but holds only ${Math.floor(text.length / 2)} bytes; at least ${MIN_AUDIT_KEY_BYTES} bytes (${MIN_AUDIT_KEY_BYTES * 2} hex digits, an even count) are needed`,
    };
  }
  const key = Buffer.from(text, 'utf8');
  if (key.length < MIN_AUDIT_KEY_BYTES) {
    return {
      ok: false,
      reason: `is ${key.length} bytes long; at least ${MIN_AUDIT_KEY_BYTES} bytes of secret are needed`,
    };
  }
  return { ok: true, key };
}

/**
 * A short public name of a key, stored in every event (`keyId`), so that
 * verifying with the wrong key says so instead of calling every event altered.
 * It is itself an HMAC, so it reveals nothing usable about the key.
 */
export function auditKeyId(key: Uint8Array): string {
  return createHmac('sha256', key).update('shipgate audit key id').digest('hex').slice(0, 16);
}

/** The local key file exists but does not hold a usable key. */
export class AuditKeyFileError extends Error {
  constructor(
    readonly path: string,
    message: string,
  ) {
    super(message);
    this.name = 'AuditKeyFileError';
  }
}

export interface LocalAuditKey {
  key: Buffer;
  path: string;
  /** True when this call generated the file. */
  created: boolean;
  /** True when group or others may read the file (it should be 0600). */
  readableByOthers: boolean;
}

function errorCode(error: unknown): string | undefined {
  if (error instanceof Error && 'code' in error && typeof error.code === 'string') return error.code;
  return undefined;
}

/** Reads the local key file; undefined when it does not exist. Never creates one (the audit CLI uses this). */
export function readLocalAuditKey(path: string): Omit<LocalAuditKey, 'created'> | undefined {
  let text: string;
  let mode: number;
  try {
    text = readFileSync(path, 'utf8');
    mode = statSync(path).mode;
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return undefined;
    throw new AuditKeyFileError(
      path,
      `cannot read the audit key file ${path}: ${error instanceof Error ? error.message : String(error)}`,
    );
  }
  const parsed = parseAuditKey(text);
  if (!parsed.ok)
    throw new AuditKeyFileError(path, `the audit key file ${path} does not hold a usable key: it ${parsed.reason}`);
  return { key: parsed.key, path, readableByOthers: (mode & 0o077) !== 0 };
}

/**
 * Local mode only: the key in `path`, generated (32 random bytes as hex, mode
 * 0600, directory created 0700) when the file does not exist yet. Safe when
 * several processes start at once: the file appears complete or not at all
 * (written aside, then hard-linked into place), and the loser reads the winner's key.
 */
export function loadOrCreateLocalAuditKey(path: string): LocalAuditKey {
  const existing = readLocalAuditKey(path);
  if (existing !== undefined) return { ...existing, created: false };

  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const aside = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  writeFileSync(aside, `${randomBytes(MIN_AUDIT_KEY_BYTES).toString('hex')}\n`, { mode: 0o600, flag: 'wx' });
  let created = true;
  try {
    linkSync(aside, path);
  } catch (error) {
    if (errorCode(error) !== 'EEXIST') throw error;
    created = false;
  } finally {
    unlinkSync(aside);
  }
  const stored = readLocalAuditKey(path);
  if (stored === undefined)
    throw new AuditKeyFileError(path, `the audit key file ${path} vanished right after it was created`);
  return { ...stored, created };
}
