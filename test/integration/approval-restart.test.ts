import { beforeAll, describe, expect, it } from 'vitest';
import { eventually } from '../helpers/eventually.js';
import {
  answersTo,
  APPROVER,
  approvalPipeline,
  approvalPosts,
  approvalRequest,
  approveButtonOf,
  CHANNEL,
  click,
  createGateWorld,
  eventsOf,
  expectPromotedOnce,
  processScope,
  runPromotions,
  SECOND_APPROVER,
  seedMergedRun,
  sigkill,
  waitDone,
  type GateWorld,
} from '../helpers/kill-world.js';

/**
 * Issue 10 / SPEC §6, §10: "exactly one production Promotion per approved run, whatever happens: …
 * a worker killed mid-way". Real processes in split roles (a web process that takes the clicks, a
 * worker that runs the gates and the chat outbox), real SIGKILL, the real client-node informers
 * against the local Kubernetes API server with the scripted Kargo/Argo CD controller, signed Slack
 * clicks on the approval message the outbox posted. The run is seeded with its Git half done (as
 * the agent, pr, ci and merge gates leave it, their evidence included), so the freight gate, the
 * dev stage, the approval gate and the bot-promoted prod stage all run for real.
 */

/** One world for the file's tests (each with a run, a Freight and a kill of its own): process start-up is most of the time. */
const scope = processScope('file');
/** While set, the API server holds its answers to Promotion creates until this settles (see the second test). */
let holdPromotionCreates: Promise<void> | undefined;
let world: GateWorld;

beforeAll(async () => {
  world = await createGateWorld(scope, {
    name: 'approval-restart',
    // dev is Kargo's to promote; prod only ever by the bot's Promotion, after the approval.
    ...approvalPipeline('kargo'),
    kubernetes: {
      beforeAnswer: (request) =>
        request.verb === 'create' && request.kind === 'Promotion' ? holdPromotionCreates : undefined,
    },
    roles: 'split',
  });
  await world.start();
}, 120_000);

async function killWorker(): Promise<void> {
  await sigkill(world.process('worker'));
}

describe('a worker SIGKILLed around the production approval', { timeout: 120_000 }, () => {
  it('killed right after the click: the restarted worker promotes once, the message shows the decision, and retried or late clicks add nothing', async () => {
    const creates = world.k8s.count('create', 'Promotion');
    const seeded = await seedMergedRun(world, 'sg-apkill0a', 'f00dfacef00dfacef00dfacef00dfacef00dface', 1);
    const { runId } = seeded;
    const { message, value } = await approvalRequest(world, runId);
    expect(value).toBe(`${runId}|${seeded.freight}|${(await world.approvals.get(runId))?.request.nonce ?? ''}`);

    const first = { user_id: APPROVER, user_name: 'ann', message_ts: message.ts, value, trigger_id: '1700000000.1.approval-restart', action_ts: '1700000001.000100' };
    await click(world, first);
    // Slack's request is acked before the handler runs: wait until the decision is in Redis, then kill the worker at once.
    await eventually(async () => (await world.approvals.get(runId))?.status === 'approved', 'the approval decided in Redis');
    await killWorker();
    expect((await world.store.get(runId))?.state).not.toBe('done');

    await world.restart('worker');
    // Slack redelivering that click (twice), and a second approver, while the restarted worker takes over.
    await click(world, first, { retryNum: 1, retryReason: 'http_timeout' });
    await click(world, first, { retryNum: 2, retryReason: 'http_timeout' });
    await click(world, { user_id: SECOND_APPROVER, user_name: 'carol', message_ts: message.ts, value });
    await world.slack.waitFor(() => answersTo(world, APPROVER).length >= 3 && answersTo(world, SECOND_APPROVER).length >= 1, 20_000, 'answers to the late clicks');
    await waitDone(world, runId);

    // The approval message was updated in place: same ts, same thread, no buttons, names who approved.
    const decided = await world.slack.waitFor(
      (s) => {
        const same = s.messages(CHANNEL).find((m) => m.ts === message.ts);
        return same !== undefined && approveButtonOf(same) === undefined && same.updateCount > 0 && same;
      },
      20_000,
      'the approval message updated to the decision',
    );
    expect(decided.thread_ts).toBe(message.thread_ts);
    expect(decided.blocks?.some((b) => b['type'] === 'actions')).toBe(false);
    expect(decided.text).toMatch(/Approved by .*UAPPROVER/);
    expect(JSON.stringify(decided.blocks)).toContain(APPROVER);
    expect(approvalPosts(world, runId)).toBe(1);

    // After the end too, the same payload again from both approvers.
    await click(world, { ...first, trigger_id: '1700000000.2.approval-restart', action_ts: '1700000002.000100' });
    await click(world, { user_id: SECOND_APPROVER, user_name: 'carol', message_ts: message.ts, value });
    await world.slack.waitFor(() => answersTo(world, APPROVER).length >= 4 && answersTo(world, SECOND_APPROVER).length >= 2, 20_000, 'answers to the clicks after the end');

    await expectPromotedOnce(world, seeded, creates);
    // The approver's repeats are answered as already counted and audited as nothing; the second
    // approver's clicks on the decided request are refusals, audited once each.
    expect(answersTo(world, APPROVER).slice(1)).toEqual(Array.from({ length: 3 }, () => expect.stringContaining('Your approval was already counted') as unknown));
    const refused = (await eventsOf(world, runId)).filter((e) => e.type === 'approval.refused');
    expect(refused.map((e) => [e.actor, e.data['reason']])).toEqual([
      [SECOND_APPROVER, 'already-decided'],
      [SECOND_APPROVER, 'already-decided'],
    ]);
  });

  it('killed right after the worker created the Promotion: the restart adopts it, creates none, audits it once with its approvers, and the run ends done', async () => {
    const creates = world.k8s.count('create', 'Promotion');
    // The API server stores the bot's Promotion but holds its answer: the worker dies between
    // Kubernetes' change and anything it would do with the reply (audit it, record it).
    let release = (): void => undefined;
    holdPromotionCreates = new Promise<void>((resolve) => (release = resolve));
    scope.defer(() => release());
    const seeded = await seedMergedRun(world, 'sg-apkill0b', 'b0bb1eb0bb1eb0bb1eb0bb1eb0bb1eb0bb1eb0bb', 2);
    const { runId } = seeded;
    const { message, value } = await approvalRequest(world, runId);
    await click(world, { user_id: APPROVER, user_name: 'ann', message_ts: message.ts, value });

    await eventually(() => Promise.resolve(runPromotions(world, runId).length > 0), 'the bot-created production Promotion', 60_000);
    await killWorker();
    holdPromotionCreates = undefined;
    release();
    const killed = await world.store.get(runId);
    expect(killed?.state).not.toBe('done');
    expect(killed?.artifacts.deploy?.stages?.['prod']?.promotion).toBeUndefined();
    expect((await eventsOf(world, runId)).filter((e) => e.type === 'promotion.created')).toEqual([]);

    await world.restart('worker');
    await waitDone(world, runId);
    await expectPromotedOnce(world, seeded, creates);
  });
});
