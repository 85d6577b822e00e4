import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { eventually } from '../helpers/eventually.js';
import type { SlackMessage } from '../helpers/slack-server.js';
import { sendBlockAction, sendSlashCommand } from '../helpers/slack-requests.js';
import { SIGNING_SECRET, startTestBot, type TestBot } from '../helpers/bot.js';

/**
 * Issue 2, "done when": the bot driven over signed HTTP by Bolt's real
 * receiver, writing through the real WebClient to a local Slack Web API.
 */

const ackSchema = z.object({ response_type: z.literal('ephemeral'), text: z.string() });
const RUN_ID = /sg-[a-z0-9]{8}/;

let bot: TestBot | undefined;
afterEach(async () => {
  expect(bot?.slack.unexpected ?? []).toEqual([]);
  await bot?.stop();
  bot = undefined;
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
    await eventually(async () => (await bot?.app.store.get(runId))?.chat.ts === root.ts, 'card ts recorded', 5_000);
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
