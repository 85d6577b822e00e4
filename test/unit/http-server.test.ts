import { request, type IncomingMessage, type ServerResponse } from 'node:http';
import { PassThrough } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { serveHttp, type HttpService } from '../../src/app/serve-http.js';
import { createLogger } from '../../src/log.js';
import { createMetrics } from '../../src/metrics.js';
import type { HttpRoute } from '../../src/ports/http.js';

/**
 * SPEC §8 and issue 12: the HTTP servers of a process. /readyz answers 503 from the moment the
 * shutdown begins (`draining`), /healthz stays 200 until the servers close, a route refuses new
 * requests while draining and the ones in flight finish; /metrics is served where it is given.
 */

const log = createLogger({ level: 'silent', destination: new PassThrough() });
const services: HttpService[] = [];

afterEach(async () => {
  await Promise.all(services.splice(0).map((service) => service.close()));
});

async function serve(options: {
  routes?: HttpRoute[];
  draining?: () => boolean;
  metrics?: boolean;
  ready?: () => Promise<boolean>;
}): Promise<string> {
  const service = await serveHttp({
    routes: options.routes ?? [],
    ready: options.ready ?? (async () => true),
    draining: options.draining ?? (() => false),
    metrics: options.metrics === false ? undefined : createMetrics(),
    log,
    port: 0,
  });
  services.push(service);
  return `http://127.0.0.1:${service.port}`;
}

async function get(url: string): Promise<{ status: number; body: string }> {
  const response = await fetch(url);
  return { status: response.status, body: await response.text() };
}

describe('readiness and liveness while the process drains', () => {
  it('answers /readyz 503 "draining" as soon as draining, whatever Redis says, and /healthz 200', async () => {
    let draining = false;
    let readyCalls = 0;
    const base = await serve({
      draining: () => draining,
      ready: async () => {
        readyCalls += 1;
        return true;
      },
    });
    expect(await get(`${base}/readyz`)).toEqual({ status: 200, body: JSON.stringify({ status: 'ready' }) });
    draining = true;
    expect(await get(`${base}/readyz`)).toEqual({ status: 503, body: JSON.stringify({ status: 'draining' }) });
    // Draining is decided without asking Redis (whose connection may be closing by then).
    expect(readyCalls).toBe(1);
    expect(await get(`${base}/healthz`)).toEqual({ status: 200, body: JSON.stringify({ status: 'ok' }) });
    expect((await get(`${base}/metrics`)).status).toBe(200);
  });

  it('refuses new route requests with 503 while draining, and settles once the ones in flight finish', async () => {
    let draining = false;
    let release: (() => void) | undefined;
    const slow: HttpRoute = {
      method: 'POST',
      path: '/slow',
      listener: (req: IncomingMessage, res: ServerResponse) => {
        req.resume();
        release = () => {
          res.writeHead(200, { 'content-type': 'text/plain' });
          res.end('done');
        };
      },
    };
    const service = await serveHttp({
      routes: [slow],
      ready: async () => true,
      draining: () => draining,
      metrics: undefined,
      log,
      port: 0,
    });
    services.push(service);
    const base = `http://127.0.0.1:${service.port}`;

    const inFlight = fetch(`${base}/slow`, { method: 'POST', body: 'x' });
    await expect.poll(() => release !== undefined).toBe(true);
    draining = true;

    const refused = await fetch(`${base}/slow`, { method: 'POST', body: 'y' });
    expect(refused.status).toBe(503);
    expect(refused.headers.get('connection')).toBe('close');
    expect(await refused.json()).toEqual({ error: 'shutting down' });

    let settled = false;
    const settling = service.settle(5_000).then(() => {
      settled = true;
    });
    await new Promise((r) => setTimeout(r, 50));
    expect(settled).toBe(false);
    release?.();
    const answered = await inFlight;
    expect(answered.status).toBe(200);
    expect(await answered.text()).toBe('done');
    await settling;
    expect(settled).toBe(true);
    // Still listening after it settled: health answers until close().
    expect((await get(`${base}/healthz`)).status).toBe(200);
  });

  it('does not wait past its bound for a request that never finishes', async () => {
    let draining = false;
    const stuck: HttpRoute = { method: 'POST', path: '/stuck', listener: () => undefined };
    const service = await serveHttp({
      routes: [stuck],
      ready: async () => true,
      draining: () => draining,
      metrics: undefined,
      log,
      port: 0,
    });
    services.push(service);
    const sent = new Promise<void>((resolveSent) => {
      const req = request({
        host: '127.0.0.1',
        port: service.port,
        method: 'POST',
        path: '/stuck',
        headers: { 'content-length': '1' },
      });
      req.on('error', () => undefined);
      req.end('x', resolveSent);
    });
    await sent;
    await new Promise((r) => setTimeout(r, 50));
    draining = true;
    const started = Date.now();
    await service.settle(200);
    expect(Date.now() - started).toBeLessThan(2_000);
    // close() cuts the connection still open instead of waiting for it.
    await service.close();
    services.splice(services.indexOf(service), 1);
  });
});

describe('where /metrics is served', () => {
  it('serves Prometheus text with shipgate_ metrics and the standard Node.js process metrics', async () => {
    const base = await serve({});
    const response = await fetch(`${base}/metrics`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^text\/plain/);
    const text = await response.text();
    expect(text).toContain('# TYPE shipgate_runs_requested_total counter');
    expect(text).toContain('# TYPE process_cpu_seconds_total counter');
  });

  it('answers 404 for /metrics on a server without a registry (METRICS_PORT serves it instead)', async () => {
    const base = await serve({ metrics: false });
    expect((await get(`${base}/metrics`)).status).toBe(404);
    expect((await get(`${base}/healthz`)).status).toBe(200);
    expect((await get(`${base}/readyz`)).status).toBe(200);
  });
});
