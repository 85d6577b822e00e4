import { Worker } from 'node:worker_threads';
import { signSlackRequest, slashCommandBody, type SlashCommandFields } from '../test/helpers/slack-requests.js';

/**
 * The load generator for the ack benchmark runs in a worker thread with plain
 * node:http, so that issuing 200 requests and reading 200 answers does not
 * share an event loop with the server under test (fetch in the same thread
 * added ~300 ms to a bare server's p50). Requests are signed up front; the
 * worker fires them all in one tick and times each from its write to the end
 * of its response.
 */

export interface LoadResult {
  status: number;
  body: string;
  elapsedMs: number;
}

interface PreparedRequest {
  body: string;
  headers: Record<string, string>;
}

const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const http = require('node:http');
const { url, requests } = workerData;
const target = new URL(url);
const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });
const results = new Array(requests.length);
let pending = requests.length;
const finish = (i, result) => {
  results[i] = result;
  pending -= 1;
  if (pending === 0) parentPort.postMessage(results);
};
requests.forEach((r, i) => {
  const started = performance.now();
  const req = http.request(
    { agent, host: target.hostname, port: target.port, path: target.pathname, method: 'POST',
      headers: { ...r.headers, 'content-length': Buffer.byteLength(r.body) } },
    (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => finish(i, { status: res.statusCode, body: Buffer.concat(chunks).toString('utf8'), elapsedMs: performance.now() - started }));
      res.on('error', (e) => finish(i, { status: 0, body: String(e), elapsedMs: performance.now() - started }));
    },
  );
  req.on('error', (e) => finish(i, { status: 0, body: String(e), elapsedMs: performance.now() - started }));
  req.end(r.body);
});
`;

export function prepareSlashCommands(signingSecret: string, fields: readonly SlashCommandFields[]): PreparedRequest[] {
  const timestamp = Math.floor(Date.now() / 1000);
  return fields.map((f) => {
    const body = slashCommandBody(f);
    return {
      body,
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        'user-agent': 'Slackbot 1.0 (+https://api.slack.com/robots)',
        'x-slack-request-timestamp': String(timestamp),
        'x-slack-signature': signSlackRequest(signingSecret, timestamp, body),
      },
    };
  });
}

/** Sends every request at once from a worker thread; resolves with one result per request, in order. */
export function fireConcurrently(url: string, requests: readonly PreparedRequest[], timeoutMs = 30_000): Promise<LoadResult[]> {
  return new Promise((resolveAll, reject) => {
    const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { url, requests } });
    const timer = setTimeout(() => {
      void worker.terminate();
      reject(new Error(`load client: no answer to all ${requests.length} requests within ${timeoutMs} ms`));
    }, timeoutMs);
    worker.once('message', (results: LoadResult[]) => {
      clearTimeout(timer);
      void worker.terminate().then(() => resolveAll(results));
    });
    worker.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}
