import { Redis } from 'ioredis';
import { afterEach, expect, inject, it } from 'vitest';
import { createClaims } from '../../src/store/claims.js';
import { testPrefix } from '../helpers/ids.js';

/** Exclusive claims on real Redis: one holder at a time, released after, expiring by themselves, never released by a former holder. */

const clients: Redis[] = [];
afterEach(() => {
  for (const client of clients.splice(0)) client.disconnect();
});

function claimsOn(prefix: string) {
  const redis = new Redis(inject('redisUrl'));
  clients.push(redis);
  return { redis, claims: createClaims({ redis, prefix }) };
}

it('one holder at a time across clients; released after the work, even when it throws', async () => {
  const prefix = testPrefix('claims');
  const a = claimsOn(prefix).claims;
  const b = claimsOn(prefix).claims;
  let inside = '';
  const first = a.withClaim('k', 10_000, async () => {
    inside = await b.withClaim('k', 10_000, async () => 'b ran', () => 'b busy');
    return 'a ran';
  }, () => 'a busy');
  expect(await first).toBe('a ran');
  expect(inside).toBe('b busy');
  expect(await b.withClaim('k', 10_000, async () => 'b ran', () => 'b busy')).toBe('b ran');
  await expect(a.withClaim('k', 10_000, async () => Promise.reject(new Error('boom')), () => 'busy')).rejects.toThrow('boom');
  expect(await b.withClaim('k', 10_000, async () => 'free again', () => 'busy')).toBe('free again');
});

it('a claim expires by itself, and a holder whose claim expired does not release the next holder’s', async () => {
  const prefix = testPrefix('claims-expiry');
  const { redis, claims } = claimsOn(prefix);
  const other = claimsOn(prefix).claims;
  let secondHeld = '';
  await claims.withClaim('k', 50, async () => {
    await new Promise((r) => setTimeout(r, 120));
    // Expired meanwhile: another worker takes it and still holds it when the first finishes.
    secondHeld = await other.withClaim('k', 10_000, async () => {
      await Promise.resolve();
      return 'taken';
    }, () => 'busy');
    await redis.set(`${prefix}:claim:k`, 'someone-else', 'PX', 10_000);
  }, () => undefined);
  expect(secondHeld).toBe('taken');
  expect(await redis.get(`${prefix}:claim:k`)).toBe('someone-else');
});
