import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeEach, describe, expect, inject, it } from 'vitest';
import { createLocalForge, type LocalForge } from '../../src/adapters/local-forge/local-forge.js';
import { parsePolicy } from '../../src/config/config.js';
import { localRepos } from '../../src/config/policy.js';
import { CancelledError } from '../../src/errors.js';
import { createGit, type Git } from '../../src/git/git.js';
import { createLogger } from '../../src/log.js';
import type { SandboxPort } from '../../src/ports/sandbox.js';
import { createLocalForgeStore, type LocalForgeStore } from '../../src/store/local-forge-store.js';
import { testPrefix } from '../helpers/ids.js';
import { gitIn } from '../helpers/world.js';

/**
 * The local forge honours a step's signal (issue 12): a cancelled pr, ci or merge step opens no pull
 * request, starts no CI and merges nothing, and says so with CancelledError like the GitHub adapter.
 * CI results are written straight into the store, so no check runs here.
 */

const redis = new Redis(inject('redisUrl'));
afterAll(() => redis.disconnect());

const BRANCH = 'shipgate/sg-signal-healthz';
const cancelled = (): AbortSignal => AbortSignal.abort(new Error('run sg-signal was cancelled'));

/** Nothing in these tests may run a command. */
const noSandbox: SandboxPort = {
  kind: 'none',
  isolated: false,
  run: () => Promise.reject(new Error('no command runs in this test')),
  probe: () => Promise.resolve(),
};

describe('the local forge with a cancelled signal', () => {
  let dir: string;
  let bare: string;
  let mainSha: string;
  let headSha: string;
  let git: Git;
  let store: LocalForgeStore;
  let forge: LocalForge;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'shipgate-local-signal-'));
    bare = join(dir, 'shop.git');
    const work = join(dir, 'work');
    gitIn(dir, 'init', '--bare', '--initial-branch=main', bare);
    gitIn(dir, 'clone', bare, work);
    writeFileSync(join(work, 'README.md'), 'shop\n');
    gitIn(work, 'add', '-A');
    gitIn(work, 'commit', '-m', 'initial');
    gitIn(work, 'push', 'origin', 'main');
    mainSha = gitIn(work, 'rev-parse', 'HEAD').trim();
    gitIn(work, 'checkout', '-b', BRANCH);
    writeFileSync(join(work, 'healthz.js'), 'module.exports = 1;\n');
    gitIn(work, 'add', '-A');
    gitIn(work, 'commit', '-m', 'add healthz');
    gitIn(work, 'push', 'origin', BRANCH);
    headSha = gitIn(work, 'rev-parse', 'HEAD').trim();

    git = createGit();
    store = createLocalForgeStore({ redis, prefix: testPrefix('local-forge-signal') });
    const policy = parsePolicy(
      `repos:\n  demo/shop:\n    path: ${JSON.stringify(bare)}\n    checks:\n      test: "true"\n`,
      'test policy',
    );
    forge = createLocalForge({
      repos: localRepos(policy),
      git,
      store,
      sandbox: noSandbox,
      scrub: (text) => text,
      log: createLogger({ level: 'silent' }),
      clock: () => new Date(),
      workRoot: join(dir, 'ci'),
    });
  });

  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  const input = { owner: 'demo', repo: 'shop', head: BRANCH, base: 'main', title: 'Add /healthz', body: 'b' };

  it('opens no pull request', async () => {
    await expect(forge.createPullRequest(input, { signal: cancelled() })).rejects.toBeInstanceOf(CancelledError);
    expect(await store.openPulls('demo/shop')).toEqual([]);
    await expect(forge.findOpenPullRequest('demo', 'shop', BRANCH, { signal: cancelled() })).rejects.toBeInstanceOf(
      CancelledError,
    );
    await expect(forge.getRepository('demo', 'shop', { signal: cancelled() })).rejects.toBeInstanceOf(CancelledError);
    await expect(forge.pushCredentials('demo', 'shop', { signal: cancelled() })).rejects.toBeInstanceOf(CancelledError);
  });

  it('starts no CI', async () => {
    await forge.createPullRequest(input);
    await expect(forge.ciSnapshot('demo', 'shop', headSha, { signal: cancelled() })).rejects.toBeInstanceOf(
      CancelledError,
    );
    expect(await store.ci('demo/shop', headSha)).toBeUndefined();
  });

  it('merges nothing, even with green CI; the same look without a cancel merges', async () => {
    const pull = await forge.createPullRequest(input);
    const lease = await store.claimCi('demo/shop', headSha, new Date().toISOString(), 60_000);
    if (lease === undefined) throw new Error('CI could not be claimed');
    await store.finishCi('demo/shop', headSha, lease, [
      { name: 'test', conclusion: 'success', output: 'ok', startedAt: 't0', completedAt: 't1' },
    ]);

    await expect(forge.getPullRequest('demo', 'shop', pull.number, { signal: cancelled() })).rejects.toBeInstanceOf(
      CancelledError,
    );
    expect(await git.local.branchSha(bare, 'main')).toBe(mainSha);
    expect((await store.get('demo/shop', pull.number))?.state).toBe('open');

    const live = new AbortController();
    const merged = await forge.getPullRequest('demo', 'shop', pull.number, { signal: live.signal });
    expect(merged).toMatchObject({ merged: true, mergeCommitSha: headSha });
    expect(await git.local.branchSha(bare, 'main')).toBe(headSha);
  });

  it('a default branch that moved on since the branch was cut is reported as never mergeable, and nothing merges', async () => {
    const pull = await forge.createPullRequest(input);
    const lease = await store.claimCi('demo/shop', headSha, new Date().toISOString(), 60_000);
    if (lease === undefined) throw new Error('CI could not be claimed');
    await store.finishCi('demo/shop', headSha, lease, [
      { name: 'test', conclusion: 'success', output: 'ok', startedAt: 't0', completedAt: 't1' },
    ]);
    // Someone else's commit lands on main first: the run's branch is no longer a fast-forward.
    const other = join(dir, 'other');
    gitIn(dir, 'clone', bare, other);
    writeFileSync(join(other, 'CHANGELOG.md'), 'someone else\n');
    gitIn(other, 'add', '-A');
    gitIn(other, 'commit', '-m', 'another change');
    gitIn(other, 'push', 'origin', 'main');
    const movedMain = gitIn(other, 'rev-parse', 'HEAD').trim();

    const state = await forge.getPullRequest('demo', 'shop', pull.number);
    expect(state).toMatchObject({ state: 'open', merged: false });
    expect(state.cannotMerge).toContain(`main moved on to ${movedMain.slice(0, 12)}`);
    expect(await git.local.branchSha(bare, 'main')).toBe(movedMain);
    expect((await store.get('demo/shop', pull.number))?.state).toBe('open');
  });
});
