import { Redis } from 'ioredis';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { z } from 'zod';
import { eventually } from '../helpers/eventually.js';
import type { SlackMessage } from '../helpers/slack-server.js';
import { sendBlockAction, sendSlashCommand } from '../helpers/slack-requests.js';
import { SIGNING_SECRET, TEST_POLICY, startTestBot, type TestBot } from '../helpers/bot.js';

/**
 * Issue 2, "done when": the bot driven over signed HTTP by Bolt's real
 * receiver, writing through the real WebClient to a local Slack Web API.
 */

const ackSchema = z.object({ response_type: z.literal('ephemeral'), text: z.string() });
const RUN_ID = /sg-[a-z0-9]{8}/;

let bot: TestBot | undefined;
/** A second web replica on the same Redis prefix, for tests that need one. */
let replica: TestBot | undefined;
afterEach(async () => {
  expect(bot?.slack.unexpected ?? []).toEqual([]);
  expect(replica?.slack.unexpected ?? []).toEqual([]);
  await replica?.stop();
  await bot?.stop();
  bot = undefined;
  replica = undefined;
});

function ackText(result: { json: unknown }): string {
  return ackSchema.parse(result.json).text;
}

function cardText(message: SlackMessage): string {
  return JSON.stringify(message.blocks ?? []) + (message.text ?? '');
}

async function ship(b: TestBot, text: string, user = 'UALICE', channel = 'CSHOP', extra: { trigger_id?: string } = {}, options = {}) {
  return sendSlashCommand(b.eventsUrl, SIGNING_SECRET, { text, user_id: user, channel_id: channel, ...extra }, options);
}

async function startedRun(b: TestBot, text = 'acme/shop add a /healthz endpoint') {
  const result = await ship(b, text);
  const runId = RUN_ID.exec(ackText(result))?.[0];
  if (runId === undefined) throw new Error(`no run id in ack: ${result.body}`);
  const root = await b.slack.waitFor((s) => s.messages('CSHOP').find((m) => m.thread_ts === undefined || m.thread_ts === m.ts), 5_000, 'root card');
  return { runId, root, result };
}

describe('/ship over signed HTTP', () => {
  it('acks a run request within 3 s, stores the run and posts the card naming repo, requester and gates', async () => {
    bot = await startTestBot({ name: 'start' });
    const { runId, root, result } = await startedRun(bot);
    expect(result.status).toBe(200);
    expect(result.elapsedMs).toBeLessThan(3_000);

    const run = await bot.app.store.get(runId);
    expect(run).toMatchObject({ repo: 'acme/shop', task: 'add a /healthz endpoint', requester: { userId: 'UALICE' }, chat: { channel: 'CSHOP' } });
    const text = cardText(root);
    expect(text).toContain('acme/shop');
    expect(text).toContain('<@UALICE>');
    for (const gate of ['agent', 'pr', 'ci', 'merge']) expect(text).toContain(gate);
    // The card message is the run's root: the store knows its ts, so later updates edit it in place.
    await eventually(async () => (await bot?.app.store.get(runId))?.chat.card === root.ts, 'card ts recorded', 5_000);
  });

  it('rejects a bad signature and a 10-minute-old timestamp with 401 and creates nothing', async () => {
    bot = await startTestBot({ name: 'sig' });
    const forged = await ship(bot, 'acme/shop do it', 'UALICE', 'CSHOP', {}, { signature: 'v0=' + '0'.repeat(64) });
    expect(forged.status).toBe(401);
    const stale = await ship(bot, 'acme/shop do it', 'UALICE', 'CSHOP', {}, { timestamp: Math.floor(Date.now() / 1000) - 600 });
    expect(stale.status).toBe(401);
    expect(await bot.app.store.listActive()).toEqual([]);
    expect(bot.slack.callsOf('chat.postMessage')).toEqual([]);
  });

  it('answers help with usage, ephemerally', async () => {
    bot = await startTestBot({ name: 'help' });
    const text = ackText(await ship(bot, 'help'));
    expect(text).toContain('/ship status');
    expect(text).toContain('/ship cancel');
  });

  it.each([
    ['an unknown repository', 'acme/nope fix it', 'UALICE', 'CSHOP', 'not a repository shipgate may change'],
    ['a channel the repo does not allow', 'acme/shop fix it', 'UALICE', 'COTHER', 'can only be requested in'],
    ['a missing task', 'acme/shop', 'UALICE', 'CSHOP', 'Say what to change'],
    ['an unauthorised requester', 'acme/shop fix it', 'UMALLORY', 'CSHOP', 'not allowed to request runs on acme/shop'],
    ['no repository where the channel has no default', 'fix the footer', 'UALICE', 'CSHOP', 'Name the repository first'],
  ])('refuses %s ephemerally, creates no run and audits the refusal', async (_case, text, user, channel, expected) => {
    bot = await startTestBot({ name: 'refuse' });
    const result = await ship(bot, text, user, channel);
    expect(result.status).toBe(200);
    expect(ackText(result)).toContain(expected);
    expect(await bot.app.store.listActive()).toEqual([]);
    expect(bot.slack.callsOf('chat.postMessage')).toEqual([]);
    const verdict = await bot.app.audit.verify();
    expect(verdict).toMatchObject({ ok: true, count: 1 });
  });

  it('lets a member of an allowed user group request, and uses the channel default repository', async () => {
    bot = await startTestBot({ name: 'group' });
    expect(ackText(await ship(bot, 'acme/shop tidy the README', 'UBOB'))).toMatch(RUN_ID);
    const viaDefault = ackText(await ship(bot, 'status page shows 500s', 'UCAROL', 'CDEFAULT'));
    const runId = RUN_ID.exec(viaDefault)?.[0] ?? '';
    expect(await bot.app.store.get(runId)).toMatchObject({ repo: 'acme/docs', task: 'status page shows 500s' });
  });

  it('creates one run when Slack delivers the same command twice', async () => {
    bot = await startTestBot({ name: 'dedupe' });
    const first = await ship(bot, 'acme/shop add a /healthz endpoint', 'UALICE', 'CSHOP', { trigger_id: '123.456.abc' });
    const retry = await ship(bot, 'acme/shop add a /healthz endpoint', 'UALICE', 'CSHOP', { trigger_id: '123.456.abc' }, { retryNum: 1, retryReason: 'http_timeout' });
    expect(first.status).toBe(200);
    expect(retry.status).toBe(200);
    expect(RUN_ID.exec(ackText(retry))?.[0]).toBe(RUN_ID.exec(ackText(first))?.[0]);
    expect(await bot.app.store.listActive()).toHaveLength(1);
    await bot.slack.waitFor((s) => s.callsOf('chat.postMessage').length >= 1, 5_000);
    // Give a duplicate card a chance to appear before asserting there is none.
    await new Promise((r) => setTimeout(r, 500));
    expect(bot.slack.callsOf('chat.postMessage')).toHaveLength(1);
  });
});

describe('status and cancel', () => {
  it('status lists the run; cancel is confirmed in the thread once the work stopped, and the card shows it', async () => {
    bot = await startTestBot({ name: 'cancel', cardUpdateIntervalMs: 200 });
    const { runId, root } = await startedRun(bot);
    const status = ackText(await ship(bot, 'status'));
    expect(status).toContain(runId);
    expect(ackText(await ship(bot, `status ${runId}`))).toContain('acme/shop');

    const ack = ackText(await ship(bot, `cancel ${runId}`));
    expect(ack).toContain('once its work has stopped');
    await eventually(async () => (await bot?.app.store.get(runId))?.state === 'cancelled', 'run cancelled', 5_000);
    const confirmation = await bot.slack.waitFor((s) => s.messages('CSHOP').find((m) => m.thread_ts === root.ts && m.ts !== root.ts && /cancel/i.test(m.text ?? '')), 5_000, 'cancel reply');
    expect(confirmation.text).toMatch(/cancel/i);
    await bot.slack.waitFor(() => /cancelled/i.test(cardText(root)) && !cardText(root).includes('shipgate.cancel'), 5_000, 'card shows cancelled without a Cancel button');
    const types = (await bot.app.audit.eventsForRun(runId)).map((e) => e.type);
    expect(types).toEqual(expect.arrayContaining(['run.requested', 'run.queued', 'run.cancel_requested', 'run.cancelled']));
  });

  it('refuses a Cancel click by someone else ephemerally and cancels on the requester’s click', async () => {
    bot = await startTestBot({ name: 'button', cardUpdateIntervalMs: 200 });
    const { runId, root } = await startedRun(bot);
    const click = (user: string) =>
      sendBlockAction(bot?.eventsUrl ?? '', SIGNING_SECRET, { user_id: user, channel_id: 'CSHOP', message_ts: root.ts, action_id: 'shipgate.cancel', value: runId });

    expect((await click('UMALLORY')).status).toBe(200);
    const refusal = await bot.slack.waitFor((s) => s.ephemerals.find((e) => e.user === 'UMALLORY'), 5_000, 'ephemeral refusal');
    expect(refusal.text).toContain('Only the requester');
    expect((await bot.app.store.get(runId))?.state).not.toBe('cancelled');
    expect((await bot.app.audit.eventsForRun(runId)).map((e) => e.type)).toContain('action.refused');

    await click('UALICE');
    await click('UALICE'); // a double click changes nothing more
    await eventually(async () => (await bot?.app.store.get(runId))?.state === 'cancelled', 'run cancelled', 5_000);
    await new Promise((r) => setTimeout(r, 400));
    const cancelReplies = bot.slack.messages('CSHOP').filter((m) => m.thread_ts === root.ts && m.ts !== root.ts && /cancel/i.test(m.text ?? ''));
    expect(cancelReplies).toHaveLength(1);
  });

  it('lets an approver cancel, and says so when the run does not exist', async () => {
    bot = await startTestBot({ name: 'approver' });
    const { runId } = await startedRun(bot);
    expect(ackText(await ship(bot, 'cancel sg-00000000'))).toContain('There is no run sg-00000000');
    expect(ackText(await ship(bot, `cancel ${runId}`, 'UAPPROVER'))).toContain('Cancelling');
  });
});

/** Starts `/ship <text>` and returns the new run's id (fails the test when none was queued). */
async function shipRun(b: TestBot, text: string, user = 'UALICE', channel = 'CSHOP', extra: { trigger_id?: string } = {}): Promise<string> {
  const text_ = ackText(await ship(b, text, user, channel, extra));
  const runId = /^Queued run (sg-[a-z0-9]{8})/.exec(text_)?.[1];
  if (runId === undefined) throw new Error(`not queued: ${text_}`);
  return runId;
}

const storedAuditEvent = z.looseObject({ type: z.string(), actor: z.string(), runId: z.string().nullable(), data: z.record(z.string(), z.unknown()) });

/** Every event of the bot's audit log, as stored (refusals of a run request belong to no run). */
async function allAuditEvents(b: TestBot): Promise<Array<z.infer<typeof storedAuditEvent>>> {
  const redis = new Redis(inject('redisUrl'));
  try {
    const rows = await redis.lrange(`${b.config.redisPrefix}:audit:log`, 0, -1);
    return rows.map((row) => storedAuditEvent.parse(JSON.parse(row)));
  } finally {
    await redis.quit();
  }
}

describe('active-run limits (policy limits)', () => {
  it('refuses a 4th active run of one person, naming the runs, the limit and its policy key; audits the refusal; a redelivery still answers "already queued"', async () => {
    bot = await startTestBot({ name: 'limit-user' });
    const runIds: string[] = [];
    for (const n of [1, 2, 3]) runIds.push(await shipRun(bot, `acme/shop task ${n}`, 'UALICE', 'CSHOP', { trigger_id: `limit.${n}` }));

    const refused = await ship(bot, 'acme/shop task 4', 'UALICE', 'CSHOP', { trigger_id: 'limit.4' });
    expect(refused.status).toBe(200);
    expect(refused.elapsedMs).toBeLessThan(3_000);
    const text = ackText(refused);
    expect(text).toBe(
      `You already have 3 active runs (${runIds.join(', ')}); the limit is 3 (policy limits.activeRunsPerUser). Cancel one with \`/ship cancel &lt;run-id&gt;\` or wait until one ends.`,
    );
    expect(await bot.app.store.listActive()).toHaveLength(3);
    const refusal = (await allAuditEvents(bot)).find((e) => e.type === 'command.refused');
    expect(refusal).toMatchObject({ actor: 'UALICE', runId: null, data: { repo: 'acme/shop', limit: 'activeRunsPerUser', max: 3, activeRuns: runIds } });

    // Slack redelivering an accepted command is not a new run: it is answered, not refused or counted.
    const redelivered = await ship(bot, 'acme/shop task 3', 'UALICE', 'CSHOP', { trigger_id: 'limit.3' }, { retryNum: 1, retryReason: 'http_timeout' });
    expect(ackText(redelivered)).toBe(`Run ${runIds[2]} is already queued for this request.`);
    // The limit is per person: someone else may still start a run.
    await shipRun(bot, 'acme/shop tidy the README', 'UBOB');
    expect(await bot.app.store.listActive()).toHaveLength(4);

    // Once one of hers has ended, she may start another.
    expect(ackText(await ship(bot, `cancel ${runIds[0]}`))).toContain('Cancelling');
    await eventually(async () => (await bot?.app.store.get(runIds[0] ?? ''))?.state === 'cancelled', 'run cancelled', 5_000);
    await shipRun(bot, 'acme/shop task 5');
  });

  it('refuses a run over the global limit without naming anyone else’s runs, and audits it', async () => {
    bot = await startTestBot({ name: 'limit-all', policy: `${TEST_POLICY}limits: { activeRunsPerUser: 3, activeRuns: 2 }\n` });
    const alices = await shipRun(bot, 'acme/shop add a /healthz endpoint', 'UALICE');
    const bobs = await shipRun(bot, 'acme/shop tidy the README', 'UBOB');

    const text = ackText(await ship(bot, 'fix the footer', 'UCAROL', 'CDEFAULT'));
    expect(text).toBe('shipgate already has 2 active runs; the limit is 2 (policy limits.activeRuns). Try again once some have ended, or ask your platform team to raise the limit.');
    expect(text).not.toContain(alices);
    expect(text).not.toContain(bobs);
    expect(await bot.app.store.listActive()).toHaveLength(2);
    const refusal = (await allAuditEvents(bot)).find((e) => e.type === 'command.refused');
    expect(refusal).toMatchObject({ actor: 'UCAROL', data: { repo: 'acme/docs', limit: 'activeRuns', max: 2, active: 2 } });
  });

  it('counts a retried run against the limits as a new one: refused while the person is at the limit, accepted once there is room', async () => {
    // The agent gate fails the first run and keeps every other one waiting.
    const agent = {
      run: async ({ run }: { run: { task: string } }) =>
        run.task.includes('doomed')
          ? { kind: 'failed' as const, summary: 'the agent gave up' }
          : { kind: 'pending' as const, summary: 'working', recheckAfterMs: 60_000 },
    };
    bot = await startTestBot({
      name: 'limit-retry',
      policy: `${TEST_POLICY}limits: { activeRunsPerUser: 1, activeRuns: 10 }\n`,
      steps: { agent },
    });
    const b = bot;
    const doomed = await shipRun(b, 'acme/shop a doomed task', 'UALICE', 'CSHOP');
    await eventually(async () => (await b.app.store.get(doomed))?.state === 'failed', 'the first run failed', 10_000);
    const busy = await shipRun(b, 'acme/shop another task', 'UALICE', 'CSHOP');

    const refused = ackText(await ship(b, `retry ${doomed}`, 'UALICE', 'CSHOP'));
    expect(refused).toBe(
      `You already have 1 active run (${busy}); the limit is 1 (policy limits.activeRunsPerUser). Cancel one with \`/ship cancel &lt;run-id&gt;\` or wait until one ends.`,
    );
    expect((await b.app.store.get(doomed))?.state).toBe('failed');
    expect((await b.app.store.listActive()).map((run) => run.id)).toEqual([busy]);
    const refusal = (await allAuditEvents(b)).find((e) => e.type === 'command.refused');
    expect(refusal).toMatchObject({ actor: 'UALICE', data: { runId: doomed, limit: 'activeRunsPerUser', max: 1, activeRuns: [busy] } });
    expect((await allAuditEvents(b)).some((e) => e.type === 'run.retried')).toBe(false);

    // With the other run ended, the retry goes ahead.
    expect(ackText(await ship(b, `cancel ${busy}`))).toContain('Cancelling');
    await eventually(async () => (await b.app.store.get(busy))?.state === 'cancelled', 'run cancelled', 10_000);
    expect(ackText(await ship(b, `retry ${doomed}`, 'UALICE', 'CSHOP'))).toContain(`Retrying run ${doomed}`);
    expect((await b.app.store.listActive()).map((run) => run.id)).toEqual([doomed]);
  });

  it('lets only one of concurrent requests at the limit edge win, across two web replicas', async () => {
    bot = await startTestBot({ name: 'limit-race' });
    replica = await startTestBot({ name: 'limit-race-web', env: { SHIPGATE_REDIS_PREFIX: bot.config.redisPrefix, SHIPGATE_ROLE: 'web' } });
    const first = await shipRun(bot, 'acme/shop task 1');
    const second = await shipRun(replica, 'acme/shop task 2');

    // Two requests to each replica at once, with one slot left.
    const results = await Promise.all([bot, replica, bot, replica].map((b, i) => ship(b, `acme/shop racing task ${i}`)));
    const texts = results.map(ackText);
    const queued = texts.filter((t) => t.startsWith('Queued run'));
    const refused = texts.filter((t) => t.startsWith('You already have 3 active runs'));
    expect(queued).toHaveLength(1);
    expect(refused).toHaveLength(3);
    const winner = RUN_ID.exec(queued[0] ?? '')?.[0] ?? '';
    for (const t of refused) expect(t).toContain(`(${first}, ${second}, ${winner})`);
    const active = await bot.app.store.listActive();
    expect(active.map((r) => r.id).sort()).toEqual([first, second, winner].sort());
  });
});

describe('who can see a run (SPEC §6)', () => {
  it('status and audit show a run to its requester, the repo’s requesters and approvers and in its channel, and to no one else', async () => {
    bot = await startTestBot({ name: 'visibility' });
    const runId = await shipRun(bot, 'acme/shop add a /healthz endpoint', 'UALICE', 'CSHOP');
    const unknown = (id: string) => `There is no run ${id} that you can see. \`/ship status\` lists the active runs you can see.`;

    // A stranger in another channel: the same answer as for a run that does not exist.
    expect(ackText(await ship(bot, 'status sg-00000000', 'UMALLORY', 'COTHER'))).toBe(unknown('sg-00000000'));
    expect(ackText(await ship(bot, 'audit sg-00000000', 'UMALLORY', 'COTHER'))).toBe(unknown('sg-00000000'));
    expect(ackText(await ship(bot, `status ${runId}`, 'UMALLORY', 'COTHER'))).toBe(unknown(runId));
    expect(ackText(await ship(bot, `audit ${runId}`, 'UMALLORY', 'COTHER'))).toBe(unknown(runId));
    expect(ackText(await ship(bot, `cancel ${runId}`, 'UMALLORY', 'COTHER'))).toBe(unknown(runId));
    const list = ackText(await ship(bot, 'status', 'UMALLORY', 'COTHER'));
    expect(list).not.toContain(runId);
    expect(list).toMatch(/no active runs/i);
    // The refused looks are on the run's record.
    const refusals = (await bot.app.audit.eventsForRun(runId)).filter((e) => e.type === 'command.refused');
    expect(refusals.map((e) => e.actor)).toEqual(['UMALLORY', 'UMALLORY', 'UMALLORY']);
    expect((await bot.app.store.get(runId))?.state).not.toMatch(/cancel/);

    // The requester anywhere, a repo requester (through user group SDEVS), an approver, and anyone in the run's channel.
    for (const [user, channel] of [
      ['UALICE', 'COTHER'],
      ['UBOB', 'COTHER'],
      ['UAPPROVER', 'COTHER'],
      ['UMALLORY', 'CSHOP'],
    ] as const) {
      const status = ackText(await ship(bot, `status ${runId}`, user, channel));
      expect(status, `${user} in ${channel}`).toContain(runId);
      expect(status).toContain('acme/shop');
      expect(ackText(await ship(bot, 'status', user, channel)), `${user} in ${channel}`).toContain(runId);
      expect(ackText(await ship(bot, `audit ${runId}`, user, channel)), `${user} in ${channel}`).toContain(`Audit trail of ${runId}`);
    }
  });

  it('status without a run id lists only the runs the asker may see', async () => {
    bot = await startTestBot({ name: 'visible-list' });
    const shopRun = await shipRun(bot, 'acme/shop add a /healthz endpoint', 'UALICE', 'CSHOP');
    const docsRun = await shipRun(bot, 'fix the footer', 'UCAROL', 'CDEFAULT');

    const carolElsewhere = ackText(await ship(bot, 'status', 'UCAROL', 'COTHER'));
    expect(carolElsewhere).toContain(docsRun);
    expect(carolElsewhere).not.toContain(shopRun);
    const inShop = ackText(await ship(bot, 'status', 'UDAVE', 'CSHOP'));
    expect(inShop).toContain(shopRun);
    expect(inShop).not.toContain(docsRun);
    const approver = ackText(await ship(bot, 'status', 'UAPPROVER', 'CDEFAULT'));
    expect(approver).toContain(shopRun);
    expect(approver).toContain(docsRun);
  });
});
