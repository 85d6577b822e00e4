import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { evaluatePromotion, parseKargoPromotion, type KargoPromotion } from './kargo-promotion.js';
import { sampleYaml } from '../../../test/helpers/samples.js';

/**
 * Kargo's Promotion phases. No upstream v1.x Promotion with a status exists (SOURCES.md, known gaps),
 * so Promotions are built from the e2e Stage whose Promotion always fails
 * (`kargo/stage-promotion-always-fails.e2e.yaml`): its promotion template's steps, with the status
 * fields the Promotion CRD defines.
 */

describe('Promotion phases', () => {
  const templateSchema = z.object({
    spec: z.object({
      promotionTemplate: z.object({
        spec: z.object({ steps: z.array(z.object({ uses: z.string(), as: z.string().optional() })) }),
      }),
    }),
  });
  // The e2e Stage's only step is the builtin `fail` step; a `git-clone` before it makes the index matter.
  const failSteps = templateSchema.parse(sampleYaml('kargo', 'stage-promotion-always-fails.e2e.yaml')).spec
    .promotionTemplate.spec.steps;
  const steps = [{ uses: 'git-clone', as: 'clone' }, ...failSteps];

  const promotion = (status: NonNullable<KargoPromotion['status']>): KargoPromotion =>
    parseKargoPromotion({
      apiVersion: 'kargo.akuity.io/v1alpha1',
      kind: 'Promotion',
      metadata: { name: 'kargo-promotion-fail-stage.01k2abc.666209f', namespace: 'kargo-promotion-fail' },
      spec: { stage: 'kargo-promotion-fail-stage', freight: '666209fd9755a1e48bec6b27f5f447747410dd9e', steps },
      status,
    });

  it('Pending and Running are pending, with the current step while running', () => {
    expect(evaluatePromotion(promotion({ phase: 'Pending' }))).toMatchObject({
      state: 'pending',
      phase: 'Pending',
      step: null,
    });
    const unstarted = evaluatePromotion(promotion({}));
    expect(unstarted).toMatchObject({ state: 'pending', phase: '' });
    expect(unstarted.summary).toContain('not started');
    const running = evaluatePromotion(
      promotion({ phase: 'Running', currentStep: 0, stepExecutionMetadata: [{ alias: 'clone', status: 'Running' }] }),
    );
    expect(running).toMatchObject({
      state: 'pending',
      summary: 'Promotion kargo-promotion-fail-stage.01k2abc.666209f Running, step 1/2 (clone)',
    });
  });

  it('Succeeded passes', () => {
    expect(evaluatePromotion(promotion({ phase: 'Succeeded' }))).toMatchObject({ state: 'passed' });
  });

  it.each(['Failed', 'Errored', 'Aborted'] as const)('%s fails with the failed step and message', (phase) => {
    const outcome = evaluatePromotion(
      promotion({
        phase,
        message: 'step "step-2" failed: Always fails',
        currentStep: 1,
        stepExecutionMetadata: [
          { alias: 'clone', status: 'Succeeded' },
          { alias: 'step-2', status: 'Failed', message: 'Always fails', errorCount: 1 },
        ],
      }),
    );
    expect(outcome).toMatchObject({
      state: 'failed',
      phase,
      message: 'step "step-2" failed: Always fails',
      failedStep: {
        index: 1,
        name: 'step-2',
        uses: 'fail',
        status: 'Failed',
        message: 'Always fails',
        errorCount: 1,
        total: 2,
      },
    });
    expect(outcome.summary).toBe(
      `Promotion kargo-promotion-fail-stage.01k2abc.666209f ${phase} at step 2/2 (step-2): step "step-2" failed: Always fails`,
    );
  });

  it('a step that continued on error is not the failed step', () => {
    const outcome = evaluatePromotion(
      promotion({
        phase: 'Errored',
        stepExecutionMetadata: [
          { alias: 'clone', status: 'Errored', continueOnError: true, message: 'ignored' },
          { status: 'Errored', message: 'no promotion step runner found for kind "fail"' },
        ],
      }),
    );
    expect(outcome).toMatchObject({ state: 'failed', message: null, failedStep: { index: 1, name: 'fail' } });
    expect(outcome.summary).toContain('no promotion step runner found');
  });
});
