import type { AddressInfo } from 'node:net';
import { App, LogLevel } from '@slack/bolt';
import { runIdGenerator } from '../commands/ship-command.js';

/**
 * The second baseline of the ack benchmark: what a user would otherwise build, a bare Bolt app.
 * `new App({ token, signingSecret })` with Bolt's own HTTP receiver (signature and timestamp
 * checks, body parsing, middleware, the single-workspace authorisation), and a `/ship` command
 * handler that only acks with the same ephemeral JSON shipgate answers. Its Web API client points
 * at the fake Slack, like shipgate's, so the one `auth.test` Bolt makes is answered locally.
 */
export interface BaselineBoltApp {
  url: string;
  close(): Promise<void>;
}

export async function startBaselineBoltApp(options: {
  signingSecret: string;
  botToken: string;
  slackApiUrl: string;
}): Promise<BaselineBoltApp> {
  const app = new App({
    token: options.botToken,
    signingSecret: options.signingSecret,
    logLevel: LogLevel.ERROR,
    clientOptions: { slackApiUrl: options.slackApiUrl.endsWith('/') ? options.slackApiUrl : `${options.slackApiUrl}/` },
  });
  // shipgate's own run ids, so both answers cost the same to make.
  const generateRunId = runIdGenerator();
  app.command('/ship', async ({ command, ack }) => {
    const repo = command.text.split(' ')[0] ?? '';
    await ack({
      response_type: 'ephemeral',
      text: `Queued run ${generateRunId()} on ${repo}. Follow it in the thread of the card in this channel.`,
    });
  });
  const server = await app.start(0);
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('the Bolt baseline has no TCP address');
  return {
    url: `http://127.0.0.1:${(address satisfies AddressInfo).port}/slack/events`,
    close: () => app.stop().then(() => undefined),
  };
}
