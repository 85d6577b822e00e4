import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import {
  analysisRunSchema,
  evaluateVerification,
  kargoFreightStatusSchema,
  kargoStageSchema,
  summariseAnalysisRun,
  type KargoStage,
} from './verification.js';
import { sampleJson, sampleYaml, sampleYamlDocuments } from '../../../test/helpers/samples.js';

/**
 * Stage verification against Kargo's own objects: the docs' Stage status
 * (`kargo/stage-status.docs-example.legacy-v0.8.yaml`, whose freightHistory and verificationHistory
 * shapes are current), the kargo-advanced Stages with verification, the kargo-simple and e2e Stages,
 * the docs' failed AnalysisRun and Freight status.
 */

const stageDocs = (name: string): KargoStage[] =>
  sampleYamlDocuments('kargo', name).map((d) => kargoStageSchema.parse(d));

describe('the Kargo schemas accept the real objects', () => {
  it.each([
    'stages.kargo-simple.yaml',
    'stages-with-verification.kargo-advanced.yaml',
    'stage-promotion-always-fails.e2e.yaml',
    'stage-status.docs-example.legacy-v0.8.yaml',
  ])('Stage: %s', (name) => {
    expect(stageDocs(name).length).toBeGreaterThan(0);
  });

  it('reads the legacy Stage status history', () => {
    const [stage] = stageDocs('stage-status.docs-example.legacy-v0.8.yaml');
    const history = stage?.status?.freightHistory?.[0];
    expect(history?.items?.['Warehouse/my-warehouse']?.name).toBe('666209fd9755a1e48bec6b27f5f447747410dd9e');
    expect(history?.verificationHistory?.[0]).toMatchObject({
      phase: 'Successful',
      analysisRun: { name: 'test.01j2w7aknhf3j7jteyqs72hnbg.101bca5', namespace: 'kargo-demo' },
    });
  });

  it('Freight status and AnalysisRun', () => {
    const statuses = z
      .array(kargoFreightStatusSchema)
      .parse(sampleJson('kargo', 'freight-status-approvedFor-verifiedIn.docs-example.json'));
    expect(statuses[0]?.verifiedIn).toEqual({ test: {} });
    expect(() =>
      analysisRunSchema.parse(sampleYaml('kargo', 'analysisrun-verification-failed.docs-example.yaml')),
    ).not.toThrow();
  });
});

describe('verification of this Freight in this stage', () => {
  const FREIGHT = '666209fd9755a1e48bec6b27f5f447747410dd9e';
  const [legacy] = stageDocs('stage-status.docs-example.legacy-v0.8.yaml');
  const verifying = stageDocs('stages-with-verification.kargo-advanced.yaml').find(
    (s) => s.metadata?.name === 'ab-test-a',
  );
  if (!legacy || !verifying) throw new Error('samples changed');

  /** ab-test-a's spec (with verification) over the docs' status, its latest verification changed by `change`. */
  function verified(change?: (stage: KargoStage) => void): KargoStage {
    const stage = structuredClone({ ...verifying, status: legacy?.status });
    change?.(stage);
    return stage;
  }
  const latest = (stage: KargoStage) => {
    const entry = stage.status?.freightHistory?.[0]?.verificationHistory?.[0];
    if (!entry) throw new Error('no verification');
    return entry;
  };
  const evaluate = (stage: KargoStage, freightName = FREIGHT, freightStatus = {}) =>
    evaluateVerification({ stage, stageName: 'ab-test-a', freightName, freightStatus });

  it('Successful for this Freight passes, naming the AnalysisRun', () => {
    expect(evaluate(verified())).toMatchObject({
      state: 'passed',
      analysisRun: { name: 'test.01j2w7aknhf3j7jteyqs72hnbg.101bca5', namespace: 'kargo-demo' },
    });
  });

  it('another Freight is not verified by it', () => {
    const other = evaluate(verified(), '319ddec6bbfbd808d499a0357b027e773aa3707f');
    expect(other.state).toBe('pending');
    expect(other.summary).toContain('not in the stage');
  });

  it.each(['Failed', 'Error'])('%s fails with the AnalysisRun and message', (phase) => {
    const stage = verified((s) => {
      Object.assign(latest(s), {
        phase,
        message: 'Metric "integration-test" assessed Failed due to failed (1) > failureLimit (0)',
      });
    });
    expect(evaluate(stage)).toMatchObject({
      state: 'failed',
      phase,
      message: 'Metric "integration-test" assessed Failed due to failed (1) > failureLimit (0)',
      analysisRun: { name: 'test.01j2w7aknhf3j7jteyqs72hnbg.101bca5' },
    });
  });

  it.each(['Running', 'Pending', 'Aborted', 'Inconclusive', ''])('%j waits', (phase) => {
    const stage = verified((s) => {
      latest(s).phase = phase;
    });
    expect(evaluate(stage).state).toBe('pending');
  });

  it('only the latest verification decides: a newer Running one over an older Failed one waits', () => {
    const stage = verified((s) => {
      const history = s.status?.freightHistory?.[0]?.verificationHistory ?? [];
      history.unshift({ id: 'newer', phase: 'Running' });
      if (history[1]) history[1].phase = 'Failed';
    });
    expect(evaluate(stage)).toMatchObject({ state: 'pending', phase: 'Running' });
  });

  it('a verification that started before this promotion finished is an earlier stay\'s: it waits', () => {
    const stage = verified((s) => {
      latest(s).phase = 'Successful';
      latest(s).startTime = '2024-07-15T22:00:00Z';
    });
    const before = evaluateVerification({ stage, stageName: 'ab-test-a', freightName: FREIGHT, freightStatus: {}, promotedAt: '2024-07-15T22:13:25Z' });
    expect(before).toMatchObject({ state: 'pending', summary: expect.stringContaining('from before this promotion') as unknown });
    const after = evaluateVerification({ stage, stageName: 'ab-test-a', freightName: FREIGHT, freightStatus: {}, promotedAt: '2024-07-15T21:59:59Z' });
    expect(after.state).toBe('passed');
  });

  it('without verification, a verifiedIn entry with no time does not pass once the promotion time is known', () => {
    const plain: KargoStage = { metadata: { name: 'plain' }, spec: {} };
    const input = { stage: plain, stageName: 'plain', freightName: FREIGHT, freightStatus: { verifiedIn: { plain: null } } };
    expect(evaluateVerification({ ...input, promotedAt: '2024-07-15T22:13:25Z' }).state).toBe('pending');
    expect(evaluateVerification(input).state).toBe('passed');
  });

  it('no verification started yet waits', () => {
    const stage = verified((s) => {
      const entry = s.status?.freightHistory?.[0];
      if (entry) entry.verificationHistory = [];
    });
    expect(evaluate(stage).state).toBe('pending');
  });

  it('without spec.verification, Freight verifiedIn the stage passes (after the promotion, when its time is given)', () => {
    // The docs' Stage has no spec: no verification configured.
    const input = { stage: legacy, stageName: 'test', freightName: FREIGHT };
    expect(evaluateVerification({ ...input, freightStatus: { verifiedIn: { test: {} } } }).state).toBe('passed');
    expect(evaluateVerification({ ...input, freightStatus: { verifiedIn: { prod: {} } } }).state).toBe('pending');
    expect(evaluateVerification({ ...input, freightStatus: undefined }).state).toBe('pending');
    const old = { verifiedIn: { test: { verifiedAt: '2024-07-15T22:00:00Z' } } };
    expect(evaluateVerification({ ...input, freightStatus: old, promotedAt: '2024-07-15T22:13:25Z' }).state).toBe(
      'pending',
    );
    expect(evaluateVerification({ ...input, freightStatus: old, promotedAt: '2024-07-15T21:00:00Z' }).state).toBe(
      'passed',
    );
  });
});

describe('AnalysisRun summary', () => {
  it("summarises the docs' failed verification run", () => {
    const run = analysisRunSchema.parse(sampleYaml('kargo', 'analysisrun-verification-failed.docs-example.yaml'));
    expect(summariseAnalysisRun(run)).toEqual({
      name: 'dev.01jjqaq7qacfn766tcp1nqz2zv.55d4523',
      phase: 'Failed',
      message: 'Metric "integration-test" assessed Failed due to failed (1) > failureLimit (0)',
      metrics: [
        {
          name: 'integration-test',
          phase: 'Failed',
          message: null,
          lastValue: null,
          lastMessage: null,
          counts: { count: 1, successful: 0, failed: 1, inconclusive: 0, error: 0 },
        },
      ],
    });
  });

  it("keeps a web metric's last measured value", () => {
    const run = analysisRunSchema.parse({
      metadata: { name: 'ab-test-a.01k.666209f' },
      status: {
        phase: 'Failed',
        metricResults: [
          {
            name: 'pokemon-xp',
            phase: 'Failed',
            count: 5,
            failed: 4,
            measurements: [
              { phase: 'Successful', value: '112' },
              { phase: 'Failed', value: '243' },
            ],
          },
        ],
      },
    });
    expect(summariseAnalysisRun(run).metrics[0]).toMatchObject({
      name: 'pokemon-xp',
      lastValue: '243',
      counts: { count: 5, failed: 4 },
    });
  });
});
