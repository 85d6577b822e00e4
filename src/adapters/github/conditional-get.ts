import { z } from 'zod';
import type { Logger } from '../../log.js';
import type { EtagCache } from '../../ports/github.js';
import type { Client } from './clients.js';
import { requestErrorSchema } from './port-errors.js';

/**
 * Conditional GETs (SPEC §5, §10): a repeated read is sent with `If-None-Match` and a 304, which
 * costs no rate limit, is answered from the ETag cache; lists are followed page by page.
 */

/** Pages followed per list before giving up (10,000 check runs): a safety net against a Link loop. */
const MAX_PAGES = 100;

/** What this adapter keeps as an ETag cache entry's `body`: the JSON answer and its `rel="next"` link. */
const cachedPageSchema = z.object({ next: z.string().nullable(), data: z.unknown() });

export interface Page {
  data: unknown;
  next: string | undefined;
}

export function nextLink(link: string | undefined): string | undefined {
  // `<https://api.github.com/…&page=2>; rel="next", <…&page=5>; rel="last"`
  return link === undefined ? undefined : /<([^<>]+)>;\s*rel="next"/.exec(link)?.[1];
}

/** Function-valued fields, not methods: the reads are closures handed to each concern unbound. */
/** `signal` stops the read (see ForgeCallOptions); it goes with every request of it. */
export interface ConditionalReads {
  conditionalGet: (client: Client, url: string, signal?: AbortSignal) => Promise<Page>;
  allPages: (client: Client, firstUrl: string, signal?: AbortSignal) => Promise<unknown[]>;
}

/** Octokit's per-request options carrying the call's signal (fetch and the abort hook in clients.ts read it). */
export function signalOption(signal: AbortSignal | undefined): { request?: { signal: AbortSignal } } {
  return signal === undefined ? {} : { request: { signal } };
}

export function createConditionalReads(etagCache: EtagCache, log: Logger): ConditionalReads {
  /**
   * The cache only saves rate limit: when Redis is unreachable the read is sent unconditionally
   * (it costs one request) rather than failing a gate on a cache outage.
   */
  async function cachedPage(url: string): Promise<{ etag: string; page: Page } | undefined> {
    let entry: { etag: string; body: string } | undefined;
    try {
      entry = await etagCache.get(url);
    } catch (error) {
      log.warn({ err: error }, 'ETag cache unreadable; sending an unconditional request');
      return undefined;
    }
    if (entry === undefined) return undefined;
    let parsed: z.infer<typeof cachedPageSchema>;
    try {
      parsed = cachedPageSchema.parse(JSON.parse(entry.body));
    } catch {
      // Written by something else (or an older format): not worth a revalidation.
      return undefined;
    }
    return { etag: entry.etag, page: { data: parsed.data, next: parsed.next ?? undefined } };
  }

  /**
   * One GET sent with `If-None-Match` when an earlier answer is cached. Octokit throws a
   * RequestError with status 304 for "not modified": the cached body is the answer. The cache key
   * is the full URL with its query (page and per_page included), as the request went out.
   */
  async function conditionalGet(client: Client, url: string, signal?: AbortSignal): Promise<Page> {
    const cached = await cachedPage(url);
    try {
      const response = await client.request<unknown>({
        method: 'GET',
        url,
        headers: cached === undefined ? {} : { 'if-none-match': cached.etag },
        ...signalOption(signal),
      });
      const page: Page = { data: response.data, next: nextLink(response.headers.link) };
      const etag = response.headers.etag;
      if (etag !== undefined && etag !== '') {
        try {
          await etagCache.set(url, { etag, body: JSON.stringify({ next: page.next ?? null, data: page.data }) });
        } catch (error) {
          log.warn({ err: error }, 'ETag cache unwritable; the next read of this URL will not be conditional');
        }
      }
      return page;
    } catch (error) {
      if (cached !== undefined && requestErrorSchema.safeParse(error).data?.status === 304) return cached.page;
      throw error;
    }
  }

  /** Every page of a list, each page conditional on its own, following GitHub's `Link: rel="next"`. */
  async function allPages(client: Client, firstUrl: string, signal?: AbortSignal): Promise<unknown[]> {
    const pages: unknown[] = [];
    let url: string | undefined = firstUrl;
    while (url !== undefined) {
      if (pages.length >= MAX_PAGES) {
        log.warn({ url: firstUrl, pages: pages.length }, 'GitHub list has too many pages; reading no further');
        break;
      }
      const page: Page = await conditionalGet(client, url, signal);
      pages.push(page.data);
      url = page.next;
    }
    return pages;
  }

  return { conditionalGet, allPages };
}
