import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { createShipgate } from '../../src/app/create-shipgate.js';
import { ConfigError, loadConfig } from '../../src/config/config.js';
import { createLogger } from '../../src/log.js';
import { TEST_AUDIT_KEY } from '../helpers/audit-key.js';
import { testPrefix } from '../helpers/ids.js';
import { createBubblewrapSandbox } from '../../src/adapters/sandbox/bubblewrap-sandbox.js';
import { createUnsandboxed } from '../../src/adapters/sandbox/unsandboxed.js';
import { SandboxUnavailableError } from '../../src/ports/sandbox.js';

/** The sandbox adapters on their own, with the real bwrap (SPEC §4). */

const workerUid = process.getuid?.() ?? 0;
const tree = mkdtempSync(join(tmpdir(), 'shipgate-sandbox-test-'));
writeFileSync(join(tree, 'hello.txt'), 'hello\n');
afterAll(() => rmSync(tree, { recursive: true, force: true }));

const request = (command: string, timeoutMs = 10_000) => ({ tree, command, timeoutMs, outputCapBytes: 64_000 });

describe('bubblewrap sandbox', () => {
  const sandbox = createBubblewrapSandbox({ workerUid });

  it('passes its start-up probe on this machine', async () => {
    await expect(sandbox.probe()).resolves.toBeUndefined();
    expect(sandbox).toMatchObject({ kind: 'bubblewrap', isolated: true });
  });

  it('runs as an unprivileged user with no capabilities, in its own PID namespace, seeing only the tree copy', async () => {
    const result = await sandbox.run(request('id -u; grep -E "^Cap(Eff|Prm|Bnd)" /proc/self/status; ls /proc | grep -c "^[0-9]"; pwd; cat hello.txt; ls /'));
    expect(result.exitCode).toBe(0);
    const lines = result.output.trim().split('\n');
    // As root the launcher drops to 65534 on the host; otherwise it keeps the worker's own (non-root) uid.
    expect(Number(lines[0])).not.toBe(0);
    expect(lines.slice(1, 4).every((line) => /\t0000000000000000$/.test(line))).toBe(true);
    // bwrap's init, the shell and grep/ls: a handful, never the host's processes.
    expect(Number(lines[4])).toBeLessThan(8);
    expect(lines[5]).toBe('/repo');
    expect(lines[6]).toBe('hello');
    expect(lines.slice(7).sort()).not.toContain('root');
    expect(lines.slice(7)).not.toContain('home');
  });

  it('enforces the memory limit', async () => {
    const small = createBubblewrapSandbox({ workerUid, limits: { memoryBytes: 256 * 1024 ** 2 } });
    const result = await small.run(request('node -e "const a = []; for (;;) a.push(Buffer.alloc(64 * 1024 * 1024, 1))"; echo "exit=$?"'));
    // Node cannot even reserve its heap, or dies allocating: either way a non-zero exit, not the host's memory.
    expect(result.output).toMatch(/exit=[1-9]/);
    expect(result.output).toMatch(/memory|Cannot allocate|RangeError/i);
  });

  it('denies the kernel keyring and nested user namespaces (seccomp filter, --disable-userns)', async () => {
    const keyctl = process.arch === 'arm64' ? 219 : 250;
    const result = await sandbox.run(request(`perl -e 'my $r = syscall(${keyctl}, 0, -3); print "keyctl=$r $!\\n"'; unshare -Ur true 2>/dev/null && echo NESTED-USERNS || echo no-nested-userns`));
    expect(result.output).toContain('keyctl=-1 Function not implemented');
    expect(result.output).toContain('no-nested-userns');
  });

  it('keeps /dev read-only and the private /tmp within its size', async () => {
    const small = createBubblewrapSandbox({ workerUid, limits: { tmpBytes: 1024 ** 2 } });
    const result = await small.run(request('echo x > /dev/fill 2>/dev/null || echo dev-ro; head -c 3000000 /dev/zero > /tmp/big 2>/dev/null || echo tmp-full; echo x > /dev/null && echo null-ok'));
    expect(result.output).toContain('dev-ro');
    expect(result.output).toContain('tmp-full');
    expect(result.output).toContain('null-ok');
  });

  it('stops a check that fills the disk, and removes even a copy built to resist removal', async () => {
    const parent = mkdtempSync(join(tmpdir(), 'shipgate-sandbox-parent-'));
    // The launcher runs as the sandbox user and must be able to reach the copy.
    chmodSync(parent, 0o711);
    try {
      const capped = createBubblewrapSandbox({ workerUid, scratchParent: parent, limits: { diskBytes: 20 * 1024 ** 2 } });
      const deep = 'for i in $(seq 1 30); do mkdir -p "$(printf %0200d 0)" && cd "$(printf %0200d 0)"; done; chmod 000 .; cd /repo';
      const result = await capped.run(request(`${deep}; for i in $(seq 1 100); do head -c 1000000 /dev/zero > /repo/f$i; sleep 0.05; done; echo WROTE-ALL`, 20_000));
      expect(result.output).not.toContain('WROTE-ALL');
      expect(result.output).toMatch(/shipgate stopped the check: it wrote more than 20 MiB to disk/);
      expect(readdirSync(parent)).toEqual([]);
    } finally {
      rmSync(parent, { recursive: true, force: true });
    }
  });

  it('shows no host path of the copy, even in /proc/self/mountinfo', async () => {
    const result = await sandbox.run(request('cat /proc/self/mountinfo'));
    expect(result.output).toContain(' /repo ');
    expect(result.output).not.toMatch(/shipgate-sandbox-/);
  });

  it('says how to fix a missing bubblewrap', async () => {
    const missing = createBubblewrapSandbox({ workerUid, bwrapPath: '/nonexistent/bwrap' });
    const error = await missing.probe().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(SandboxUnavailableError);
    expect((error as Error).message).toMatch(/apt-get install bubblewrap/);
    expect((error as Error).message).toMatch(/sandbox: none/);
  });
});

describe('start-up', () => {
  it('refuses to start a worker whose sandbox cannot run, naming the key and the fix', async () => {
    const config = loadConfig({ REDIS_URL: inject('redisUrl'), SHIPGATE_REDIS_PREFIX: testPrefix('sandbox-startup'), PORT: '0', LOG_LEVEL: 'silent', SHIPGATE_AUDIT_KEY: TEST_AUDIT_KEY }, { readFile: () => 'repos:\n  acme/shop: {}\n' });
    const log = createLogger({ level: 'silent', destination: new PassThrough() });
    const app = createShipgate({ config, log, console: { input: new PassThrough(), output: new PassThrough() }, sandbox: createBubblewrapSandbox({ workerUid, bwrapPath: '/nonexistent/bwrap' }) });
    try {
      const error = await app.start().catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ConfigError);
      expect((error as Error).message).toMatch(/sandbox: bubblewrap \(\/nonexistent\/bwrap\) is not installed\. Fix: install it/);
    } finally {
      await app.stop();
    }
  });
});

describe('sandbox: none', () => {
  it('is marked as not isolated and still works on a copy shown as /repo', async () => {
    const none = createUnsandboxed();
    expect(none).toMatchObject({ kind: 'none', isolated: false });
    const result = await none.run(request('pwd; cat hello.txt; echo x > hello.txt'));
    expect(result.output).toBe('/repo\nhello\n');
    expect(readFileSync(join(tree, 'hello.txt'), 'utf8')).toBe('hello\n');
  });
});
