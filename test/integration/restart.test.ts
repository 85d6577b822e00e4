import { afterEach, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { inject } from 'vitest';
import { createAuditLog } from '../../src/audit/audit-log.js';
import { createRunStore } from '../../src/store/run-store.js';
import { TEST_AUDIT_KEY_BYTES } from '../helpers/audit-key.js';
import { freePort } from '../helpers/global-redis.js';
import { SIGNING_SECRET, TEST_POLICY, testEnv } from '../helpers/bot.js';
import { testPrefix } from '../helpers/ids.js';
import { eventually } from '../helpers/eventually.js';
import { killAll, spawnShipgate, waitForHealthy, writePolicyFile, type ShipgateProcess } from '../helpers/process.js';
import { sendSlashCommand } from '../helpers/slack-requests.js';
import { startSlackServer, type SlackServer } from '../helpers/slack-server.js';

/**
 * Issue 2: a killed process loses nothing (SPEC §8). Real processes, real
 * SIGKILL, real Redis; the fake Slack Web API counts what was posted.
 */

const processes: ShipgateProcess[] = [];
let slack: SlackServer | undefined;
let redis: Redis | undefined;

afterEach(async () => {
  await killAll(processes.splice(0));
  await slack?.close();
  redis?.disconnect();
});

async function setup(name: string) {
  slack = await startSlackServer({ token: 'xoxb-test-token-not-real' });
  const prefix = testPrefix(name);
  const port = await freePort();
  redis = new Redis(inject('redisUrl'));
  const store = createRunStore({ redis, prefix, clock: () => new Date() });
  const audit = createAuditLog({ redis, prefix, clock: () => new Date(), key: TEST_AUDIT_KEY_BYTES });
  const env = { ...testEnv(slack, prefix, { PORT: String(port), SHIPGATE_CONFIG: writePolicyFile(TEST_POLICY) }) };
  const start = async (role: 'web' | 'all') => {
    const p = spawnShipgate({ ...env, SHIPGATE_ROLE: role });
    processes.push(p);
    await waitForHealthy(port);
    return p;
  };
  return { port, store, audit, start, slackServer: slack };
}

function rootCards(server: SlackServer) {
  return server.callsOf('chat.postMessage').filter((c) => c.body.thread_ts === undefined);
}

describe('SIGKILL and restart', { timeout: 90_000 }, () => {
  it('a run queued by a killed process is still there after a restart and proceeds, posted once', async () => {
    const { port, store, audit, start, slackServer } = await setup('restart-queued');
    // A web-only process takes the command and queues it; no worker runs it yet.
    const web = await start('web');
    const ack = await sendSlashCommand(`http://127.0.0.1:${port}/slack/events`, SIGNING_SECRET, { text: 'acme/shop add a /healthz endpoint', user_id: 'UALICE', channel_id: 'CSHOP' });
    expect(ack.status).toBe(200);
    const runId = /sg-[a-z0-9]{8}/.exec(ack.body)?.[0] ?? '';
    expect((await store.get(runId))?.state).toBe('queued');
    web.child.kill('SIGKILL');
    await web.exited;

    await start('all');
    await eventually(async () => (await store.get(runId))?.state === 'waiting', 'run proceeded to its first gate', 15_000);
    const run = await store.get(runId);
    expect(run?.gates[0], JSON.stringify(run)).toMatchObject({ name: 'agent', state: 'pending', notConfigured: true });
    expect(rootCards(slackServer)).toHaveLength(1);
    expect(await audit.verify()).toMatchObject({ ok: true });
  });

  it('killing the worker right after the card was posted neither loses the run nor posts the card twice', async () => {
    const { port, store, start, slackServer } = await setup('restart-midway');
    const first = await start('all');
    const ack = await sendSlashCommand(`http://127.0.0.1:${port}/slack/events`, SIGNING_SECRET, { text: 'acme/shop add a /healthz endpoint', user_id: 'UALICE', channel_id: 'CSHOP' });
    const runId = /sg-[a-z0-9]{8}/.exec(ack.body)?.[0] ?? '';
    await slackServer.waitFor((s) => rootCards(s).length === 1, 10_000, 'root card');
    first.child.kill('SIGKILL');
    await first.exited;

    await start('all');
    // The restarted process finishes the run's pending work: it reaches its gate and the card shows it.
    await eventually(async () => (await store.get(runId))?.state === 'waiting', 'run reached its gate', 30_000);
    await slackServer.waitFor((s) => s.callsOf('chat.update').some((c) => JSON.stringify(c.body).includes('not configured')), 30_000, 'card updated');
    expect(rootCards(slackServer)).toHaveLength(1);
  });
});
