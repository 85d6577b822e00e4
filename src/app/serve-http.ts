import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { createHttpServer } from '../http/server.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { HttpRoute } from '../ports/http.js';

export interface HttpService {
  /** The bound port (PORT=0 picks a free one). */
  port: number;
  /**
   * Resolves once the route requests in flight have finished, or after `withinMs` (a client that
   * never finishes its request must not hold the shutdown). Call it once `draining` answers true.
   */
  settle(withinMs: number): Promise<void>;
  /** Stops listening and closes every connection (the last step of a shutdown). */
  close(): Promise<void>;
}

/**
 * An HTTP server of the process: the given routes beside /healthz and /readyz, and /metrics when a
 * registry is given. Every role serves one on PORT; with METRICS_PORT a second one serves health,
 * readiness and metrics there.
 */
export async function serveHttp(deps: {
  routes: readonly HttpRoute[];
  ready: () => Promise<boolean>;
  /** True once the process shuts down: /readyz 503, routes refused, /healthz still 200. */
  draining: () => boolean;
  /** undefined: /metrics is served elsewhere (METRICS_PORT). */
  metrics: Metrics | undefined;
  log: Logger;
  port: number;
}): Promise<HttpService> {
  const { server, routesSettled } = createHttpServer({
    routes: deps.routes,
    ready: deps.ready,
    draining: deps.draining,
    metrics: deps.metrics,
    log: deps.log,
  });
  server.listen(deps.port);
  await once(server, 'listening');
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? (address satisfies AddressInfo).port : deps.port;
  return {
    port,
    async settle(withinMs) {
      if (!(await routesSettled(withinMs)))
        deps.log.warn({ port, withinMs }, 'HTTP requests still open at shutdown; closing them');
    },
    async close() {
      const closing = once(server, 'close');
      server.close();
      // Nothing is left to answer: the probes and scrapes still open are cut, keep-alive ones too.
      server.closeAllConnections();
      await closing;
    },
  };
}
