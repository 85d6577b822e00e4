import { parsePolicy } from '../../src/config/config.js';

/**
 * A policy with both shapes of repository: `acme/shop` on a Kargo pipeline with an approval
 * before prod, and `acme/lib` with no pipeline (its runs end at merge).
 */
export const PIPELINE_POLICY = parsePolicy(
  `
repos:
  acme/shop: { pipeline: shop }
  acme/lib: {}
pipelines:
  shop:
    kargo: { project: shop, warehouse: shop }
    stages:
      - { name: dev, kargoStage: dev }
      - { name: prod, kargoStage: prod, approval: { approvers: [U0999] } }
`,
  'test fixture',
);
