import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { createHttpServer } from '../http/server.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { HttpRoute } from '../ports/http.js';

export interface HttpService {
  /** The bound port (PORT=0 picks a free one). */
  port: number;
  /** Stops taking connections and waits for open requests to finish. */
  close(): Promise<void>;
}

/** The one HTTP server of every role: the given routes beside /healthz, /readyz and /metrics. */
export async function serveHttp(deps: {
  routes: readonly HttpRoute[];
  ready: () => Promise<boolean>;
  metrics: Metrics;
  log: Logger;
  port: number;
}): Promise<HttpService> {
  const server = createHttpServer({ routes: deps.routes, ready: deps.ready, metrics: deps.metrics, log: deps.log });
  server.listen(deps.port);
  await once(server, 'listening');
  const address = server.address();
  return {
    port: typeof address === 'object' && address !== null ? (address satisfies AddressInfo).port : deps.port,
    async close() {
      const closing = once(server, 'close');
      server.close();
      server.closeIdleConnections();
      await closing;
    },
  };
}
