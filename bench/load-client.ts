import { spawn } from 'node:child_process';
import { request, Agent } from 'node:http';
import { resolve } from 'node:path';
import { z } from 'zod';
import { isEntryModule } from '../src/cli/entry.js';
import { signSlackRequest, slashCommandBody } from '../test/helpers/slack-requests.js';

/**
 * The load generator of the ack benchmark, in a Node process of its own: the parent writes one
 * burst (target URL, signing secret, the commands' fields) to its stdin as JSON; it signs every
 * request first, then sends them all in one tick with plain node:http (a fresh connection each,
 * as Slack delivers them) and times each with this process's performance.now() from its write to
 * the end of its response; the results go to stdout as one JSON document. Nothing of the server
 * under test shares its event loop or its CPU accounting, so the figures are the server's.
 */

const fieldsSchema = z.object({ text: z.string(), user_id: z.string(), channel_id: z.string() });

const jobSchema = z.object({
  url: z.string(),
  signingSecret: z.string(),
  commands: z.array(fieldsSchema),
  timeoutMs: z.number().int().positive(),
});
export type LoadJob = z.infer<typeof jobSchema>;

const resultSchema = z.object({ status: z.number().int(), body: z.string(), elapsedMs: z.number() });
export type LoadResult = z.infer<typeof resultSchema>;

const reportSchema = z.object({
  results: z.array(resultSchema),
  /** First write to last response, in the client. */
  wallMs: z.number(),
});
export type LoadReport = z.infer<typeof reportSchema>;

function fire(job: LoadJob): Promise<LoadReport> {
  const target = new URL(job.url);
  const agent = new Agent({ keepAlive: false, maxSockets: Infinity });
  const timestamp = Math.floor(Date.now() / 1000);
  // Signed before the clock starts: the burst measures the server, not this process's HMACs.
  const prepared = job.commands.map((fields) => {
    const body = slashCommandBody(fields);
    return {
      body,
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        'user-agent': 'Slackbot 1.0 (+https://api.slack.com/robots)',
        'x-slack-request-timestamp': String(timestamp),
        'x-slack-signature': signSlackRequest(job.signingSecret, timestamp, body),
        'content-length': String(Buffer.byteLength(body)),
      },
    };
  });
  return new Promise((resolveAll, reject) => {
    const results: LoadResult[] = new Array<LoadResult>(prepared.length);
    let pending = prepared.length;
    const timer = setTimeout(() => reject(new Error(`no answer to all ${prepared.length} requests within ${job.timeoutMs} ms`)), job.timeoutMs);
    const started = performance.now();
    const finish = (i: number, result: LoadResult): void => {
      if (results[i] !== undefined) return;
      results[i] = result;
      pending -= 1;
      if (pending > 0) return;
      clearTimeout(timer);
      agent.destroy();
      resolveAll({ results, wallMs: performance.now() - started });
    };
    prepared.forEach((r, i) => {
      const sent = performance.now();
      const req = request({ agent, host: target.hostname, port: target.port, path: target.pathname, method: 'POST', headers: r.headers }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => finish(i, { status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8'), elapsedMs: performance.now() - sent }));
        res.on('error', (error) => finish(i, { status: 0, body: String(error), elapsedMs: performance.now() - sent }));
      });
      req.on('error', (error) => finish(i, { status: 0, body: String(error), elapsedMs: performance.now() - sent }));
      req.end(r.body);
    });
  });
}

/** Runs one burst from a fresh load-client process and returns what it measured. */
export function fireBurst(job: LoadJob): Promise<LoadReport> {
  return new Promise((resolveReport, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', resolve(import.meta.dirname, 'load-client.ts')], {
      cwd: resolve(import.meta.dirname, '..'),
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    const out: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => out.push(chunk));
    // Generous: the process must start (tsx) before the burst's own timeout begins.
    const killer = setTimeout(() => child.kill('SIGKILL'), job.timeoutMs + 30_000);
    child.once('error', (error) => {
      clearTimeout(killer);
      reject(error);
    });
    child.once('exit', (code) => {
      clearTimeout(killer);
      if (code !== 0) {
        reject(new Error(`the load client exited with ${String(code)}`));
        return;
      }
      try {
        resolveReport(reportSchema.parse(JSON.parse(Buffer.concat(out).toString('utf8'))));
      } catch (error) {
        reject(new Error(`the load client's report is unreadable: ${String(error)}`));
      }
    });
    child.stdin.end(JSON.stringify(job));
  });
}

async function main(): Promise<void> {
  const input = await new Promise<string>((resolveInput, reject) => {
    const chunks: Buffer[] = [];
    process.stdin.on('data', (chunk: Buffer) => chunks.push(chunk));
    process.stdin.once('end', () => resolveInput(Buffer.concat(chunks).toString('utf8')));
    process.stdin.once('error', reject);
  });
  const job = jobSchema.parse(JSON.parse(input));
  const report = await fire(job);
  process.stdout.write(`${JSON.stringify(report)}\n`);
}

if (isEntryModule(process.argv[1], import.meta.url)) {
  main().then(
    () => process.exit(0),
    (error: unknown) => {
      process.stderr.write(`load client failed: ${error instanceof Error ? error.message : String(error)}\n`);
      process.exit(1);
    },
  );
}
