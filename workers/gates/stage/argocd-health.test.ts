import { describe, expect, it } from 'vitest';
import {
  evaluateArgoHealth,
  parseArgoApplication,
  type ArgoApplication,
  type ArgoHealthOutcome,
  type DesiredRevision,
} from './argocd-health.js';
import { sampleYaml } from '../../../test/helpers/samples.js';

/**
 * SPEC §5's Argo CD rule against Argo CD's own dumped Application
 * (`argocd/application-synced-healthy-sync-succeeded.yaml`, from argo-cd's controller testdata) and
 * gitops-engine's minimal health fixtures; every other case is a variant of the dumped one, changed
 * only where the case needs it.
 */

const REAL = 'application-synced-healthy-sync-succeeded.yaml';
const OLD = 'ea8759964626a583667a2bfd08f334ec2070040a';
const NEW = '0d1f2c3b4a5968778695a4b3c2d1e0f1a2b3c4d5';
const REPO = 'https://github.com/foo/manifests-velero.git';
const desired: DesiredRevision[] = [{ repoURL: 'https://github.com/foo/manifests-velero', revision: NEW }];

const real = (): ArgoApplication => parseArgoApplication(sampleYaml('argocd', REAL));

/** The dumped app, synced by a finished operation to `revision` and reconciled after it. */
function deployedAt(revision: string, change?: (app: ArgoApplication) => void): ArgoApplication {
  const app = real();
  const status = app.status ?? {};
  status.sync = { ...status.sync, revision };
  const op = status.operationState ?? {};
  op.syncResult = { ...op.syncResult, revision };
  op.operation = { sync: { revision } };
  status.operationState = op;
  app.status = status;
  change?.(app);
  return app;
}

const evaluate = (app: ArgoApplication, want: DesiredRevision[] = desired): ArgoHealthOutcome =>
  evaluateArgoHealth({ application: app, desired: want });

function codes(outcome: ArgoHealthOutcome): string[] {
  expect(outcome.state).toBe('progressing');
  return outcome.state === 'progressing' ? outcome.reasons.map((r) => r.code) : [];
}

describe('the Argo CD schema accepts the real objects', () => {
  it.each([REAL, 'application-health-healthy.minimal.yaml', 'application-health-degraded.minimal.yaml'])(
    '%s',
    (name) => {
      expect(() => parseArgoApplication(sampleYaml('argocd', name))).not.toThrow();
    },
  );

  it('reads the fields the rule uses from the dump', () => {
    const app = real();
    expect(app.metadata?.name).toBe('velero-test');
    expect(app.status?.operationState?.phase).toBe('Succeeded');
    expect(app.status?.reconciledAt).toBe('2024-03-05T07:33:04Z');
    expect(app.status?.operationState?.finishedAt).toBe('2024-03-05T07:33:04Z');
    expect(app.spec?.source?.repoURL).toBe(REPO);
  });
});

describe('healthy only when every condition holds', () => {
  it('the dumped app is healthy at the revision it is synced to', () => {
    const outcome = evaluate(deployedAt(NEW));
    expect(outcome).toMatchObject({ state: 'healthy', app: 'argo-cd/velero-test' });
  });

  it('the dump as is: its sync.revision (rev1, edited by the test authors) is not the operation revision, so it is not healthy at that revision', () => {
    expect(codes(evaluate(real(), [{ repoURL: REPO, revision: OLD }]))).toEqual(['revision-behind']);
    expect(evaluate(real(), [{ repoURL: REPO, revision: 'rev1' }]).state).toBe('healthy');
  });

  it('compares commits as full SHAs, case-insensitively', () => {
    expect(evaluate(deployedAt(NEW.toUpperCase())).state).toBe('healthy');
    expect(codes(evaluate(deployedAt(NEW.slice(0, 12))))).toEqual(['revision-behind']);
  });

  it('a Healthy, Synced app at the old revision does not pass', () => {
    const outcome = evaluate(deployedAt(OLD));
    expect(codes(outcome)).toEqual(['revision-behind']);
    expect(outcome.summary).toContain('is at ea8759964626, not 0d1f2c3b4a59');
  });

  it('an operation still running does not pass', () => {
    const app = deployedAt(NEW, (a) => {
      a.operation = { sync: { revision: NEW } };
      if (a.status?.operationState) {
        a.status.operationState.phase = 'Running';
        delete a.status.operationState.finishedAt;
      }
    });
    expect(codes(evaluate(app))).toEqual(['operation-requested', 'operation-running']);
  });

  it('a requested operation not yet started does not pass', () => {
    const app = deployedAt(NEW, (a) => {
      a.operation = { sync: { revision: NEW } };
    });
    expect(codes(evaluate(app))).toEqual(['operation-requested']);
  });

  it('a refresh annotation still waiting does not pass', () => {
    const app = deployedAt(NEW, (a) => {
      a.metadata = { ...a.metadata, annotations: { 'argocd.argoproj.io/refresh': 'hard' } };
    });
    const outcome = evaluate(app);
    expect(codes(outcome)).toEqual(['refresh-requested']);
    expect(outcome.summary).toContain('a hard refresh is waiting');
  });

  it('no recorded operation is not yet healthy', () => {
    const app = deployedAt(NEW, (a) => {
      if (a.status) delete a.status.operationState;
    });
    expect(codes(evaluate(app))).toEqual(['no-operation']);
  });

  it('reconciledAt older than finishedAt does not pass', () => {
    const app = deployedAt(NEW, (a) => {
      if (a.status) a.status.reconciledAt = '2024-03-05T07:33:03Z';
    });
    expect(codes(evaluate(app))).toEqual(['not-reconciled']);
  });

  it('a ComparisonError or InvalidSpecError condition does not pass', () => {
    for (const type of ['ComparisonError', 'InvalidSpecError']) {
      const app = deployedAt(NEW, (a) => {
        if (a.status) a.status.conditions = [{ type, message: 'rpc error: manifest generation failed' }];
      });
      const outcome = evaluate(app);
      expect(codes(outcome)).toEqual(['condition-error']);
      expect(outcome.summary).toContain(`${type}: rpc error`);
    }
    const warning = deployedAt(NEW, (a) => {
      if (a.status) a.status.conditions = [{ type: 'SharedResourceWarning', message: 'shared' }];
    });
    expect(evaluate(warning).state).toBe('healthy');
  });

  it('OutOfSync does not pass', () => {
    const app = deployedAt(NEW, (a) => {
      if (a.status?.sync) a.status.sync.status = 'OutOfSync';
    });
    expect(codes(evaluate(app))).toEqual(['out-of-sync']);
  });

  it.each(['Progressing', 'Suspended', 'Unknown', ''])('health %j is not yet healthy', (health) => {
    const app = deployedAt(NEW, (a) => {
      if (a.status) a.status.health = { status: health };
    });
    expect(codes(evaluate(app))).toEqual(['health-not-ready']);
  });
});

describe('multi-source and chart sources', () => {
  const CHART_REPO = 'europe-west1-docker.pkg.dev/foo/charts';
  function multi(revisions: string[], change?: (app: ArgoApplication) => void): ArgoApplication {
    return deployedAt(NEW, (a) => {
      a.spec = {
        sources: [
          { repoURL: CHART_REPO, chart: 'velero', targetRevision: '1.4.2' },
          { repoURL: REPO, targetRevision: 'main' },
          { repoURL: 'https://github.com/foo/unrelated-values.git', targetRevision: 'main' },
        ],
      };
      if (a.status?.sync) a.status.sync = { status: 'Synced', revisions };
      if (a.status?.operationState) a.status.operationState.syncResult = { revisions };
      change?.(a);
    });
  }
  const multiDesired: DesiredRevision[] = [
    { repoURL: REPO, revision: NEW },
    { repoURL: `oci://${CHART_REPO}/velero`, chart: 'velero', revision: '1.4.2' },
  ];

  it('passes when each source with a desired revision is at it (sources without one are not compared)', () => {
    expect(evaluate(multi(['1.4.2', NEW, OLD]), multiDesired).state).toBe('healthy');
  });

  it('a multi-source app with one source behind does not pass', () => {
    const outcome = evaluate(multi(['1.4.2', OLD, OLD]), multiDesired);
    expect(codes(outcome)).toEqual(['revision-behind']);
    expect(outcome.summary).toContain(`${REPO} is at ea8759964626`);
  });

  it('a chart source is compared with its chart version, not the commit', () => {
    const outcome = evaluate(multi(['1.4.1', NEW, OLD]), multiDesired);
    expect(codes(outcome)).toEqual(['revision-behind']);
    expect(outcome.summary).toContain('chart velero is at 1.4.1, not 1.4.2');
    // A commit for the chart's repository never stands in for its version.
    const byCommit = evaluate(multi([NEW, NEW, OLD]), [
      { repoURL: REPO, revision: NEW },
      { repoURL: CHART_REPO, revision: NEW },
    ]);
    expect(byCommit.state).toBe('healthy');
  });

  it('a missing revisions entry counts as behind', () => {
    expect(codes(evaluate(multi(['1.4.2']), multiDesired))).toEqual(['revision-behind']);
  });

  it('an app none of whose sources the Freight names fails at once instead of passing vacuously', () => {
    const outcome = evaluate(deployedAt(NEW), [{ repoURL: 'https://github.com/foo/other.git', revision: NEW }]);
    expect(outcome).toMatchObject({ state: 'failed', code: 'no-desired-source' });
  });
});

describe('failures', () => {
  function degraded(health: 'Degraded' | 'Missing', change?: (app: ArgoApplication) => void): ArgoApplication {
    return deployedAt(NEW, (a) => {
      if (!a.status) return;
      a.status.health = { status: health, message: 'Deployment has not progressed' };
      a.status.resources = [
        { kind: 'Service', namespace: 'test-lla', name: 'test-lla', health: { status: 'Healthy' } },
        { kind: 'ConfigMap', namespace: 'test-lla', name: 'settings' },
        {
          kind: 'Deployment',
          namespace: 'test-lla',
          name: 'test-lla',
          health: { status: health, message: 'Deployment "test-lla" exceeded its progress deadline' },
        },
        { kind: 'Pod', namespace: 'test-lla', name: 'test-lla-7c9', health: { status: 'Progressing' } },
      ];
      change?.(a);
    });
  }

  it('Degraded at the promoted revision with no operation running fails, naming the unhealthy resources', () => {
    const outcome = evaluate(degraded('Degraded'));
    expect(outcome).toMatchObject({
      state: 'failed',
      code: 'degraded',
      summary: 'argo-cd/velero-test is Degraded at the promoted revision: Deployment has not progressed',
      operation: { phase: 'Succeeded', message: 'successfully synced (all tasks run)' },
    });
    if (outcome.state !== 'failed') return;
    expect(outcome.unhealthyResources).toEqual([
      {
        kind: 'Deployment',
        namespace: 'test-lla',
        name: 'test-lla',
        health: 'Degraded',
        message: 'Deployment "test-lla" exceeded its progress deadline',
      },
      { kind: 'Pod', namespace: 'test-lla', name: 'test-lla-7c9', health: 'Progressing', message: null },
    ]);
  });

  it('Missing at the promoted revision fails', () => {
    expect(evaluate(degraded('Missing'))).toMatchObject({ state: 'failed', code: 'missing' });
  });

  it('Degraded while an operation runs, before a reconcile, or at the old revision is still progressing', () => {
    const running = degraded('Degraded', (a) => {
      a.operation = { sync: {} };
    });
    expect(codes(evaluate(running))).toEqual(['operation-requested', 'health-not-ready']);
    const stale = degraded('Degraded', (a) => {
      if (a.status) a.status.reconciledAt = '2024-03-05T07:00:00Z';
    });
    expect(codes(evaluate(stale))).toEqual(['not-reconciled', 'health-not-ready']);
    expect(codes(evaluate(degraded('Degraded'), [{ repoURL: REPO, revision: OLD }]))).toEqual([
      'revision-behind',
      'health-not-ready',
    ]);
  });

  it('a last operation that Failed fails, with the resources that did not apply', () => {
    const app = deployedAt(NEW, (a) => {
      const op = a.status?.operationState;
      if (!op) return;
      op.phase = 'Failed';
      op.message = 'one or more objects failed to apply';
      op.syncResult = {
        revision: NEW,
        resources: [
          { kind: 'Service', namespace: 'test-lla', name: 'test-lla', status: 'Synced', message: 'applied' },
          {
            kind: 'Deployment',
            namespace: 'test-lla',
            name: 'test-lla',
            status: 'SyncFailed',
            message: 'admission webhook denied the request',
          },
          {
            kind: 'Job',
            namespace: 'test-lla',
            name: 'migrate',
            status: 'Synced',
            hookPhase: 'Failed',
            message: 'Job has reached the specified backoff limit',
          },
        ],
      };
    });
    const outcome = evaluate(app);
    expect(outcome).toMatchObject({
      state: 'failed',
      code: 'operation-failed',
      summary: 'argo-cd/velero-test: the last sync failed: one or more objects failed to apply',
    });
    if (outcome.state !== 'failed') return;
    expect(outcome.failedSyncResources).toEqual([
      {
        kind: 'Deployment',
        namespace: 'test-lla',
        name: 'test-lla',
        status: 'SyncFailed',
        message: 'admission webhook denied the request',
      },
      {
        kind: 'Job',
        namespace: 'test-lla',
        name: 'migrate',
        status: 'hook Failed',
        message: 'Job has reached the specified backoff limit',
      },
    ]);
  });

  it("a last operation in Argo CD's Error phase fails", () => {
    const app = deployedAt(NEW, (a) => {
      if (a.status?.operationState) a.status.operationState.phase = 'Error';
    });
    expect(evaluate(app)).toMatchObject({ state: 'failed', code: 'operation-failed' });
  });

  it('a failed sync of an older revision is the previous deploy, not this one: still progressing', () => {
    const app = deployedAt(NEW, (a) => {
      if (!a.status?.sync || !a.status.operationState) return;
      a.status.sync.status = 'OutOfSync';
      a.status.sync.revision = OLD;
      a.status.operationState.phase = 'Failed';
      a.status.operationState.syncResult = { revision: OLD };
      a.status.operationState.operation = { sync: { revision: OLD } };
    });
    expect(codes(evaluate(app))).toEqual(['operation-not-succeeded', 'out-of-sync', 'revision-behind']);
  });

  it('the minimal gitops-engine fixtures never pass: they name no source and record no operation', () => {
    for (const name of ['application-health-healthy.minimal.yaml', 'application-health-degraded.minimal.yaml']) {
      const app = parseArgoApplication(sampleYaml('argocd', name));
      expect(evaluate(app)).toMatchObject({ state: 'failed', code: 'no-desired-source' });
      app.spec = { source: { repoURL: REPO } };
      expect(codes(evaluate(app))).toContain('no-operation');
    }
  });
});
