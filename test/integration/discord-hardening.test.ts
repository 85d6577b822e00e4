import { PassThrough } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { createDiscordChat, type DiscordChat } from '../../src/adapters/discord/discord-chat.js';
import { keyFooter } from '../../src/adapters/discord/discord-message.js';
import type { GateOutcome } from '../../src/domain/run.js';
import { createLogger } from '../../src/log.js';
import type { MessageView } from '../../src/render/view.js';
import { rich } from '../../src/render/view.js';
import type { GateStep } from '../../workers/gates/gate-step.js';
import { DISCORD_APP_ID, DISCORD_TOKEN, startTestBot, type TestBot } from '../helpers/bot.js';
import { buttonClick, callbackOf, sendInteraction, slashCommand, testKeys } from '../helpers/discord-requests.js';
import { startDiscordServer, type DiscordServer } from '../helpers/discord-server.js';
import { eventually } from '../helpers/eventually.js';
import { DISCORD_ALICE, DISCORD_SHOP, discordAnswer, discordShip } from '../helpers/world.js';

/**
 * Issue 13, hardening of the Discord adapter: interactions outside a server are refused with a
 * clear ephemeral answer; a button counts only in its run's channel; and an interrupted post is
 * found again by its key (Discord returns no nonce on a read, so the key travels in the embed
 * footer), which the chat outbox relies on to never post twice after a crash.
 */

const SHOP = `discord:${DISCORD_SHOP}`;
/** Another channel of the same server, where the run does not live. */
const ELSEWHERE = '1310000000000000150';
const POLICY = `
repos:
  acme/shop:
    channels: [${SHOP}]
    requesters: [discord:${DISCORD_ALICE}]
budgets: { maxAgentTurns: 20, maxCiIterations: 3, maxTokensPerRun: 2000000, maxCostUsdPerRun: 10, maxRunMinutes: 60 }
`;

let bot: TestBot | undefined;
let server: DiscordServer | undefined;
let chat: DiscordChat | undefined;
afterEach(async () => {
  const fakes = [...(bot?.discord?.server.unexpected ?? []), ...(server?.unexpected ?? [])];
  await bot?.stop();
  await chat?.stop();
  await server?.close();
  bot = undefined;
  chat = undefined;
  server = undefined;
  expect(fakes).toEqual([]);
});

const waiting: Record<string, GateStep> = {
  agent: { run: async (): Promise<GateOutcome> => ({ kind: 'pending', summary: 'working', recheckAfterMs: 60_000 }) },
};
const unescape = (markdown: string): string => markdown.replace(/\\(.)/g, '$1');

async function stubBot(name: string): Promise<{ b: TestBot; fake: DiscordServer }> {
  const b = await startTestBot({ name, policy: POLICY, chat: 'discord', steps: waiting, cardUpdateIntervalMs: 200 });
  bot = b;
  const fake = b.discord!.server;
  fake.addChannel(DISCORD_SHOP, 'shop');
  fake.addChannel(ELSEWHERE, 'random');
  return { b, fake };
}

async function startedRun(b: TestBot, fake: DiscordServer): Promise<{ runId: string; cancel: string; cardId: string }> {
  const { answer } = await discordShip(b, 'run', { repo: 'acme/shop', task: 'add a /healthz endpoint' });
  const runId = /sg-[a-z0-9]{8}/.exec(answer)?.[0] ?? '';
  const card = await fake.waitFor((s) => s.messages(DISCORD_SHOP)[0], 30_000, 'the card');
  const cancel = card.components[0]?.components[0]?.custom_id ?? '';
  return { runId, cancel, cardId: card.id };
}

describe('Discord: interactions outside a server', { timeout: 60_000 }, () => {
  it('refuses /ship and a button in a DM with a clear ephemeral answer, and does nothing', async () => {
    const { b, fake } = await stubBot('discord-dm');
    const discord = b.discord!;
    const { runId, cancel, cardId } = await startedRun(b, fake);

    const command = slashCommand(
      fake,
      DISCORD_APP_ID,
      { userId: DISCORD_ALICE },
      { channelId: '1310000000000000170', dm: true },
      'run',
      { repo: 'acme/shop', task: 'another change' },
    );
    const deferred = await sendInteraction(discord.interactionsUrl, discord.keys, command.body);
    expect(callbackOf(deferred)).toEqual({ type: 5, data: { flags: 64 } });
    expect(unescape(await discordAnswer(b, command.token, 30_000))).toContain('Use `/ship` in a server channel');

    const click = buttonClick(
      fake,
      DISCORD_APP_ID,
      { userId: DISCORD_ALICE },
      { channelId: '1310000000000000170', dm: true },
      cardId,
      cancel,
    );
    const answered = await sendInteraction(discord.interactionsUrl, discord.keys, click.body);
    // Answered in the callback itself (type 4, ephemeral): there is nothing to defer.
    const callback = callbackOf(answered);
    expect(callback?.type).toBe(4);
    expect(callback?.data).toMatchObject({ flags: 64, allowed_mentions: { parse: [] } });
    expect(String(callback?.data?.['content'])).toContain('server channels only');

    expect((await b.app.store.listActive()).map((r) => r.id)).toEqual([runId]);
    expect((await b.app.store.get(runId))?.state).not.toBe('cancelled');
    expect(fake.webhookCalls.filter((c) => c.token === click.token)).toEqual([]);
  });
});

describe('Discord: a button counts only in its run’s channel', { timeout: 60_000 }, () => {
  it('refuses the run’s Cancel and an approval button clicked in another channel, to the clicker and audited; the same Cancel on the card works', async () => {
    const { b, fake } = await stubBot('discord-elsewhere');
    const discord = b.discord!;
    const { runId, cancel, cardId } = await startedRun(b, fake);

    // The run's own buttons, arriving from a message in another channel (a copy, a forwarded card).
    const replayed = buttonClick(
      fake,
      DISCORD_APP_ID,
      { userId: DISCORD_ALICE },
      { channelId: ELSEWHERE },
      '1310000000000000151',
      cancel,
    );
    expect(callbackOf(await sendInteraction(discord.interactionsUrl, discord.keys, replayed.body))?.type).toBe(6);
    const refusal = await fake.waitFor(
      (s) => s.webhookCalls.find((c) => c.token === replayed.token),
      30_000,
      'the refusal',
    );
    expect(refusal.body).toMatchObject({ flags: 64 });
    expect(unescape(refusal.body.content ?? '')).toContain(
      `This button belongs to run ${runId}, which lives in another channel`,
    );
    const approve = buttonClick(
      fake,
      DISCORD_APP_ID,
      { userId: DISCORD_ALICE },
      { channelId: ELSEWHERE },
      '1310000000000000152',
      `approve|${runId}|f-1|n-1`,
    );
    await sendInteraction(discord.interactionsUrl, discord.keys, approve.body);
    const refusedApproval = await fake.waitFor(
      (s) => s.webhookCalls.find((c) => c.token === approve.token),
      30_000,
      'the approval refusal',
    );
    expect(unescape(refusedApproval.body.content ?? '')).toContain('lives in another channel');
    expect((await b.app.store.get(runId))?.state).not.toBe('cancelled');
    const refused = (await b.app.audit.eventsForRun(runId)).filter((e) => e.type === 'action.refused');
    expect(refused.map((e) => [e.actor, e.data['action']])).toEqual([
      [`discord:${DISCORD_ALICE}`, 'shipgate.cancel'],
      [`discord:${DISCORD_ALICE}`, 'shipgate.approve'],
    ]);

    const onCard = buttonClick(
      fake,
      DISCORD_APP_ID,
      { userId: DISCORD_ALICE },
      { channelId: DISCORD_SHOP },
      cardId,
      cancel,
    );
    await sendInteraction(discord.interactionsUrl, discord.keys, onCard.body);
    await eventually(async () => (await b.app.store.get(runId))?.state === 'cancelled', 'run cancelled', 30_000);
  });
});

/** The adapter alone against the fake, as the composition root would build it. */
const chatOn = (on: DiscordServer, extra: Partial<Parameters<typeof createDiscordChat>[0]> = {}): DiscordChat =>
  createDiscordChat({
    publicKey: testKeys().publicKeyHex,
    botToken: DISCORD_TOKEN,
    applicationId: DISCORD_APP_ID,
    apiUrl: on.apiUrl,
    command: '/ship',
    log: createLogger({ level: 'silent', destination: new PassThrough() }),
    ...extra,
  });

describe('Discord: an interrupted post is found by its key', { timeout: 60_000 }, () => {
  const view = (title: string): MessageView => ({
    text: title,
    blocks: [
      { type: 'header', text: title },
      { type: 'section', text: rich`something ${title}` },
    ],
  });

  it('finds the card in the channel and a reply in its thread by the footer, never by a nonce (which reads do not return)', async () => {
    server = await startDiscordServer({ token: DISCORD_TOKEN, applicationId: DISCORD_APP_ID });
    server.addChannel(DISCORD_SHOP, 'shop');
    chat = chatOn(server);
    const { port } = chat;
    const root = await port.postMessage({ channel: SHOP, view: view('Run sg-00000001'), key: 'sg-00000001.root' });
    const reply = await port.postMessage({
      channel: SHOP,
      thread: root.ref,
      view: view('agent passed'),
      key: 'sg-00000001.reply.agent',
    });
    await port.postMessage({ channel: SHOP, view: view('Run sg-00000002'), key: 'sg-00000002.root' });
    expect(reply.ref).toBe(`${root.ref}/${reply.ref.split('/')[1] ?? ''}`);

    // What Discord answers on a read has no nonce: the match cannot rest on it.
    const listed = await fetch(`${server.apiUrl}/channels/${DISCORD_SHOP}/messages?limit=50`, {
      headers: { authorization: `Bot ${DISCORD_TOKEN}` },
    });
    const messages = z.array(z.record(z.string(), z.unknown())).parse(await listed.json());
    expect(messages).toHaveLength(2);
    expect(messages.some((m) => 'nonce' in m)).toBe(false);

    expect(await port.findMessageByKey({ channel: SHOP, key: 'sg-00000001.root' })).toEqual(root);
    expect(await port.findMessageByKey({ channel: SHOP, key: 'sg-00000002.root' })).toEqual({
      ref: server.messages(DISCORD_SHOP)[1]?.id,
    });
    expect(await port.findMessageByKey({ channel: SHOP, thread: root.ref, key: 'sg-00000001.reply.agent' })).toEqual(
      reply,
    );
    // Not posted, or posted elsewhere: not found.
    expect(await port.findMessageByKey({ channel: SHOP, key: 'sg-00000001.reply.agent' })).toBeUndefined();
    expect(
      await port.findMessageByKey({ channel: SHOP, thread: root.ref, key: 'sg-00000001.reply.pr' }),
    ).toBeUndefined();
    // A thread never started (its card's post died first): nothing in it, not an error.
    const lonely = server.messages(DISCORD_SHOP)[1]?.id ?? '';
    expect(
      await port.findMessageByKey({ channel: SHOP, thread: lonely, key: 'sg-00000002.reply.agent' }),
    ).toBeUndefined();
    // The footer is a short reference, the same on the card as posted.
    expect(server.messages(DISCORD_SHOP)[0]?.embeds[0]?.footer?.text).toMatch(/^shipgate · [A-Za-z0-9_-]{12}$/);
  });

  it('counts only its own messages: a footer another bot or a webhook wrote is never taken for a post', async () => {
    server = await startDiscordServer({ token: DISCORD_TOKEN, applicationId: DISCORD_APP_ID });
    server.addChannel(DISCORD_SHOP, 'shop');
    chat = chatOn(server);
    const { port } = chat;
    const forged = (key: string) => [{ title: 'Run', footer: { text: keyFooter(key) } }];
    const mallory = { id: '1310000000000000999', username: 'mallory-bot', bot: true };
    // A card shipgate has not posted yet: a forged footer would have the outbox adopt the forgery and never post it.
    server.postUserMessage(DISCORD_SHOP, mallory, '', { embeds: forged('sg-00000003.root') });
    server.postUserMessage(DISCORD_SHOP, { id: '1310000000000000998', username: 'hook' }, '', {
      embeds: forged('sg-00000003.root'),
      webhookId: '1310000000000000997',
    });
    expect(await port.findMessageByKey({ channel: SHOP, key: 'sg-00000003.root' })).toBeUndefined();
    // A posted card copied by another bot afterwards: still the bot's own post, not the newer copy.
    const root = await port.postMessage({ channel: SHOP, view: view('Run sg-00000004'), key: 'sg-00000004.root' });
    server.postUserMessage(DISCORD_SHOP, mallory, '', { embeds: forged('sg-00000004.root') });
    expect(await port.findMessageByKey({ channel: SHOP, key: 'sg-00000004.root' })).toEqual(root);
    // The bot's own id is read once, not per look-up.
    expect(server.requests.filter((r) => decodeURIComponent(r.path) === '/users/@me')).toHaveLength(1);
    expect(server.unexpected).toEqual([]);
  });

  it('after a card post whose answers were all lost, the outbox finds the card that landed and never posts it again', async () => {
    const { b, fake } = await stubBot('discord-find');
    // Every attempt of @discordjs/rest (the first and its 3 retries) lands or is deduped, and loses its answer: the chat job fails.
    fake.loseAnswers('POST /channels/:channel/messages', 4);
    const { answer } = await discordShip(b, 'run', { repo: 'acme/shop', task: 'add a /healthz endpoint' });
    const runId = /sg-[a-z0-9]{8}/.exec(answer)?.[0] ?? '';
    // The retried job looked for the card by its key, found it and recorded it on the run.
    const card = await eventually(
      async () => (await b.app.store.get(runId))?.chat.card,
      'the card recorded on the run',
      30_000,
    );
    expect(fake.messages(DISCORD_SHOP).map((m) => m.id)).toEqual([card]);
    expect(
      fake.requests.some(
        (r) => r.method === 'GET' && r.path === `/channels/${DISCORD_SHOP}/messages` && r.status === 200,
      ),
    ).toBe(true);
    const posts = fake.requests.filter((r) => r.method === 'POST' && r.path === `/channels/${DISCORD_SHOP}/messages`);
    expect(posts.map((r) => r.status)).toEqual([502, 502, 502, 502]);
  });
});

describe('Discord Gateway mentions: bounded answers, and a failed channel read not remembered', { timeout: 60_000 }, () => {
  it('asks again after an outage, and answers one person at most 3 times a minute in a thread while every mention still reaches the handler', async () => {
    server = await startDiscordServer({ token: DISCORD_TOKEN, applicationId: DISCORD_APP_ID });
    server.addChannel(DISCORD_SHOP, 'shop');
    const live = server;
    // Another replica posted the card and started its thread: this one has never seen that thread.
    const poster = chatOn(live, { retries: 0 });
    const card = await poster.port.postMessage({
      channel: SHOP,
      view: { text: 'Run sg-00000005', blocks: [{ type: 'header', text: 'Run sg-00000005' }] },
      key: 'sg-00000005.root',
    });
    await poster.port.postMessage({
      channel: SHOP,
      thread: card.ref,
      view: { text: 'agent passed', blocks: [{ type: 'section', text: rich`agent passed` }] },
      key: 'sg-00000005.reply.agent',
    });
    await poster.stop();
    const thread = card.ref;
    const heard: string[] = [];
    chat = chatOn(live, { retries: 0, gateway: true });
    await chat.start({
      onCommand: async () => ({}),
      onAction: async () => ({}),
      onMention: async (event) => {
        heard.push(event.text);
        return { ephemeral: [{ kind: 'text', text: 'Only the requester can instruct this run.' }] };
      },
    });
    await live.waitFor((s) => s.gateway.sessions.find((x) => x.identify !== undefined), 30_000, 'a Gateway session');
    const mallory = { id: DISCORD_ALICE, username: 'mallory' };
    const ping = `<@${live.botUserId}>`;
    const mention = (text: string) =>
      live.postUserMessage(thread, mallory, `${ping} ${text}`, { mentions: [live.botUserId] });
    const answers = () =>
      live.messages(thread).filter((m) => m.author.id === live.botUserId && m.message_reference !== undefined);
    const channelReads = () =>
      live.requests.filter((r) => r.method === 'GET' && r.path === `/channels/${thread}`).length;

    // The thread's channel read fails (an outage): that mention is dropped, but nothing is remembered...
    live.loseNextAnswer('GET /channels/:channel');
    mention('first');
    await eventually(async () => (channelReads() === 1 ? true : undefined), 'the failed channel read');
    // ...so the next mention reads the channel again and is handled.
    mention('second');
    await eventually(async () => (answers().length === 1 ? true : undefined), 'the answer to the second mention');
    expect(heard).toEqual(['second']);
    expect(channelReads()).toBe(2);

    // A flood: every mention reaches the handler (which decides and audits each), only 3 answers in the minute.
    for (const n of [3, 4, 5, 6]) mention(`try ${n}`);
    await eventually(async () => (heard.length === 5 ? true : undefined), 'every mention handled');
    await chat.stop();
    chat = undefined;
    expect(answers()).toHaveLength(3);
    // Known to be a run thread now: read once more only.
    expect(channelReads()).toBe(2);
  });
});
