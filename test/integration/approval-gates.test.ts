import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { parsePolicy } from '../../src/config/config.js';
import { APPROVE_ACTION_ID, REJECT_ACTION_ID } from '../../src/render/approval.js';
import { SIGNING_SECRET } from '../helpers/bot.js';
import { auditEvents, mergeChange, runOf, startDeployWorld, until, type DeployWorld } from '../helpers/deploy-world.js';
import { eventually } from '../helpers/eventually.js';
import type { GitOpsStage } from '../helpers/gitops-controller.js';
import type { JsonObject } from '../helpers/kubernetes-server.js';
import { sendBlockAction, sendViewSubmission, type BlockActionFields } from '../helpers/slack-requests.js';
import type { SlackMessage } from '../helpers/slack-server.js';
import { expectNoTrustViolations } from '../helpers/trust-chains.js';
import type { World } from '../helpers/world.js';

/**
 * Issue 10 end to end over the real Bolt app, the local Kubernetes API server (objects validated
 * against the real CRDs) and the scripted Kargo/Argo CD controller: after dev is verified the run
 * waits at `approval`; the approval request lands in the run's thread with Approve and Reject; the
 * clicks are real signed block_actions (and a view_submission for a Reject's reason); production is
 * promoted by the bot exactly once, found by its run label. Every test ends with the trust-boundary
 * invariant checker over the whole audit log.
 */

const STAGES: GitOpsStage[] = [
  { name: 'dev', apps: ['shop-dev'] },
  { name: 'prod', apps: ['shop-prod'], autoPromote: false },
];
const policyWith = (approval: string) => `
repos:
  acme/shop:
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
const MERGE_SHA = 'f00dfacef00dfacef00dfacef00dfacef00dface';

let world: DeployWorld | undefined;
afterEach(async () => {
  const problems = (await world?.stop()) ?? [];
  world = undefined;
  expect(problems).toEqual([]);
});

const create = (id: string, text: string) => ({
  content: [{ type: 'tool_use' as const, id, name: 'str_replace_based_edit_tool', input: { command: 'create', path: '/repo/src/health.js', file_text: text } }],
});
const done = (text: string) => ({ content: [{ type: 'text' as const, text }] });

/** A run of `acme/shop` by UALICE, driven through agent, CI, merge, Freight and dev to the approval gate. */
async function runToApproval(name: string, approval: string): Promise<{ d: DeployWorld; runId: string; freight: string; policy: string }> {
  const policy = policyWith(approval);
  const d = await startDeployWorld({ name, policy, stages: STAGES });
  world = d;
  d.w.model.script(create('c1', "module.exports = () => 'ok';\n"), done('Added src/health.js.'));
  const runId = await d.w.ship('acme/shop add a health module');
  await mergeChange(d.w, runId, MERGE_SHA);
  const freight = d.gitops.produceFreight(MERGE_SHA);
  await until(d.w, runId, 'waiting at approval', (run) => run.gates.find((g) => g.name === 'approval')?.state === 'running');
  return { d, runId, freight, policy };
}

const buttonSchema = z.object({ type: z.literal('button'), action_id: z.string(), value: z.string() });
const actionsBlockSchema = z.object({ type: z.literal('actions'), elements: z.array(z.unknown()) });

function buttonsOf(message: SlackMessage): z.infer<typeof buttonSchema>[] {
  return (message.blocks ?? []).flatMap((block) => {
    const actions = actionsBlockSchema.safeParse(block);
    if (!actions.success) return [];
    return actions.data.elements.flatMap((element) => {
      const button = buttonSchema.safeParse(element);
      return button.success ? [button.data] : [];
    });
  });
}

/** The run's approval message in its thread: the reply whose text says "Approval … (run id)". */
function approvalMessage(w: World, runId: string): SlackMessage | undefined {
  return w.bot.slack.messages('CSHOP').find((m) => m.thread_ts !== undefined && m.thread_ts !== m.ts && (m.text ?? '').startsWith('Approval ') && (m.text ?? '').includes(runId));
}

/** The buttons the run's approval message shows now. */
function currentButtons(w: World, runId: string): z.infer<typeof buttonSchema>[] {
  const message = approvalMessage(w, runId);
  if (message === undefined) throw new Error(`no approval message for ${runId}`);
  return buttonsOf(message);
}

/** Waits for the approval request with its buttons; returns its ts and the buttons' value. */
async function approvalRequest(w: World, runId: string): Promise<{ ts: string; value: string }> {
  return eventually(async () => {
    const message = approvalMessage(w, runId);
    const approve = message === undefined ? undefined : buttonsOf(message).find((b) => b.action_id === APPROVE_ACTION_ID);
    return message === undefined || approve === undefined ? undefined : { ts: message.ts, value: approve.value };
  }, 'the approval request with its buttons');
}

const NAMES: Record<string, string> = { UALICE: 'alice', UBOB: 'bob', UCAROL: 'carol', UDAVE: 'dave', UEVE: 'eve' };

function clickFields(userId: string, actionId: string, value: string, ts: string, extra: Partial<BlockActionFields> = {}): BlockActionFields {
  return { user_id: userId, user_name: NAMES[userId] ?? userId.toLowerCase(), channel_id: 'CSHOP', message_ts: ts, action_id: actionId, value, ...extra };
}

async function click(w: World, fields: BlockActionFields, retryNum?: number): Promise<void> {
  const result = await sendBlockAction(w.bot.eventsUrl, SIGNING_SECRET, fields, retryNum === undefined ? {} : { retryNum, retryReason: 'http_timeout' });
  expect(result.status).toBe(200);
}

/** The ephemeral answers a user got, as text plus blocks. */
function ephemeralsFor(w: World, userId: string): string[] {
  return w.bot.slack.ephemerals.filter((e) => e.user === userId).map((e) => `${e.text ?? ''}\n${JSON.stringify(e.blocks ?? [])}`);
}

function prodPromotions(d: DeployWorld, runId: string): JsonObject[] {
  return d.k8s.list('Promotion', 'shop').filter((p) => {
    const labels = z.object({ metadata: z.object({ labels: z.record(z.string(), z.string()).optional() }) }).parse(p).metadata.labels ?? {};
    return labels['shipgate.io/run'] === runId && labels['shipgate.io/stage'] === 'prod';
  });
}

const promotionSchema = z.object({
  metadata: z.object({ name: z.string(), generateName: z.string().optional(), annotations: z.record(z.string(), z.string()) }),
  spec: z.object({ stage: z.string(), freight: z.string() }),
});

async function expectTrustChainHolds(d: DeployWorld, policy: string, membership?: (groupId: string) => readonly string[] | undefined): Promise<void> {
  expectNoTrustViolations(await d.w.bot.app.audit.allEvents(), parsePolicy(policy, 'approval-gates policy'), { membership, defaultBranch: () => 'main' });
}

describe('production approval', () => {
  it('30 concurrent Approve clicks from two approvers plus Slack retries make exactly one Promotion; the message then names who approved, without buttons', async () => {
    const { d, runId, freight, policy } = await runToApproval('approval-race', '{ approvers: [UBOB, UCAROL], minApprovals: 1, expiresAfter: 1h }');
    const { w } = d;
    const request = await approvalRequest(w, runId);
    const text = approvalMessage(w, runId)?.text ?? '';
    expect(text).toContain('Approval needed: prod');
    const posted = JSON.stringify(approvalMessage(w, runId)?.blocks);
    for (const fact of [MERGE_SHA, freight, 'Pull request', 'CI: passed', 'dev', '<@UALICE>', 'Needs']) expect(posted).toContain(fact);

    const clicks = Array.from({ length: 30 }, (_, index) => clickFields(index % 2 === 0 ? 'UBOB' : 'UCAROL', APPROVE_ACTION_ID, request.value, request.ts, { action_ts: `1700000100.${String(index).padStart(6, '0')}` }));
    // Slack redelivers a few of them (same payload, x-slack-retry-num): the same deliveries again.
    const retries = clicks.slice(0, 6).map((fields) => ({ ...fields, trigger_id: `1700000100.${fields.action_ts ?? ''}.abc` }));
    await Promise.all([...clicks.map((fields) => click(w, fields)), ...retries.map((fields) => click(w, fields)), ...retries.map((fields) => click(w, fields, 1))]);

    await until(w, runId, 'the run done', (run) => run.state === 'done', 60_000);
    const promotions = prodPromotions(d, runId);
    expect(promotions).toHaveLength(1);
    const promotion = promotionSchema.parse(promotions[0]);
    expect(promotion.spec).toEqual({ stage: 'prod', freight });
    expect(promotion.metadata.generateName).toBeDefined();
    const annotations = promotion.metadata.annotations;
    const approver = annotations['shipgate.io/approved-by'] ?? '';
    expect(['UBOB', 'UCAROL'].some((id) => approver.includes(id))).toBe(true);
    expect(annotations['shipgate.io/approval-freight']).toBe(freight);
    expect(annotations['shipgate.io/thread']).toMatch(/^https:\/\/fake\.slack\.test\/archives\/CSHOP\/p\d+$/);

    const events = await auditEvents(w, runId);
    const approved = events.filter((e) => e.type === 'approval.approved');
    expect(approved).toHaveLength(1);
    const winner = z.object({ userId: z.string(), userName: z.string().nullable(), freight: z.string() }).parse(approved[0]?.data);
    expect(winner.freight).toBe(freight);
    expect(winner.userName).toBe(NAMES[winner.userId]);
    // The other approver's 15 distinct clicks came after the decision: each refused and audited once, retries included.
    const refused = events.filter((e) => e.type === 'approval.refused');
    expect(refused).toHaveLength(15);
    expect(refused.every((e) => e.actor !== winner.userId)).toBe(true);
    expect(events.filter((e) => e.type === 'promotion.created' && e.data['stage'] === 'prod')).toHaveLength(1);
    expect(events.filter((e) => e.type === 'approval.requested')).toHaveLength(1);

    // The same message (same ts), decided: who approved, and no buttons.
    const decided = approvalMessage(w, runId);
    expect(decided?.ts).toBe(request.ts);
    await eventually(async () => ((approvalMessage(w, runId)?.text ?? '').includes('approved') ? true : undefined), 'the approval message updated', 30_000);
    expect(currentButtons(w, runId)).toEqual([]);
    expect(JSON.stringify(approvalMessage(w, runId)?.blocks)).toContain(`<@${winner.userId}>`);
    expect(w.bot.slack.messages('CSHOP').filter((m) => (m.text ?? '').startsWith('Approval '))).toHaveLength(1);
    await expectTrustChainHolds(d, policy);
  }, 120_000);

  it('refuses the requester, an outsider and a button of another Freight, each answered only to the clicker and audited; then an approver approves', async () => {
    const { d, runId, freight, policy } = await runToApproval('approval-refusals', '{ approvers: [UBOB], expiresAfter: 1h }');
    const { w } = d;
    const request = await approvalRequest(w, runId);
    await click(w, clickFields('UALICE', APPROVE_ACTION_ID, request.value, request.ts));
    await click(w, clickFields('UEVE', APPROVE_ACTION_ID, request.value, request.ts));
    await click(w, clickFields('UEVE', REJECT_ACTION_ID, request.value, request.ts));
    const [, , nonce] = request.value.split('|');
    await click(w, clickFields('UBOB', APPROVE_ACTION_ID, `${runId}|${freight}x|${nonce ?? ''}`, request.ts));
    await w.bot.slack.waitFor(() => ephemeralsFor(w, 'UEVE').length >= 2 && ephemeralsFor(w, 'UALICE').length >= 1 && ephemeralsFor(w, 'UBOB').length >= 1, 30_000, 'the refusals answered');
    expect(ephemeralsFor(w, 'UALICE')[0]).toContain('You requested this run, so you cannot approve it');
    expect(ephemeralsFor(w, 'UALICE')[0]).toContain('<@UBOB>');
    expect(ephemeralsFor(w, 'UEVE').join('\n')).toContain('You are not an approver of this run');
    expect(ephemeralsFor(w, 'UBOB')[0]).toContain('another Freight');
    const refusals = (await auditEvents(w, runId)).filter((e) => e.type === 'approval.refused').map((e) => `${e.actor}:${String(e.data['reason'])}`);
    expect(refusals.sort()).toEqual(['UALICE:self-approval', 'UBOB:wrong-freight', 'UEVE:not-approver', 'UEVE:not-approver']);
    expect((await runOf(w, runId)).gates.find((g) => g.name === 'approval')?.state).toBe('running');
    expect(prodPromotions(d, runId)).toEqual([]);

    await click(w, clickFields('UBOB', APPROVE_ACTION_ID, request.value, request.ts));
    await until(w, runId, 'the run done', (run) => run.state === 'done', 60_000);
    expect(prodPromotions(d, runId)).toHaveLength(1);
    await expectTrustChainHolds(d, policy);
  }, 120_000);

  it('minApprovals 2 with a user group: one member is 1 of 2, the same member again counts once, the requester in the group is refused, a second member completes it', async () => {
    const { d, runId, policy } = await runToApproval('approval-group', '{ approvers: [S0RELEASE], minApprovals: 2, expiresAfter: 1h }');
    const { w } = d;
    w.bot.slack.setUserGroup('S0RELEASE', ['UALICE', 'UBOB', 'UCAROL']);
    const request = await approvalRequest(w, runId);
    // Clicks are acked before they are answered: wait for each answer so their order is the clicks' order.
    await click(w, clickFields('UBOB', APPROVE_ACTION_ID, request.value, request.ts));
    await w.bot.slack.waitFor(() => ephemeralsFor(w, 'UBOB').length >= 1, 30_000, 'the first approval answered');
    await click(w, clickFields('UBOB', APPROVE_ACTION_ID, request.value, request.ts));
    await click(w, clickFields('UALICE', APPROVE_ACTION_ID, request.value, request.ts));
    await w.bot.slack.waitFor(() => ephemeralsFor(w, 'UBOB').length >= 2 && ephemeralsFor(w, 'UALICE').length >= 1, 30_000, 'the answers');
    expect(ephemeralsFor(w, 'UBOB')[0]).toContain('Your approval counts (1 of 2)');
    expect(ephemeralsFor(w, 'UBOB')[1]).toMatch(/already (approved|counted)/);
    expect(ephemeralsFor(w, 'UALICE')[0]).toContain('You requested this run');
    // The message shows the count so far, in place.
    await eventually(async () => (JSON.stringify(approvalMessage(w, runId)?.blocks).includes('(1 of 2)') ? true : undefined), 'the message counting 1 of 2', 30_000);
    expect(approvalMessage(w, runId)?.ts).toBe(request.ts);
    expect(currentButtons(w, runId)).toHaveLength(2);
    expect((await runOf(w, runId)).gates.find((g) => g.name === 'approval')?.state).toBe('running');

    await click(w, clickFields('UCAROL', APPROVE_ACTION_ID, request.value, request.ts));
    await until(w, runId, 'the run done', (run) => run.state === 'done', 60_000);
    const promotion = promotionSchema.parse(prodPromotions(d, runId)[0]);
    expect(promotion.metadata.annotations['shipgate.io/approved-by']).toContain('UBOB');
    expect(promotion.metadata.annotations['shipgate.io/approved-by']).toContain('UCAROL');
    const approved = (await auditEvents(w, runId)).filter((e) => e.type === 'approval.approved');
    expect(approved.map((e) => [e.actor, e.data['via'], e.data['count']])).toEqual([
      ['UBOB', 'S0RELEASE', 1],
      ['UCAROL', 'S0RELEASE', 2],
    ]);
    await expectTrustChainHolds(d, policy, (id) => (id === 'S0RELEASE' ? ['UALICE', 'UBOB', 'UCAROL'] : undefined));
  }, 120_000);

  it('a Reject asks for a reason in a modal; the submission ends the run rejected with the reason in the message and the audit, and nothing reaches prod', async () => {
    const { d, runId, policy } = await runToApproval('approval-reject', '{ approvers: [UBOB], expiresAfter: 1h }');
    const { w } = d;
    const request = await approvalRequest(w, runId);
    await click(w, clickFields('UBOB', REJECT_ACTION_ID, request.value, request.ts));
    const view = await w.bot.slack.waitFor((s) => s.openedViews[0], 30_000, 'the reason modal');
    expect(view.callbackId).toBe('shipgate.reason');
    expect(JSON.stringify(view.view)).toContain(runId);
    const submitted = await sendViewSubmission(w.bot.eventsUrl, SIGNING_SECRET, {
      user_id: 'UBOB',
      user_name: 'bob',
      view_id: view.viewId,
      callback_id: view.callbackId ?? '',
      private_metadata: view.privateMetadata ?? '',
      values: { reason: { reason_input: 'Change freeze until Monday' } },
    });
    expect(submitted.status).toBe(200);
    await until(w, runId, 'the run rejected', (run) => run.state === 'rejected');
    await eventually(async () => ((approvalMessage(w, runId)?.text ?? '').includes('rejected') ? true : undefined), 'the approval message updated', 30_000);
    const message = approvalMessage(w, runId);
    expect(message?.ts).toBe(request.ts);
    expect(JSON.stringify(message?.blocks)).toContain('Change freeze until Monday');
    expect(currentButtons(w, runId)).toEqual([]);
    const rejected = (await auditEvents(w, runId)).filter((e) => e.type === 'approval.rejected');
    expect(rejected.map((e) => [e.actor, e.data['reason'], e.data['by']])).toEqual([['UBOB', 'Change freeze until Monday', 'approver']]);
    expect(prodPromotions(d, runId)).toEqual([]);
    // A click after the decision is refused.
    await click(w, clickFields('UCAROL', APPROVE_ACTION_ID, request.value, request.ts));
    await w.bot.slack.waitFor(() => ephemeralsFor(w, 'UCAROL').length >= 1, 30_000, 'the late click answered');
    expect(ephemeralsFor(w, 'UCAROL')[0]).toContain('already decided');
    await expectTrustChainHolds(d, policy);
  }, 120_000);

  it('an approval not given within expiresAfter ends the run expired; a click after the deadline is refused', async () => {
    const { d, runId, policy } = await runToApproval('approval-expiry', '{ approvers: [UBOB], expiresAfter: 3s }');
    const { w } = d;
    const request = await approvalRequest(w, runId);
    await until(w, runId, 'the run expired', (run) => run.state === 'expired', 20_000);
    await click(w, clickFields('UBOB', APPROVE_ACTION_ID, request.value, request.ts));
    await w.bot.slack.waitFor(() => ephemeralsFor(w, 'UBOB').length >= 1, 30_000, 'the late click answered');
    expect(ephemeralsFor(w, 'UBOB')[0]).toMatch(/expired/);
    await eventually(async () => ((approvalMessage(w, runId)?.text ?? '').includes('expired') ? true : undefined), 'the approval message shows the expiry');
    expect(currentButtons(w, runId)).toEqual([]);
    const types = (await auditEvents(w, runId)).map((e) => e.type);
    expect(types.filter((t) => t === 'approval.expired')).toHaveLength(1);
    expect(types).toContain('run.expired');
    expect(prodPromotions(d, runId)).toEqual([]);
    await expectTrustChainHolds(d, policy);
  }, 120_000);
});
