import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { parsePolicy } from '../../src/config/config.js';
import { DISCORD_APP_ID } from '../helpers/bot.js';
import { auditEvents, mergeChange, runOf, startDeployWorld, until, type DeployWorld } from '../helpers/deploy-world.js';
import { buttonClick, callbackOf, modalSubmit, sendInteraction, type Actor } from '../helpers/discord-requests.js';
import type { DiscordMessage, DiscordServer, WebhookCall } from '../helpers/discord-server.js';
import type { GitOpsStage } from '../helpers/gitops-controller.js';
import type { JsonObject } from '../helpers/kubernetes-server.js';
import { expectNoTrustViolations } from '../helpers/trust-chains.js';
import {
  DISCORD_ALICE,
  DISCORD_APPROVER,
  DISCORD_APPROVERS_ROLE,
  DISCORD_BOB,
  DISCORD_SHOP,
} from '../helpers/world.js';

/**
 * Issue 13: the production approval on Discord, end to end. The run goes through agent, CI, merge,
 * Freight and dev (the local Kubernetes API with the scripted Kargo and Argo CD controller) to the
 * approval gate; the request lands in the run's thread with Approve and Reject buttons; every click
 * is a real signed MESSAGE_COMPONENT interaction (and a MODAL_SUBMIT for a Reject's reason), with
 * the clicker's roles in `member.roles` as Discord sends them. Refusals go only to the clicker (a
 * follow-up to their own interaction token, ephemeral) and are audited; the approval message and
 * the card change in place; production is promoted exactly once. Each test ends with the
 * trust-boundary checker over the whole audit log.
 */

const SHOP = `discord:${DISCORD_SHOP}`;
/** Someone in the server with no part in the run. */
const DISCORD_EVE = '1310000000000000209';
const STAGES: GitOpsStage[] = [
  { name: 'dev', apps: ['shop-dev'] },
  { name: 'prod', apps: ['shop-prod'], autoPromote: false },
];
const policyWith = (approval: string) => `
repos:
  acme/shop:
    channels: [${SHOP}]
    requesters: [discord:${DISCORD_ALICE}]
    checks: { test: test -f src/health.js }
    pipeline: shop
pipelines:
  shop:
    kargo: { project: shop, warehouse: shop }
    stages:
      - { name: dev, kargoStage: dev, argocdApps: [shop-dev] }
      - { name: prod, kargoStage: prod, argocdApps: [shop-prod], approval: ${approval} }
budgets: { maxAgentTurns: 20, maxCiIterations: 3, maxDeployIterations: 1, maxTokensPerRun: 2000000, maxCostUsdPerRun: 10, maxRunMinutes: 60 }
`;
const MERGE_SHA = 'feedc0defeedc0defeedc0defeedc0defeedc0de';
const APPROVERS = `[discord:${DISCORD_BOB}, discord:role:${DISCORD_APPROVERS_ROLE}]`;

let world: DeployWorld | undefined;
afterEach(async () => {
  const problems = (await world?.stop()) ?? [];
  world = undefined;
  expect(problems).toEqual([]);
});

const create = (id: string, text: string) => ({
  content: [
    {
      type: 'tool_use' as const,
      id,
      name: 'str_replace_based_edit_tool',
      input: { command: 'create', path: '/repo/src/health.js', file_text: text },
    },
  ],
});
const done = (text: string) => ({ content: [{ type: 'text' as const, text }] });

function discordOf(d: DeployWorld): DiscordServer {
  const server = d.w.bot.discord?.server;
  if (server === undefined) throw new Error('not a Discord world');
  return server;
}

/** A run of `acme/shop` by Alice on Discord, driven to the approval gate. */
async function runToApproval(
  name: string,
  approval: string,
): Promise<{ d: DeployWorld; runId: string; freight: string; policy: string }> {
  const policy = policyWith(approval);
  const d = await startDeployWorld({ name, policy, stages: STAGES, chat: 'discord' });
  world = d;
  d.w.model.script(create('c1', "module.exports = () => 'ok';\n"), done('Added src/health.js.'));
  const runId = await d.w.ship('acme/shop add a health module');
  await mergeChange(d.w, runId, MERGE_SHA);
  const freight = d.gitops.produceFreight(MERGE_SHA);
  await until(
    d.w,
    runId,
    'waiting at approval',
    (run) => run.gates.find((g) => g.name === 'approval')?.state === 'running',
  );
  return { d, runId, freight, policy };
}

/** Discord markdown as a person reads it: the escapes gone. */
const unescape = (markdown: string): string => markdown.replace(/\\(.)/g, '$1');
const text = (m: DiscordMessage): string =>
  unescape(
    [m.content, ...m.embeds.flatMap((e) => [e.title ?? '', e.description ?? '', e.footer?.text ?? ''])].join('\n'),
  );
const buttonsOf = (m: DiscordMessage) => m.components.flatMap((row) => row.components);
const card = (server: DiscordServer): DiscordMessage | undefined => server.messages(DISCORD_SHOP)[0];

/** The run's approval message: the reply in the card's thread whose embed is titled "Approval needed: …". */
function approvalMessage(server: DiscordServer): DiscordMessage | undefined {
  const root = card(server);
  if (root === undefined) return undefined;
  return server.messages(root.id).find((m) => m.embeds[0]?.title?.startsWith('Approval needed') === true);
}

/** Waits for the approval request with its buttons. */
async function approvalRequest(
  server: DiscordServer,
): Promise<{ message: DiscordMessage; thread: string; approve: string; reject: string }> {
  return server.waitFor(
    (s) => {
      const message = approvalMessage(s);
      const buttons = message === undefined ? [] : buttonsOf(message);
      const approve = buttons.find((b) => b.label === 'Approve')?.custom_id;
      const reject = buttons.find((b) => b.label === 'Reject')?.custom_id;
      const thread = card(s)?.id;
      return message === undefined || approve === undefined || reject === undefined || thread === undefined
        ? undefined
        : { message, thread, approve, reject };
    },
    30_000,
    'the approval request with its buttons',
  );
}

interface Click {
  actor: Actor;
  customId: string;
}

/** One signed click on the approval message; returns its token (the clicker's answers come back to it). */
async function click(
  d: DeployWorld,
  request: { message: DiscordMessage; thread: string },
  { actor, customId }: Click,
): Promise<{ token: string; type: number | undefined; data: Record<string, unknown> | undefined }> {
  const discord = d.w.bot.discord;
  if (discord === undefined) throw new Error('not a Discord world');
  const interaction = buttonClick(
    discord.server,
    DISCORD_APP_ID,
    actor,
    { channelId: DISCORD_SHOP, threadId: request.thread },
    request.message.id,
    customId,
  );
  const result = await sendInteraction(discord.interactionsUrl, discord.keys, interaction.body);
  expect(result.status).toBe(200);
  const callback = callbackOf(result);
  return { token: interaction.token, type: callback?.type, data: callback?.data };
}

/** The ephemeral follow-up a click's interaction got (its answer to the clicker alone). */
async function answerTo(d: DeployWorld, token: string): Promise<{ call: WebhookCall; text: string }> {
  const call = await discordOf(d).waitFor(
    (s) => s.webhookCalls.find((c) => c.token === token && c.kind === 'followup'),
    30_000,
    'the answer to the click',
  );
  return { call, text: unescape(call.body.content ?? '') };
}

function prodPromotions(d: DeployWorld, runId: string): JsonObject[] {
  return d.k8s.list('Promotion', 'shop').filter((p) => {
    const labels =
      z.object({ metadata: z.object({ labels: z.record(z.string(), z.string()).optional() }) }).parse(p).metadata
        .labels ?? {};
    return labels['shipgate.io/run'] === runId && labels['shipgate.io/stage'] === 'prod';
  });
}

const promotionSchema = z.object({
  metadata: z.object({ annotations: z.record(z.string(), z.string()) }),
  spec: z.object({ stage: z.string(), freight: z.string() }),
});

const alice: Actor = { userId: DISCORD_ALICE, username: 'alice' };
const bob: Actor = { userId: DISCORD_BOB, username: 'bob' };
/** Holds the approvers' role: it is on her member object, nowhere in the policy by name. */
const carol: Actor = { userId: DISCORD_APPROVER, username: 'carol', roles: [DISCORD_APPROVERS_ROLE] };
/** In the server, with some other role. */
const eve: Actor = { userId: DISCORD_EVE, username: 'eve', roles: ['1310000000000000399'] };

describe('production approval on Discord', () => {
  it('refuses the requester and an outsider to them alone (audited); a listed approver and a role holder approve; the message and the card change in place; one Promotion', async () => {
    const { d, runId, freight, policy } = await runToApproval(
      'discord-approval',
      `{ approvers: ${APPROVERS}, minApprovals: 2, expiresAfter: 1h }`,
    );
    const server = discordOf(d);
    const request = await approvalRequest(server);
    const posted = text(request.message);
    for (const fact of [
      MERGE_SHA,
      freight,
      'CI: passed',
      `<@${DISCORD_ALICE}>`,
      `<@${DISCORD_BOB}>`,
      `<@&${DISCORD_APPROVERS_ROLE}>`,
      'Needs',
    ])
      expect(posted).toContain(fact);
    expect(request.message.components.flatMap((row) => row.components).map((b) => [b.label, b.style])).toEqual([
      ['Approve', 1],
      ['Reject', 4],
    ]);

    // The requester's own Approve: refused, to her alone, naming who can approve.
    const own = await click(d, request, { actor: alice, customId: request.approve });
    expect(own.type).toBe(6);
    const ownAnswer = await answerTo(d, own.token);
    expect(ownAnswer.call.body).toMatchObject({ flags: 64, allowed_mentions: { parse: [] } });
    expect(ownAnswer.text).toContain('You requested this run, so you cannot approve it');
    expect(ownAnswer.text).toContain(`<@${DISCORD_BOB}>`);
    // Someone without the approvers' role: refused too.
    const outsider = await click(d, request, { actor: eve, customId: request.approve });
    expect((await answerTo(d, outsider.token)).text).toContain('You are not an approver of this run');
    expect((await runOf(d.w, runId)).gates.find((g) => g.name === 'approval')?.state).toBe('running');

    // Bob is listed by id: 1 of 2, shown on the same message, buttons still there.
    const first = await click(d, request, { actor: bob, customId: request.approve });
    expect((await answerTo(d, first.token)).text).toContain('Your approval counts (1 of 2)');
    await server.waitFor(
      (s) => (text(approvalMessage(s) ?? request.message).includes('(1 of 2)') ? true : undefined),
      30_000,
      'the message counting 1 of 2',
    );
    expect(approvalMessage(server)?.id).toBe(request.message.id);
    expect(buttonsOf(approvalMessage(server) ?? request.message)).toHaveLength(2);

    // Carol counts through the role Discord vouches for on her click.
    const second = await click(d, request, { actor: carol, customId: request.approve });
    expect((await answerTo(d, second.token)).text).toContain(`Approved: run ${runId}`);
    await until(d.w, runId, 'the run done', (run) => run.state === 'done', 60_000);

    const promotions = prodPromotions(d, runId);
    expect(promotions).toHaveLength(1);
    const promotion = promotionSchema.parse(promotions[0]);
    expect(promotion.spec).toEqual({ stage: 'prod', freight });
    expect(promotion.metadata.annotations['shipgate.io/approved-by']).toContain(`discord:${DISCORD_BOB}`);
    expect(promotion.metadata.annotations['shipgate.io/approved-by']).toContain(`discord:${DISCORD_APPROVER}`);
    expect(promotion.metadata.annotations['shipgate.io/thread']).toBe(
      `https://discord.com/channels/${server.guildId}/${DISCORD_SHOP}/${card(server)?.id ?? ''}`,
    );

    const events = await auditEvents(d.w, runId);
    expect(
      events
        .filter((e) => e.type === 'approval.refused')
        .map((e) => `${e.actor}:${String(e.data['reason'])}`)
        .sort(),
    ).toEqual([`discord:${DISCORD_ALICE}:self-approval`, `discord:${DISCORD_EVE}:not-approver`].sort());
    expect(
      events.filter((e) => e.type === 'approval.approved').map((e) => [e.actor, e.data['via'], e.data['count']]),
    ).toEqual([
      [`discord:${DISCORD_BOB}`, `discord:${DISCORD_BOB}`, 1],
      [`discord:${DISCORD_APPROVER}`, `discord:role:${DISCORD_APPROVERS_ROLE}`, 2],
    ]);
    expect(events.filter((e) => e.type === 'promotion.created' && e.data['stage'] === 'prod')).toHaveLength(1);

    // The decided message is the same message: who approved, no buttons. The card shows the run done.
    // Decided, not the "1 of 2" state before it (which says Approved too, with its buttons still on).
    await server.waitFor(
      (s) => {
        const message = approvalMessage(s) ?? request.message;
        return text(message).includes(`<@${DISCORD_APPROVER}>`) && buttonsOf(message).length === 0 ? true : undefined;
      },
      30_000,
      'the approval message decided',
    );
    const decided = approvalMessage(server);
    expect(decided?.id).toBe(request.message.id);
    expect(buttonsOf(decided ?? request.message)).toEqual([]);
    expect(text(decided ?? request.message)).toContain(`<@${DISCORD_APPROVER}>`);
    expect(
      server.messages(request.thread).filter((m) => m.embeds[0]?.title?.startsWith('Approval') === true),
    ).toHaveLength(1);
    await server.waitFor(
      (s) =>
        card(s) !== undefined && buttonsOf(card(s)!).length === 0 && /done/i.test(text(card(s)!)) ? true : undefined,
      30_000,
      'the card showing the run done',
    );
    expect(server.messages(DISCORD_SHOP)).toHaveLength(1);
    expect(card(server)?.editCount).toBeGreaterThan(0);

    expectNoTrustViolations(await d.w.bot.app.audit.allEvents(), parsePolicy(policy, 'discord approval policy'), {
      membership: (id) =>
        id === `discord:role:${DISCORD_APPROVERS_ROLE}` ? [`discord:${DISCORD_APPROVER}`] : undefined,
      defaultBranch: () => 'main',
    });
  }, 180_000);

  it('a Reject opens the reason modal; its submission ends the run rejected with the reason on the message and in the audit; a later click is refused', async () => {
    const { d, runId, policy } = await runToApproval('discord-reject', `{ approvers: ${APPROVERS}, expiresAfter: 1h }`);
    const server = discordOf(d);
    const discord = d.w.bot.discord!;
    const request = await approvalRequest(server);

    const rejected = await click(d, request, { actor: bob, customId: request.reject });
    // The click's answer IS the modal (type 9), carrying the same button back in its custom_id.
    expect(rejected.type).toBe(9);
    expect(rejected.data?.['custom_id']).toBe(`r:${request.reject}`);
    expect(JSON.stringify(rejected.data)).toContain(runId);
    expect((await runOf(d.w, runId)).state).not.toBe('rejected');

    const submit = modalSubmit(
      server,
      DISCORD_APP_ID,
      bob,
      { channelId: DISCORD_SHOP, threadId: request.thread },
      request.message.id,
      `r:${request.reject}`,
      'Change freeze until Monday',
    );
    const submitted = await sendInteraction(discord.interactionsUrl, discord.keys, submit.body);
    expect(submitted.status).toBe(200);
    expect(callbackOf(submitted)?.type).toBe(6);
    expect((await answerTo(d, submit.token)).text).toContain(`You rejected run ${runId}`);
    await until(d.w, runId, 'the run rejected', (run) => run.state === 'rejected');

    await server.waitFor(
      (s) => (text(approvalMessage(s) ?? request.message).includes('Rejected') ? true : undefined),
      30_000,
      'the approval message decided',
    );
    const message = approvalMessage(server);
    expect(message?.id).toBe(request.message.id);
    expect(text(message ?? request.message)).toContain('Change freeze until Monday');
    expect(buttonsOf(message ?? request.message)).toEqual([]);
    const events = await auditEvents(d.w, runId);
    expect(
      events.filter((e) => e.type === 'approval.rejected').map((e) => [e.actor, e.data['reason'], e.data['by']]),
    ).toEqual([[`discord:${DISCORD_BOB}`, 'Change freeze until Monday', 'approver']]);
    expect(prodPromotions(d, runId)).toEqual([]);
    await server.waitFor(
      (s) =>
        card(s) !== undefined && /rejected/i.test(text(card(s)!)) && buttonsOf(card(s)!).length === 0
          ? true
          : undefined,
      30_000,
      'the card showing the rejection',
    );

    // A click on the old buttons afterwards (a stale client): refused to the clicker.
    const late = await click(d, request, { actor: carol, customId: request.approve });
    expect((await answerTo(d, late.token)).text).toContain('already decided');
    expectNoTrustViolations(await d.w.bot.app.audit.allEvents(), parsePolicy(policy, 'discord approval policy'), {
      defaultBranch: () => 'main',
    });
  }, 180_000);
});
