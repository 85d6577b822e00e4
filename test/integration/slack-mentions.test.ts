import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { PassThrough } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createSlackChat, MESSAGE_KEY_EVENT, type SlackChat } from '../../src/adapters/slack/slack-chat.js';
import { createLogger } from '../../src/log.js';
import type { CommandReply, MentionEvent } from '../../src/ports/chat.js';
import { rich } from '../../src/render/view.js';
import { BOT_TOKEN, SIGNING_SECRET } from '../helpers/bot.js';
import { sendSignedRequest, type SignedRequestOptions } from '../helpers/slack-requests.js';
import { startSlackServer, type SlackServer } from '../helpers/slack-server.js';

/**
 * SPEC §2: a mention of the bot in a run's thread is a follow-up for that run.
 * The app does not route mentions yet, so this drives the Slack adapter itself:
 * Bolt's real HTTP receiver, signed Events API deliveries, the fake Web API.
 */

const CHANNEL = 'CSHOP';

let slack: SlackServer;
let chat: SlackChat;
let server: Server;
let eventsUrl: string;
let mentions: MentionEvent[];
let mentionReply: CommandReply;

beforeEach(async () => {
  slack = await startSlackServer({ token: BOT_TOKEN });
  mentions = [];
  mentionReply = {};
  chat = createSlackChat({
    botToken: BOT_TOKEN,
    signingSecret: SIGNING_SECRET,
    appToken: undefined,
    apiUrl: slack.apiUrl,
    command: '/ship',
    log: createLogger({ level: 'silent', destination: new PassThrough() }),
  });
  const listener = chat.routes.find((route) => route.method === 'POST' && route.path === '/slack/events')?.listener;
  if (listener === undefined) throw new Error('HTTP mode expected a POST /slack/events route');
  server = createServer(listener);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no TCP address');
  eventsUrl = `http://127.0.0.1:${address.port}/slack/events`;
  await chat.start({
    onCommand: async () => ({}),
    onAction: async () => ({}),
    onMention: async (event) => {
      mentions.push(event);
      return mentionReply;
    },
  });
});

afterEach(async () => {
  expect(slack.unexpected).toEqual([]);
  await chat.stop();
  await new Promise<void>((resolve, reject) => {
    server.close((error) => (error ? reject(error) : resolve()));
    server.closeAllConnections();
  });
  await slack.close();
});

interface MentionFields {
  text: string;
  user?: string;
  thread_ts?: string;
  ts?: string;
  bot_id?: string;
  subtype?: string;
  event_id?: string;
}

let tsCounter = 0;
function nextTs(): string {
  tsCounter += 1;
  return `1700000100.${String(tsCounter).padStart(6, '0')}`;
}

/** An Events API `event_callback` envelope around an `app_mention`, shaped like Slack's (api.slack.com/events/app_mention). */
function mentionEnvelope(fields: MentionFields): { body: string; eventId: string; ts: string } {
  const eventId = fields.event_id ?? `Ev${randomUUID().replaceAll('-', '').slice(0, 10).toUpperCase()}`;
  const ts = fields.ts ?? nextTs();
  const event: Record<string, string> = {
    type: 'app_mention',
    text: fields.text,
    ts,
    channel: CHANNEL,
    event_ts: ts,
    team: slack.teamId,
  };
  if (fields.user !== undefined) event['user'] = fields.user;
  if (fields.thread_ts !== undefined) event['thread_ts'] = fields.thread_ts;
  if (fields.bot_id !== undefined) event['bot_id'] = fields.bot_id;
  if (fields.subtype !== undefined) event['subtype'] = fields.subtype;
  const body = JSON.stringify({
    token: 'verification_token',
    team_id: slack.teamId,
    api_app_id: 'A111',
    event,
    type: 'event_callback',
    event_id: eventId,
    event_time: Math.floor(Date.now() / 1000),
    authorizations: [
      {
        enterprise_id: null,
        team_id: slack.teamId,
        user_id: slack.botUserId,
        is_bot: true,
        is_enterprise_install: false,
      },
    ],
    is_ext_shared_channel: false,
    event_context: '4-eyJldCI6ImFwcF9tZW50aW9uIn0',
  });
  return { body, eventId, ts };
}

async function sendMention(fields: MentionFields, options: SignedRequestOptions = {}) {
  const envelope = mentionEnvelope(fields);
  const result = await sendSignedRequest(eventsUrl, SIGNING_SECRET, envelope.body, 'application/json', options);
  return { ...envelope, result };
}

/** Handlers run after Bolt's ack; wait long enough for one that would run to have run. */
async function settle(): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, 300));
}

async function waitForMentions(count: number): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (mentions.length < count) {
    if (Date.now() > deadline) throw new Error(`expected ${count} mentions, got ${mentions.length}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('Slack mentions (follow-ups, SPEC §2)', () => {
  it('hands a person’s mention in a thread to onMention, without the bot mention, with the thread and event id', async () => {
    const root = slack.addUserMessage(CHANNEL, { user: 'UALICE', text: 'run card stand-in' });
    const sent = await sendMention({
      text: `<@${slack.botUserId}> also add a test for /healthz`,
      user: 'UALICE',
      thread_ts: root,
    });
    expect(sent.result.status).toBe(200);
    await waitForMentions(1);
    expect(mentions[0]).toEqual({
      text: 'also add a test for /healthz',
      mentions: [],
      userId: 'UALICE',
      channelId: CHANNEL,
      thread: root,
      message: sent.ts,
      deliveryId: sent.eventId,
    });
  });

  it('posts the handler’s ephemeral reply to the person, in the thread', async () => {
    const root = slack.addUserMessage(CHANNEL, { user: 'UALICE', text: 'run card stand-in' });
    mentionReply = { ephemeral: rich`Noted: the agent picks this up in its next iteration.` };
    await sendMention({ text: `<@${slack.botUserId}>: make it faster`, user: 'UBOB', thread_ts: root });
    const ephemeral = await slack.waitFor((s) => s.ephemerals[0], 5_000, 'ephemeral reply');
    expect(ephemeral).toMatchObject({
      channel: CHANNEL,
      user: 'UBOB',
      thread_ts: root,
      text: 'Noted: the agent picks this up in its next iteration.',
    });
    expect(mentions[0]?.text).toBe('make it faster');
  });

  it('passes a top-level mention with no thread and keeps a mention that is not leading, as plain text', async () => {
    await sendMention({ text: `please <@${slack.botUserId}> look`, user: 'UALICE' });
    await waitForMentions(1);
    expect(mentions[0]).toMatchObject({ text: `please @${slack.botUserId} look`, thread: undefined, mentions: [] });
  });

  it('resolves Slack markup in the instruction and lists the people it mentions, so handlers never parse it', async () => {
    const root = slack.addUserMessage(CHANNEL, { user: 'UALICE', text: 'run card stand-in' });
    await sendMention({
      text: `<@${slack.botUserId}> ask <@UBOB|bob> about a &lt; b &amp;&amp; <https://x.io/a|the doc>, keep _private_ names`,
      user: 'UALICE',
      thread_ts: root,
    });
    await waitForMentions(1);
    expect(mentions[0]).toMatchObject({
      text: 'ask @bob about a < b && the doc (https://x.io/a), keep _private_ names',
      mentions: ['UBOB'],
      thread: root,
    });
  });

  it('gives a Slack retry the same delivery id as the first delivery', async () => {
    const root = slack.addUserMessage(CHANNEL, { user: 'UALICE', text: 'run card stand-in' });
    const first = await sendMention({
      text: `<@${slack.botUserId}> retry me`,
      user: 'UALICE',
      thread_ts: root,
      event_id: 'Ev0RETRY01',
    });
    await sendMention(
      { text: `<@${slack.botUserId}> retry me`, user: 'UALICE', thread_ts: root, ts: first.ts, event_id: 'Ev0RETRY01' },
      { retryNum: 1, retryReason: 'http_timeout' },
    );
    await waitForMentions(2);
    expect(mentions.map((m) => m.deliveryId)).toEqual(['Ev0RETRY01', 'Ev0RETRY01']);
  });

  it('never lets a bot trigger anything: bot_id, bot_message subtype or shipgate’s own user id', async () => {
    const root = slack.addUserMessage(CHANNEL, { user: 'UALICE', text: 'run card stand-in' });
    const text = `<@${slack.botUserId}> deploy everything`;
    const fromOtherBot = await sendMention({ text, user: 'UOTHERBOT', bot_id: 'B0OTHER', thread_ts: root });
    const botMessage = await sendMention({ text, bot_id: 'B0OTHER', subtype: 'bot_message', thread_ts: root });
    const fromItself = await sendMention({ text, user: slack.botUserId, thread_ts: root });
    const fromItselfWithBotId = await sendMention({
      text,
      user: slack.botUserId,
      bot_id: slack.botId,
      thread_ts: root,
    });
    for (const sent of [fromOtherBot, botMessage, fromItself, fromItselfWithBotId])
      expect(sent.result.status).toBe(200);
    await settle();
    expect(mentions).toEqual([]);
    expect(slack.ephemerals).toEqual([]);

    // The same mention from a person goes through: it is the author that was refused, not the text.
    await sendMention({ text, user: 'UALICE', thread_ts: root });
    await waitForMentions(1);
    expect(mentions[0]?.userId).toBe('UALICE');
  });

  it('rejects an unsigned mention with 401 and does not handle it', async () => {
    const sent = await sendMention(
      { text: `<@${slack.botUserId}> sneaky`, user: 'UALICE' },
      { signature: 'v0=deadbeef' },
    );
    expect(sent.result.status).toBe(401);
    await settle();
    expect(mentions).toEqual([]);
  });

  it('answers the Events API url_verification challenge as Bolt does', async () => {
    const body = JSON.stringify({
      token: 'verification_token',
      challenge: '3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P',
      type: 'url_verification',
    });
    const result = await sendSignedRequest(eventsUrl, SIGNING_SECRET, body, 'application/json');
    expect(result.status).toBe(200);
    expect(result.json).toEqual({ challenge: '3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P' });
    expect(mentions).toEqual([]);
  });
});

describe('Slack: a post interrupted by a crash is found by its key (the outbox)', () => {
  const view = (title: string) => ({ text: title, blocks: [{ type: 'section' as const, text: rich`${title}` }] });

  it("finds the bot's own card and reply by their metadata, and never another app's message carrying the same key", async () => {
    const forged = (key: string) => ({ event_type: MESSAGE_KEY_EVENT, event_payload: { key } });
    const other = { botId: 'B999MALLORY', appId: 'A999MALLORY' };
    // Another app posts the key of a card shipgate has not posted yet: adopting it would lose the real card.
    slack.addAppMessage('CSHOP', { ...other, text: 'Run sg-00000001', metadata: forged('sg-00000001.root') });
    expect(await chat.port.findMessageByKey({ channel: 'CSHOP', key: 'sg-00000001.root' })).toBeUndefined();
    const identityReads = slack.callsOf('auth.test').length;

    const root = await chat.port.postMessage({ channel: 'CSHOP', view: view('Run sg-00000001'), key: 'sg-00000001.root' });
    const reply = await chat.port.postMessage({
      channel: 'CSHOP',
      thread: root.ref,
      view: view('agent passed'),
      key: 'sg-00000001.reply.agent',
    });
    // A copy in the thread after the real reply: the bot's own reply is still the one found.
    slack.addAppMessage('CSHOP', {
      ...other,
      text: 'agent passed',
      metadata: forged('sg-00000001.reply.agent'),
      thread_ts: root.ref,
    });
    expect(await chat.port.findMessageByKey({ channel: 'CSHOP', key: 'sg-00000001.root' })).toEqual(root);
    expect(
      await chat.port.findMessageByKey({ channel: 'CSHOP', thread: root.ref, key: 'sg-00000001.reply.agent' }),
    ).toEqual(reply);
    // The bot's own id was read by the first look-up and kept.
    expect(slack.callsOf('auth.test')).toHaveLength(identityReads);
  });
});
