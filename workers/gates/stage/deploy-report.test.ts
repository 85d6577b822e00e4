import { describe, expect, it } from 'vitest';
import { evaluateArgoHealth, parseArgoApplication } from './argocd-health.js';
import { MAX_LINE, MAX_LINES, renderDeployFailure } from './deploy-report.js';
import { evaluatePromotion, parseKargoPromotion } from './kargo-promotion.js';
import { analysisRunSchema, summariseAnalysisRun } from './verification.js';
import { sampleYaml } from '../../../test/helpers/samples.js';

/**
 * The red deploy gate's text, from outcomes the evaluators produce on the samples: Argo CD's dumped
 * Application (`argocd/application-synced-healthy-sync-succeeded.yaml`) turned Degraded, a Promotion
 * of the e2e Stage's `fail` step, and the docs' failed AnalysisRun
 * (`kargo/analysisrun-verification-failed.docs-example.yaml`).
 */

const SHA = 'ea8759964626a583667a2bfd08f334ec2070040a';

function degradedApp(resources: number) {
  const app = parseArgoApplication(sampleYaml('argocd', 'application-synced-healthy-sync-succeeded.yaml'));
  if (!app.status?.sync) throw new Error('sample changed');
  app.status.sync.revision = SHA;
  app.status.health = { status: 'Degraded' };
  app.status.resources = Array.from({ length: resources }, (_, i) => ({
    kind: 'Deployment',
    namespace: 'test-lla',
    name: `test-lla-${i}`,
    health: { status: 'Degraded', message: `Deployment "test-lla-${i}" exceeded its progress deadline\nsee events` },
  }));
  app.status.conditions = [{ type: 'SyncError', message: 'x'.repeat(1000) }];
  const outcome = evaluateArgoHealth({
    application: app,
    desired: [{ repoURL: 'https://github.com/foo/manifests-velero', revision: SHA }],
  });
  if (outcome.state !== 'failed') throw new Error(`expected failed, got ${outcome.state}`);
  return outcome;
}

describe('red deploy gate report', () => {
  it('an application: unhealthy resources with their messages, bounded', () => {
    const lines = renderDeployFailure({ kind: 'application', stage: 'dev', outcome: degradedApp(12) });
    expect(lines.slice(0, 4)).toEqual([
      'Deploy gate stage:dev failed.',
      'argo-cd/velero-test is Degraded at the promoted revision',
      'Unhealthy resources:',
      '- Deployment test-lla/test-lla-0: Degraded — Deployment "test-lla-0" exceeded its progress deadline see events',
    ]);
    expect(lines).toContain('- … and 4 more');
    expect(lines.every((l) => l.length <= MAX_LINE)).toBe(true);
    expect(lines.length).toBeLessThanOrEqual(MAX_LINES);
    expect(lines.at(-1)).toMatch(/^- SyncError: x+…$/);
  });

  it('a Promotion: the failed step and message', () => {
    const outcome = evaluatePromotion(
      parseKargoPromotion({
        metadata: { name: 'kargo-promotion-fail-stage.01k2abc.666209f' },
        spec: { steps: [{ uses: 'fail' }] },
        status: {
          phase: 'Failed',
          message: 'step "step-1" failed: Always fails',
          currentStep: 0,
          stepExecutionMetadata: [{ alias: 'step-1', status: 'Failed', message: 'Always fails' }],
        },
      }),
    );
    if (outcome.state !== 'failed') throw new Error('expected failed');
    expect(renderDeployFailure({ kind: 'promotion', stage: 'kargo-promotion-fail-stage', outcome })).toEqual([
      'Deploy gate stage:kargo-promotion-fail-stage failed.',
      'Promotion kargo-promotion-fail-stage.01k2abc.666209f ended Failed.',
      'Failed step: 1/1 step-1 (fail), Failed.',
      'Step message: Always fails',
      'Message: step "step-1" failed: Always fails',
    ]);
  });

  it('verification: the AnalysisRun and its metric results', () => {
    const analysis = summariseAnalysisRun(
      analysisRunSchema.parse(sampleYaml('kargo', 'analysisrun-verification-failed.docs-example.yaml')),
    );
    const lines = renderDeployFailure({
      kind: 'verification',
      stage: 'dev',
      outcome: {
        state: 'failed',
        summary: '',
        phase: 'Failed',
        message: null,
        analysisRun: { name: analysis.name, namespace: 'guestbook' },
      },
      analysis,
    });
    expect(lines).toEqual([
      'Deploy gate stage:dev failed.',
      'Verification Failed.',
      'AnalysisRun guestbook/dev.01jjqaq7qacfn766tcp1nqz2zv.55d4523: Failed',
      'Analysis: Metric "integration-test" assessed Failed due to failed (1) > failureLimit (0)',
      'Metrics:',
      '- integration-test: Failed (1 failed, 0 errors of 1)',
    ]);
  });
});
