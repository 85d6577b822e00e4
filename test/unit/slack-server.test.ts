import { WebClient, WebClientEvent, type WebClientOptions } from '@slack/web-api';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { startSlackServer, type SlackServer } from '../helpers/slack-server.js';

/**
 * The fake Slack is only worth something if the real WebClient cannot tell it from Slack for the
 * calls the bot makes, so every test here drives it through `@slack/web-api`, never raw HTTP.
 */

const TOKEN = 'xoxb-shipgate-test';
const CHANNEL = 'C0SHIP';
const repliesPage = z.object({ messages: z.array(z.looseObject({ text: z.string() })) });

// WebClient's default retry policy retries HTTP failures for ~30 minutes; keep tests fast.
const fastRetries: WebClientOptions['retryConfig'] = { retries: 1, factor: 1, minTimeout: 10, maxTimeout: 10 };

let slack: SlackServer;
let client: WebClient;

beforeEach(async () => {
  slack = await startSlackServer({ token: TOKEN });
  client = new WebClient(TOKEN, { slackApiUrl: slack.apiUrl, retryConfig: fastRetries });
});

afterEach(async () => {
  await slack.close();
});

describe('fake Slack Web API through the real WebClient', () => {
  it('answers auth.test with the bot identity', async () => {
    const me = await client.auth.test();
    expect(me.ok).toBe(true);
    expect(me.user_id).toBe('U0BOT');
    expect(me.team_id).toBe(slack.teamId);
    expect(me.bot_id).toBe('B0BOT');
  });

  it('stores a root message with metadata and a thread reply, and returns them from conversations.replies', async () => {
    const root = await client.chat.postMessage({
      channel: CHANNEL,
      text: 'Run r-1 started',
      blocks: [{ type: 'section', text: { type: 'mrkdwn', text: '*Run r-1*' } }],
      metadata: { event_type: 'shipgate_run', event_payload: { run_id: 'r-1', gate: 'ci' } },
    });
    expect(root.ok).toBe(true);
    expect(root.ts).toMatch(/^\d{10}\.\d{6}$/);
    const rootTs = root.ts ?? '';

    const reply = await client.chat.postMessage({ channel: CHANNEL, thread_ts: rootTs, text: 'CI passed' });
    expect(Number(reply.ts)).toBeGreaterThan(Number(rootTs));

    // The form body carried blocks/metadata as JSON strings; the record has them decoded.
    const [firstPost] = slack.callsOf('chat.postMessage');
    expect(firstPost?.body['metadata']).toEqual({
      event_type: 'shipgate_run',
      event_payload: { run_id: 'r-1', gate: 'ci' },
    });
    expect(firstPost?.body['blocks']).toEqual([{ type: 'section', text: { type: 'mrkdwn', text: '*Run r-1*' } }]);

    const stored = slack.messages(CHANNEL);
    expect(stored.map((m) => [m.ts, m.thread_ts, m.text])).toEqual([
      [rootTs, rootTs, 'Run r-1 started'],
      [reply.ts, rootTs, 'CI passed'],
    ]);
    expect(stored[0]?.bot_id).toBe('B0BOT');
    expect(stored[0]?.reply_count).toBe(1);

    const withMetadata = await client.conversations.replies({
      channel: CHANNEL,
      ts: rootTs,
      include_all_metadata: true,
    });
    expect(withMetadata.messages?.map((m) => m.ts)).toEqual([rootTs, reply.ts]);
    expect(withMetadata.messages?.[0]?.metadata).toEqual({
      event_type: 'shipgate_run',
      event_payload: { run_id: 'r-1', gate: 'ci' },
    });

    // Like Slack, metadata is only returned when asked for.
    const without = await client.conversations.replies({ channel: CHANNEL, ts: rootTs });
    expect(without.messages?.[0]?.metadata).toBeUndefined();

    // History lists top-level messages only, newest first.
    const history = await client.conversations.history({ channel: CHANNEL, include_all_metadata: true });
    expect(history.messages?.map((m) => m.ts)).toEqual([rootTs]);
    expect(history.messages?.[0]?.metadata?.event_payload).toEqual({ run_id: 'r-1', gate: 'ci' });
    expect(slack.unexpected).toEqual([]);
  });

  it('rejects a reply to a thread that does not exist', async () => {
    await expect(
      client.chat.postMessage({ channel: CHANNEL, thread_ts: '1.000001', text: 'orphan' }),
    ).rejects.toMatchObject({
      data: { ok: false, error: 'thread_not_found' },
    });
  });

  it('updates a message in place and keeps fields the update leaves out', async () => {
    const root = await client.chat.postMessage({
      channel: CHANNEL,
      text: 'gates: ci pending',
      metadata: { event_type: 'shipgate_run', event_payload: { run_id: 'r-2' } },
    });
    const before = slack.messages(CHANNEL)[0];
    const updated = await client.chat.update({
      channel: CHANNEL,
      ts: root.ts ?? '',
      text: 'gates: ci passed',
      blocks: [{ type: 'section', text: { type: 'mrkdwn', text: 'ci :white_check_mark:' } }],
    });
    expect(updated.ts).toBe(root.ts);
    const after = slack.messages(CHANNEL);
    expect(after).toHaveLength(1);
    // Same object, mutated: tests holding a reference see the live card.
    expect(after[0]).toBe(before);
    expect(after[0]?.text).toBe('gates: ci passed');
    expect(after[0]?.metadata?.event_payload).toEqual({ run_id: 'r-2' });
    expect(after[0]?.updateCount).toBe(1);

    await expect(client.chat.update({ channel: CHANNEL, ts: '1700000999.000100', text: 'x' })).rejects.toMatchObject({
      data: { error: 'message_not_found' },
    });
  });

  it('records ephemerals separately from channel messages', async () => {
    const result = await client.chat.postEphemeral({
      channel: CHANNEL,
      user: 'U123',
      text: 'Unknown repository acme/nope',
    });
    expect(result.message_ts).toMatch(/^\d+\.\d{6}$/);
    expect(slack.messages(CHANNEL)).toEqual([]);
    expect(slack.ephemerals).toMatchObject([
      { channel: CHANNEL, user: 'U123', text: 'Unknown repository acme/nope', message_ts: result.message_ts },
    ]);
  });

  it('pages conversations.replies and conversations.history with cursors', async () => {
    const root = await client.chat.postMessage({ channel: CHANNEL, text: 'root' });
    const rootTs = root.ts ?? '';
    for (let i = 1; i <= 4; i += 1)
      await client.chat.postMessage({ channel: CHANNEL, thread_ts: rootTs, text: `reply ${i}` });
    await client.chat.postMessage({ channel: CHANNEL, text: 'second root' });

    const texts: string[] = [];
    let pages = 0;
    for await (const page of client.paginate('conversations.replies', { channel: CHANNEL, ts: rootTs, limit: 2 })) {
      pages += 1;
      // paginate() yields untyped WebAPICallResult pages.
      texts.push(...repliesPage.parse(page).messages.map((m) => m.text));
    }
    expect(pages).toBe(3);
    expect(texts).toEqual(['root', 'reply 1', 'reply 2', 'reply 3', 'reply 4']);

    const first = await client.conversations.history({ channel: CHANNEL, limit: 1 });
    expect(first.has_more).toBe(true);
    expect(first.messages?.map((m) => m.text)).toEqual(['second root']);
    const second = await client.conversations.history({
      channel: CHANNEL,
      limit: 1,
      cursor: first.response_metadata?.next_cursor ?? '',
    });
    expect(second.has_more).toBe(false);
    expect(second.messages?.map((m) => m.text)).toEqual(['root']);

    await expect(client.conversations.history({ channel: CHANNEL, cursor: 'garbage' })).rejects.toMatchObject({
      data: { error: 'invalid_cursor' },
    });
  });

  it('lists user group members', async () => {
    slack.setUserGroup('S0APPROVERS', ['U1', 'U2']);
    const result = await client.usergroups.users.list({ usergroup: 'S0APPROVERS' });
    expect(result.users).toEqual(['U1', 'U2']);
    await expect(client.usergroups.users.list({ usergroup: 'S0NOPE' })).rejects.toMatchObject({
      data: { error: 'no_such_subteam' },
    });
  });

  it('rate-limits with 429 + Retry-After and WebClient retries', async () => {
    const rateLimited: number[] = [];
    client.on(WebClientEvent.RATE_LIMITED, (retryAfterSeconds: number) => rateLimited.push(retryAfterSeconds));
    slack.failNext('chat.postMessage', { status: 429, retryAfter: 0 });
    const result = await client.chat.postMessage({ channel: CHANNEL, text: 'after the storm' });
    expect(result.ok).toBe(true);
    expect(rateLimited).toEqual([0]);
    expect(slack.callsOf('chat.postMessage').map((c) => c.status)).toEqual([429, 200]);
    expect(slack.messages(CHANNEL)).toHaveLength(1);
  });

  it('gives up on a 429 without Retry-After, as WebClient treats it as fatal', async () => {
    slack.failNext('chat.update', { status: 429, retryAfter: null });
    await expect(client.chat.update({ channel: CHANNEL, ts: '1700000000.000100', text: 'x' })).rejects.toThrow(
      /Retry header did not contain a valid timeout/,
    );
    expect(slack.callsOf('chat.update')).toHaveLength(1);
  });

  it('answers a queued platform error once, then behaves again', async () => {
    slack.failNext('chat.postMessage', { error: 'channel_not_found' });
    await expect(client.chat.postMessage({ channel: CHANNEL, text: 'x' })).rejects.toMatchObject({
      code: 'slack_webapi_platform_error',
      data: { error: 'channel_not_found' },
    });
    await expect(client.chat.postMessage({ channel: CHANNEL, text: 'y' })).resolves.toMatchObject({ ok: true });
  });

  it('records unknown methods in `unexpected`', async () => {
    await expect(
      client.apiCall('reactions.add', { channel: CHANNEL, name: 'rocket', timestamp: '1.000001' }),
    ).rejects.toMatchObject({
      data: { error: 'unknown_method' },
    });
    expect(slack.unexpected).toHaveLength(1);
    expect(slack.unexpected[0]?.path).toBe('/api/reactions.add');
  });

  it('rejects a bad token and a missing one', async () => {
    const impostor = new WebClient('xoxb-wrong', { slackApiUrl: slack.apiUrl, retryConfig: fastRetries });
    await expect(impostor.auth.test()).rejects.toMatchObject({ data: { error: 'invalid_auth' } });
    const anonymous = new WebClient(undefined, { slackApiUrl: slack.apiUrl, retryConfig: fastRetries });
    await expect(anonymous.auth.test()).rejects.toMatchObject({ data: { error: 'not_authed' } });
    expect(slack.messages(CHANNEL)).toEqual([]);
  });

  it('validates arguments like Slack does', async () => {
    await expect(client.apiCall('chat.postMessage', { channel: CHANNEL })).rejects.toMatchObject({
      data: { error: 'no_text' },
    });
    await expect(client.apiCall('conversations.replies', { channel: CHANNEL })).rejects.toMatchObject({
      data: { error: 'invalid_arguments' },
    });
  });

  it('waitFor resolves on a later change and times out with the calls seen', async () => {
    const waiting = slack.waitFor(
      (s) => s.messages(CHANNEL).find((m) => m.text === 'later'),
      2_000,
      'the later message',
    );
    await client.chat.postMessage({ channel: CHANNEL, text: 'sooner' });
    await client.chat.postMessage({ channel: CHANNEL, text: 'later' });
    await expect(waiting).resolves.toMatchObject({ text: 'later' });

    await expect(slack.waitFor((s) => s.callsOf('chat.delete').length > 0, 50, 'a delete')).rejects.toThrow(
      /waitFor "a delete" timed out after 50 ms; calls so far: chat\.postMessage, chat\.postMessage$/,
    );
  });

  it('serves response_url posts', async () => {
    const responseUrl = slack.newResponseUrl();
    const res = await fetch(responseUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ response_type: 'ephemeral', text: 'nope' }),
    });
    expect(res.status).toBe(200);
    expect(slack.responseUrlPosts).toMatchObject([{ body: { response_type: 'ephemeral', text: 'nope' } }]);
  });
});
