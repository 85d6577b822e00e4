import { Redis } from 'ioredis';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { createLocalForgeStore } from '../../src/store/local-forge-store.js';
import { eventually } from '../helpers/eventually.js';
import { testPrefix } from '../helpers/ids.js';

/**
 * The local forge's records in real Redis (issue 12): pulls opened once per head, CI results found by
 * their own id, one Merge click of simultaneous ones, CI finished only under the lease that holds it.
 */

const redis = new Redis(inject('redisUrl'));
afterAll(() => redis.disconnect());

const result = (name: string, conclusion: 'success' | 'failure', output: string) => ({
  name,
  conclusion,
  output,
  startedAt: 't0',
  completedAt: 't1',
});

describe('the local forge store', () => {
  it('numbers every finished check uniquely in the repository, so a log is found under its own commit', async () => {
    const store = createLocalForgeStore({ redis, prefix: testPrefix('local-forge-store') });
    // Two commits whose shas share their first digits: ids must not collide.
    const finish = async (sha: string, output: string) => {
      const lease = await store.claimCi('demo/shop', sha, 't0', 60_000);
      if (lease === undefined) throw new Error('CI of a new commit could not be claimed');
      const finished = await store.finishCi('demo/shop', sha, lease, [result('test', 'failure', output)]);
      if (finished === undefined) throw new Error('the lease holder could not finish');
      return finished;
    };
    const first = await finish('abcdef0000000000000000000000000000000001', 'first commit log');
    const second = await finish('abcdef0000000000000000000000000000000002', 'second commit log');
    expect(first[0]?.id).not.toBe(second[0]?.id);
    expect((await store.checkResult('demo/shop', second[0]?.id ?? 0))?.output).toBe('second commit log');
    expect((await store.checkResult('demo/shop', first[0]?.id ?? 0))?.output).toBe('first commit log');
    expect(await store.checkResult('demo/other', first[0]?.id ?? 0)).toBeUndefined();
    expect(await store.ci('demo/shop', 'abcdef0000000000000000000000000000000002')).toEqual({
      state: 'completed',
      results: second,
    });
  });

  it('opens one pull per head, whoever asks twice', async () => {
    const store = createLocalForgeStore({ redis, prefix: testPrefix('local-forge-pulls') });
    const fields = {
      repo: 'demo/shop',
      head: 'shipgate/sg-a-x',
      base: 'main',
      title: 't',
      body: 'b',
      diff: 'd',
      createdAt: 'now',
    };
    const [a, b] = await Promise.all([store.open(fields), store.open(fields)]);
    expect(a.number).toBe(b.number);
    expect(await store.findOpenByHead('demo/shop', 'shipgate/sg-a-x')).toEqual(a);
    expect((await store.open({ ...fields, head: 'shipgate/sg-b-y' })).number).not.toBe(a.number);
  });

  it('records one Merge click of simultaneous ones: exactly one answers approved, the others already', async () => {
    const store = createLocalForgeStore({ redis, prefix: testPrefix('local-forge-approve') });
    const pull = await store.open({ repo: 'demo/shop', head: 'shipgate/sg-c-z', base: 'main', title: 't', body: 'b', diff: 'd', createdAt: 'now' });
    const sha = 'c'.repeat(40);
    const clickers = ['UBOB', 'UCAROL', 'UDAVE', 'UERIN', 'UFRANK', 'UGRACE', 'UHEIDI', 'UIVAN'];
    const answers = await Promise.all(clickers.map((by) => store.approveMerge('demo/shop', pull.number, by, sha)));
    expect(answers.filter((answer) => answer === 'approved')).toHaveLength(1);
    expect(answers.filter((answer) => answer === 'already')).toHaveLength(clickers.length - 1);
    // The record names the one click that answered approved.
    const approver = clickers[answers.indexOf('approved')];
    expect(await store.get('demo/shop', pull.number)).toMatchObject({ approvedSha: sha, mergeApprovedBy: approver, title: 't', diff: 'd' });

    // A new head needs a click of its own; a closed pull takes none.
    const moved = 'd'.repeat(40);
    expect(await store.approveMerge('demo/shop', pull.number, 'UBOB', moved)).toBe('approved');
    const stored = await store.get('demo/shop', pull.number);
    if (stored === undefined) throw new Error('the pull disappeared');
    await store.save({ ...stored, state: 'closed', merged: true, mergeCommitSha: moved });
    expect(await store.approveMerge('demo/shop', pull.number, 'UCAROL', 'e'.repeat(40))).toBe('not-open');
    expect(await store.approveMerge('demo/shop', pull.number + 1000, 'UCAROL', sha)).toBe('not-open');
  });

  it('finishes CI only under the lease that holds it: a worker whose lease was taken over records nothing', async () => {
    const store = createLocalForgeStore({ redis, prefix: testPrefix('local-forge-lease') });
    const sha = 'f'.repeat(40);
    const slow = await store.claimCi('demo/shop', sha, 't0', 50);
    if (slow === undefined) throw new Error('the first claim failed');
    // Held: a second worker cannot take it.
    expect(await store.claimCi('demo/shop', sha, 't1', 60_000)).toBeUndefined();
    // The slow worker's lease runs out and another worker takes the run over.
    const taker = await eventually(async () => store.claimCi('demo/shop', sha, 't2', 60_000), 'the lease to run out');

    expect(await store.finishCi('demo/shop', sha, slow, [result('test', 'failure', 'the slow worker')])).toBeUndefined();
    expect(await store.ci('demo/shop', sha)).toMatchObject({ state: 'running', startedAt: 't2' });
    const finished = await store.finishCi('demo/shop', sha, taker, [result('test', 'success', 'the taker')]);
    expect(finished?.map((r) => r.output)).toEqual(['the taker']);
    expect(await store.ci('demo/shop', sha)).toEqual({ state: 'completed', results: finished });
    // Late again, after the taker finished: the result stays the taker's.
    expect(await store.finishCi('demo/shop', sha, slow, [result('test', 'failure', 'the slow worker')])).toBeUndefined();
    expect(await store.ci('demo/shop', sha)).toEqual({ state: 'completed', results: finished });
    const id = finished?.[0]?.id ?? 0;
    expect((await store.checkResult('demo/shop', id))?.output).toBe('the taker');
    // A finished commit cannot be claimed again.
    expect(await store.claimCi('demo/shop', sha, 't3', 60_000)).toBeUndefined();
  });

  it('still records a lease that ran out when nobody took the run over (no one else\'s result to lose)', async () => {
    const store = createLocalForgeStore({ redis, prefix: testPrefix('local-forge-lapsed') });
    const sha = '9'.repeat(40);
    const lease = await store.claimCi('demo/shop', sha, 't0', 50);
    if (lease === undefined) throw new Error('the claim failed');
    await eventually(async () => (await store.ci('demo/shop', sha)) === undefined, 'the lease to run out');
    const finished = await store.finishCi('demo/shop', sha, lease, [result('test', 'success', 'late but alone')]);
    expect(finished?.map((r) => r.output)).toEqual(['late but alone']);
    expect(await store.ci('demo/shop', sha)).toEqual({ state: 'completed', results: finished });
  });
});
