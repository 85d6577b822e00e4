import { execFile } from 'node:child_process';
import { copyFileSync, mkdtempSync, readdirSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { z } from 'zod';
import { TEST_AUDIT_KEY } from '../helpers/audit-key.js';
import { freePort } from '../helpers/global-redis.js';
import { testPrefix } from '../helpers/ids.js';
import { killAll, ROOT, spawnShipgate, type ShipgateProcess } from '../helpers/process.js';

/**
 * The compiled JavaScript the Docker image runs (`node dist/src/main.js`, no tsx): the sources are
 * compiled with tsconfig.build.json into a folder laid out like the image's /app (package.json,
 * node_modules, dist/) and far from the checkout, so anything that still reads a file next to the
 * TypeScript sources, or needs tsx, fails here. The compile skips type checking (`--noCheck`):
 * `npm test` type-checks the same sources first, and the emitted JavaScript is the same.
 */

const run = promisify(execFile);
const logLineSchema = z.looseObject({ msg: z.string() });

let app = '';
const processes: ShipgateProcess[] = [];

beforeAll(async () => {
  app = mkdtempSync(join(tmpdir(), 'shipgate-compiled-'));
  copyFileSync(join(ROOT, 'package.json'), join(app, 'package.json'));
  symlinkSync(realpathSync(join(ROOT, 'node_modules')), join(app, 'node_modules'), 'dir');
  const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  await run(
    process.execPath,
    [tsc, '-p', join(ROOT, 'tsconfig.build.json'), '--outDir', join(app, 'dist'), '--noCheck'],
    {
      cwd: ROOT,
      timeout: 50_000,
    },
  );
}, 60_000);

afterEach(async () => {
  await killAll(processes.splice(0));
});

afterAll(() => {
  if (app !== '') rmSync(app, { recursive: true, force: true });
});

function logs(p: ShipgateProcess): string[] {
  return p
    .stderr()
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => logLineSchema.parse(JSON.parse(line)).msg);
}

describe('the compiled entry points', { timeout: 60_000 }, () => {
  it('dist/ holds JavaScript only', () => {
    const files = readdirSync(join(app, 'dist'), { recursive: true, encoding: 'utf8' }).filter((name) =>
      /\.[a-z]+$/.test(name),
    );
    expect(files).toContain(join('src', 'main.js'));
    expect(files).toContain(join('src', 'cli', 'audit-cli.js'));
    expect(files.filter((name) => !name.endsWith('.js') && !name.endsWith('.js.map'))).toEqual([]);
  });

  it('node dist/src/main.js starts the console chat, finds bwrap and the kubernetes-mcp-server binary, and stops cleanly when stdin is closed', async () => {
    // A pipeline makes the cluster part (and so the diagnosis server's lookup from dist/) part of the
    // summary; the kubeconfig names a port nothing listens on, and the process stops before it matters.
    const kubeconfig = join(app, 'kubeconfig.yaml');
    writeFileSync(
      kubeconfig,
      [
        'apiVersion: v1',
        'kind: Config',
        `clusters: [{ name: c, cluster: { server: "http://127.0.0.1:${await freePort()}", insecure-skip-tls-verify: true } }]`,
        'users: [{ name: u, user: { token: t } }]',
        'contexts: [{ name: c, context: { cluster: c, user: u } }]',
        'current-context: c',
        '',
      ].join('\n'),
    );
    const policy = join(app, 'shipgate.yaml');
    writeFileSync(
      policy,
      'repos:\n  acme/shop:\n    checks: { test: npm test }\n    pipeline: web\npipelines:\n  web:\n    argocdApps: [shop-web]\n',
    );
    const p = spawnShipgate(
      {
        REDIS_URL: inject('redisUrl'),
        PORT: '0',
        LOG_LEVEL: 'info',
        KUBECONFIG: kubeconfig,
        SHIPGATE_CONFIG: policy,
        SHIPGATE_REDIS_PREFIX: testPrefix('compiled'),
      },
      { args: ['dist/src/main.js'], cwd: app },
    );
    processes.push(p);
    // As under `docker compose` without a TTY: the input is closed before anything is read.
    p.child.stdin.end();
    const code = await p.exited;
    const out = p.stdout();
    expect(p.stderr()).not.toMatch(/Connection is closed|Unhandled|unhandled rejection|unclean shutdown|ERR_/);
    expect(code).toBe(0);
    expect(out).toMatch(/^ {2}ok sandbox {2}bubblewrap/m);
    expect(out).toMatch(
      /^ {2}ok cluster {2}KUBECONFIG .*red-deploy diagnosis reads the stage namespace through kubernetes-mcp-server/m,
    );
    expect(out).toContain('console chat — you are ULOCAL');
    expect(logs(p)).toEqual(expect.arrayContaining(['configuration summary', 'shipgate started', 'shipgate stopped']));
  });

  it('node dist/src/cli/audit-cli.js verifies the chain, also when started through a symbolic link', async () => {
    const link = `${app}-link`;
    symlinkSync(app, link, 'dir');
    try {
      const env = {
        PATH: process.env.PATH ?? '',
        REDIS_URL: inject('redisUrl'),
        SHIPGATE_REDIS_PREFIX: testPrefix('compiled-audit'),
        SHIPGATE_AUDIT_KEY: TEST_AUDIT_KEY,
      };
      for (const entry of [
        join(app, 'dist', 'src', 'cli', 'audit-cli.js'),
        join(link, 'dist', 'src', 'cli', 'audit-cli.js'),
      ]) {
        const { stdout } = await run(process.execPath, [entry, 'verify'], { cwd: app, env, timeout: 20_000 });
        expect(stdout).toBe('audit chain OK: 0 events\n');
      }
    } finally {
      rmSync(link, { force: true });
    }
  });
});
