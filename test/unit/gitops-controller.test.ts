import { get } from 'node:http';
import { createInterface } from 'node:readline';
import { z } from 'zod';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { findRunFreight, parseKargoFreight } from '../../workers/gates/freight/freight-match.js';
import {
  evaluateArgoHealth,
  parseArgoApplication,
  type ArgoHealthOutcome,
  type DesiredRevision,
} from '../../workers/gates/stage/argocd-health.js';
import {
  evaluatePromotion,
  parseKargoPromotion,
  type PromotionOutcome,
} from '../../workers/gates/stage/kargo-promotion.js';
import {
  analysisRunSchema,
  evaluateVerification,
  kargoFreightStatusSchema,
  kargoStageSchema,
  summariseAnalysisRun,
  type VerificationOutcome,
} from '../../workers/gates/stage/verification.js';
import { createGitOpsController, type GitOpsController, type StageScript } from '../helpers/gitops-controller.js';
import { startKubernetesServer, type JsonObject, type KubernetesServer } from '../helpers/kubernetes-server.js';

const NS = 'shop';
const ARGOCD = 'argocd';
const SOURCE_REPO = 'https://github.com/acme/shop';
const GITOPS_REPO = 'https://github.com/acme/shop-deploy';
const MERGE_SHA = 'a1b2c3d4e5f60718293a4b5c6d7e8f9012345678';

const promotionStatusSchema = z.looseObject({
  status: z
    .looseObject({
      finishedAt: z.string().optional(),
      healthChecks: z
        .array(
          z.object({
            uses: z.string(),
            config: z.object({
              apps: z.array(
                z.object({ name: z.string(), namespace: z.string().optional(), desiredRevisions: z.array(z.string()) }),
              ),
            }),
          }),
        )
        .optional(),
    })
    .optional(),
});
const appSourceSchema = z.looseObject({ spec: z.looseObject({ source: z.looseObject({ repoURL: z.string() }) }) });
const freightStatusOf = (freight: JsonObject | undefined): z.infer<typeof kargoFreightStatusSchema> =>
  kargoFreightStatusSchema.parse(freight?.['status'] ?? {});
const stageStatusSchema = z.looseObject({
  status: z.looseObject({
    health: z.looseObject({ status: z.string(), issues: z.array(z.string()).optional() }).optional(),
    lastPromotion: z.looseObject({ name: z.string() }).optional(),
    currentPromotion: z.looseObject({ name: z.string() }).optional(),
    freightHistory: z
      .array(z.looseObject({ id: z.string(), items: z.record(z.string(), z.looseObject({ name: z.string() })) }))
      .optional(),
  }),
});
const watchEventSchema = z.object({ type: z.string(), object: z.record(z.string(), z.json()) });
const resourceVersionOf = (object: JsonObject): number =>
  Number(z.looseObject({ resourceVersion: z.string() }).parse(object['metadata']).resourceVersion);

describe('gitops controller (scripted Kargo and Argo CD)', () => {
  let server: KubernetesServer;
  let controller: GitOpsController;

  const setUp = (scripts: Record<string, StageScript> = {}, start = true): void => {
    controller = createGitOpsController({
      server,
      project: NS,
      warehouse: 'shop',
      sourceRepoURL: SOURCE_REPO,
      gitopsRepoURL: GITOPS_REPO,
      stepDelayMs: 2,
      stages: [
        { name: 'dev', apps: ['shop-dev'], script: scripts['dev'] ?? {} },
        { name: 'staging', apps: ['shop-staging'], verification: true, script: scripts['staging'] ?? {} },
        { name: 'prod', apps: ['shop-prod'], autoPromote: false, script: scripts['prod'] ?? {} },
      ],
    });
    controller.install();
    if (start) controller.start();
  };

  beforeEach(async () => {
    server = await startKubernetesServer();
  });
  afterEach(async () => {
    await controller.stop();
    expect(server.unexpected).toEqual([]);
    await server.close();
  });

  const onlyPromotion = (stage: string): JsonObject => {
    const promotions = controller.promotionsFor(stage);
    expect(promotions).toHaveLength(1);
    return promotions[0]!;
  };
  const promotionOutcome = (stage: string): PromotionOutcome =>
    evaluatePromotion(parseKargoPromotion(onlyPromotion(stage)));

  /** The revisions the bot will ask for: the Promotion's argocd-update health check, paired with the app's repository. */
  const desiredFromPromotion = (promotion: JsonObject, app: string): DesiredRevision[] => {
    const repoURL = appSourceSchema.parse(server.get('Application', ARGOCD, app)).spec.source.repoURL;
    const checks = promotionStatusSchema.parse(promotion).status?.healthChecks ?? [];
    return checks
      .filter((c) => c.uses === 'argocd-update')
      .flatMap((c) => c.config.apps)
      .filter((a) => a.name === app)
      .flatMap((a) => a.desiredRevisions.map((revision) => ({ repoURL, revision })));
  };
  const appOutcome = (app: string, desired: readonly DesiredRevision[]): ArgoHealthOutcome =>
    evaluateArgoHealth({ application: parseArgoApplication(server.get('Application', ARGOCD, app)), desired });
  const verificationOutcome = (stage: string, freight: string): VerificationOutcome =>
    evaluateVerification({
      stage: kargoStageSchema.parse(server.get('Stage', NS, stage)),
      stageName: stage,
      freightName: freight,
      freightStatus: freightStatusOf(server.get('Freight', NS, freight)),
      promotedAt: promotionStatusSchema.parse(onlyPromotion(stage)).status?.finishedAt,
    });
  const stageStatus = (stage: string): z.infer<typeof stageStatusSchema>['status'] =>
    stageStatusSchema.parse(server.get('Stage', NS, stage)).status;

  /** Every watch event of `kind` so far, replayed from the server's history by a real watch. */
  const history = async (kind: string, path: string, namespace: string): Promise<JsonObject[]> => {
    const last = Math.max(...server.list(kind, namespace).map(resourceVersionOf));
    return new Promise((resolve, reject) => {
      const objects: JsonObject[] = [];
      const req = get(`${server.url}${path}?watch=true&resourceVersion=1`, (res) => {
        res.on('error', () => undefined); // destroying the request below aborts the response
        const lines = createInterface({ input: res });
        lines.on('error', () => undefined);
        lines.on('line', (line) => {
          const event = watchEventSchema.parse(JSON.parse(line));
          objects.push(event.object);
          if (resourceVersionOf(event.object) >= last) {
            req.destroy();
            resolve(objects);
          }
        });
      });
      req.on('error', (error) => {
        if (objects.length === 0) reject(error);
      });
    });
  };

  it('installs Stages and Applications that are Synced and Healthy at an older gitops revision', () => {
    setUp();
    for (const stage of ['dev', 'staging', 'prod']) {
      const app = `shop-${stage}`;
      expect(appOutcome(app, [{ repoURL: GITOPS_REPO, revision: controller.initialRevision(stage) }]).state).toBe(
        'healthy',
      );
      expect(server.get('Application', ARGOCD, app)?.['metadata']).toMatchObject({
        annotations: { 'kargo.akuity.io/authorized-stage': `shop:${stage}` },
      });
    }
    expect(server.get('Stage', NS, 'staging')?.['spec']).toMatchObject({
      requestedFreight: [{ origin: { kind: 'Warehouse', name: 'shop' }, sources: { stages: ['dev'] } }],
      verification: { analysisTemplates: [{ name: 'integration-test' }] },
    });
    expect(server.get('Stage', NS, 'dev')?.['spec']).toMatchObject({
      requestedFreight: [{ sources: { direct: true } }],
    });
    expect(server.get('Warehouse', NS, 'shop')).toBeDefined();
  });

  it('names Freight as Kargo does (sha1 of its contents) and the bot finds it by the merge commit', () => {
    setUp({}, false); // only the Freight objects matter here
    const name = controller.produceFreight(MERGE_SHA, { alias: 'brave-eagle' });
    expect(name).toMatch(/^[0-9a-f]{40}$/u);
    expect(controller.produceFreight(MERGE_SHA)).toBe(name);
    const withImage = controller.produceFreight(MERGE_SHA, {
      images: [{ repoURL: 'ghcr.io/acme/shop', tag: MERGE_SHA.slice(0, 7) }],
    });
    expect(withImage).not.toBe(name);
    const freight = server.list('Freight', NS).map(parseKargoFreight);
    expect(freight).toHaveLength(2);
    expect(new Set(freight.map((f) => f.alias)).size).toBe(2);
    const match = findRunFreight({ freight, warehouse: 'shop', mergeSha: MERGE_SHA, rule: { match: 'commit' } });
    expect(match?.matchedBy).toBe(SOURCE_REPO);
    const byImage = findRunFreight({ freight, warehouse: 'shop', mergeSha: MERGE_SHA, rule: { match: 'image' } });
    expect(byImage?.name).toBe(withImage);
  });

  it('promotes new Freight through dev and staging (verified) and stops before prod, whose auto-promotion is off', async () => {
    setUp();
    const freight = controller.produceFreight(MERGE_SHA);
    await controller.settled();

    for (const stage of ['dev', 'staging']) {
      const promotion = onlyPromotion(stage);
      const name = z.looseObject({ name: z.string() }).parse(promotion['metadata']).name;
      // Kargo's own naming: <stage>.<ulid>.<first 7 of the Freight>.
      expect(name).toMatch(new RegExp(`^${stage}\\.[0-9a-hjkmnp-tv-z]{26}\\.${freight.slice(0, 7)}$`, 'u'));
      expect(promotion['metadata']).toMatchObject({ labels: { 'kargo.akuity.io/stage': stage } });
      expect(promotion['spec']).toMatchObject({
        stage,
        freight,
        steps: [{ uses: 'git-clone' }, { uses: 'git-commit' }, { uses: 'git-push' }, { uses: 'argocd-update' }],
      });
      expect(promotionOutcome(stage).state).toBe('passed');
      expect(promotion['status']).toMatchObject({
        phase: 'Succeeded',
        freight: { name: freight, origin: { kind: 'Warehouse', name: 'shop' } },
        stepExecutionMetadata: [
          { alias: 'clone', status: 'Succeeded' },
          { alias: 'commit', status: 'Succeeded' },
          { alias: 'push', status: 'Succeeded' },
          { alias: 'update', status: 'Succeeded' },
        ],
      });
      const desired = desiredFromPromotion(promotion, `shop-${stage}`);
      expect(desired).toEqual([{ repoURL: GITOPS_REPO, revision: controller.gitopsCommit(stage, freight) }]);
      expect(appOutcome(`shop-${stage}`, desired).state).toBe('healthy');
      const status = stageStatus(stage);
      expect(status.health?.status).toBe('Healthy');
      expect(status.lastPromotion?.name).toBe(z.looseObject({ name: z.string() }).parse(promotion['metadata']).name);
      expect(status.currentPromotion).toBeUndefined();
      expect(Object.keys(status.freightHistory?.[0]?.items ?? {})).toEqual(['Warehouse/shop']);
      expect(status.freightHistory?.[0]?.items['Warehouse/shop']?.name).toBe(freight);
      expect(verificationOutcome(stage, freight).state).toBe('passed');
    }

    const verified = verificationOutcome('staging', freight);
    if (verified.state !== 'passed' || verified.analysisRun === null) throw new Error('no AnalysisRun');
    expect(verified.analysisRun).toEqual({ name: verified.analysisRun.name, namespace: NS });
    expect(verified.analysisRun.name).toMatch(/^staging\./u);
    const run = analysisRunSchema.parse(server.get('AnalysisRun', NS, verified.analysisRun.name));
    expect(summariseAnalysisRun(run)).toMatchObject({ phase: 'Successful', metrics: [{ name: 'integration-test' }] });

    const freightStatus = freightStatusOf(server.get('Freight', NS, freight));
    expect(Object.keys(freightStatus.verifiedIn ?? {}).sort()).toEqual(['dev', 'staging']);
    const currentlyIn = z
      .object({ currentlyIn: z.record(z.string(), z.object({ since: z.string() })) })
      .parse(server.get('Freight', NS, freight)?.['status']).currentlyIn;
    expect(Object.keys(currentlyIn).sort()).toEqual(['dev', 'staging']);
    expect(controller.promotionsFor('prod')).toEqual([]);
    expect(
      appOutcome('shop-prod', [{ repoURL: GITOPS_REPO, revision: controller.initialRevision('prod') }]).state,
    ).toBe('healthy');
  });

  it('shows every transition to watchers, and no intermediate state of a healthy deploy looks failed', async () => {
    setUp();
    const freight = controller.produceFreight(MERGE_SHA);
    await controller.settled();

    const phases = (await history('Promotion', `/apis/kargo.akuity.io/v1alpha1/namespaces/${NS}/promotions`, NS))
      .map((o) => parseKargoPromotion(o))
      .filter((p) => p.spec?.stage === 'dev')
      .map((p) => `${p.status?.phase ?? '-'}${p.status?.currentStep === undefined ? '' : `@${p.status.currentStep}`}`);
    expect([...new Set(phases)]).toEqual([
      '-',
      'Pending',
      'Running@0',
      'Running@1',
      'Running@2',
      'Running@3',
      'Succeeded@3',
    ]);

    const desired = [{ repoURL: GITOPS_REPO, revision: controller.gitopsCommit('dev', freight) }];
    const outcomes = (
      await history('Application', `/apis/argoproj.io/v1alpha1/namespaces/${ARGOCD}/applications`, ARGOCD)
    )
      .map((o) => parseArgoApplication(o))
      .filter((a) => a.metadata?.name === 'shop-dev')
      .map((a) => evaluateArgoHealth({ application: a, desired }));
    expect(outcomes.map((o) => o.state)).not.toContain('failed');
    expect(outcomes.at(-1)?.state).toBe('healthy');
    const codes = outcomes.flatMap((o) => (o.state === 'progressing' ? o.reasons.map((r) => r.code) : []));
    // Installed at the old revision; Kargo's request; Argo CD's running sync; finished but not yet reconciled.
    for (const code of [
      'revision-behind',
      'operation-requested',
      'operation-running',
      'not-reconciled',
      'health-not-ready',
    ])
      expect(codes).toContain(code);
  });

  it('runs a Promotion the bot creates with generateName, with the Stage’s steps', async () => {
    setUp();
    const freight = controller.produceFreight(MERGE_SHA);
    await controller.settled();
    const template = z
      .looseObject({
        spec: z.looseObject({
          promotionTemplate: z.looseObject({ spec: z.looseObject({ steps: z.array(z.json()) }) }),
        }),
      })
      .parse(server.get('Stage', NS, 'prod'));
    const res = await fetch(`${server.url}/apis/kargo.akuity.io/v1alpha1/namespaces/${NS}/promotions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        apiVersion: 'kargo.akuity.io/v1alpha1',
        kind: 'Promotion',
        metadata: { generateName: 'prod.', namespace: NS, labels: { 'shipgate.dev/run': 'r1' } },
        spec: { stage: 'prod', freight, steps: template.spec.promotionTemplate.spec.steps },
      }),
    });
    expect(res.status).toBe(201);
    await controller.settled();

    const promotion = onlyPromotion('prod');
    // The test server named it from generateName; the bot's labels stay.
    expect(z.looseObject({ name: z.string() }).parse(promotion['metadata']).name).toMatch(/^prod\./u);
    expect(promotion['metadata']).toMatchObject({ labels: { 'shipgate.dev/run': 'r1' } });
    expect(promotionOutcome('prod').state).toBe('passed');
    expect(appOutcome('shop-prod', desiredFromPromotion(promotion, 'shop-prod')).state).toBe('healthy');
    expect(verificationOutcome('prod', freight).state).toBe('passed');
  });

  describe('failure scripts', () => {
    it('degraded: the Promotion passes, the app fails "degraded" with the Deployment’s message, and the chain ends', async () => {
      setUp({ dev: { app: 'degraded' } });
      const freight = controller.produceFreight(MERGE_SHA);
      await controller.settled();
      expect(promotionOutcome('dev').state).toBe('passed');
      const outcome = appOutcome('shop-dev', desiredFromPromotion(onlyPromotion('dev'), 'shop-dev'));
      expect(outcome).toMatchObject({
        state: 'failed',
        code: 'degraded',
        unhealthyResources: [
          {
            kind: 'Deployment',
            name: 'shop-dev',
            health: 'Degraded',
            message: 'Deployment "shop-dev" exceeded its progress deadline',
          },
        ],
      });
      expect(stageStatus('dev').health?.status).toBe('Unhealthy');
      expect(verificationOutcome('dev', freight).state).toBe('pending');
      expect(controller.promotionsFor('staging')).toEqual([]);
    });

    it('missing: the app fails "missing"', async () => {
      setUp({ dev: { app: 'missing' } });
      controller.produceFreight(MERGE_SHA);
      await controller.settled();
      expect(promotionOutcome('dev').state).toBe('passed');
      expect(appOutcome('shop-dev', desiredFromPromotion(onlyPromotion('dev'), 'shop-dev'))).toMatchObject({
        state: 'failed',
        code: 'missing',
      });
      expect(controller.promotionsFor('staging')).toEqual([]);
    });

    it('old-revision: the Promotion passes but the app is still at the old revision (progressing, revision-behind)', async () => {
      setUp({ dev: { app: 'old-revision' } });
      controller.produceFreight(MERGE_SHA);
      await controller.settled();
      expect(promotionOutcome('dev').state).toBe('passed');
      const outcome = appOutcome('shop-dev', desiredFromPromotion(onlyPromotion('dev'), 'shop-dev'));
      expect(outcome.state).toBe('progressing');
      if (outcome.state !== 'progressing') throw new Error('not progressing');
      expect(outcome.reasons.map((r) => r.code)).toEqual(['revision-behind']);
      expect(stageStatus('dev').health?.status).toBe('Unhealthy');
      expect(controller.promotionsFor('staging')).toEqual([]);
    });

    it('operation-running: the sync never ends, so the Promotion waits at argocd-update and the app is progressing', async () => {
      setUp({ dev: { app: 'operation-running' } });
      const freight = controller.produceFreight(MERGE_SHA);
      await controller.settled();
      expect(promotionOutcome('dev')).toMatchObject({
        state: 'pending',
        phase: 'Running',
        step: { index: 3, uses: 'argocd-update', status: 'Running' },
      });
      expect(stageStatus('dev').currentPromotion).toBeDefined();
      const outcome = appOutcome('shop-dev', [
        { repoURL: GITOPS_REPO, revision: controller.gitopsCommit('dev', freight) },
      ]);
      expect(outcome.state).toBe('progressing');
      if (outcome.state !== 'progressing') throw new Error('not progressing');
      expect(outcome.reasons.map((r) => r.code)).toEqual(
        expect.arrayContaining(['operation-requested', 'operation-running']),
      );

      // A later Promotion to the same stage queues behind it, as in Kargo.
      controller.produceFreight('b'.repeat(40));
      await controller.settled();
      const promotions = controller.promotionsFor('dev').map((p) => evaluatePromotion(parseKargoPromotion(p)));
      expect(promotions.map((p) => p.state === 'pending' && p.phase)).toEqual(['Running', 'Pending']);
    });

    it('comparison-error: the app is progressing with a ComparisonError condition', async () => {
      setUp({ dev: { app: 'comparison-error' } });
      controller.produceFreight(MERGE_SHA);
      await controller.settled();
      expect(promotionOutcome('dev').state).toBe('passed');
      const outcome = appOutcome('shop-dev', desiredFromPromotion(onlyPromotion('dev'), 'shop-dev'));
      expect(outcome.state).toBe('progressing');
      if (outcome.state !== 'progressing') throw new Error('not progressing');
      const conditionErrors = outcome.reasons.filter((r) => r.code === 'condition-error');
      expect(conditionErrors).toHaveLength(1);
      expect(conditionErrors[0]?.message).toMatch(/^ComparisonError: /u);
      expect(stageStatus('dev').health?.status).toBe('Unhealthy');
    });

    it('sync-failed: the Promotion ends Errored at argocd-update and the app fails "operation-failed"', async () => {
      setUp({ dev: { app: 'sync-failed' } });
      const freight = controller.produceFreight(MERGE_SHA);
      await controller.settled();
      expect(promotionOutcome('dev')).toMatchObject({
        state: 'failed',
        phase: 'Errored',
        failedStep: { index: 3, uses: 'argocd-update', status: 'Errored' },
      });
      const outcome = appOutcome('shop-dev', [
        { repoURL: GITOPS_REPO, revision: controller.gitopsCommit('dev', freight) },
      ]);
      expect(outcome).toMatchObject({
        state: 'failed',
        code: 'operation-failed',
        failedSyncResources: [{ kind: 'Deployment', status: 'SyncFailed' }],
      });
    });

    it.each([
      ['fail', 'Failed', 2, 'git-push'],
      ['error', 'Errored', 0, 'git-clone'],
      ['abort', 'Aborted', 1, 'git-commit'],
    ] as const)(
      'promotion %s: the Promotion ends %s at step %i (%s) and the app is untouched',
      async (script, phase, index, uses) => {
        setUp({ dev: { promotion: script } });
        controller.produceFreight(MERGE_SHA);
        await controller.settled();
        const outcome = promotionOutcome('dev');
        expect(outcome).toMatchObject({ state: 'failed', phase, failedStep: { index, uses, status: phase } });
        if (outcome.state !== 'failed') throw new Error('not failed');
        expect(outcome.message).toEqual(expect.any(String));
        expect(outcome.failedStep?.message).toBe(outcome.message);
        expect(stageStatus('dev').lastPromotion).toBeDefined();
        expect(stageStatus('dev').freightHistory ?? []).toEqual([]);
        expect(
          appOutcome('shop-dev', [{ repoURL: GITOPS_REPO, revision: controller.initialRevision('dev') }]).state,
        ).toBe('healthy');
        expect(controller.promotionsFor('staging')).toEqual([]);
      },
    );

    it.each(['failed', 'error'] as const)(
      'verification %s: staging fails with the AnalysisRun, and prod is not reached',
      async (script) => {
        setUp({ staging: { verification: script } });
        const freight = controller.produceFreight(MERGE_SHA);
        await controller.settled();
        expect(promotionOutcome('staging').state).toBe('passed');
        expect(appOutcome('shop-staging', desiredFromPromotion(onlyPromotion('staging'), 'shop-staging')).state).toBe(
          'healthy',
        );
        const outcome = verificationOutcome('staging', freight);
        const phase = script === 'failed' ? 'Failed' : 'Error';
        expect(outcome).toMatchObject({ state: 'failed', phase });
        if (outcome.state !== 'failed' || outcome.analysisRun === null) throw new Error('no AnalysisRun');
        expect(outcome.message).toContain('Metric "integration-test" assessed');
        expect(outcome.analysisRun.namespace).toBe(NS);
        expect(outcome.analysisRun.name).toMatch(/^staging\./u);
        const run = summariseAnalysisRun(
          analysisRunSchema.parse(server.get('AnalysisRun', NS, outcome.analysisRun.name)),
        );
        expect(run).toMatchObject({ phase, message: outcome.message, metrics: [{ name: 'integration-test', phase }] });
        expect(freightStatusOf(server.get('Freight', NS, freight)).verifiedIn?.['staging']).toBeUndefined();
        expect(controller.promotionsFor('prod')).toEqual([]);
      },
    );
  });
});
