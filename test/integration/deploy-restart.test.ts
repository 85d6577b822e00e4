import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { eventually } from '../helpers/eventually.js';
import {
  createGateWorld,
  eventsOf,
  processScope,
  seedMergedRun,
  sigkill,
  waitDone,
} from '../helpers/kill-world.js';

/**
 * Issue 9 / SPEC §10: a worker killed while a stage gate is in flight. Real processes, real SIGKILL,
 * the real client-node informers against the local Kubernetes API server; the stage is one the bot
 * promotes (`promote: bot`), so the kill lands after the bot created its Promotion. The restarted
 * worker finds that Promotion by its labels, creates none, and the run still reaches `done`.
 */

const POLICY = `
repos:
  acme/shop: { pipeline: shop }
pipelines:
  shop:
    kargo: { project: shop, warehouse: shop }
    stages:
      - { name: dev, kargoStage: dev, argocdApps: [shop-dev], promote: bot }
budgets: { maxRunMinutes: 30 }
`;
const MERGE_SHA = 'f00dfacef00dfacef00dfacef00dfacef00dface';

const scope = processScope();

describe('a worker killed while a stage gate is in flight', { timeout: 120_000 }, () => {
  it('the bot-created Promotion exists once, the restarted worker follows it, and the run reaches done', async () => {
    const world = await createGateWorld(scope, {
      name: 'deploy-restart',
      policy: POLICY,
      // Slow enough that the Promotion is still running when the worker dies.
      stages: [{ name: 'dev', apps: ['shop-dev'], autoPromote: false }],
      stepDelayMs: 400,
      roles: 'one',
    });
    const { runId, freight } = await seedMergedRun(world, 'sg-killed01', MERGE_SHA, 1);
    await world.start();

    // The bot created its Promotion and Kargo is running it: kill the worker now.
    await eventually(async () => {
      const promotion = world.gitops.promotionsFor('dev')[0];
      return z.object({ status: z.object({ phase: z.literal('Running') }) }).safeParse(promotion).success;
    }, 'the bot-created Promotion running', 60_000); // the first look follows the informers' lists: over 30 s seen in CI beside another file's processes
    await sigkill(world.process('worker'));
    expect((await world.store.get(runId))?.state).not.toBe('done');

    await world.restart('worker');
    await waitDone(world, runId);

    // Exactly one Promotion, created once, labelled with the run; one audit event for it; the chain verifies.
    expect(world.k8s.count('create', 'Promotion')).toBe(1);
    const promotions = world.gitops.promotionsFor('dev');
    expect(promotions).toHaveLength(1);
    expect(promotions[0]).toMatchObject({
      metadata: { labels: { 'shipgate.io/run': runId, 'shipgate.io/stage': 'dev' } },
      spec: { stage: 'dev', freight },
    });
    const events = await eventsOf(world, runId);
    expect(events.filter((e) => e.type === 'promotion.created')).toHaveLength(1);
    expect(await world.audit.verify()).toMatchObject({ ok: true });
  });
});
