import { createServer, type Server } from 'node:http';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { HttpRoute } from '../ports/http.js';

export interface HttpServerDeps {
  /** What the configured adapters serve (Slack's events, GitHub's webhooks, …), each on its own path. */
  routes: readonly HttpRoute[];
  /** Resolves when the process can serve (Redis answers). */
  ready: () => Promise<boolean>;
  /**
   * True from the moment the process begins to shut down: /readyz answers 503 (so the load balancer
   * stops sending) and the routes refuse new requests with 503, while /healthz stays 200 until exit.
   * Default: never.
   */
  draining?: () => boolean;
  /** Serves GET /metrics from this registry; undefined: /metrics is not on this server (404). */
  metrics: Metrics | undefined;
  log: Logger;
}

export interface HttpServer {
  server: Server;
  /**
   * Resolves once no route request is in flight, or after `withinMs` (false then). Call it once
   * `draining` answers true: no new route request starts after that, so the count only goes down.
   */
  routesSettled: (withinMs: number) => Promise<boolean>;
}

/**
 * One HTTP server (SPEC §3): the routes the adapters declare, and health,
 * readiness and (where it is served) metrics. Two routes on one path with one
 * method are a wiring mistake and stop the start-up.
 */
export function createHttpServer(deps: HttpServerDeps): HttpServer {
  const byPath = new Map<string, HttpRoute[]>();
  for (const route of deps.routes) {
    const same = byPath.get(route.path) ?? [];
    if (same.some((other) => other.method === route.method))
      throw new Error(`two HTTP routes for ${route.method} ${route.path}`);
    byPath.set(route.path, [...same, route]);
  }
  const draining = deps.draining ?? (() => false);
  let inFlight = 0;
  const settledWaiters = new Set<() => void>();
  const routeEnded = () => {
    inFlight -= 1;
    if (inFlight > 0) return;
    for (const wake of settledWaiters) wake();
    settledWaiters.clear();
  };

  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const send = (status: number, body: string, type = 'application/json', headers: Record<string, string> = {}) => {
      res.writeHead(status, { 'content-type': type, ...headers });
      res.end(body);
    };
    const routes = byPath.get(path);
    if (routes !== undefined) {
      const route = routes.find((candidate) => candidate.method === req.method);
      if (route === undefined) {
        req.resume();
        send(405, JSON.stringify({ error: 'method not allowed' }), 'application/json', {
          allow: routes.map((r) => r.method).join(', '),
        });
        return;
      }
      if (draining()) {
        // Another replica takes it (Slack and GitHub see a 503, not a half-handled request).
        req.resume();
        send(503, JSON.stringify({ error: 'shutting down' }), 'application/json', {
          connection: 'close',
          'retry-after': '1',
        });
        return;
      }
      inFlight += 1;
      res.once('close', routeEnded);
      route.listener(req, res);
      return;
    }
    if (req.method === 'GET' && path === '/healthz') {
      send(200, JSON.stringify({ status: 'ok' }));
      return;
    }
    if (req.method === 'GET' && path === '/readyz') {
      if (draining()) {
        send(503, JSON.stringify({ status: 'draining' }));
        return;
      }
      deps
        .ready()
        .then((ok) => send(ok ? 200 : 503, JSON.stringify({ status: ok ? 'ready' : 'redis unreachable' })))
        .catch(() => send(503, JSON.stringify({ status: 'redis unreachable' })));
      return;
    }
    const metrics = deps.metrics;
    if (req.method === 'GET' && path === '/metrics' && metrics !== undefined) {
      metrics.registry
        .metrics()
        .then((text) => send(200, text, metrics.registry.contentType))
        .catch((error: unknown) => {
          deps.log.error({ err: error }, 'metrics collection failed');
          send(500, JSON.stringify({ error: 'metrics unavailable' }));
        });
      return;
    }
    send(404, JSON.stringify({ error: 'not found' }));
  });

  return {
    server,
    routesSettled(withinMs) {
      if (inFlight === 0) return Promise.resolve(true);
      return new Promise<boolean>((resolveSettled) => {
        const timer = setTimeout(() => {
          settledWaiters.delete(wake);
          resolveSettled(false);
        }, withinMs);
        const wake = () => {
          clearTimeout(timer);
          resolveSettled(true);
        };
        settledWaiters.add(wake);
      });
    },
  };
}
