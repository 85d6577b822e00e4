import type { AddressInfo } from 'node:net';
// Named imports on purpose: a default import of this CJS package is the whole module under Node
// but only the App class under vitest (it honours `exports.default` because of `__esModule`).
import { App, LogLevel, isValidSlackRequest, verifySlackRequest, type Logger } from '@slack/bolt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { startSlackServer, type SlackServer } from '../helpers/slack-server.js';
import {
  blockActionPayload,
  sendBlockAction,
  sendSlashCommand,
  signSlackRequest,
  slashCommandBody,
} from '../helpers/slack-requests.js';
import { sampleJson } from '../helpers/samples.js';

/**
 * Our signing helper must produce exactly what Slack produces, or every bot test that goes
 * through Bolt's HTTP receiver would be testing against a fiction. The vector and the payload
 * samples are read from the shared upstream samples (SPEC §9) so they stay the source of truth.
 */

const readSample = (name: string): unknown => sampleJson('slack', name);

const vector = z
  .object({
    signingSecret: z.string(),
    headers: z.object({ 'x-slack-signature': z.string(), 'x-slack-request-timestamp': z.number() }),
    body: z.string(),
    fakeNow: z.string(),
  })
  .parse(readSample('slash-command.signed-request.test-vector.json'));

const slashSample = z
  .object({ raw_body: z.string(), parsed: z.record(z.string(), z.string()) })
  .parse(readSample('bolt-python.slash_command.form-body.json'));

const buttonSample = z
  .object({
    user: z.object({ id: z.string(), username: z.string(), team_id: z.string() }),
    trigger_id: z.string(),
    container: z.object({ message_ts: z.string(), channel_id: z.string(), is_ephemeral: z.boolean() }),
    channel: z.object({ id: z.string() }),
    response_url: z.string(),
    actions: z
      .array(z.object({ action_id: z.string(), block_id: z.string(), value: z.string(), action_ts: z.string() }))
      .length(1),
  })
  .loose()
  .parse(readSample('bolt-python.block_actions.button.json'));

function recordingLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const log = (...msg: unknown[]): void => {
    lines.push(msg.map(String).join(' '));
  };
  let level = LogLevel.DEBUG;
  return {
    lines,
    debug: log,
    info: log,
    warn: log,
    error: log,
    setLevel: (l) => {
      level = l;
    },
    getLevel: () => level,
    setName: () => undefined,
  };
}

describe('signSlackRequest', () => {
  const timestamp = vector.headers['x-slack-request-timestamp'];
  const nowMilliseconds = Date.parse(vector.fakeNow);

  it("reproduces Slack's documented example signature", () => {
    expect(signSlackRequest(vector.signingSecret, timestamp, vector.body)).toBe(vector.headers['x-slack-signature']);
  });

  it("is accepted by Bolt's own verifier", () => {
    const signature = signSlackRequest(vector.signingSecret, timestamp, vector.body);
    expect(() =>
      verifySlackRequest({
        signingSecret: vector.signingSecret,
        body: vector.body,
        headers: { 'x-slack-signature': signature, 'x-slack-request-timestamp': timestamp },
        nowMilliseconds,
      }),
    ).not.toThrow();
  });

  it('is rejected by Bolt when the body was tampered with', () => {
    const logger = recordingLogger();
    const signature = signSlackRequest(vector.signingSecret, timestamp, vector.body);
    const valid = isValidSlackRequest({
      signingSecret: vector.signingSecret,
      body: vector.body.replace('text=', 'text=deploy+everything'),
      headers: { 'x-slack-signature': signature, 'x-slack-request-timestamp': timestamp },
      nowMilliseconds,
      logger,
    });
    expect(valid).toBe(false);
    expect(logger.lines.join('\n')).toContain('signature mismatch');
  });

  it('is rejected by Bolt when the timestamp is older than five minutes', () => {
    const signature = signSlackRequest(vector.signingSecret, timestamp, vector.body);
    expect(() =>
      verifySlackRequest({
        signingSecret: vector.signingSecret,
        body: vector.body,
        headers: { 'x-slack-signature': signature, 'x-slack-request-timestamp': timestamp },
        nowMilliseconds: nowMilliseconds + 6 * 60 * 1000,
      }),
    ).toThrow(/stale/);
  });
});

describe('request bodies follow the upstream samples', () => {
  it('builds the slash command form body byte for byte like Slack', () => {
    const p = slashSample.parsed;
    const body = slashCommandBody({
      text: p['text'] ?? '',
      user_id: p['user_id'] ?? '',
      channel_id: p['channel_id'] ?? '',
      command: p['command'] ?? '',
      trigger_id: p['trigger_id'] ?? '',
    });
    expect(body).toBe(slashSample.raw_body);
  });

  it('defaults the command to /ship and gives every request its own trigger_id', () => {
    const fields = { text: 'acme/web fix the footer', user_id: 'U1', channel_id: 'C1' };
    const first = new URLSearchParams(slashCommandBody(fields));
    const second = new URLSearchParams(slashCommandBody(fields));
    expect(first.get('command')).toBe('/ship');
    expect(first.get('text')).toBe('acme/web fix the footer');
    expect(first.get('trigger_id')).not.toBe(second.get('trigger_id'));
  });

  it('builds the block_actions payload in the shape of the sample (non-ephemeral container)', () => {
    const action = buttonSample.actions[0];
    if (action === undefined) throw new Error('sample has no action');
    const payload = blockActionPayload({
      user_id: buttonSample.user.id,
      channel_id: buttonSample.channel.id,
      message_ts: buttonSample.container.message_ts,
      action_id: action.action_id,
      value: action.value,
      action_ts: action.action_ts,
      trigger_id: buttonSample.trigger_id,
    });
    const expected = z
      .looseObject({ container: z.looseObject({}) })
      .parse(readSample('bolt-python.block_actions.button.json'));
    // The one deliberate difference: our buttons live on channel messages, not ephemeral ones.
    expect(payload).toEqual({ ...expected, container: { ...expected.container, is_ephemeral: false } });
  });
});

describe('a real Bolt app accepts our signed requests', () => {
  const signingSecret = 'shipgate-test-signing-secret';
  let slack: SlackServer;
  let app: App;
  let eventsUrl: string;
  const seen: { kind: string; retryNum: number | undefined; detail: string }[] = [];

  beforeAll(async () => {
    slack = await startSlackServer({ token: 'xoxb-test' });
    app = new App({
      token: 'xoxb-test',
      signingSecret,
      logLevel: LogLevel.ERROR,
      clientOptions: { slackApiUrl: slack.apiUrl, retryConfig: { retries: 0 } },
    });
    app.command('/ship', async ({ command, ack, context }) => {
      await ack({ response_type: 'ephemeral', text: `got ${command.text}` });
      seen.push({ kind: 'command', retryNum: context.retryNum, detail: `${command.user_id}:${command.text}` });
    });
    app.action('approve', async ({ ack, body, context }) => {
      await ack();
      const detail = body.type === 'block_actions' ? `${body.user.id}:${body.container.message_ts ?? ''}` : body.type;
      seen.push({ kind: 'action', retryNum: context.retryNum, detail });
    });
    const server = await app.start(0);
    const address: AddressInfo | string | null = server.address();
    if (address === null || typeof address === 'string') throw new Error('bolt did not listen on TCP');
    eventsUrl = `http://127.0.0.1:${address.port}/slack/events`;
  });

  afterAll(async () => {
    await app.stop();
    await slack.close();
  });

  it('runs the command handler and returns the ack body', async () => {
    const result = await sendSlashCommand(
      eventsUrl,
      signingSecret,
      { text: 'help', user_id: 'U42', channel_id: 'C42' },
      { retryNum: 1, retryReason: 'http_timeout' },
    );
    expect(result.status).toBe(200);
    expect(result.json).toEqual({ response_type: 'ephemeral', text: 'got help' });
    expect(seen).toContainEqual({ kind: 'command', retryNum: 1, detail: 'U42:help' });
    // Bolt resolved its bot identity through auth.test on the fake server.
    expect(slack.callsOf('auth.test').length).toBeGreaterThan(0);
    expect(slack.unexpected).toEqual([]);
  });

  it('answers 401 to a bad signature and never runs the handler', async () => {
    const before = seen.length;
    const result = await sendSlashCommand(
      eventsUrl,
      signingSecret,
      { text: 'help', user_id: 'U42', channel_id: 'C42' },
      { signature: 'v0=deadbeef' },
    );
    expect(result.status).toBe(401);
    const wrongSecret = await sendSlashCommand(eventsUrl, 'not-the-secret', {
      text: 'help',
      user_id: 'U42',
      channel_id: 'C42',
    });
    expect(wrongSecret.status).toBe(401);
    expect(seen.length).toBe(before);
  });

  it('answers 401 to a replayed (stale) request', async () => {
    const result = await sendSlashCommand(
      eventsUrl,
      signingSecret,
      { text: 'help', user_id: 'U42', channel_id: 'C42' },
      { timestamp: Math.floor(Date.now() / 1000) - 10 * 60 },
    );
    expect(result.status).toBe(401);
  });

  it('routes a button click to the action handler', async () => {
    const result = await sendBlockAction(eventsUrl, signingSecret, {
      user_id: 'U7',
      channel_id: 'C42',
      message_ts: '1700000000.000100',
      action_id: 'approve',
      value: 'run-1',
    });
    expect(result.status).toBe(200);
    expect(seen).toContainEqual({ kind: 'action', retryNum: undefined, detail: 'U7:1700000000.000100' });
  });
});
