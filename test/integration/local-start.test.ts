import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { z } from 'zod';
import { startAnthropicServer } from '../helpers/anthropic-server.js';
import { eventually } from '../helpers/eventually.js';
import { testPrefix } from '../helpers/ids.js';
import { killAll, removePolicyFile, spawnShipgate, writePolicyFile, type ShipgateProcess } from '../helpers/process.js';

/**
 * The first minutes of local mode (SPEC §8), in spawned `src/main.ts` processes: `.env` is read,
 * one summary says what is configured and what is not, end of input is a clean stop (also when
 * many start at once), a request names what its gate is missing, and two console sessions never
 * share a duplicate-request key.
 */

const POLICY = 'repos:\n  acme/shop:\n    checks: { test: npm test }\n';
/** What the default shipgate.yaml serves, next to the policy file (its path is relative to it). */
const DEMO_POLICY = 'repos:\n  demo/shop:\n    path: ./repos/shop.git\n    sample: true\n    checks: { test: node --test }\n    ci: { test: node --test }\n';
const logLineSchema = z.looseObject({ level: z.string(), msg: z.string() });

const processes: ShipgateProcess[] = [];
const folders: string[] = [];
const policies: string[] = [];

afterEach(async () => {
  await killAll(processes.splice(0));
  for (const dir of folders.splice(0)) rmSync(dir, { recursive: true, force: true });
  for (const path of policies.splice(0)) removePolicyFile(path);
});

function policyFile(): string {
  const path = writePolicyFile(POLICY);
  policies.push(path);
  return path;
}

function start(env: Record<string, string>): ShipgateProcess {
  const p = spawnShipgate({ REDIS_URL: inject('redisUrl'), PORT: '0', LOG_LEVEL: 'info', ...env });
  processes.push(p);
  return p;
}

function logs(p: ShipgateProcess): z.infer<typeof logLineSchema>[] {
  return p
    .stderr()
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => logLineSchema.parse(JSON.parse(line)));
}

async function printedAfter(p: ShipgateProcess, from: number, pattern: RegExp, description: string, timeoutMs = 30_000): Promise<RegExpExecArray> {
  try {
    return await eventually(async () => pattern.exec(p.stdout().slice(from)) ?? undefined, description, timeoutMs);
  } catch (error) {
    throw new Error(`${error instanceof Error ? error.message : String(error)}\n--- stdout ---\n${p.stdout()}\n--- stderr ---\n${p.stderr()}`, { cause: error });
  }
}

/** Exit code and stderr once the process ended; a crash shows as a non-zero code or an unhandled error. */
async function ended(p: ShipgateProcess): Promise<{ code: number | null; stderr: string }> {
  const code = await p.exited;
  return { code, stderr: p.stderr() };
}

describe('local start', { timeout: 180_000 }, () => {
  it('reads the .env file, the real environment winning, and says which file it read and what is configured', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'shipgate-envfile-'));
    folders.push(dir);
    const envFile = join(dir, '.env');
    // The file sets the model key (only there) and a model id the real environment overrides.
    writeFileSync(envFile, ['# a comment', 'ANTHROPIC_API_KEY=sk-ant-from-the-file', 'SHIPGATE_MODEL=model-from-the-file', 'LOG_LEVEL=silent', ''].join('\n'));
    const p = start({ SHIPGATE_ENV_FILE: envFile, SHIPGATE_MODEL: 'model-from-the-environment', SHIPGATE_CONFIG: policyFile(), SHIPGATE_REDIS_PREFIX: testPrefix('envfile') });
    await p.waitForOutput(/console chat — you are ULOCAL/, 60_000);
    p.child.stdin.end();
    const { code } = await ended(p);
    expect(code).toBe(0);

    const lines = logs(p);
    // LOG_LEVEL=silent from the file lost to the real LOG_LEVEL=info: the logs are there.
    expect(lines.find((line) => line.msg === 'environment file read')).toMatchObject({ envFile });
    const summary = lines.find((line) => line.msg === 'configuration summary');
    expect(summary?.['chat']).toMatch(/^configured: console/);
    expect(summary?.['forge']).toMatch(/^not configured: set GITHUB_TOKEN or a GitHub App \(GITHUB_APP_ID, GITHUB_APP_PRIVATE_KEY\)/);
    expect(summary?.['model']).toMatch(/^configured: model-from-the-environment \(SHIPGATE_MODEL\) via ANTHROPIC_API_KEY/);
    expect(summary?.['cluster']).toMatch(/^not needed: no pipeline/);
    expect(summary?.['sandbox']).toMatch(/^configured: bubblewrap/);
    // The key itself is a secret: never in the logs.
    expect(p.stderr()).not.toContain('sk-ant-from-the-file');
    // The person at the console reads the same, before the chat starts.
    const block = /shipgate setup \(read (.+)\):\n((?: {2}.+\n)+)/.exec(p.stdout());
    expect(block?.[1]).toBe(envFile);
    expect(block?.[2]).toMatch(/^ {2}-- forge {4}not configured: set GITHUB_TOKEN/m);
    expect(block?.[2]).toMatch(/^ {2}ok model {4}model-from-the-environment/m);
  });

  it('names a SHIPGATE_ENV_FILE that does not exist (exit 78) and starts without .env otherwise', async () => {
    const p = start({ SHIPGATE_ENV_FILE: '/nonexistent/shipgate.env', SHIPGATE_CONFIG: policyFile() });
    expect((await ended(p)).code).toBe(78);
    expect(p.stderr()).toContain('SHIPGATE_ENV_FILE: there is no file /nonexistent/shipgate.env');
  });

  it('stops cleanly at end of input, eight tries: exit 0, no unhandled rejection', async () => {
    const policy = policyFile();
    // Two at a time: eight at once starve the other test files' processes on a small machine.
    for (let batch = 0; batch < 4; batch += 1) {
      const pair = [0, 1].map((i) => start({ SHIPGATE_CONFIG: policy, SHIPGATE_REDIS_PREFIX: testPrefix(`eof-${batch}-${i}`) }));
      // As `npm start </dev/null` under compose: the input is closed before anything is read.
      for (const p of pair) p.child.stdin.end();
      const results = await Promise.all(pair.map((p) => ended(p)));
      for (const { code, stderr } of results) {
        expect(stderr).not.toMatch(/Connection is closed|Unhandled|unhandled rejection|unclean shutdown/);
        expect(code).toBe(0);
      }
      for (const p of pair) expect(logs(p).map((line) => line.msg)).toContain('shipgate stopped');
    }
  });

  it('with only ANTHROPIC_API_KEY, a request driven through stdin waits at agent naming GITHUB_TOKEN; closing the input stops cleanly', async () => {
    const p = start({ ANTHROPIC_API_KEY: 'sk-ant-not-real', SHIPGATE_CONFIG: policyFile(), SHIPGATE_REDIS_PREFIX: testPrefix('only-model') });
    await p.waitForOutput(/console chat — you are ULOCAL/, 60_000);
    const mark = p.stdout().length;
    p.child.stdin.write('/ship acme/shop add a /healthz endpoint\n');
    await printedAfter(p, mark, /\(only you can see this\) Queued run (sg-[a-z0-9]{8}) on acme\/shop/, 'the ack');
    const line = await printedAfter(p, mark, /^\S+ agent — not configured: ([^\n]*)$/m, 'the card at agent, not configured');
    expect(line[1]).toMatch(/^needs GITHUB_TOKEN or a GitHub App \(GITHUB_APP_ID, GITHUB_APP_PRIVATE_KEY\), or a repository with a local path: in the policy$/);
    // The model is configured, so it is not named as missing.
    expect(line[1]).not.toContain('ANTHROPIC');
    p.child.stdin.end();
    const { code, stderr } = await ended(p);
    expect(stderr).not.toMatch(/Connection is closed|Unhandled|unhandled rejection|unclean shutdown/);
    expect(code).toBe(0);
  });

  it('two console sessions one after the other on one Redis prefix never take a new request for a duplicate', async () => {
    const prefix = testPrefix('two-sessions');
    const policy = policyFile();
    const runIds: string[] = [];
    for (const task of ['add a /healthz endpoint', 'fix the footer']) {
      const p = start({ SHIPGATE_CONFIG: policy, SHIPGATE_REDIS_PREFIX: prefix });
      await p.waitForOutput(/console chat — you are ULOCAL/, 60_000);
      const mark = p.stdout().length;
      p.child.stdin.write(`/ship acme/shop ${task}\n`);
      const ack = await printedAfter(p, mark, /\(only you can see this\) ([^\n]*)/, 'the answer');
      expect(ack[1]).not.toMatch(/already queued/);
      runIds.push(/Queued run (sg-[a-z0-9]{8})/.exec(ack[1] ?? '')?.[1] ?? '');
      p.child.stdin.end();
      expect((await ended(p)).code).toBe(0);
    }
    expect(runIds[0]).toMatch(/^sg-/);
    expect(runIds[1]).toMatch(/^sg-/);
    expect(runIds[1]).not.toBe(runIds[0]);
  });

  it('the ten-minute path: /ship demo/shop in the console runs agent → local pull request → local CI → merge to done; without a model it names ANTHROPIC_API_KEY', async () => {
    const model = await startAnthropicServer({ apiKey: 'sk-ant-scripted' });
    try {
      model.script(
        { content: [{ type: 'tool_use', id: 't1', name: 'str_replace_based_edit_tool', input: { command: 'str_replace', path: '/repo/src/app.js', old_str: "  '/products':", new_str: "  '/healthz': () => ({ status: 200, body: { ok: true } }),\n  '/products':" } }] },
        { content: [{ type: 'text', text: 'Added GET /healthz.' }] },
      );
      const policy = writePolicyFile(DEMO_POLICY);
      policies.push(policy);
      const prefix = testPrefix('ten-minutes');
      const p = start({ SHIPGATE_CONFIG: policy, SHIPGATE_REDIS_PREFIX: prefix, ANTHROPIC_BASE_URL: model.baseUrl, ANTHROPIC_API_KEY: 'sk-ant-scripted' });
      await p.waitForOutput(/console chat — you are ULOCAL/, 60_000);
      const mark = p.stdout().length;
      p.child.stdin.write('/ship demo/shop add a /healthz endpoint\n');
      await printedAfter(p, mark, /Queued run (sg-[a-z0-9]{8}) on demo\/shop/, 'the ack');
      await printedAfter(p, mark, /local pull request #1 \(open for review\)/, 'the pull request record in the thread', 60_000);
      await printedAfter(p, mark, /is done/, 'the run done', 90_000);
      p.child.stdin.end();
      expect((await ended(p)).code).toBe(0);
      expect(model.remaining()).toBe(0);
      expect(model.unexpected).toEqual([]);

      // Without a model key: the gate names the variable to set, and nothing else goes wrong.
      const q = start({ SHIPGATE_CONFIG: policy, SHIPGATE_REDIS_PREFIX: `${prefix}-nokey` });
      await q.waitForOutput(/console chat — you are ULOCAL/, 60_000);
      const from = q.stdout().length;
      q.child.stdin.write('/ship demo/shop add a /healthz endpoint\n');
      const line = await printedAfter(q, from, /^\S+ agent — not configured: ([^\n]*)$/m, 'the card at agent, not configured');
      expect(line[1]).toBe('needs ANTHROPIC_API_KEY (or ANTHROPIC_BASE_URL)');
      q.child.stdin.end();
      const { code, stderr } = await ended(q);
      expect(stderr).not.toMatch(/Connection is closed|Unhandled|unhandled rejection/);
      expect(code).toBe(0);
    } finally {
      await model.close();
    }
  });
});
