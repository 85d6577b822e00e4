import { createHmac, randomUUID } from 'node:crypto';
import { sampleText } from '../helpers/samples.js';
import type { Server } from 'node:http';
import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import {
  createGitHubWebhookListener,
  GITHUB_WEBHOOK_MAX_BYTES,
  GITHUB_WEBHOOK_PATH,
  type GitHubEvent,
} from '../../src/http/github-webhooks.js';
import { createHttpServer } from '../../src/http/server.js';
import { createLogger } from '../../src/log.js';
import { createMetrics } from '../../src/metrics.js';
import { eventually } from '../helpers/eventually.js';

/**
 * SPEC §5: signed GitHub webhooks wake the CI gate. shipgate's real HTTP
 * server with the listener, GitHub's own sample payloads, signed the way
 * GitHub signs.
 */

const SECRET = 'test-github-webhook-secret-0123456789';

function sample(name: string): string {
  return sampleText('github', `webhook.${name}.json`);
}

/** `sha256=` + hex HMAC-SHA256 of the raw body (https://docs.github.com/webhooks/using-webhooks/validating-webhook-deliveries). */
function sign(body: string, secret = SECRET): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}

const sampleShape = z.object({
  check_run: z.object({ head_sha: z.string() }).optional(),
  check_suite: z.object({ head_sha: z.string() }).optional(),
  workflow_run: z.object({ head_sha: z.string() }).optional(),
  workflow_job: z.object({ head_sha: z.string() }).optional(),
  repository: z.object({ full_name: z.string() }),
});

/** A `pull_request` delivery with the fields GitHub sends that we read (no upstream sample ships one). */
function pullRequestBody(action: string, merged: boolean): string {
  return JSON.stringify({
    action,
    number: 42,
    pull_request: {
      url: 'https://api.github.com/repos/acme/shop/pulls/42',
      number: 42,
      state: merged ? 'closed' : 'open',
      merged,
      title: 'shipgate: add a /healthz endpoint',
      head: {
        ref: 'shipgate/sg-abcdefgh',
        sha: '0123456789abcdef0123456789abcdef01234567',
        repo: { full_name: 'acme/shop' },
      },
      base: { ref: 'main', sha: 'fedcba9876543210fedcba9876543210fedcba98' },
    },
    repository: { id: 1, name: 'shop', full_name: 'acme/shop', private: true },
    sender: { login: 'octocat', id: 1, type: 'User' },
  });
}

let server: Server;
let url: string;
const events: GitHubEvent[] = [];
let logLines: string[] = [];
let failNextHandler = false;

beforeAll(async () => {
  const destination = new PassThrough();
  destination.on('data', (chunk: Buffer) =>
    logLines.push(
      ...chunk
        .toString('utf8')
        .split('\n')
        .filter((l) => l !== ''),
    ),
  );
  const log = createLogger({ level: 'debug', destination });
  const listener = createGitHubWebhookListener({
    secret: SECRET,
    log,
    onEvent: async (event) => {
      events.push(event);
      if (failNextHandler) {
        failNextHandler = false;
        throw new Error('handler blew up');
      }
    },
  });
  // Mounted in shipgate's own HTTP server, so the route at /github/webhooks is under test too.
  server = createHttpServer({ routes: [{ method: 'POST', path: GITHUB_WEBHOOK_PATH, listener }], ready: async () => true, metrics: createMetrics(), log }).server;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no TCP address');
  url = `http://127.0.0.1:${address.port}/github/webhooks`;
});

afterAll(async () => {
  await new Promise<void>((resolve, reject) => server.close((error) => (error ? reject(error) : resolve())));
});

beforeEach(() => {
  events.length = 0;
  logLines = [];
});

interface Delivery {
  event: string;
  body: string | Buffer;
  /** Overrides the signature; `null` sends none. */
  signature?: string | null;
  deliveryId?: string;
  method?: string;
  contentType?: string;
}

async function deliver(d: Delivery): Promise<{ status: number; body: string; deliveryId: string }> {
  const deliveryId = d.deliveryId ?? randomUUID();
  const headers: Record<string, string> = {
    'content-type': d.contentType ?? 'application/json',
    'user-agent': 'GitHub-Hookshot/test',
    'x-github-event': d.event,
    'x-github-delivery': deliveryId,
    'x-github-hook-id': '1',
  };
  const raw = typeof d.body === 'string' ? d.body : d.body.toString('utf8');
  if (d.signature !== null) headers['x-hub-signature-256'] = d.signature ?? sign(raw);
  const method = d.method ?? 'POST';
  const response = await fetch(url, {
    method,
    headers,
    ...(method === 'GET' || method === 'HEAD' ? {} : { body: d.body }),
  });
  return { status: response.status, body: await response.text(), deliveryId };
}

/** onEvent runs after the answer; give it the chance to run before asserting that it did not. */
async function settle(): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, 100));
}

describe('GitHub webhooks (signed, SPEC §5)', () => {
  it('accepts a signed check_run completed with 202 and reports the checks of its head SHA', async () => {
    for (const name of [
      'check_run.completed.conclusion-success',
      'check_run.completed.conclusion-failure',
      'check_run.created.status-queued',
    ]) {
      events.length = 0;
      const body = sample(name);
      const expected = sampleShape.parse(JSON.parse(body));
      const result = await deliver({ event: 'check_run', body });
      expect(result.status, name).toBe(202);
      await eventually(async () => events.length === 1, `onEvent for ${name}`, 2_000);
      expect(events[0]).toEqual({
        kind: 'checks',
        repo: expected.repository.full_name,
        headSha: expected.check_run?.head_sha,
        deliveryId: result.deliveryId,
      });
    }
  });

  it('maps check_suite, workflow_run and workflow_job to the same checks event', async () => {
    const cases = [
      ['check_suite', 'check_suite.completed.conclusion-success'],
      ['workflow_run', 'workflow_run.completed.conclusion-success'],
      ['workflow_job', 'workflow_job.completed.conclusion-failure'],
      ['workflow_job', 'workflow_job.in_progress'],
    ] as const;
    for (const [event, name] of cases) {
      events.length = 0;
      const body = sample(name);
      const expected = sampleShape.parse(JSON.parse(body));
      const headSha =
        expected.check_suite?.head_sha ?? expected.workflow_run?.head_sha ?? expected.workflow_job?.head_sha;
      expect(headSha, name).toBeDefined();
      const result = await deliver({ event, body });
      expect(result.status, name).toBe(202);
      await eventually(async () => events.length === 1, `onEvent for ${name}`, 2_000);
      expect(events[0]).toEqual({
        kind: 'checks',
        repo: expected.repository.full_name,
        headSha,
        deliveryId: result.deliveryId,
      });
    }
  });

  it('reports a pull_request with its number, head SHA and action', async () => {
    const result = await deliver({ event: 'pull_request', body: pullRequestBody('closed', true) });
    expect(result.status).toBe(202);
    await eventually(async () => events.length === 1, 'onEvent for pull_request', 2_000);
    expect(events[0]).toEqual({
      kind: 'pull_request',
      repo: 'acme/shop',
      number: 42,
      headSha: '0123456789abcdef0123456789abcdef01234567',
      action: 'closed',
      deliveryId: result.deliveryId,
    });
  });

  it('accepts the form-encoded content type GitHub hooks can be set to', async () => {
    const body = new URLSearchParams({ payload: pullRequestBody('synchronize', false) }).toString();
    const result = await deliver({ event: 'pull_request', body, contentType: 'application/x-www-form-urlencoded' });
    expect(result.status).toBe(202);
    await eventually(
      async () => events[0]?.kind === 'pull_request' && events[0].action === 'synchronize',
      'form-encoded pull_request',
      2_000,
    );
  });

  it('rejects a bad signature with 401, logs a warning without the body and never calls onEvent', async () => {
    const body = sample('check_run.completed.conclusion-success');
    const wrongSecret = await deliver({ event: 'check_run', body, signature: sign(body, 'some-other-secret') });
    expect(wrongSecret.status).toBe(401);
    const tampered = await deliver({
      event: 'check_run',
      body: body.replace('"success"', '"failure"'),
      signature: sign(body),
    });
    expect(tampered.status).toBe(401);
    const garbage = await deliver({ event: 'check_run', body, signature: 'sha256=nothex' });
    expect(garbage.status).toBe(401);
    await settle();
    expect(events).toEqual([]);
    const warnings = logLines.filter((l) => l.includes('bad signature'));
    expect(warnings).toHaveLength(3);
    for (const line of warnings) {
      expect(line).toContain('"level":"warn"');
      expect(line).not.toContain('Codertocat');
      expect(line).not.toContain('ec26c3e57ca3a959ca5aad62de7213c562f8c821');
    }
    expect(wrongSecret.body).not.toContain('Codertocat');
  });

  it('rejects a missing signature with 401 and never calls onEvent', async () => {
    const result = await deliver({
      event: 'check_run',
      body: sample('check_run.completed.conclusion-success'),
      signature: null,
    });
    expect(result.status).toBe(401);
    await settle();
    expect(events).toEqual([]);
    expect(logLines.some((l) => l.includes('no x-hub-signature-256') && l.includes('"level":"warn"'))).toBe(true);
  });

  it('rejects a correctly signed body that is not JSON with 400', async () => {
    const result = await deliver({ event: 'check_run', body: '{"check_run": ' });
    expect(result.status).toBe(400);
    await settle();
    expect(events).toEqual([]);
  });

  it('rejects a signed payload of a supported event that lacks what we read with 400', async () => {
    const result = await deliver({
      event: 'check_run',
      body: JSON.stringify({ action: 'completed', repository: { full_name: 'acme/shop' } }),
    });
    expect(result.status).toBe(400);
    await settle();
    expect(events).toEqual([]);
  });

  it('answers ping with 200 and acknowledges unsupported events with 202 without calling onEvent', async () => {
    const ping = await deliver({
      event: 'ping',
      body: JSON.stringify({ zen: 'Keep it logically awesome.', hook_id: 1 }),
    });
    expect(ping.status).toBe(200);
    const issues = await deliver({
      event: 'issues',
      body: JSON.stringify({ action: 'opened', issue: { number: 1 }, repository: { full_name: 'acme/shop' } }),
    });
    expect(issues.status).toBe(202);
    expect(issues.body).toContain('ignored');
    await settle();
    expect(events).toEqual([]);
  });

  it('answers 405 to anything but POST', async () => {
    const get = await deliver({ event: 'check_run', body: '', method: 'GET' });
    expect(get.status).toBe(405);
    const put = await deliver({
      event: 'check_run',
      body: sample('check_run.completed.conclusion-success'),
      method: 'PUT',
    });
    expect(put.status).toBe(405);
    await settle();
    expect(events).toEqual([]);
  });

  it('answers 413 to a body over 5 MiB, before checking the signature', async () => {
    const big = Buffer.alloc(GITHUB_WEBHOOK_MAX_BYTES + 1, 0x20);
    const result = await deliver({ event: 'check_run', body: big });
    expect(result.status).toBe(413);
    await settle();
    expect(events).toEqual([]);
    // The server is still fine afterwards.
    const next = await deliver({ event: 'ping', body: '{}' });
    expect(next.status).toBe(200);
  });

  it('answers 413 to a chunked body that grows past 5 MiB without a content-length', async () => {
    const chunk = Buffer.alloc(1024 * 1024, 0x20);
    let sent = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        // Eight MiB in all: past the limit, and finite so a server that reads on would still answer.
        if (sent >= 8) controller.close();
        else {
          sent += 1;
          controller.enqueue(chunk);
        }
      },
    });
    const response = await fetch(url, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'x-github-event': 'check_run',
        'x-github-delivery': randomUUID(),
        'x-hub-signature-256': 'sha256=00',
      },
      body: stream,
      duplex: 'half',
    });
    expect(response.status).toBe(413);
    await settle();
    expect(events).toEqual([]);
  });

  it('logs a failing onEvent and keeps serving', async () => {
    failNextHandler = true;
    const result = await deliver({ event: 'check_suite', body: sample('check_suite.completed.conclusion-success') });
    expect(result.status).toBe(202);
    await eventually(
      async () => logLines.some((l) => l.includes('github webhook handler failed') && l.includes('"level":"error"')),
      'handler failure logged',
      2_000,
    );
    const again = await deliver({ event: 'check_suite', body: sample('check_suite.completed.conclusion-success') });
    expect(again.status).toBe(202);
  });

  it('passes a redelivery through with the same delivery id (onEvent only wakes polling, so duplicates are harmless)', async () => {
    const body = sample('workflow_run.completed.conclusion-success');
    const first = await deliver({ event: 'workflow_run', body, deliveryId: 'd-1' });
    const second = await deliver({ event: 'workflow_run', body, deliveryId: 'd-1' });
    expect([first.status, second.status]).toEqual([202, 202]);
    await eventually(async () => events.length === 2, 'both deliveries', 2_000);
    expect(events.map((e) => e.deliveryId)).toEqual(['d-1', 'd-1']);
  });
});
