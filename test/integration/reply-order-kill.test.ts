import { createServer, type IncomingMessage, type Server } from 'node:http';
import { describe, expect, it } from 'vitest';
import { createRunStore } from '../../src/store/run-store.js';
import { startAnthropicServer, toolResultsOf, type ModelRequest } from '../helpers/anthropic-server.js';
import { SIGNING_SECRET, testEnv } from '../helpers/bot.js';
import { eventually } from '../helpers/eventually.js';
import { freePort } from '../helpers/global-redis.js';
import { testPrefix } from '../helpers/ids.js';
import { addHealthz, DEMO_POLICY, healthy, processScope, runEnded, saysDone } from '../helpers/kill-world.js';
import type { ShipgateProcess } from '../helpers/process.js';
import { sendSlashCommand } from '../helpers/slack-requests.js';
import { startSlackServer, type SlackMessage, type SlackServer } from '../helpers/slack-server.js';

/**
 * Issue 14: a worker SIGKILLed right after the run's root card reached Slack — the post landed, the
 * worker never learned its ts, and it died holding the root lease and whatever run job it had. Two
 * worker replicas run (production's shape); the other one takes over, and the thread must still
 * get every gate's reply once, in gate order, with one root card (adopted, not posted again), and
 * no reply given up on for waiting too long. The first reply's post is slow (held on its way), so
 * the later gates' replies are queued behind it and the order is the outbox's doing, not luck.
 * Real processes in Slack mode against the fake Slack
 * (through a small proxy that tells the workers apart and does the kill), a local-mode repository
 * (local forge, real sandbox), the scripted model, real Redis.
 */

const CHANNEL = 'CSHOP';
const scope = processScope();

/** Edit first, then say done: whichever process asks, and however often the kill made it ask again. */
const agentTurn = (request: ModelRequest) =>
  toolResultsOf(request).length === 0 ? addHealthz : saysDone('Added GET /healthz.');

async function bodyOf(request: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of request) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk)));
  return Buffer.concat(chunks);
}

/** How long the first thread reply's post is held on its way to Slack (well inside the 15 s reply-order patience). */
const SLOW_FIRST_REPLY_MS = 8_000;

/**
 * Forwards `/<who>/api/<method>` to the fake Slack. The first root post (a chat.postMessage without
 * thread_ts) by a worker reaches Slack, and then that worker is SIGKILLed before it sees the answer.
 * The first thread reply is held on its way for SLOW_FIRST_REPLY_MS, as a slow Slack answer would:
 * the replies of the gates after it are enqueued meanwhile, and only the outbox's order keeps them
 * behind it.
 */
async function startKillingProxy(
  slack: SlackServer,
  kill: (who: string) => void,
): Promise<{ apiUrl: (who: string) => string; killed: () => string | undefined; close: () => Promise<void> }> {
  let killed: string | undefined;
  let heldReply = false;
  const server: Server = createServer((request, response) => {
    void (async () => {
      const match = /^\/([a-z0-9]+)(\/api\/.*)$/.exec(request.url ?? '');
      if (match === null) {
        response.writeHead(404).end();
        return;
      }
      const [, who = '', path = ''] = match;
      const body = await bodyOf(request);
      const headers: Record<string, string> = {};
      for (const name of ['content-type', 'authorization']) {
        const value = request.headers[name];
        if (typeof value === 'string') headers[name] = value;
      }
      const post = path === '/api/chat.postMessage';
      if (post && !heldReply && body.toString('utf8').includes('thread_ts')) {
        heldReply = true;
        await new Promise((resolve) => setTimeout(resolve, SLOW_FIRST_REPLY_MS));
      }
      const upstream = await fetch(`${slack.url}${path}`, {
        method: request.method ?? 'POST',
        headers,
        ...(body.length > 0 ? { body } : {}),
      });
      const answer = Buffer.from(await upstream.arrayBuffer());
      const rootPost = post && !body.toString('utf8').includes('thread_ts');
      if (rootPost && killed === undefined && who.startsWith('worker')) {
        killed = who;
        kill(who);
        request.socket.destroy();
        return;
      }
      const type = upstream.headers.get('content-type');
      response.writeHead(upstream.status, type === null ? {} : { 'content-type': type }).end(answer);
    })().catch(() => request.socket.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  return {
    apiUrl: (who) => `http://127.0.0.1:${port}/${who}/api/`,
    killed: () => killed,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

const replyKey = (message: SlackMessage): string => {
  const key = message.metadata?.event_payload['key'];
  return typeof key === 'string' ? key : '';
};

describe('SIGKILL right after the root post', { timeout: 240_000 }, () => {
  it("the thread still gets each gate's reply once, in gate order, under the one root card", async () => {
    const slack = await startSlackServer({ token: 'xoxb-test-token-not-real' });
    scope.defer(() => slack.close());
    const model = await startAnthropicServer({ apiKey: 'sk-ant-scripted' });
    scope.defer(() => model.close());
    model.script(...Array.from({ length: 8 }, () => agentTurn));
    const workers = new Map<string, ShipgateProcess>();
    const proxy = await startKillingProxy(slack, (who) => workers.get(who)?.child.kill('SIGKILL'));
    scope.defer(() => proxy.close());
    const policy = scope.policyFile(DEMO_POLICY);
    const prefix = testPrefix('reply-order-kill');
    const redis = scope.redis();
    const store = createRunStore({ redis, prefix, clock: () => new Date() });

    const common = testEnv(slack, prefix, {
      SHIPGATE_CONFIG: policy,
      LOG_LEVEL: 'info',
      ANTHROPIC_BASE_URL: model.baseUrl,
      ANTHROPIC_API_KEY: 'sk-ant-scripted',
    });
    const startWorker = async (who: string): Promise<void> => {
      const port = await freePort();
      const p = scope.spawn({
        ...common,
        SHIPGATE_ROLE: 'worker',
        PORT: String(port),
        SLACK_API_URL: proxy.apiUrl(who),
      });
      workers.set(who, p);
      await healthy(p, port);
    };
    const webPort = await freePort();
    const web = scope.spawn({
      ...common,
      SHIPGATE_ROLE: 'web',
      PORT: String(webPort),
      SLACK_API_URL: proxy.apiUrl('web'),
    });
    // One worker after the other: the first seeds the sample repository, the second finds it.
    await startWorker('worker1');
    await Promise.all([startWorker('worker2'), healthy(web, webPort)]);

    const ack = await sendSlashCommand(`http://127.0.0.1:${webPort}/slack/events`, SIGNING_SECRET, {
      text: 'demo/shop add a /healthz endpoint',
      user_id: 'UALICE',
      channel_id: CHANNEL,
    });
    const runId = /sg-[a-z0-9]{8}/.exec(ack.body)?.[0] ?? '';
    expect(runId, ack.body).not.toBe('');
    const killedWho = await eventually(async () => proxy.killed(), 'a worker killed at the root post', 60_000);
    await workers.get(killedWho)?.exited;
    const survivor = workers.get(killedWho === 'worker1' ? 'worker2' : 'worker1');

    const ended = await runEnded(store, runId, 'the run ended on the surviving worker', 180_000);
    expect(ended.state, JSON.stringify(ended)).toBe('done');
    const roots = slack.messages(CHANNEL).filter((m) => m.thread_ts === undefined || m.thread_ts === m.ts);
    expect(roots).toHaveLength(1);
    const root = roots[0];
    // The card that landed before the kill is the run's card: adopted, not posted again.
    expect(ended.chat.card).toBe(root?.ts);
    const thread = () => slack.messages(CHANNEL).filter((m) => m.thread_ts === root?.ts && m.ts !== root?.ts);
    await slack.waitFor(
      () => thread().some((m) => replyKey(m).startsWith(`${runId}.ended.`)),
      30_000,
      'the ended reply',
    );

    const keys = thread().map(replyKey);
    expect(new Set(keys).size, keys.join('\n')).toBe(keys.length);
    // `<run>.<gate>.<attempt>.<outcome>` and `<run>.ended.<seq>`: the gate is the second part.
    const gates = keys.map((key) => key.split('.')[1]);
    expect(gates).toEqual([...ended.gates.map((gate) => gate.name), 'ended']);
    expect(keys.filter((key) => key.startsWith(`${runId}.`) && key.endsWith('.passed'))).toHaveLength(
      ended.gates.length,
    );
    expect(survivor?.stdout()).not.toMatch(/posting without it/);
    expect(slack.unexpected).toEqual([]);
    expect(model.unexpected).toEqual([]);
  });
});
