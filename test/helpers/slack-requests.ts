import { createHmac, randomUUID } from 'node:crypto';
import { z } from 'zod';

/**
 * Sends requests to the bot the way Slack does (SPEC §9): signed with the app's signing secret,
 * slash commands as form bodies, interactions as `payload=<JSON>`. Field sets are modelled on the
 * upstream samples in ../shared/upstream-samples/slack/ (bolt-python scenario tests); the unit test
 * test/unit/slack-signing.test.ts checks at runtime that our bodies carry the same keys.
 */

export interface SignedRequestOptions {
  /** Seconds since epoch for `x-slack-request-timestamp`; defaults to now. */
  timestamp?: number;
  /** Sent instead of the computed signature (to test rejection). */
  signature?: string;
  /** Adds `x-slack-retry-num` (Slack's redelivery counter). */
  retryNum?: number;
  /** Adds `x-slack-retry-reason`, e.g. `http_timeout`. */
  retryReason?: string;
}

export interface SlackRequestResult {
  status: number;
  body: string;
  /** The body parsed when it is JSON, else undefined. */
  json: z.core.util.JSONType | undefined;
  elapsedMs: number;
}

export interface SlashCommandFields {
  text: string;
  user_id: string;
  channel_id: string;
  /** Defaults to `/ship`. */
  command?: string;
  /** Defaults to a fresh unique value per call. */
  trigger_id?: string;
  user_name?: string;
  team_id?: string;
  team_domain?: string;
  channel_name?: string;
  /** Defaults to the sample's hooks.slack.com URL; point it at `SlackServer.newResponseUrl()` when the bot uses respond(). */
  response_url?: string;
}

export interface BlockActionFields {
  user_id: string;
  channel_id: string;
  message_ts: string;
  action_id: string;
  value: string;
  /** Defaults to now, in Slack's `seconds.micros` form. */
  action_ts?: string;
  block_id?: string;
  user_name?: string;
  team_id?: string;
  trigger_id?: string;
  response_url?: string;
}

/** `v0=` + hex HMAC-SHA256 of `v0:<timestamp>:<raw body>` (https://api.slack.com/authentication/verifying-requests-from-slack). */
export function signSlackRequest(signingSecret: string, timestampSeconds: number, rawBody: string): string {
  return `v0=${createHmac('sha256', signingSecret).update(`v0:${timestampSeconds}:${rawBody}`).digest('hex')}`;
}

/** Posts any raw body signed like Slack; the building block for the helpers below (and for Events API JSON). */
export async function sendSignedRequest(
  url: string,
  signingSecret: string,
  rawBody: string,
  contentType: string,
  options: SignedRequestOptions = {},
): Promise<SlackRequestResult> {
  const timestamp = options.timestamp ?? Math.floor(Date.now() / 1000);
  const headers: Record<string, string> = {
    'content-type': contentType,
    'user-agent': 'Slackbot 1.0 (+https://api.slack.com/robots)',
    'x-slack-request-timestamp': String(timestamp),
    'x-slack-signature': options.signature ?? signSlackRequest(signingSecret, timestamp, rawBody),
  };
  if (options.retryNum !== undefined) headers['x-slack-retry-num'] = String(options.retryNum);
  if (options.retryReason !== undefined) headers['x-slack-retry-reason'] = options.retryReason;
  const started = performance.now();
  const response = await fetch(url, { method: 'POST', headers, body: rawBody });
  const body = await response.text();
  const elapsedMs = performance.now() - started;
  let json: z.core.util.JSONType | undefined;
  if (body.length > 0) {
    try {
      json = z.json().parse(JSON.parse(body));
    } catch {
      json = undefined;
    }
  }
  return { status: response.status, body, json, elapsedMs };
}

let uniqueCounter = 0;
/** Slack trigger ids look like `<digits>.<digits>.<hex>`; uniqueness matters for idempotency tests. */
function freshTriggerId(): string {
  uniqueCounter += 1;
  return `${Date.now()}.${uniqueCounter}.${randomUUID().replaceAll('-', '')}`;
}

/** Builds the form body of a slash command; same fields, same order as bolt-python's `slash_command_body`. */
export function slashCommandBody(fields: SlashCommandFields): string {
  const form = new URLSearchParams({
    token: 'verification_token',
    team_id: fields.team_id ?? 'T111',
    team_domain: fields.team_domain ?? 'test-domain',
    channel_id: fields.channel_id,
    channel_name: fields.channel_name ?? 'random',
    user_id: fields.user_id,
    user_name: fields.user_name ?? 'primary-owner',
    command: fields.command ?? '/ship',
    text: fields.text,
    enterprise_id: 'E111',
    enterprise_name: 'Org Name',
    response_url: fields.response_url ?? 'https://hooks.slack.com/commands/T111/111/xxxxx',
    trigger_id: fields.trigger_id ?? freshTriggerId(),
  });
  // URLSearchParams encodes spaces as '+', exactly like Slack's raw_body in the sample.
  return form.toString();
}

export function sendSlashCommand(
  url: string,
  signingSecret: string,
  fields: SlashCommandFields,
  options: SignedRequestOptions = {},
): Promise<SlackRequestResult> {
  return sendSignedRequest(url, signingSecret, slashCommandBody(fields), 'application/x-www-form-urlencoded', options);
}

/** Slack's `seconds.micros` ts for "now". */
function nowActionTs(): string {
  const micros = BigInt(Date.now()) * 1000n + BigInt(Math.floor(Math.random() * 1000));
  return `${micros / 1_000_000n}.${String(micros % 1_000_000n).padStart(6, '0')}`;
}

/** The block_actions payload (a button click on a non-ephemeral message), shaped like bolt-python's sample. */
export function blockActionPayload(fields: BlockActionFields): z.core.util.JSONType {
  const teamId = fields.team_id ?? 'T111';
  const userName = fields.user_name ?? 'primary-owner';
  return {
    type: 'block_actions',
    user: { id: fields.user_id, username: userName, name: userName, team_id: teamId },
    api_app_id: 'A111',
    token: 'verification_token',
    container: { type: 'message', message_ts: fields.message_ts, channel_id: fields.channel_id, is_ephemeral: false },
    trigger_id: fields.trigger_id ?? freshTriggerId(),
    team: { id: teamId, domain: 'workspace-domain', enterprise_id: 'E111', enterprise_name: 'Sandbox Org' },
    channel: { id: fields.channel_id, name: 'test-channel' },
    response_url: fields.response_url ?? 'https://hooks.slack.com/actions/T111/111/random-value',
    actions: [
      {
        action_id: fields.action_id,
        block_id: fields.block_id ?? 'b',
        text: { type: 'plain_text', text: 'Button', emoji: true },
        value: fields.value,
        type: 'button',
        action_ts: fields.action_ts ?? nowActionTs(),
      },
    ],
  };
}

export function sendBlockAction(
  url: string,
  signingSecret: string,
  fields: BlockActionFields,
  options: SignedRequestOptions = {},
): Promise<SlackRequestResult> {
  const rawBody = new URLSearchParams({ payload: JSON.stringify(blockActionPayload(fields)) }).toString();
  return sendSignedRequest(url, signingSecret, rawBody, 'application/x-www-form-urlencoded', options);
}

export interface ViewSubmissionFields {
  user_id: string;
  user_name?: string;
  team_id?: string;
  view_id: string;
  callback_id: string;
  private_metadata: string;
  /** `state.values`: block id → action id → the input's value. */
  values: Record<string, Record<string, string>>;
}

/**
 * The view_submission payload of a modal's submit (the shape of Slack's interactivity payload for
 * modals, https://api.slack.com/reference/interaction-payloads/views#view_submission): plain-text
 * inputs only, which is all the bot's modals have.
 */
export function viewSubmissionPayload(fields: ViewSubmissionFields): z.core.util.JSONType {
  const teamId = fields.team_id ?? 'T111';
  const userName = fields.user_name ?? 'primary-owner';
  const values: Record<string, Record<string, z.core.util.JSONType>> = {};
  for (const [blockId, actions] of Object.entries(fields.values)) {
    values[blockId] = Object.fromEntries(Object.entries(actions).map(([actionId, value]) => [actionId, { type: 'plain_text_input', value }]));
  }
  return {
    type: 'view_submission',
    team: { id: teamId, domain: 'workspace-domain' },
    user: { id: fields.user_id, username: userName, name: userName, team_id: teamId },
    api_app_id: 'A111',
    token: 'verification_token',
    trigger_id: freshTriggerId(),
    view: {
      id: fields.view_id,
      team_id: teamId,
      type: 'modal',
      blocks: [],
      private_metadata: fields.private_metadata,
      callback_id: fields.callback_id,
      state: { values },
      hash: '1700000000.abcdef',
      title: { type: 'plain_text', text: 'Reason', emoji: true },
      root_view_id: fields.view_id,
      app_id: 'A111',
      bot_id: 'B111',
    },
    response_urls: [],
    is_enterprise_install: false,
  };
}

export function sendViewSubmission(url: string, signingSecret: string, fields: ViewSubmissionFields, options: SignedRequestOptions = {}): Promise<SlackRequestResult> {
  const rawBody = new URLSearchParams({ payload: JSON.stringify(viewSubmissionPayload(fields)) }).toString();
  return sendSignedRequest(url, signingSecret, rawBody, 'application/x-www-form-urlencoded', options);
}
