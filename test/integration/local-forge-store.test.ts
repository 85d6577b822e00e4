import { Redis } from 'ioredis';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { createLocalForgeStore } from '../../src/store/local-forge-store.js';
import { testPrefix } from '../helpers/ids.js';

/** The local forge's records in real Redis (issue 12): pulls opened once per head, CI results found by their own id. */

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
    const first = await store.finishCi('demo/shop', 'abcdef0000000000000000000000000000000001', [
      result('test', 'failure', 'first commit log'),
    ]);
    const second = await store.finishCi('demo/shop', 'abcdef0000000000000000000000000000000002', [
      result('test', 'failure', 'second commit log'),
    ]);
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
});
