import { createServer, type RequestListener, type Server } from 'node:http';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';

export interface HttpServerDeps {
  /** Bolt's listener for POST /slack/events, in Slack HTTP mode. */
  slack?: RequestListener | undefined;
  /** The signed GitHub webhook listener (createGitHubWebhookListener); it answers 405 to non-POST itself. */
  github?: RequestListener | undefined;
  /** Resolves when the process can serve (Redis answers). */
  ready: () => Promise<boolean>;
  metrics: Metrics;
  log: Logger;
}

/**
 * One HTTP server for everything on PORT (SPEC §3): Slack events, GitHub
 * webhooks, health, readiness and metrics.
 */
export function createHttpServer(deps: HttpServerDeps): Server {
  return createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const send = (status: number, body: string, type = 'application/json') => {
      res.writeHead(status, { 'content-type': type });
      res.end(body);
    };
    if (path === '/slack/events' && deps.slack !== undefined) {
      deps.slack(req, res);
      return;
    }
    if (path === '/github/webhooks' && deps.github !== undefined) {
      deps.github(req, res);
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
