import { Webhooks } from '@octokit/webhooks';
import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import { z } from 'zod';
import type { Logger } from '../log.js';
import type { HttpRoute } from '../ports/http.js';

/**
 * What a verified GitHub delivery means to shipgate (SPEC §5): "something about
 * this commit's checks changed" or "this pull request changed". Nothing else
 * from the payload is trusted or needed; the CI gate re-reads the real state
 * through the REST API (conditional requests), so a webhook only wakes polling.
 */
export type GitHubEvent =
  | { kind: 'checks'; repo: string; headSha: string; deliveryId: string }
  | { kind: 'pull_request'; repo: string; number: number; headSha: string; action: string; deliveryId: string };

export interface GitHubWebhookListenerOptions {
  /** The webhook secret configured on the GitHub App or repository hook (GITHUB_WEBHOOK_SECRET). */
  secret: string;
  log: Logger;
  /**
   * Called after the 202 has been sent. Duplicate deliveries (GitHub's
   * "redeliver", several hooks on one repo, check_run + check_suite for one
   * change) are harmless by design: the handler only wakes the poller of the
   * runs waiting on that SHA/PR, and the poller reads GitHub's current state.
   */
  onEvent: (event: GitHubEvent) => Promise<void>;
}

/** GitHub caps payloads at 25 MB, but the events we read are a few KiB; refuse the rest early. */
export const GITHUB_WEBHOOK_MAX_BYTES = 5 * 1024 * 1024;

// Only the fields we use, per event (SPEC: parse at the boundary).
const repositorySchema = z.object({ full_name: z.string().min(1) });
const checkRunSchema = z.object({
  check_run: z.object({
    head_sha: z.string().min(1),
    name: z.string(),
    status: z.string(),
    conclusion: z.string().nullable().optional(),
  }),
  repository: repositorySchema,
});
/** Events that only say "the checks of this commit changed": where each one carries the commit. */
const sha = z.object({ head_sha: z.string().min(1) });
const headShaSchemas = {
  check_suite: z.object({ check_suite: sha, repository: repositorySchema }).transform((p) => ({ repo: p.repository.full_name, headSha: p.check_suite.head_sha })),
  workflow_run: z.object({ workflow_run: sha, repository: repositorySchema }).transform((p) => ({ repo: p.repository.full_name, headSha: p.workflow_run.head_sha })),
  workflow_job: z.object({ workflow_job: sha, repository: repositorySchema }).transform((p) => ({ repo: p.repository.full_name, headSha: p.workflow_job.head_sha })),
};

const pullRequestSchema = z.object({
  action: z.string(),
  number: z.number().int().positive(),
  pull_request: z.object({
    head: z.object({ sha: z.string().min(1) }),
    merged: z.boolean().nullable().optional(),
    state: z.string(),
  }),
  repository: repositorySchema,
});

type ReadResult =
  { ok: true; body: string } | { ok: false; tooLarge: true } | { ok: false; tooLarge: false; error: unknown };

/** Reads the raw body (the signature covers the exact bytes), giving up past `limit`. */
function readRawBody(req: IncomingMessage, limit: number): Promise<ReadResult> {
  return new Promise((resolve) => {
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > limit) {
      resolve({ ok: false, tooLarge: true });
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const finish = (result: ReadResult) => {
      if (done) return;
      done = true;
      req.off('data', onData);
      resolve(result);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        chunks.length = 0;
        finish({ ok: false, tooLarge: true });
        return;
      }
      chunks.push(chunk);
    };
    req.on('data', onData);
    req.once('end', () => finish({ ok: true, body: Buffer.concat(chunks).toString('utf8') }));
    req.once('error', (error) => finish({ ok: false, tooLarge: false, error }));
  });
}

function header(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return typeof value === 'string' && value !== '' ? value : undefined;
}

/** GitHub hooks may be configured to send `application/x-www-form-urlencoded` with the JSON in `payload`. */
function payloadText(req: IncomingMessage, raw: string): string | undefined {
  const type = header(req, 'content-type')?.split(';')[0]?.trim().toLowerCase();
  if (type === 'application/x-www-form-urlencoded') return new URLSearchParams(raw).get('payload') ?? undefined;
  return raw;
}

type Parsed =
  | { kind: 'event'; event: GitHubEvent; detail: Record<string, unknown> }
  | { kind: 'ping' }
  | { kind: 'ignored' }
  | { kind: 'invalid'; issues: number };

function parseEvent(name: string, payload: unknown, deliveryId: string): Parsed {
  switch (name) {
    case 'ping':
      return { kind: 'ping' };
    case 'check_run': {
      const parsed = checkRunSchema.safeParse(payload);
      if (!parsed.success) return { kind: 'invalid', issues: parsed.error.issues.length };
      const run = parsed.data.check_run;
      return {
        kind: 'event',
        event: { kind: 'checks', repo: parsed.data.repository.full_name, headSha: run.head_sha, deliveryId },
        detail: { check: run.name, status: run.status, conclusion: run.conclusion ?? null },
      };
    }
    case 'check_suite':
    case 'workflow_run':
    case 'workflow_job': {
      const parsed = headShaSchemas[name].safeParse(payload);
      if (!parsed.success) return { kind: 'invalid', issues: parsed.error.issues.length };
      return { kind: 'event', event: { kind: 'checks', repo: parsed.data.repo, headSha: parsed.data.headSha, deliveryId }, detail: {} };
    }
    case 'pull_request': {
      const parsed = pullRequestSchema.safeParse(payload);
      if (!parsed.success) return { kind: 'invalid', issues: parsed.error.issues.length };
      const p = parsed.data;
      return {
        kind: 'event',
        event: {
          kind: 'pull_request',
          repo: p.repository.full_name,
          number: p.number,
          headSha: p.pull_request.head.sha,
          action: p.action,
          deliveryId,
        },
        detail: { state: p.pull_request.state, merged: p.pull_request.merged ?? null },
      };
    }
    default:
      return { kind: 'ignored' };
  }
}

/**
 * The GitHub webhook endpoint (SPEC §5), mounted at `/github/webhooks`:
 * verifies `x-hub-signature-256` over the raw body, parses only what the CI
 * and PR gates need, answers 202 at once and hands the event to `onEvent`
 * afterwards, so GitHub's 10 s delivery timeout never depends on our work.
 *
 * 405 non-POST · 413 body over 5 MiB · 401 missing/bad signature · 400
 * unreadable JSON, missing event/delivery headers or a payload of a supported
 * event that does not match · 200 `ping` · 202 everything else (unsupported
 * events are acknowledged and ignored, so GitHub does not flag the hook).
 */
/** Where GitHub delivers webhooks (the hook's Payload URL). */
export const GITHUB_WEBHOOK_PATH = '/github/webhooks';

/** The route the web role mounts for GitHub webhooks. */
export function githubWebhookRoute(options: GitHubWebhookListenerOptions): HttpRoute {
  return { method: 'POST', path: GITHUB_WEBHOOK_PATH, listener: createGitHubWebhookListener(options) };
}

export function createGitHubWebhookListener(options: GitHubWebhookListenerOptions): RequestListener {
  const log = options.log.child({ component: 'github-webhooks' });
  const webhooks = new Webhooks({ secret: options.secret });

  const send = (
    res: ServerResponse,
    status: number,
    body: Record<string, unknown>,
    headers: Record<string, string> = {},
  ) => {
    res.writeHead(status, { 'content-type': 'application/json', ...headers });
    res.end(JSON.stringify(body));
  };

  async function verified(raw: string, signature: string): Promise<boolean> {
    try {
      return await webhooks.verify(raw, signature);
    } catch {
      // verify throws on an empty body; an unsigned-able request is simply not authentic.
      return false;
    }
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.method !== 'POST') {
      send(res, 405, { error: 'method not allowed' }, { allow: 'POST' });
      req.resume();
      return;
    }
    const read = await readRawBody(req, GITHUB_WEBHOOK_MAX_BYTES);
    if (!read.ok) {
      if (read.tooLarge) {
        log.warn({ contentLength: req.headers['content-length'] ?? null }, 'github webhook rejected: body too large');
        // Close the connection rather than read (possibly endless) bytes we will never use.
        send(res, 413, { error: 'payload too large' }, { connection: 'close' });
        return;
      }
      log.warn({ err: read.error }, 'github webhook body could not be read');
      if (!res.headersSent) send(res, 400, { error: 'unreadable body' });
      return;
    }
    const event = header(req, 'x-github-event');
    const deliveryId = header(req, 'x-github-delivery');
    const signature = header(req, 'x-hub-signature-256');
    // Who sent it is unknown until verified, so the log carries headers only, never the body.
    if (signature === undefined) {
      log.warn(
        { event: event ?? null, deliveryId: deliveryId ?? null },
        'github webhook rejected: no x-hub-signature-256',
      );
      send(res, 401, { error: 'signature required' });
      return;
    }
    if (!(await verified(read.body, signature))) {
      log.warn({ event: event ?? null, deliveryId: deliveryId ?? null }, 'github webhook rejected: bad signature');
      send(res, 401, { error: 'bad signature' });
      return;
    }
    if (event === undefined || deliveryId === undefined) {
      send(res, 400, { error: 'x-github-event and x-github-delivery are required' });
      return;
    }
    let payload: unknown;
    try {
      const text = payloadText(req, read.body);
      if (text === undefined) throw new Error('no payload field');
      payload = JSON.parse(text);
    } catch {
      log.warn({ event, deliveryId }, 'github webhook rejected: body is not JSON');
      send(res, 400, { error: 'body is not JSON' });
      return;
    }
    const parsed = parseEvent(event, payload, deliveryId);
    switch (parsed.kind) {
      case 'ping':
        send(res, 200, { status: 'pong' });
        return;
      case 'ignored':
        log.debug({ event, deliveryId }, 'github webhook ignored');
        send(res, 202, { status: 'ignored' });
        return;
      case 'invalid':
        log.warn(
          { event, deliveryId, issues: parsed.issues },
          'github webhook rejected: payload does not match the event',
        );
        send(res, 400, { error: `unexpected ${event} payload` });
        return;
      case 'event':
        send(res, 202, { status: 'accepted' });
        log.debug(
          { event, deliveryId, repo: parsed.event.repo, headSha: parsed.event.headSha, ...parsed.detail },
          'github webhook accepted',
        );
        // After the answer: GitHub's delivery must not wait on (or fail with) our handling.
        setImmediate(() => {
          Promise.resolve()
            .then(() => options.onEvent(parsed.event))
            .catch((error: unknown) => {
              log.error({ err: error, event, deliveryId }, 'github webhook handler failed');
            });
        });
        return;
    }
  }

  return (req, res) => {
    handle(req, res).catch((error: unknown) => {
      log.error({ err: error }, 'github webhook request failed');
      if (!res.headersSent) send(res, 500, { error: 'internal error' });
      else res.end();
    });
  };
}
