import { TEST_AUDIT_KEY } from './audit-key.js';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { afterAll } from 'vitest';

/** The repository root: spawned shipgate processes run from here, as `npm start` would. */
export const ROOT = resolve(import.meta.dirname, '../..');

export interface ShipgateProcess {
  child: ChildProcessWithoutNullStreams;
  /** Everything written to stdout so far. */
  stdout(): string;
  stderr(): string;
  /** Resolves when stdout matches; rejects with the output so far on timeout or exit. */
  waitForOutput(pattern: RegExp, timeoutMs?: number): Promise<RegExpExecArray>;
  exited: Promise<number | null>;
}

/** Folders this module made under the temp dir that outlive a process (policy files): removed after the test file. */
const leftovers = new Set<string>();
// Registered when a test file imports this module, so it runs after that file's tests.
afterAll(() => {
  for (const dir of leftovers) rmSync(dir, { recursive: true, force: true });
  leftovers.clear();
});

/** Writes a policy file into a fresh temp folder (removed when the test worker exits; or call removePolicyFile). */
export function writePolicyFile(text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'shipgate-policy-'));
  leftovers.add(dir);
  const path = join(dir, 'shipgate.yaml');
  writeFileSync(path, text);
  return path;
}

/** Removes a file written by writePolicyFile, with its folder. */
export function removePolicyFile(path: string): void {
  const dir = dirname(path);
  if (!leftovers.delete(dir)) return;
  rmSync(dir, { recursive: true, force: true });
}

/** How to start the process: by default `src/main.ts` from the repository root, as `npm start` does. */
export interface SpawnOptions {
  /** Node's arguments (default `--import tsx src/main.ts`; the compiled entry is `dist/src/main.js`). */
  args?: readonly string[];
  /** The working directory (default the repository root). */
  cwd?: string;
}

/** Spawns `src/main.ts` the way `npm start` runs it (or what `options` name), with exactly the given environment. */
export function spawnShipgate(env: Record<string, string>, options: SpawnOptions = {}): ShipgateProcess {
  const home = mkdtempSync(join(tmpdir(), 'shipgate-home-'));
  const child = spawn(process.execPath, options.args ?? ['--import', 'tsx', 'src/main.ts'], {
    cwd: options.cwd ?? ROOT,
    // A fixed audit key, so that a console-mode process never generates one into the checkout.
    // A throwaway HOME too: a developer's ~/.kube/config must never be what a test process watches.
    env: { PATH: process.env.PATH ?? '', HOME: home, SHIPGATE_AUDIT_KEY: TEST_AUDIT_KEY, ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (err += chunk.toString()));
  const exited = new Promise<number | null>((resolveExit) =>
    child.once('exit', (code) => {
      rmSync(home, { recursive: true, force: true });
      resolveExit(code);
    }),
  );
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    exited,
    waitForOutput(pattern, timeoutMs = 20_000) {
      return new Promise((resolveMatch, reject) => {
        const check = () => {
          const match = pattern.exec(out);
          if (match !== null) {
            cleanup();
            resolveMatch(match);
          }
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`timed out waiting for ${String(pattern)}\n--- stdout ---\n${out}\n--- stderr ---\n${err}`));
        }, timeoutMs);
        const onExit = () => {
          cleanup();
          reject(new Error(`shipgate exited before printing ${String(pattern)}\n--- stdout ---\n${out}\n--- stderr ---\n${err}`));
        };
        const cleanup = () => {
          clearTimeout(timer);
          child.stdout.off('data', check);
          child.off('exit', onExit);
        };
        child.stdout.on('data', check);
        child.once('exit', onExit);
        check();
      });
    },
  };
}

/** Polls GET /healthz until the process serves HTTP (a cold tsx start on a loaded 2-core machine can take 20 s). */
export async function waitForHealthy(port: number, timeoutMs = 40_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const response = await fetch(`http://127.0.0.1:${port}/healthz`);
      if (response.ok) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`shipgate on port ${port} did not become healthy`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** SIGKILLs every process still running and waits for each to exit. */
export async function killAll(processes: readonly ShipgateProcess[]): Promise<void> {
  for (const p of processes) {
    if (p.child.exitCode === null && p.child.signalCode === null) {
      p.child.kill('SIGKILL');
      await p.exited;
    }
  }
}
