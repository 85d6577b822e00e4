import { createServer, type Server } from 'node:http';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { HttpRoute } from '../ports/http.js';

export interface HttpServerDeps {
  /** What the configured adapters serve (Slack's events, GitHub's webhooks, …), each on its own path. */
  routes: readonly HttpRoute[];
  /** Resolves when the process can serve (Redis answers). */
  ready: () => Promise<boolean>;
  metrics: Metrics;
  log: Logger;
}

/**
 * One HTTP server for everything on PORT (SPEC §3): the routes the adapters
 * declare, and health, readiness and metrics. Two routes on one path with one
 * method are a wiring mistake and stop the start-up.
 */
export function createHttpServer(deps: HttpServerDeps): Server {
  const byPath = new Map<string, HttpRoute[]>();
  for (const route of deps.routes) {
    const same = byPath.get(route.path) ?? [];
    if (same.some((other) => other.method === route.method))
      throw new Error(`two HTTP routes for ${route.method} ${route.path}`);
    byPath.set(route.path, [...same, route]);
  }

  return createServer((req, res) => {
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
      route.listener(req, res);
      return;
    }
    if (req.method === 'GET' && path === '/healthz') {
      send(200, JSON.stringify({ status: 'ok' }));
      return;
    }
    if (req.method === 'GET' && path === '/readyz') {
      deps
        .ready()
        .then((ok) => send(ok ? 200 : 503, JSON.stringify({ status: ok ? 'ready' : 'redis unreachable' })))
        .catch(() => send(503, JSON.stringify({ status: 'redis unreachable' })));
      return;
    }
    if (req.method === 'GET' && path === '/metrics') {
      deps.metrics.registry
        .metrics()
        .then((text) => send(200, text, deps.metrics.registry.contentType))
        .catch((error: unknown) => {
          deps.log.error({ err: error }, 'metrics collection failed');
          send(500, JSON.stringify({ error: 'metrics unavailable' }));
        });
      return;
    }
    send(404, JSON.stringify({ error: 'not found' }));
  });
}
