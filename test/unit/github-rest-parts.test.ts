import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { nextLink } from '../../src/adapters/github/conditional-get.js';
import { readTail } from '../../src/adapters/github/job-logs.js';
import { createMemoryEtagCache } from '../../src/adapters/github/memory-etag-cache.js';
import { createPortCall, isAnswer, toPortError } from '../../src/adapters/github/port-errors.js';
import { ExternalOutageError, RefusedError } from '../../src/errors.js';

const scrub = (text: string) => text.replace(/ghs_\w+/g, '[REDACTED]');

/** What Octokit's RequestError looks like to the adapter (it is duck-typed there too). */
function requestError(status: number, message: string, headers: Record<string, string> = {}) {
  return Object.assign(new Error(message), { status, response: { headers, data: {} } });
}

describe('GitHub errors', () => {
  it('maps a 4xx to a refusal and a 5xx or network failure to an outage, with scrubbed messages', () => {
    const refused = toPortError('opening a pull request', requestError(422, 'Validation Failed for ghs_abcdef'), scrub);
    expect(refused).toBeInstanceOf(RefusedError);
    expect(refused.message).toBe('GitHub refused opening a pull request (HTTP 422): Validation Failed for [REDACTED]');
    expect(toPortError('reading', requestError(502, 'Bad Gateway'), scrub)).toBeInstanceOf(ExternalOutageError);
    const network = toPortError('reading', new Error('connect ECONNREFUSED with ghs_abcdef'), scrub);
    expect(network).toBeInstanceOf(ExternalOutageError);
    expect(network.message).not.toContain('ghs_abcdef');
  });

  it('treats rate limits as outages, whether 429 or a 403 that says so', () => {
    expect(toPortError('reading', requestError(429, 'Too Many Requests'), scrub)).toBeInstanceOf(ExternalOutageError);
    expect(toPortError('reading', requestError(403, 'Forbidden', { 'x-ratelimit-remaining': '0' }), scrub)).toBeInstanceOf(ExternalOutageError);
    expect(toPortError('reading', requestError(403, 'API rate limit exceeded'), scrub).message).toMatch(/rate limited \(HTTP 403\)/);
    expect(toPortError('reading', requestError(403, 'Resource not accessible by integration'), scrub)).toBeInstanceOf(RefusedError);
  });

  it('reports an answer of an unexpected shape as an outage, and passes the two port errors through', () => {
    const parsed = z.object({ id: z.number() }).safeParse({ id: 'x' });
    expect(parsed.success).toBe(false);
    expect(toPortError('reading', parsed.error, scrub)).toBeInstanceOf(ExternalOutageError);
    const already = new RefusedError('no');
    expect(toPortError('reading', already, scrub)).toBe(already);
  });

  it('tells a "not there for you" answer from a rate limit', () => {
    expect(isAnswer(requestError(404, 'Not Found'), [403, 404])).toBe(true);
    expect(isAnswer(requestError(403, 'Forbidden', { 'x-ratelimit-remaining': '0' }), [403, 404])).toBe(false);
    expect(isAnswer(new Error('boom'), [403, 404])).toBe(false);
  });

  it('wraps a port call so whatever it throws leaves as a port error', async () => {
    const call = createPortCall(scrub);
    expect(await call('reading', async () => 42)).toBe(42);
    await expect(
      call('reading x', async () => {
        throw requestError(404, 'Not Found');
      }),
    ).rejects.toThrow('GitHub refused reading x (HTTP 404): Not Found');
  });
});

describe('conditional reads', () => {
  it('follows only rel="next" of a Link header', () => {
    expect(nextLink('<https://api.github.com/x?page=2>; rel="next", <https://api.github.com/x?page=5>; rel="last"')).toBe('https://api.github.com/x?page=2');
    expect(nextLink('<https://api.github.com/x?page=1>; rel="prev"')).toBeUndefined();
    expect(nextLink(undefined)).toBeUndefined();
  });

  it('keeps the most recently used ETag entries in the in-memory cache', async () => {
    const cache = createMemoryEtagCache(2);
    await cache.set('a', { etag: '"1"', body: 'A' });
    await cache.set('b', { etag: '"2"', body: 'B' });
    expect(await cache.get('a')).toEqual({ etag: '"1"', body: 'A' });
    await cache.set('c', { etag: '"3"', body: 'C' });
    expect(await cache.get('b')).toBeUndefined();
    expect(await cache.get('a')).toBeDefined();
    expect(await cache.get('c')).toBeDefined();
  });
});

describe('job log tails', () => {
  function stream(...chunks: string[]): ReadableStream<Uint8Array> {
    return new ReadableStream({
      start(controller) {
        for (const chunk of chunks) controller.enqueue(new TextEncoder().encode(chunk));
        controller.close();
      },
    });
  }

  it('keeps the last bytes from a line boundary, across chunks', async () => {
    expect(await readTail(stream('line one\nline ', 'two\nline three\n'), 16)).toBe('line three\n');
    expect(await readTail(stream('short\n'), 1024)).toBe('short\n');
    expect(await readTail(null, 10)).toBe('');
    expect(await readTail(stream('anything'), 0)).toBe('');
  });

  it('keeps the end of a line longer than the window, from a character boundary', async () => {
    expect(await readTail(stream('é'.repeat(10)), 5)).toBe('éé');
  });
});
