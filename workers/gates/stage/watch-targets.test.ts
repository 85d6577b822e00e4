import { describe, expect, it } from 'vitest';
import { parsePolicy } from '../../../src/config/config.js';
import { watchTargetsFor } from './watch-targets.js';

describe('watchTargetsFor', () => {
  it('watches the Kargo kinds in each project and Applications in each Argo CD namespace a pipeline uses (a Kargo one always: its Promotions may sync apps it does not list), once each', () => {
    const policy = parsePolicy(
      `repos:
  acme/shop: { pipeline: shop }
  acme/api: { pipeline: api }
  acme/web: { pipeline: web }
pipelines:
  shop:
    kargo: { project: shop, warehouse: shop }
    stages:
      - { name: dev, kargoStage: dev, argocdApps: [shop-dev] }
  api:
    kargo: { project: shop, warehouse: api }
    argocdNamespace: gitops
    stages:
      - { name: dev, kargoStage: api-dev }
  web:
    argocdApps: [web]
`,
      'test',
    );
    expect(watchTargetsFor(policy)).toEqual([
      { kind: 'Application', namespace: 'argocd' },
      { kind: 'Application', namespace: 'gitops' },
      { kind: 'AnalysisRun', namespace: 'shop' },
      { kind: 'Freight', namespace: 'shop' },
      { kind: 'Promotion', namespace: 'shop' },
      { kind: 'Stage', namespace: 'shop' },
    ]);
  });

  it('watches nothing for a policy without pipelines', () => {
    expect(watchTargetsFor(parsePolicy('repos:\n  acme/shop: {}\n', 'test'))).toEqual([]);
  });
});
