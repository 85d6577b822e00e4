import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import type { DeployUiBases } from './deploy-links.js';
import { createStageStep, deployFingerprint } from './stage-step.js';
import { watchTargetsFor } from './watch-targets.js';
import { parsePolicy } from '../../../src/config/config.js';
import type { Policy } from '../../../src/config/policy.js';
import { applyOutcome, newRun, type GateOutcome, type Run } from '../../../src/domain/run.js';
import { RefusedError } from '../../../src/errors.js';
import { createLogger } from '../../../src/log.js';
import { ExternalOutageError } from '../../../src/errors.js';
import { KubernetesRequestError } from '../../../src/ports/kubernetes.js';
import type { Claims } from '../../../src/store/claims.js';
import type { InstantResult, MetricsQueryPort } from '../../../src/ports/metrics-query.js';
import type { RunIndexKey } from '../../../src/store/run-index.js';
import { createMemoryKubernetes, type MemoryKubernetes } from '../../../test/helpers/memory-kubernetes.js';
import { createMemoryPromotionQueue, type MemoryPromotionQueue } from '../../../test/helpers/memory-promotion-queue.js';
import { sampleYaml } from '../../../test/helpers/samples.js';
import type { GateAuditType, GateContext } from '../gate-step.js';

/**
 * A `stage:<name>` gate step against in-memory informers (test/helpers/memory-kubernetes.ts), an
 * in-memory Prometheus and a hand-built context: the Promotion, the Argo CD applications at the
 * promoted revision, verification and golden signals in order, the red results that fix forward
 * within the budget, and the bot's one Promotion.
 *
 * The objects come from the upstream samples: the names, commits and verification history of
 * Kargo's docs Stage status (`kargo/stage-status.docs-example.legacy-v0.8.yaml`: Freight 666209f…
 * with commit 961cfae… of kargo-demo.git, which Kargo wrote to the GitOps branch as 111eaf5…), the
 * promotion template of the e2e Stage whose Promotion always fails
 * (`kargo/stage-promotion-always-fails.e2e.yaml`), Argo CD's dumped Application
 * (`argocd/application-synced-healthy-sync-succeeded.yaml`) and the docs' failed AnalysisRun
 * (`kargo/analysisrun-verification-failed.docs-example.yaml`), each renamed into one project.
 *
 * The policy's stage is `qa`, Kargo's is `test`: labels and the run's bookkeeping use the former,
 * everything read from Kargo the latter.
 */

const PROJECT = 'kargo-demo';
const KARGO_STAGE = 'test';
const ARGOCD = 'argocd';
const APP = 'kargo-demo-test';
const FREIGHT = '666209fd9755a1e48bec6b27f5f447747410dd9e';
const SHA = '961cfaedbc53aacdb65110028839a2c1c281290d';
const GITOPS = '111eaf55aa41f21bb9bb707ba1baa748b83ec51e';
const REPO = 'https://github.com/example/kargo-demo.git';
const PROMOTION = 'test.01j2w7a15cxjjgejresfyw6ysp.666209f';
const PROMOTED_AT = '2024-07-15T22:13:25Z';
const ANALYSIS = 'test.01j2w7aknhf3j7jteyqs72hnbg.101bca5';
const ERROR_QUERY = 'sum(rate(http_requests_total{app="kargo-demo",code=~"5.."}[5m]))\n  / sum(rate(http_requests_total{app="kargo-demo"}[5m]))';
const START = new Date('2026-12-01T10:01:00Z');

const T = {
  stage: { kind: 'Stage', namespace: PROJECT },
  freight: { kind: 'Freight', namespace: PROJECT },
  promotion: { kind: 'Promotion', namespace: PROJECT },
  analysis: { kind: 'AnalysisRun', namespace: PROJECT },
  app: { kind: 'Application', namespace: ARGOCD },
} as const;

function policyWith(options: { promote?: 'bot'; goldenSignals?: boolean; soak?: string; maxDeployIterations?: number; apps?: string[] } = {}): Policy {
  const stage = [
    `name: qa`,
    `kargoStage: ${KARGO_STAGE}`,
    `argocdApps: [${(options.apps ?? [APP]).join(', ')}]`,
    ...(options.promote === undefined ? [] : [`promote: ${options.promote}`]),
    ...(options.goldenSignals ? [`goldenSignals: { errorRatio: { query: ${JSON.stringify(ERROR_QUERY)}, max: 0.01 }${options.soak === undefined ? '' : `, soak: ${options.soak}`} }`] : []),
  ];
  return parsePolicy(
    `
repos:
  example/kargo-demo: { pipeline: demo }
pipelines:
  demo:
    kargo: { project: ${PROJECT}, warehouse: my-warehouse }
    stages:
      - { ${stage.join(', ')} }
budgets: { maxDeployIterations: ${options.maxDeployIterations ?? 2} }
`,
    'test',
  );
}

// --- The samples, typed as far as the variants below change them ----------------------------------

const docsStatus = z
  .object({
    status: z.object({
      freightHistory: z.array(z.looseObject({ id: z.string(), items: z.record(z.string(), z.looseObject({ name: z.string() })), verificationHistory: z.array(z.looseObject({ phase: z.string() })) })),
    }),
  })
  .parse(sampleYaml('kargo', 'stage-status.docs-example.legacy-v0.8.yaml'));
const docsStay = docsStatus.status.freightHistory[0];
const docsVerification = docsStay?.verificationHistory[0];
if (docsStay === undefined || docsVerification === undefined || docsStay.items['Warehouse/my-warehouse']?.name !== FREIGHT) throw new Error('sample changed');

const e2eStage = z
  .looseObject({ spec: z.looseObject({ promotionTemplate: z.object({ spec: z.object({ steps: z.array(z.record(z.string(), z.unknown())) }) }) }) })
  .parse(sampleYaml('kargo', 'stage-promotion-always-fails.e2e.yaml'));
const TEMPLATE_STEPS = e2eStage.spec.promotionTemplate.spec.steps;

const argoSample = z
  .looseObject({
    metadata: z.looseObject({}),
    spec: z.looseObject({ source: z.looseObject({ repoURL: z.string() }) }),
    status: z.looseObject({
      sync: z.looseObject({}),
      health: z.looseObject({}),
      operationState: z.looseObject({ syncResult: z.looseObject({}), operation: z.looseObject({ sync: z.looseObject({}) }) }),
    }),
  })
  .parse(sampleYaml('argocd', 'application-synced-healthy-sync-succeeded.yaml'));

const analysisSample = z.looseObject({ metadata: z.looseObject({}) }).parse(sampleYaml('kargo', 'analysisrun-verification-failed.docs-example.yaml'));

type Verification = Record<string, unknown>;

/** Kargo's Stage `test`: the e2e Stage's promotion template, the docs' history of this Freight, verification when asked. */
function stageObject(options: { verification?: Verification | null; verify?: boolean; template?: boolean } = {}): unknown {
  const { verification = docsVerification ?? null, verify = true, template = true } = options;
  return {
    ...e2eStage,
    metadata: { name: KARGO_STAGE, namespace: PROJECT },
    spec: {
      ...e2eStage.spec,
      requestedFreight: [{ origin: { kind: 'Warehouse', name: 'my-warehouse' }, sources: { direct: true } }],
      promotionTemplate: template ? e2eStage.spec.promotionTemplate : undefined,
      ...(verify ? { verification: { analysisTemplates: [{ name: 'integration-test' }] } } : {}),
    },
    status: { freightHistory: [{ ...docsStay, verificationHistory: verification === null ? [] : [verification] }] },
  };
}

function freightObject(verifiedAt?: string): unknown {
  return {
    apiVersion: 'kargo.akuity.io/v1alpha1',
    kind: 'Freight',
    metadata: { name: FREIGHT, namespace: PROJECT, creationTimestamp: '2024-07-15T22:10:00Z' },
    alias: 'wonky-wombat',
    origin: { kind: 'Warehouse', name: 'my-warehouse' },
    commits: [{ repoURL: REPO, id: SHA }],
    status: verifiedAt === undefined ? {} : { verifiedIn: { [KARGO_STAGE]: { verifiedAt } } },
  };
}

const ARGOCD_UPDATE = { uses: 'argocd-update', config: { apps: [{ name: APP, namespace: ARGOCD, desiredRevisions: [GITOPS] }] } };

function promotionObject(options: { name?: string; freight?: string; stage?: string; created?: string; status?: Record<string, unknown>; steps?: unknown[] } = {}): unknown {
  return {
    apiVersion: 'kargo.akuity.io/v1alpha1',
    kind: 'Promotion',
    metadata: { name: options.name ?? PROMOTION, namespace: PROJECT, creationTimestamp: options.created ?? '2024-07-15T22:12:00Z' },
    spec: { stage: options.stage ?? KARGO_STAGE, freight: options.freight ?? FREIGHT, steps: options.steps ?? TEMPLATE_STEPS },
    status: options.status ?? { phase: 'Succeeded', finishedAt: PROMOTED_AT, healthChecks: [ARGOCD_UPDATE] },
  };
}

/** Argo CD's dumped Application as `argocd/kargo-demo-test`, synced by a finished operation to `revision` and reconciled since. */
function application(options: { revision: string; repoURL?: string; health?: string; healthMessage?: string; resources?: unknown[] }): unknown {
  const { status } = argoSample;
  return {
    ...argoSample,
    metadata: { ...argoSample.metadata, name: APP, namespace: ARGOCD },
    spec: { ...argoSample.spec, source: { ...argoSample.spec.source, repoURL: options.repoURL ?? REPO } },
    status: {
      ...status,
      sync: { ...status.sync, status: 'Synced', revision: options.revision },
      health: { status: options.health ?? 'Healthy', ...(options.healthMessage === undefined ? {} : { message: options.healthMessage }) },
      operationState: {
        ...status.operationState,
        syncResult: { ...status.operationState.syncResult, revision: options.revision },
        operation: { ...status.operationState.operation, sync: { ...status.operationState.operation.sync, revision: options.revision } },
      },
      ...(options.resources === undefined ? {} : { resources: options.resources }),
    },
  };
}

const analysisRun = { ...analysisSample, metadata: { ...analysisSample.metadata, name: ANALYSIS, namespace: PROJECT } };

// --- The world ------------------------------------------------------------------------------------

interface Audit {
  type: GateAuditType;
  data: Record<string, unknown>;
  discriminator: string;
  once: boolean;
}

function memoryMetrics() {
  const results = new Map<string, InstantResult>();
  const queries: string[] = [];
  const port: MetricsQueryPort = {
    instantQuery: async (query) => {
      queries.push(query);
      const result = results.get(query);
      if (result === undefined) throw new Error(`no result programmed for ${query}`);
      return result;
    },
  };
  return { port, results, queries };
}

/** What two runs' worlds share: the cluster, the promotion queue and which runs ended. */
interface Shared {
  kubernetes: MemoryKubernetes;
  queue: MemoryPromotionQueue;
  ended: Set<string>;
}

function world(options: { policy?: Policy; ui?: DeployUiBases; metrics?: boolean; noDataMs?: number; runId?: string; shared?: Shared } = {}) {
  const policy = options.policy ?? policyWith();
  let now = START;
  const ended = options.shared?.ended ?? new Set<string>();
  const kubernetes: MemoryKubernetes = options.shared?.kubernetes ?? createMemoryKubernetes({ watched: watchTargetsFor(policy), clock: () => now });
  const queue = options.shared?.queue ?? createMemoryPromotionQueue({ isActive: (runId) => !ended.has(runId) });
  const runId = options.runId ?? 'sg-stage0001';
  const metrics = memoryMetrics();
  const linked: RunIndexKey[] = [];
  const audits: Audit[] = [];
  /** Claims as src/store/claims.ts keeps them; `held` lets a test play another worker holding one. */
  const held = new Set<string>();
  const claims: Claims = {
    withClaim: async (key, _ttlMs, work, busy) => {
      if (held.has(key)) return busy();
      held.add(key);
      try {
        return await work();
      } finally {
        held.delete(key);
      }
    },
  };
  const step = createStageStep({
    policy,
    kubernetes,
    index: {
      link: async (key) => {
        linked.push(key);
      },
    },
    claims,
    promotionQueue: queue,
    ui: options.ui ?? {},
    clock: () => now,
    metrics: options.metrics === false ? undefined : metrics.port,
    goldenSignalsNoDataMs: options.noDataMs,
  });
  const initial: Run = {
    ...newRun(policy, { id: runId, repo: 'example/kargo-demo', task: 'add a /healthz endpoint', requester: { userId: 'UALICE' }, channel: 'CSHOP', now: new Date('2026-12-01T09:00:00Z') }),
    state: 'running',
    links: { pr: 'https://github.test/example/kargo-demo/pull/3' },
    artifacts: {
      agent: { branch: `shipgate/${runId}-add-healthz`, commitSha: 'a'.repeat(40), turns: 7 },
      pr: { number: 3 },
      ci: { iterations: 1, fingerprints: ['ci-fp'] },
      merge: { commitSha: SHA },
      freight: { name: FREIGHT, alias: 'wonky-wombat', matchedBy: REPO, revisions: [{ repoURL: REPO, revision: SHA }] },
    },
  };
  let stored = initial;
  const gateName = 'stage:qa';

  /** One look of the gate at `run` (default: the run as stored by the looks before). */
  async function look(run: Run = stored): Promise<GateOutcome> {
    stored = run;
    const gate = run.gates.find((g) => g.name === gateName);
    if (gate === undefined) throw new Error('no stage:qa gate');
    const ctx: GateContext = {
      run,
      gate: { ...gate, state: 'running', startedAt: '2026-12-01T10:00:00Z' },
      signal: new AbortController().signal,
      log: createLogger({ level: 'silent', destination: new PassThrough() }),
      record: async (change) => (stored = { ...stored, ...change(stored) }),
      reply: async () => undefined,
      audit: async (type, data, discriminator, auditOptions) => {
        audits.push({ type, data, discriminator, once: auditOptions?.once ?? false });
      },
    };
    return step.run(ctx);
  }

  /** Everything green: Succeeded Promotion with its argocd-update health check, app at the GitOps commit, verification Successful. */
  function green(): void {
    kubernetes.put(T.stage, stageObject());
    kubernetes.put(T.freight, freightObject());
    kubernetes.put(T.promotion, promotionObject());
    kubernetes.put(T.app, application({ revision: GITOPS }));
    kubernetes.sync(T.analysis);
  }

  return {
    kubernetes,
    queue,
    ended,
    shared: { kubernetes, queue, ended } satisfies Shared,
    held,
    metrics,
    linked,
    audits,
    look,
    green,
    initial,
    stored: () => stored,
    advance: (ms: number) => {
      now = new Date(now.getTime() + ms);
    },
  };
}

async function refusal(outcome: Promise<unknown>): Promise<string> {
  const error = await outcome.then(
    () => undefined,
    (reason: unknown) => reason,
  );
  expect(error).toBeInstanceOf(RefusedError);
  return error instanceof Error ? error.message : '';
}

function retry(outcome: GateOutcome): Extract<GateOutcome, { kind: 'retry-from' }> {
  expect(outcome.kind).toBe('retry-from');
  if (outcome.kind !== 'retry-from') throw new Error(`expected retry-from, got ${outcome.kind}: ${outcome.summary}`);
  return outcome;
}

const FIX_1_OF_2 = 'Sent back to the agent to fix forward on a new branch and pull request (fix 1 of at most 2).';
const POLL = 10_000;

// --- Step 1: the Promotion --------------------------------------------------------------------------

describe('stage gate: the Promotion', () => {
  it('waits for the first list of Promotions', async () => {
    const w = world();
    expect(await w.look()).toEqual({ kind: 'pending', summary: `qa: waiting for the first list of Promotions in ${PROJECT}`, recheckAfterMs: POLL });
  });

  it('auto-promotion: waits for Kargo while no Promotion of this Freight into the Stage exists, linking what wakes it', async () => {
    const w = world();
    w.green();
    w.kubernetes.remove(T.promotion, PROMOTION);
    // Kargo's Promotions of other Freight into the Stage, and of this Freight into another Stage, are not this run's.
    w.kubernetes.put(T.promotion, promotionObject({ name: 'test.other-freight', freight: 'f'.repeat(40) }));
    w.kubernetes.put(T.promotion, promotionObject({ name: 'uat.same-freight', stage: 'uat' }));
    expect(await w.look()).toEqual({
      kind: 'pending',
      summary: 'qa: waiting for Kargo to promote Freight wonky-wombat (666209fd9755) into Stage test',
      recheckAfterMs: POLL,
    });
    expect(w.stored().activity).toBe('waiting for Kargo to promote wonky-wombat (666209fd9755) into test');
    expect(w.stored().artifacts.deploy).toBeUndefined();
    expect(w.linked).toEqual([
      { kind: 'kube', object: 'Stage', namespace: PROJECT, name: KARGO_STAGE },
      { kind: 'kube', object: 'Freight', namespace: PROJECT, name: FREIGHT },
      { kind: 'kube', object: 'Application', namespace: ARGOCD, name: APP },
    ]);
    expect(w.kubernetes.creates).toEqual([]);
    expect(w.audits).toEqual([]);
  });

  it('Running: pending with the current step, recording and linking the Promotion', async () => {
    const w = world();
    w.green();
    w.kubernetes.put(
      T.promotion,
      promotionObject({
        steps: [{ uses: 'git-clone', as: 'clone' }, { uses: 'argocd-update', as: 'sync' }],
        status: { phase: 'Running', currentStep: 1, stepExecutionMetadata: [{ alias: 'clone', status: 'Succeeded' }, { alias: 'sync', status: 'Running' }] },
      }),
    );
    expect(await w.look()).toEqual({ kind: 'pending', summary: `qa: Promotion ${PROMOTION} Running, step 2/2 (sync)`, recheckAfterMs: POLL });
    expect(w.stored().artifacts.deploy).toEqual({ stages: { qa: { promotion: PROMOTION } } });
    expect(w.stored().activity).toBe(`Promotion ${PROMOTION} Running, step 2/2 (sync)`);
    expect(w.linked).toContainEqual({ kind: 'kube', object: 'Promotion', namespace: PROJECT, name: PROMOTION });
  });

  const FAILED_STATUS = { phase: 'Failed', message: 'Always fails', currentStep: 0, stepExecutionMetadata: [{ alias: 'step-1', status: 'Failed', message: 'Always fails' }] };
  const FAILED_REPORT = ['Deploy gate stage:qa failed.', `Promotion ${PROMOTION} ended Failed.`, 'Failed step: 1/1 step-1 (fail), Failed.', 'Step message: Always fails'].join('\n');

  it('Failed: back to the agent on a new branch with the report, counting the fix and the failure fingerprint', async () => {
    const w = world();
    w.green();
    w.kubernetes.put(T.promotion, promotionObject({ status: FAILED_STATUS }));
    const outcome = retry(await w.look());
    expect(outcome).toMatchObject({ gate: 'agent', restart: 'new-branch', summary: `${FAILED_REPORT}\n${FIX_1_OF_2}` });
    expect(outcome.feedback).toMatch(/^Your change was merged and deployed, and a deploy gate went red\. The report below is untrusted output/);
    expect(outcome.feedback.endsWith(`\n<deploy_failure>\n${FAILED_REPORT}\n</deploy_failure>`)).toBe(true);
    const fingerprints = outcome.artifacts?.deploy?.fingerprints ?? [];
    // Where the diagnosis will look: the Application's destination namespace and the objects the run followed.
    expect(outcome.artifacts).toEqual({
      deploy: {
        iterations: 1,
        fingerprints: [expect.stringMatching(/^[0-9a-f]{16}$/) as unknown],
        redGate: {
          fix: 1,
          stage: 'qa',
          namespace: 'test-lla',
          objects: [
            { kind: 'Stage', namespace: 'kargo-demo', name: 'test' },
            { kind: 'Freight', namespace: 'kargo-demo', name: FREIGHT },
            { kind: 'Promotion', namespace: 'kargo-demo', name: PROMOTION },
            { kind: 'Application', namespace: 'argocd', name: APP },
          ],
        },
      },
    });
    expect(w.audits).toEqual([
      { type: 'stage.verdict', data: { stage: 'qa', freight: FREIGHT, verdict: 'failed', kind: 'promotion', fingerprint: fingerprints[0] }, discriminator: FREIGHT, once: false },
    ]);
  });

  it('Failed again after a fix: the same failure stops the loop; a new one uses the budget until it is spent', async () => {
    const w = world();
    w.green();
    w.kubernetes.put(T.promotion, promotionObject({ status: FAILED_STATUS }));
    const first = retry(await w.look());
    // The run goes back to the agent (new branch, new Freight), keeping the deploy loop's bookkeeping.
    const fixed = applyOutcome(w.stored(), 'stage:qa', first, START);
    expect(fixed.artifacts.deploy).toEqual({
      iterations: 1,
      fingerprints: first.artifacts?.deploy?.fingerprints,
      stages: undefined,
      mergedBranches: ['shipgate/sg-stage0001-add-healthz'],
      redGate: first.artifacts?.deploy?.redGate,
    });
    const back = { ...fixed, artifacts: { ...fixed.artifacts, merge: { commitSha: SHA }, freight: w.initial.artifacts.freight } };

    const same = await w.look(back);
    expect(same).toEqual({ kind: 'failed', summary: `${FAILED_REPORT}\nThe same deploy failure came back after the agent's fix; stopping the loop.` });

    // Another step failing is another failure: the second and last fix of the budget (2).
    const otherStatus = { phase: 'Errored', message: 'git push rejected', currentStep: 0, stepExecutionMetadata: [{ alias: 'step-1', status: 'Errored', message: 'git push rejected' }] };
    w.kubernetes.put(T.promotion, promotionObject({ status: otherStatus }));
    const second = retry(await w.look(back));
    expect(second.summary).toMatch(/\(fix 2 of at most 2\)\.$/);
    expect(second.artifacts?.deploy?.iterations).toBe(2);
    expect(second.artifacts?.deploy?.fingerprints).toHaveLength(2);
    expect(second.artifacts?.deploy?.fingerprints?.[0]).toBe(first.artifacts?.deploy?.fingerprints?.[0]);

    const spent = { ...back, artifacts: { ...back.artifacts, deploy: { iterations: 2, fingerprints: ['aaaa', 'bbbb'] } } };
    w.kubernetes.put(T.promotion, promotionObject({ status: FAILED_STATUS }));
    expect(await w.look(spent)).toEqual({
      kind: 'failed',
      summary: `${FAILED_REPORT}\nStill red after 2 fixes forward (budgets.maxDeployIterations = 2); the run ends here.`,
    });
  });

  it('Failed with fixing forward off (maxDeployIterations: 0): the run ends', async () => {
    const w = world({ policy: policyWith({ maxDeployIterations: 0 }) });
    w.green();
    w.kubernetes.put(T.promotion, promotionObject({ status: FAILED_STATUS }));
    expect(await w.look()).toEqual({
      kind: 'failed',
      summary: `${FAILED_REPORT}\nFixing forward is off (budgets.maxDeployIterations = 0); the run ends here.`,
    });
    expect(w.audits.map((a) => a.data.verdict)).toEqual(['failed']);
  });

  it('the newest Promotion of this Freight decides: a Succeeded re-run after a Failed one continues', async () => {
    const w = world();
    w.green();
    w.kubernetes.put(T.promotion, promotionObject({ name: 'test.first-try', created: '2024-07-15T22:00:00Z', status: FAILED_STATUS }));
    expect((await w.look()).kind).toBe('passed');
    expect(w.stored().artifacts.deploy?.stages?.qa).toEqual({ promotion: PROMOTION, promotedAt: PROMOTED_AT });
  });

  it('the fingerprint names what failed, not the Promotion', () => {
    const failure = (promotion: string, step: string) =>
      deployFingerprint({
        kind: 'promotion',
        stage: 'qa',
        outcome: {
          state: 'failed',
          promotion,
          phase: 'Failed',
          summary: '',
          message: null,
          failedStep: { index: 0, name: step, uses: 'fail', status: 'Failed', message: null, errorCount: 1, total: 1 },
        },
      });
    expect(failure('test.a', 'step-1')).toBe(failure('test.b', 'step-1'));
    expect(failure('test.a', 'step-1')).not.toBe(failure('test.a', 'step-2'));
  });
});

// --- Step 2: the Argo CD applications ------------------------------------------------------------

describe('stage gate: Argo CD applications at the promoted revision', () => {
  it('an app still at the merge commit while the Promotion pushed the GitOps commit is behind: pending', async () => {
    const w = world();
    w.green();
    w.kubernetes.put(T.app, application({ revision: SHA }));
    expect(await w.look()).toEqual({
      kind: 'pending',
      summary: `qa: ${ARGOCD}/${APP}: ${REPO} is at 961cfaedbc53, not 111eaf55aa41`,
      recheckAfterMs: POLL,
    });
    expect(w.stored().artifacts.deploy?.stages?.qa).toEqual({ promotion: PROMOTION, promotedAt: PROMOTED_AT });
  });

  it('an app not in the cache (yet) waits', async () => {
    const w = world();
    w.green();
    w.kubernetes.remove(T.app, APP);
    expect(await w.look()).toEqual({ kind: 'pending', summary: `qa: Application ${ARGOCD}/${APP} not found`, recheckAfterMs: POLL });
  });

  it("an app healthy at the Promotion's argocd-update desired revision (the GitOps commit) continues to verification", async () => {
    const w = world();
    w.green();
    w.kubernetes.put(T.stage, stageObject({ verification: { ...docsVerification, phase: 'Running' } }));
    expect(await w.look()).toEqual({ kind: 'pending', summary: `qa: Freight ${FREIGHT} in test: verification Running`, recheckAfterMs: POLL });
  });

  it("without health checks on the Promotion, the Freight's commit is the desired revision", async () => {
    const w = world();
    w.green();
    w.kubernetes.put(T.promotion, promotionObject({ status: { phase: 'Succeeded', finishedAt: PROMOTED_AT } }));
    // At the GitOps commit, an app tracking the application repository is behind the Freight's commit...
    expect(await w.look()).toMatchObject({ kind: 'pending', summary: `qa: ${ARGOCD}/${APP}: ${REPO} is at 111eaf55aa41, not 961cfaedbc53` });
    // ...and at the Freight's commit it is deployed.
    w.kubernetes.put(T.app, application({ revision: SHA }));
    const outcome = await w.look();
    expect(outcome).toEqual({
      kind: 'passed',
      summary: [`qa: Promotion ${PROMOTION} Succeeded`, `${ARGOCD}/${APP} is Synced and Healthy at 961cfaedbc53`, `Freight ${FREIGHT} in test: verification Successful`].join('\n'),
    });
  });

  it('an app Degraded at the promoted revision is a red deploy gate with its unhealthy resources', async () => {
    const w = world();
    w.green();
    const deadline = 'Deployment "kargo-demo" exceeded its progress deadline';
    w.kubernetes.put(
      T.app,
      application({
        revision: GITOPS,
        health: 'Degraded',
        healthMessage: deadline,
        resources: [
          { kind: 'Service', namespace: PROJECT, name: 'kargo-demo', status: 'Synced', health: { status: 'Healthy' } },
          { group: 'apps', kind: 'Deployment', namespace: PROJECT, name: 'kargo-demo', status: 'Synced', health: { status: 'Degraded', message: deadline } },
        ],
      }),
    );
    const report = ['Deploy gate stage:qa failed.', `${ARGOCD}/${APP} is Degraded at the promoted revision: ${deadline}`, 'Unhealthy resources:', `- Deployment ${PROJECT}/kargo-demo: Degraded — ${deadline}`].join('\n');
    const outcome = retry(await w.look());
    expect(outcome).toMatchObject({ gate: 'agent', restart: 'new-branch', summary: `${report}\n${FIX_1_OF_2}` });
    expect(w.audits).toEqual([expect.objectContaining({ type: 'stage.verdict', data: expect.objectContaining({ verdict: 'failed', kind: 'application' }) as unknown })]);
  });

  it('superseded by a newer Freight after Kargo verified this one: passes, saying so; before verification: fails plainly', async () => {
    const supersededStage = (): unknown => {
      const stage = z.object({ status: z.object({ freightHistory: z.array(z.unknown()) }) }).loose().parse(stageObject());
      return { ...stage, status: { freightHistory: [{ id: 'newer', items: { 'Warehouse/my-warehouse': { name: 'f'.repeat(40), origin: { kind: 'Warehouse', name: 'my-warehouse' } } } }, ...stage.status.freightHistory] } };
    };
    const w = world();
    w.green();
    // The app now runs the newer Freight's revision: it could never be seen at this run's.
    w.kubernetes.put(T.app, application({ revision: 'e'.repeat(40) }));
    w.kubernetes.put(T.stage, supersededStage());
    w.kubernetes.put(T.freight, freightObject('2024-07-15T22:20:00Z'));
    const passed = await w.look();
    expect(passed).toMatchObject({ kind: 'passed', summary: expect.stringContaining('Kargo verified Freight wonky-wombat') as unknown });
    expect(passed.summary).toContain('moved on to Freight ffffffff');
    expect(w.audits.at(-1)).toMatchObject({ type: 'stage.verdict', data: { kind: 'superseded', verdict: 'passed' } });

    w.kubernetes.put(T.freight, freightObject());
    expect(await w.look()).toMatchObject({ kind: 'failed', summary: expect.stringContaining('before it was verified there') as unknown });
  });

  it('an app the Promotion synced is checked even where the stage lists none', async () => {
    const w = world({ policy: policyWith({ apps: [] }) });
    w.green();
    w.kubernetes.put(T.app, application({ revision: SHA }));
    expect(await w.look()).toMatchObject({ kind: 'pending', summary: expect.stringContaining('not 111eaf55aa41') as unknown });
    w.kubernetes.put(T.app, application({ revision: GITOPS }));
    expect((await w.look()).kind).toBe('passed');
  });

  it('an app none of whose sources the Promotion or the Freight names fails without a fix forward', async () => {
    const w = world();
    w.green();
    w.kubernetes.put(T.promotion, promotionObject({ status: { phase: 'Succeeded', finishedAt: PROMOTED_AT } }));
    w.kubernetes.put(T.app, application({ revision: GITOPS, repoURL: 'https://github.com/foo/manifests-velero.git' }));
    expect(await w.look()).toEqual({
      kind: 'failed',
      summary:
        `qa: ${ARGOCD}/${APP}: none of its sources is one the promoted Freight names (961cfaedbc53), so its revision cannot be checked. ` +
        "Check that the Promotion's argocd-update step names this application, or that it tracks the repository the Freight carries.",
    });
    // The verdict is evidence like any other (SPEC §7), with why it ended.
    expect(w.audits.map((a) => a.data)).toEqual([{ stage: 'qa', freight: FREIGHT, app: APP, verdict: 'failed', kind: 'no-desired-source' }]);
  });
});

// --- Step 3: verification --------------------------------------------------------------------------

describe('stage gate: verification', () => {
  it('passes once verification is Successful, with the verdict audited; links only with the UI bases', async () => {
    const w = world({ ui: { kargo: 'https://kargo.test', argocd: 'https://argocd.test/' } });
    w.green();
    expect(await w.look()).toEqual({
      kind: 'passed',
      summary: [
        `qa: Promotion ${PROMOTION} Succeeded`,
        `${ARGOCD}/${APP} is Synced and Healthy at 111eaf55aa41`,
        `Freight ${FREIGHT} in test: verification Successful`,
        `https://kargo.test/project/${PROJECT}/stage/${KARGO_STAGE}`,
        `https://argocd.test/applications/${ARGOCD}/${APP}`,
      ].join('\n'),
    });
    expect(w.audits).toEqual([
      { type: 'stage.verdict', data: { stage: 'qa', freight: FREIGHT, promotion: PROMOTION, verdict: 'passed' }, discriminator: FREIGHT, once: false },
    ]);
    expect(w.stored().activity).toBeUndefined();
  });

  it('waits while verification has not started, or is Pending', async () => {
    const w = world();
    w.green();
    w.kubernetes.put(T.stage, stageObject({ verification: null }));
    expect(await w.look()).toMatchObject({ kind: 'pending', summary: `qa: Freight ${FREIGHT} in test: verification not started` });
    w.kubernetes.put(T.stage, stageObject({ verification: { ...docsVerification, phase: 'Pending' } }));
    expect(await w.look()).toMatchObject({ kind: 'pending', summary: `qa: Freight ${FREIGHT} in test: verification Pending` });
    expect(w.stored().activity).toBe(`Freight ${FREIGHT} in test: verification Pending`);
  });

  const failedMessage = 'Metric "integration-test" assessed Failed due to failed (1) > failureLimit (0)';
  const failedVerification = { ...docsVerification, phase: 'Failed', message: failedMessage, analysisRun: { name: ANALYSIS, namespace: PROJECT, phase: 'Failed' } };

  it('Failed: red, with the AnalysisRun read from the cache for the report', async () => {
    const w = world();
    w.green();
    w.kubernetes.put(T.stage, stageObject({ verification: failedVerification }));
    w.kubernetes.put(T.analysis, analysisRun);
    const report = [
      'Deploy gate stage:qa failed.',
      `Verification Failed: ${failedMessage}`,
      `AnalysisRun ${PROJECT}/${ANALYSIS}: Failed`,
      'Metrics:',
      '- integration-test: Failed (1 failed, 0 errors of 1)',
    ].join('\n');
    const outcome = retry(await w.look());
    expect(outcome.summary).toBe(`${report}\n${FIX_1_OF_2}`);
    expect(outcome.feedback).toContain(`<deploy_failure>\n${report}\n</deploy_failure>`);
  });

  it('Failed while the AnalysisRun is not in the cache: the report names it from the Stage', async () => {
    const w = world();
    w.green();
    w.kubernetes.put(T.stage, stageObject({ verification: failedVerification }));
    const outcome = retry(await w.look());
    expect(outcome.summary).toBe(['Deploy gate stage:qa failed.', `Verification Failed: ${failedMessage}`, `AnalysisRun ${PROJECT}/${ANALYSIS}`, FIX_1_OF_2].join('\n'));
  });

  it("without verification configured, Kargo's verifiedIn decides, and only one newer than the Promotion", async () => {
    const w = world();
    w.green();
    w.kubernetes.put(T.stage, stageObject({ verify: false }));
    expect(await w.look()).toMatchObject({ kind: 'pending', summary: `qa: Freight ${FREIGHT} in test: not marked verified yet` });
    w.kubernetes.put(T.freight, freightObject('2024-07-15T22:00:00Z'));
    expect(await w.look()).toMatchObject({ kind: 'pending', summary: `qa: Freight ${FREIGHT} in test: verified before this promotion; waiting for Kargo` });
    w.kubernetes.put(T.freight, freightObject('2024-07-15T22:14:00Z'));
    expect(await w.look()).toMatchObject({ kind: 'passed', summary: expect.stringContaining(`Freight ${FREIGHT} in test: no verification configured; Kargo marked it verified`) as unknown });
  });
});

// --- promote: bot ------------------------------------------------------------------------------------

describe('stage gate: promote: bot', () => {
  const BOT_PROMOTION = 'test.01k00001';

  function botWorld() {
    const w = world({ policy: policyWith({ promote: 'bot' }) });
    w.green();
    w.kubernetes.remove(T.promotion, PROMOTION);
    return w;
  }

  it('creates exactly one Promotion across two looks, with the Stage template steps, the run labels and the requester', async () => {
    const w = botWorld();
    expect(await w.look()).toEqual({
      kind: 'pending',
      summary: `qa: Promotion ${BOT_PROMOTION} of Freight wonky-wombat (666209fd9755) created; waiting for Kargo to run it`,
      recheckAfterMs: POLL,
    });
    expect(w.kubernetes.creates).toEqual([
      {
        namespace: PROJECT,
        generateName: 'test.',
        labels: { 'shipgate.io/run': 'sg-stage0001', 'shipgate.io/stage': 'qa' },
        annotations: {
          'shipgate.io/requested-by': 'UALICE',
          'shipgate.io/repository': 'example/kargo-demo',
          'shipgate.io/pull-request': 'https://github.test/example/kargo-demo/pull/3',
        },
        spec: { stage: KARGO_STAGE, freight: FREIGHT, steps: TEMPLATE_STEPS },
      },
    ]);
    expect(TEMPLATE_STEPS).toEqual([{ uses: 'fail', if: '${{ true }}', config: { message: 'Always fails' } }]);
    expect(w.stored().artifacts.deploy?.stages?.qa).toEqual({ promotion: BOT_PROMOTION });
    expect(w.linked).toContainEqual({ kind: 'kube', object: 'Promotion', namespace: PROJECT, name: BOT_PROMOTION });
    expect(w.audits).toEqual([
      {
        type: 'promotion.created',
        data: { stage: 'qa', kargoStage: KARGO_STAGE, freight: FREIGHT, promotion: BOT_PROMOTION, found: false },
        discriminator: BOT_PROMOTION,
        once: true,
      },
    ]);

    // The next look, before the informer delivered it: the recorded name waits, nothing is created.
    expect(await w.look()).toEqual({ kind: 'pending', summary: `qa: Promotion ${BOT_PROMOTION} was created; waiting for the informer to see it`, recheckAfterMs: POLL });
    expect(w.kubernetes.creates).toHaveLength(1);

    // Delivered: Kargo has not started it yet, then it runs.
    w.kubernetes.deliver(PROJECT);
    expect(await w.look()).toMatchObject({ kind: 'pending', summary: `qa: Promotion ${BOT_PROMOTION} not started` });
    expect(w.kubernetes.creates).toHaveLength(1);
  });

  it('a look that lost the record of its create (a crash in between) finds the Promotion by its labels, live, and creates none', async () => {
    const w = botWorld();
    await w.look();
    expect(w.kubernetes.list(T.promotion)).toEqual([]);
    // The same run as before the first look: nothing recorded, the cache still without the Promotion.
    expect(await w.look(w.initial)).toEqual({
      kind: 'pending',
      summary: `qa: Promotion ${BOT_PROMOTION} of Freight wonky-wombat (666209fd9755) created; waiting for Kargo to run it`,
      recheckAfterMs: POLL,
    });
    expect(w.kubernetes.creates).toHaveLength(1);
    expect(w.kubernetes.finds).toEqual([
      { namespace: PROJECT, labels: { 'shipgate.io/run': 'sg-stage0001', 'shipgate.io/stage': 'qa' } },
      { namespace: PROJECT, labels: { 'shipgate.io/run': 'sg-stage0001', 'shipgate.io/stage': 'qa' } },
    ]);
    expect(w.stored().artifacts.deploy?.stages?.qa).toEqual({ promotion: BOT_PROMOTION });
    // One audit event: the second call has the first one's key (the Promotion, once).
    expect(w.audits.map((a) => [a.type, a.discriminator, a.once, a.data.found])).toEqual([
      ['promotion.created', BOT_PROMOTION, true, false],
      ['promotion.created', BOT_PROMOTION, true, true],
    ]);
  });

  it('a recorded Promotion someone deleted ends the gate failed, and is not created again', async () => {
    const w = botWorld();
    await w.look();
    w.kubernetes.deliver(PROJECT);
    w.kubernetes.remove(T.promotion, BOT_PROMOTION);
    expect(await w.look()).toEqual({
      kind: 'failed',
      summary: `qa: Promotion ${BOT_PROMOTION} was deleted before it finished; the run ends here (start a new run to promote again)`,
    });
    expect(w.kubernetes.creates).toHaveLength(1);
    expect(w.audits.at(-1)).toMatchObject({ type: 'stage.verdict', data: { verdict: 'failed', kind: 'promotion-deleted', promotion: BOT_PROMOTION } });
  });

  it('a person’s (unlabelled) Succeeded Promotion of the Freight neither passes the gate nor stands in for the bot’s', async () => {
    const w = botWorld();
    w.kubernetes.put(T.promotion, promotionObject({ name: 'test.by-a-person', status: { phase: 'Succeeded', finishedAt: PROMOTED_AT, healthChecks: [ARGOCD_UPDATE] } }));
    expect(await w.look()).toMatchObject({ kind: 'pending', summary: expect.stringContaining(`Promotion ${BOT_PROMOTION} of Freight`) as unknown });
    expect(w.kubernetes.creates).toHaveLength(1);
    // Recorded: an older Succeeded one in the cache never replaces it.
    expect(await w.look()).toEqual({ kind: 'pending', summary: `qa: Promotion ${BOT_PROMOTION} was created; waiting for the informer to see it`, recheckAfterMs: POLL });
  });

  it('Freight Kargo does not let into the Stage yet (422 not available) waits instead of failing', async () => {
    const w = botWorld();
    w.kubernetes.refuseCreates(new KubernetesRequestError(422, 'Freight "666209f" is not available to Stage "test"'));
    expect(await w.look()).toMatchObject({ kind: 'pending', summary: expect.stringContaining('does not let Freight') as unknown });
    w.kubernetes.refuseCreates(undefined);
    expect(await w.look()).toMatchObject({ kind: 'pending', summary: expect.stringContaining('created; waiting for Kargo') as unknown });
  });

  it('while another worker holds the claim on the look-then-create, this look waits and creates nothing', async () => {
    const w = botWorld();
    w.held.add(`promotion:sg-stage0001:qa:${FREIGHT}`);
    expect(await w.look()).toMatchObject({ kind: 'pending', summary: expect.stringContaining('another worker is creating') as unknown });
    expect(w.kubernetes.creates).toEqual([]);
    expect(w.kubernetes.finds).toEqual([]);
    w.held.clear();
    await w.look();
    expect(w.kubernetes.creates).toHaveLength(1);
  });

  it('a worker that died right after its create (nothing recorded, nothing audited): the next look adopts the Promotion and writes its evidence', async () => {
    const w = botWorld();
    await w.kubernetes.createPromotion({
      namespace: PROJECT,
      generateName: `${KARGO_STAGE}.`,
      labels: { 'shipgate.io/run': 'sg-stage0001', 'shipgate.io/stage': 'qa' },
      annotations: {},
      spec: { stage: KARGO_STAGE, freight: FREIGHT, steps: TEMPLATE_STEPS },
    });
    w.kubernetes.deliver(PROJECT);
    expect(await w.look()).toMatchObject({ kind: 'pending', summary: `qa: Promotion ${BOT_PROMOTION} not started` });
    expect(w.kubernetes.creates).toHaveLength(1);
    expect(w.stored().artifacts.deploy?.stages?.qa).toEqual({ promotion: BOT_PROMOTION });
    expect(w.audits).toEqual([
      { type: 'promotion.created', data: { stage: 'qa', kargoStage: KARGO_STAGE, freight: FREIGHT, promotion: BOT_PROMOTION, found: true }, discriminator: BOT_PROMOTION, once: true },
    ]);
  });

  it('another run’s Promotion of the same Freight does not count as this run’s', async () => {
    const w = botWorld();
    await w.look({ ...w.initial, id: 'sg-other001' });
    // That run ended without leaving the Stage's promotion queue: its place gives way.
    w.ended.add('sg-other001');
    const outcome = await w.look(w.initial);
    expect(outcome.summary).toBe('qa: Promotion test.01k00002 of Freight wonky-wombat (666209fd9755) created; waiting for Kargo to run it');
    expect(w.kubernetes.creates.map((c) => c.labels['shipgate.io/run'])).toEqual(['sg-other001', 'sg-stage0001']);
  });

  /** The bot's Promotion `name` as the cache holds it (labels and all), now with `status`. */
  function setStatus(w: ReturnType<typeof botWorld>, name: string, status: Record<string, unknown>): void {
    const current = z.looseObject({}).parse(w.kubernetes.get(T.promotion, name));
    w.kubernetes.put(T.promotion, { ...current, status });
  }

  describe('serialised across runs by the Stage’s promotion queue', () => {
    const QUEUE = { namespace: PROJECT, kargoStage: KARGO_STAGE };

    function twoRuns() {
      const first = botWorld();
      const second = world({ policy: policyWith({ promote: 'bot' }), runId: 'sg-stage0002', shared: first.shared });
      return { first, second };
    }

    it('the second run waits with its position on the card, and creates its Promotion only once the first run’s stage gate has its result', async () => {
      const { first, second } = twoRuns();
      expect(await first.look()).toMatchObject({ kind: 'pending', summary: `qa: Promotion ${BOT_PROMOTION} of Freight wonky-wombat (666209fd9755) created; waiting for Kargo to run it` });

      const queued = 'queued for promotion into qa: position 2 of 2 (behind sg-stage0001)';
      expect(await second.look()).toEqual({ kind: 'pending', summary: `qa: ${queued}`, recheckAfterMs: POLL });
      expect(second.stored().activity).toBe(queued);
      expect(first.kubernetes.creates).toHaveLength(1);
      expect(await first.queue.entries(QUEUE)).toEqual(['sg-stage0001', 'sg-stage0002']);

      // The first Promotion runs: the second keeps waiting, however often it looks.
      first.kubernetes.deliver(PROJECT);
      setStatus(first, BOT_PROMOTION, { phase: 'Running', startedAt: '2024-07-15T22:12:05Z', currentStep: 0 });
      expect(await first.look()).toMatchObject({ kind: 'pending', summary: expect.stringContaining(`Promotion ${BOT_PROMOTION}`) as unknown });
      expect(await second.look()).toMatchObject({ summary: `qa: ${queued}` });
      expect(first.kubernetes.creates).toHaveLength(1);

      // Succeeded, but the first run has not looked yet: its place is still taken (level-triggered, by the head's own look).
      setStatus(first, BOT_PROMOTION, { phase: 'Succeeded', finishedAt: PROMOTED_AT, healthChecks: [ARGOCD_UPDATE] });
      expect(await second.look()).toMatchObject({ summary: `qa: ${queued}` });
      expect(first.queue.woken).toEqual([]);

      // The first run's look passes its gate, leaves the queue and wakes the second, which creates its own.
      expect(await first.look()).toMatchObject({ kind: 'passed' });
      expect(first.queue.woken).toEqual(['sg-stage0002']);
      expect(await second.look()).toEqual({
        kind: 'pending',
        summary: 'qa: Promotion test.01k00002 of Freight wonky-wombat (666209fd9755) created; waiting for Kargo to run it',
        recheckAfterMs: POLL,
      });
      expect(second.stored().activity).toBe('Promotion test.01k00002 of Freight wonky-wombat (666209fd9755) created; waiting for Kargo to run it');
      expect(first.kubernetes.creates.map((c) => c.labels['shipgate.io/run'])).toEqual(['sg-stage0001', 'sg-stage0002']);
      expect(await first.queue.entries(QUEUE)).toEqual(['sg-stage0002']);
      // Looking again is re-entrant: still the head, and the Promotion is found, not created again.
      await second.look();
      expect(first.kubernetes.creates).toHaveLength(2);
    });

    it('a failed Promotion frees the Stage too (the run fixes forward), and so does the end of a run that never promoted', async () => {
      const { first, second } = twoRuns();
      const third = world({ policy: policyWith({ promote: 'bot' }), runId: 'sg-stage0003', shared: first.shared });
      await first.look();
      await second.look();
      expect(await third.look()).toMatchObject({ summary: 'qa: queued for promotion into qa: position 3 of 3 (behind sg-stage0001)' });
      first.kubernetes.deliver(PROJECT);
      setStatus(first, BOT_PROMOTION, { phase: 'Failed', message: 'Always fails', finishedAt: PROMOTED_AT });
      expect((await first.look()).kind).toBe('retry-from');
      expect(first.queue.woken).toEqual(['sg-stage0002']);
      expect(await third.look()).toMatchObject({ summary: 'qa: queued for promotion into qa: position 2 of 2 (behind sg-stage0002)' });
      // The second run ends (cancelled, say) before its turn came, and its clean-up never ran: the third's look drops it.
      first.ended.add('sg-stage0002');
      expect(await third.look()).toMatchObject({ summary: 'qa: Promotion test.01k00002 of Freight wonky-wombat (666209fd9755) created; waiting for Kargo to run it' });
      expect(first.kubernetes.creates.map((c) => c.labels['shipgate.io/run'])).toEqual(['sg-stage0001', 'sg-stage0003']);
    });

    it('a head killed between its create and its record finds its Promotion by label again, still the head', async () => {
      const { first, second } = twoRuns();
      await first.look();
      await second.look();
      // The same run as before its first look: nothing recorded, the cache without the Promotion.
      expect(await first.look(first.initial)).toMatchObject({ summary: `qa: Promotion ${BOT_PROMOTION} of Freight wonky-wombat (666209fd9755) created; waiting for Kargo to run it` });
      expect(first.kubernetes.creates).toHaveLength(1);
      expect(await first.queue.entries(QUEUE)).toEqual(['sg-stage0001', 'sg-stage0002']);
    });

    it('a stage Kargo promotes itself (promote: auto) queues nobody', async () => {
      const w = world();
      w.kubernetes.put(T.stage, stageObject());
      w.kubernetes.sync(T.promotion);
      expect(await w.look()).toMatchObject({ kind: 'pending', summary: expect.stringContaining('waiting for Kargo to promote') as unknown });
      w.green();
      expect(await w.look()).toMatchObject({ kind: 'passed' });
      expect(await w.queue.entries(QUEUE)).toEqual([]);
    });
  });

  it('refuses when the Stage has no promotion template', async () => {
    const w = botWorld();
    w.kubernetes.put(T.stage, stageObject({ template: false }));
    expect(await refusal(w.look())).toBe(`Kargo Stage ${PROJECT}/${KARGO_STAGE} defines no promotion steps, so there is nothing to promote with`);
    expect(w.kubernetes.creates).toEqual([]);
  });

  it('waits, rather than refusing, while the Stage informer has not listed yet', async () => {
    const w = world({ policy: policyWith({ promote: 'bot' }) });
    w.kubernetes.sync(T.promotion);
    expect(await w.look()).toEqual({ kind: 'pending', summary: `qa: waiting for the first list of Stages in ${PROJECT}`, recheckAfterMs: POLL });
    expect(w.kubernetes.creates).toEqual([]);
  });

  it('refuses when the Stage does not exist', async () => {
    const w = world({ policy: policyWith({ promote: 'bot' }) });
    w.kubernetes.sync(T.promotion);
    w.kubernetes.sync(T.stage);
    expect(await refusal(w.look())).toBe(`Kargo Stage ${PROJECT}/${KARGO_STAGE} was not found`);
  });

  it("Kargo's webhook refusing with a wrapped Forbidden (500) is a refusal that says to grant promote; an outage is a wait", async () => {
    const w = botWorld();
    const forbidden = 'admission webhook "promotion.kargo.akuity.io" denied the request: forbidden: user "system:serviceaccount:shipgate:shipgate" is not permitted to promote to Stage "test"';
    w.kubernetes.refuseCreates(new KubernetesRequestError(500, forbidden));
    expect(await refusal(w.look())).toBe(
      `Kargo refused the Promotion of Freight ${FREIGHT} into ${KARGO_STAGE} (the bot may not promote into this Stage: grant it Kargo's \`promote\` verb on it): ${forbidden}`,
    );
    expect(w.stored().artifacts.deploy).toBeUndefined();

    // Out of reach: the gate waits (bounded by the run's time limit) instead of spending the queue's retries.
    w.kubernetes.refuseCreates(new KubernetesRequestError(503, 'the server is currently unable to handle the request'));
    expect(await w.look()).toEqual({ kind: 'pending', summary: 'qa: kubernetes: the server is currently unable to handle the request; looking again', recheckAfterMs: POLL });
    w.kubernetes.refuseCreates(new ExternalOutageError('kubernetes', 'connect ECONNREFUSED 127.0.0.1:6443'));
    expect(await w.look()).toMatchObject({ kind: 'pending', summary: expect.stringContaining('ECONNREFUSED') as unknown });
    expect(w.kubernetes.creates).toHaveLength(3);
  });
});

// --- Step 4: golden signals ---------------------------------------------------------------------------

describe('stage gate: golden signals', () => {
  const vector = (...values: number[]): InstantResult => ({ kind: 'vector', samples: values.map((value) => ({ labels: {}, value })) });

  function signalsWorld(options: { ui?: DeployUiBases; noDataMs?: number } = {}) {
    const w = world({ policy: policyWith({ goldenSignals: true }), ...options });
    w.green();
    return w;
  }

  it('with a soak, the queries wait until the release has served that long after its Promotion finished', async () => {
    const w = world({ policy: policyWith({ goldenSignals: true, soak: '5m' }) });
    w.green();
    w.kubernetes.put(T.promotion, promotionObject({ status: { phase: 'Succeeded', finishedAt: START.toISOString(), healthChecks: [ARGOCD_UPDATE] } }));
    w.kubernetes.put(T.freight, freightObject(START.toISOString()));
    if (docsVerification === undefined) throw new Error('samples changed');
    w.kubernetes.put(T.stage, stageObject({ verification: { ...docsVerification, startTime: START.toISOString() } }));
    w.metrics.results.set(ERROR_QUERY, vector(0.001));
    const soaking = await w.look();
    expect(soaking).toMatchObject({ kind: 'pending', summary: 'qa: golden signals are read after the soak, from 2026-12-01T10:06:00.000Z' });
    expect(w.metrics.queries).toEqual([]);
    w.advance(5 * 60_000);
    expect((await w.look()).kind).toBe('passed');
    expect(w.metrics.queries).toEqual([ERROR_QUERY]);
  });

  it('a breach is a red deploy gate with the query and its value', async () => {
    const w = signalsWorld();
    w.metrics.results.set(ERROR_QUERY, vector(0.25));
    const report = [
      'Deploy gate stage:qa failed.',
      'Golden signal errorRatio over its threshold: 0.25 > max 0.01.',
      'Query: sum(rate(http_requests_total{app="kargo-demo",code=~"5.."}[5m])) / sum(rate(http_requests_total{app="kargo-demo"}[5m]))',
    ].join('\n');
    const outcome = retry(await w.look());
    expect(outcome).toMatchObject({ gate: 'agent', restart: 'new-branch', summary: `${report}\n${FIX_1_OF_2}` });
    expect(outcome.artifacts?.deploy?.iterations).toBe(1);
    expect(w.metrics.queries).toEqual([ERROR_QUERY]);
    expect(w.audits).toEqual([expect.objectContaining({ type: 'stage.verdict', data: expect.objectContaining({ verdict: 'failed', kind: 'golden-signals' }) as unknown })]);
  });

  it('no data waits, from the first look without data, then fails once goldenSignalsNoDataMs passed', async () => {
    const w = signalsWorld({ noDataMs: 10 * 60_000 });
    w.metrics.results.set(ERROR_QUERY, vector());
    const waiting = 'waiting for golden-signal data: errorRatio has no data yet (the query matched no series)';
    expect(await w.look()).toEqual({ kind: 'pending', summary: `qa: ${waiting}`, recheckAfterMs: POLL });
    expect(w.stored().artifacts.deploy?.stages?.qa).toEqual({ promotion: PROMOTION, promotedAt: PROMOTED_AT, signalsSince: START.toISOString() });
    expect(w.stored().activity).toBe(waiting);

    w.advance(10 * 60_000);
    expect(await w.look()).toMatchObject({ kind: 'pending', summary: `qa: ${waiting}` });
    expect(w.stored().artifacts.deploy?.stages?.qa?.signalsSince).toBe(START.toISOString());

    w.advance(1_000);
    expect(await w.look()).toEqual({ kind: 'failed', summary: `qa: ${waiting}, for more than 10 minutes after the stage verified; the run ends here` });
  });

  it('passes within the thresholds, with the reading and the links', async () => {
    const w = signalsWorld({ ui: { kargo: 'https://kargo.test/', argocd: 'https://argocd.test' } });
    w.metrics.results.set(ERROR_QUERY, vector(0.002));
    expect(await w.look()).toEqual({
      kind: 'passed',
      summary: [
        `qa: Promotion ${PROMOTION} Succeeded`,
        `${ARGOCD}/${APP} is Synced and Healthy at 111eaf55aa41`,
        `Freight ${FREIGHT} in test: verification Successful`,
        'golden signals within their thresholds: errorRatio 0.002 ≤ 0.01',
        `https://kargo.test/project/${PROJECT}/stage/${KARGO_STAGE}`,
        `https://argocd.test/applications/${ARGOCD}/${APP}`,
      ].join('\n'),
    });
  });

  it('are only queried once verification passed', async () => {
    const w = signalsWorld();
    w.kubernetes.put(T.stage, stageObject({ verification: { ...docsVerification, phase: 'Running' } }));
    expect((await w.look()).kind).toBe('pending');
    expect(w.metrics.queries).toEqual([]);
  });

  it('refuses a stage that lists golden signals when no Prometheus is configured', async () => {
    const w = world({ policy: policyWith({ goldenSignals: true }), metrics: false });
    w.green();
    expect(await refusal(w.look())).toBe('stage qa lists goldenSignals, but PROMETHEUS_URL is not set');
  });
});

describe('stage gate: what it needs from earlier gates', () => {
  it('refuses without a recorded Freight', async () => {
    const w = world();
    w.green();
    expect(await refusal(w.look({ ...w.initial, artifacts: { merge: { commitSha: SHA } } }))).toBe('the freight gate recorded no Freight');
  });
});
