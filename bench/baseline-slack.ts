import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage } from 'node:http';

/**
 * The baseline for the ack benchmark: a bare node:http server that does the
 * least a Slack slash-command endpoint must do (read the body, check the
 * timestamp and the v0 HMAC signature, parse the form) and answers the same
 * ephemeral JSON shipgate answers, without touching Redis.
 */
export interface BaselineSlackApp {
  url: string;
  close(): Promise<void>;
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolveBody, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => resolveBody(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function runId(): string {
  const alphabet = '0123456789abcdefghijklmnopqrstuvwxyz';
  return `sg-${Array.from(randomBytes(8), (byte) => alphabet[byte % 36]).join('')}`;
}

export async function startBaselineSlackApp(signingSecret: string): Promise<BaselineSlackApp> {
  const server = createServer((req, res) => {
    readBody(req)
      .then((raw) => {
        const timestamp = Number(req.headers['x-slack-request-timestamp']);
        const signature = String(req.headers['x-slack-signature'] ?? '');
        const expected = `v0=${createHmac('sha256', signingSecret).update(`v0:${timestamp}:${raw.toString('utf8')}`).digest('hex')}`;
        const fresh = Number.isFinite(timestamp) && Math.abs(Date.now() / 1000 - timestamp) <= 300;
        const valid = signature.length === expected.length && timingSafeEqual(Buffer.from(signature), Buffer.from(expected));
        if (!fresh || !valid) {
          res.writeHead(401).end();
          return;
        }
        const form = new URLSearchParams(raw.toString('utf8'));
        const repo = (form.get('text') ?? '').split(' ')[0] ?? '';
        const body = JSON.stringify({
          response_type: 'ephemeral',
          text: `Queued run ${runId()} on ${repo}. Follow it in the thread of the card in this channel.`,
        });
        res.writeHead(200, { 'content-type': 'application/json' }).end(body);
      })
      .catch(() => {
        if (!res.headersSent) res.writeHead(500).end();
      });
  });
  await new Promise<void>((resolveListen, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolveListen());
  });
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('baseline server has no TCP address');
  return {
    url: `http://127.0.0.1:${address.port}/slack/events`,
    close: () =>
      new Promise<void>((resolveClose, reject) => {
        server.close((error) => (error ? reject(error) : resolveClose()));
        server.closeAllConnections();
      }),
  };
}
