import { chmodSync, existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import {
  AuditKeyFileError,
  auditKeyId,
  loadOrCreateLocalAuditKey,
  parseAuditKey,
  readLocalAuditKey,
} from '../../src/audit/audit-key.js';
import { createLogger } from '../../src/log.js';

/** Issue 7: the audit chain's HMAC key (SHIPGATE_AUDIT_KEY) and local mode's generated key file. */

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'shipgate-audit-key-'));
  dirs.push(dir);
  return dir;
}

describe('parseAuditKey', () => {
  it('decodes 64+ hex digits, so `openssl rand -hex 32` is a 32-byte key', () => {
    const hex = 'ab'.repeat(32);
    expect(parseAuditKey(hex)).toEqual({ ok: true, key: Buffer.from(hex, 'hex') });
    expect(parseAuditKey(` ${'CD'.repeat(40)}\n`)).toEqual({ ok: true, key: Buffer.from('cd'.repeat(40), 'hex') });
  });

  it('takes any other text of at least 32 bytes as its bytes (base64 of 32 bytes works)', () => {
    const base64 = Buffer.alloc(32, 7).toString('base64');
    expect(parseAuditKey(base64)).toEqual({ ok: true, key: Buffer.from(base64, 'utf8') });
    expect(parseAuditKey('correct horse battery staple, twice')).toMatchObject({ ok: true });
  });

  it.each([
    ['short text', 'changeme', /is 8 bytes long; at least 32 bytes/],
    ['31 bytes of text', 'x'.repeat(31), /is 31 bytes long/],
    ['hex holding only 20 bytes', 'ab'.repeat(20), /looks like hex but holds only 20 bytes/],
    ['an odd number of hex digits', 'a'.repeat(65), /an even count/],
  ])('refuses %s', (_case, value, reason) => {
    const parsed = parseAuditKey(value);
    expect(parsed.ok).toBe(false);
    if (!parsed.ok) expect(parsed.reason).toMatch(reason);
  });
});

describe('auditKeyId', () => {
  it('names a key with 16 hex digits that differ between keys and do not contain the key', () => {
    const key = Buffer.from('ab'.repeat(32), 'hex');
    expect(auditKeyId(key)).toMatch(/^[0-9a-f]{16}$/);
    expect(auditKeyId(key)).toBe(auditKeyId(Buffer.from(key)));
    expect(auditKeyId(key)).not.toBe(auditKeyId(Buffer.from('ac'.repeat(32), 'hex')));
    expect('ab'.repeat(32)).not.toContain(auditKeyId(key));
  });
});

describe('local audit key file', () => {
  it('is generated with mode 0600 in a new directory, then reused', () => {
    const path = join(tempDir(), '.shipgate', 'audit.key');
    const first = loadOrCreateLocalAuditKey(path);
    expect(first).toMatchObject({ path, created: true, readableByOthers: false });
    expect(first.key).toHaveLength(32);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(statSync(join(path, '..')).mode & 0o077).toBe(0);

    const again = loadOrCreateLocalAuditKey(path);
    expect(again).toMatchObject({ created: false });
    expect(again.key.equals(first.key)).toBe(true);
    // No leftovers of the write-aside-then-link creation.
    expect(existsSync(`${path}.tmp`)).toBe(false);
  });

  it('is only read, never created, by readLocalAuditKey', () => {
    const path = join(tempDir(), '.shipgate', 'audit.key');
    expect(readLocalAuditKey(path)).toBeUndefined();
    expect(existsSync(path)).toBe(false);
  });

  it('reports a file readable by others, and refuses one that holds no usable key', () => {
    const dir = tempDir();
    const loose = join(dir, 'loose.key');
    writeFileSync(loose, `${'ef'.repeat(32)}\n`);
    chmodSync(loose, 0o644);
    expect(readLocalAuditKey(loose)).toMatchObject({ readableByOthers: true });

    const bad = join(dir, 'bad.key');
    writeFileSync(bad, 'short\n', { mode: 0o600 });
    expect(() => loadOrCreateLocalAuditKey(bad)).toThrow(AuditKeyFileError);
    expect(() => loadOrCreateLocalAuditKey(bad)).toThrow(/bad\.key does not hold a usable key: it is 5 bytes long/);
  });
});

describe('logging', () => {
  it('redacts the audit key and REDIS_URL (which may carry a password) in logged config objects', async () => {
    const destination = new PassThrough();
    let raw = '';
    destination.on('data', (chunk: Buffer) => {
      raw += chunk.toString();
    });
    const log = createLogger({ level: 'info', destination });
    const key = Buffer.from('ab'.repeat(32), 'hex');
    log.info(
      { config: { redisUrl: 'redis://:s3cret-pw@redis:6379', auditKey: { kind: 'env', key } } },
      'config loaded',
    );
    log.info({ redisUrl: 'redis://shipgate:s3cret-pw@redis:6379', auditKey: 'ab'.repeat(32) }, 'top level');
    await new Promise((r) => setImmediate(r));
    expect(raw).not.toContain('s3cret-pw');
    expect(raw).not.toContain('abababab');
    expect(raw).toContain('"redisUrl":"[REDACTED]"');
  });
});
