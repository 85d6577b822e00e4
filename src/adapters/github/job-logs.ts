import { z } from 'zod';
import { ExternalOutageError } from '../../errors.js';
import type { GitHubCiPort } from '../../ports/github.js';
import type { GitHubRestContext } from './context.js';
import { isAnswer } from './port-errors.js';

/** The tail of a GitHub Actions job's log, downloaded without ever sending the token off the API. */

const LOG_GONE = [403, 404, 410];

/** A 302 answer's headers (the job-log download). */
const redirectHeadersSchema = z.object({ location: z.string().min(1) });

/**
 * The last `maxBytes` of a stream, starting at a line boundary when the window holds one. Only
 * about `maxBytes` stay in memory whatever the log's size (Actions logs reach hundreds of MB).
 */
export async function readTail(body: ReadableStream<Uint8Array> | null, maxBytes: number): Promise<string> {
  if (body === null) return '';
  const limit = Math.max(0, Math.floor(maxBytes));
  if (limit === 0) {
    await body.cancel();
    return '';
  }
  // One byte more than asked, to see whether the window starts right after a newline.
  const chunks: Buffer[] = [];
  let kept = 0;
  let dropped = false;
  for await (const chunk of body) {
    chunks.push(Buffer.from(chunk));
    kept += chunk.byteLength;
    for (
      let first = chunks[0];
      first !== undefined && chunks.length > 1 && kept - first.length > limit;
      first = chunks[0]
    ) {
      chunks.shift();
      kept -= first.length;
      dropped = true;
    }
  }
  let tail = Buffer.concat(chunks);
  let cutMidLine = false;
  if (tail.length > limit) {
    cutMidLine = tail[tail.length - limit - 1] !== 0x0a;
    tail = tail.subarray(tail.length - limit);
  } else if (dropped) {
    cutMidLine = true;
  }
  if (cutMidLine) {
    const newline = tail.indexOf(0x0a);
    if (newline >= 0 && newline < tail.length - 1) {
      tail = tail.subarray(newline + 1);
    } else {
      // One line longer than the window: keep its end, from a UTF-8 character boundary.
      let start = 0;
      while (start < tail.length && ((tail[start] ?? 0) & 0xc0) === 0x80) start++;
      tail = tail.subarray(start);
    }
  }
  return tail.toString('utf8').replace(/^\uFEFF/, '');
}

export function createJobLogs(ctx: GitHubRestContext): Pick<GitHubCiPort, 'actionsJobLogTail'> {
  const { call, clientFor } = ctx;

  /**
   * The tail of a pre-signed log download. Sent by hand, not by Octokit or fetch's redirect
   * following: fetch keeps the Authorization header on a same-origin redirect (it drops it only
   * across origins), and GitHub Enterprise may serve downloads from the API's own host. The token
   * must go to the API only; the download URL carries its own short-lived signature.
   */
  async function downloadTail(url: URL, maxBytes: number, signal: AbortSignal | undefined): Promise<string | undefined> {
    if (url.protocol !== 'https:' && url.protocol !== 'http:') {
      throw new ExternalOutageError('github', `job log download has an unexpected scheme ${url.protocol}`);
    }
    const response = await ctx.fetch(url, { headers: { 'user-agent': 'shipgate' }, redirect: 'follow', signal: signal ?? null });
    if (LOG_GONE.includes(response.status)) {
      // The signed URL expired or the blob was deleted between the 302 and now.
      await response.body?.cancel();
      return undefined;
    }
    if (!response.ok) {
      await response.body?.cancel();
      // The URL is a credential of sorts (signed); it is left out of the message.
      throw new ExternalOutageError('github', `job log download failed (HTTP ${response.status})`);
    }
    return readTail(response.body, maxBytes);
  }

  return {
    async actionsJobLogTail(owner, repo, jobId, maxBytes, options) {
      const signal = options?.signal;
      return call(`reading the log of job ${jobId} in ${owner}/${repo}`, async () => {
        const client = await clientFor(owner, repo);
        let response;
        try {
          // GitHub answers 302 to a short-lived signed URL; the redirect is followed by hand below.
          response = await client.request('GET /repos/{owner}/{repo}/actions/jobs/{job_id}/logs', {
            owner,
            repo,
            job_id: jobId,
            request: { redirect: 'manual', ...(signal === undefined ? {} : { signal }) },
          });
        } catch (error) {
          // 404: not an Actions job or no such job; 410: logs deleted by retention; 403: no actions:read.
          if (isAnswer(error, LOG_GONE)) return undefined;
          throw error;
        }
        const redirect = redirectHeadersSchema.safeParse(response.headers);
        if (redirect.success) return downloadTail(new URL(redirect.data.location, response.url), maxBytes, signal);
        // A server that answers with the log itself (no redirect).
        const data: unknown = response.data;
        if (typeof data === 'string') return readTail(new Blob([data]).stream(), maxBytes);
        throw new ExternalOutageError('github', `job ${jobId} logs: neither a redirect nor a text answer`);
      }, signal);
    },

  };
}
