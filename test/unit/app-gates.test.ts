import { PassThrough } from 'node:stream';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { createConsoleChat } from '../../src/adapters/console/console-chat.js';
import { createUnsandboxed } from '../../src/adapters/sandbox/unsandboxed.js';
import { createAuditLog } from '../../src/audit/audit-log.js';
import { buildGates, configuredNeeds, type BuildGatesDeps } from '../../src/app/build-gates.js';
import {
  GATE_TABLE,
  NEEDS,
  NOT_BUILT,
  notConfiguredReason,
  type GateTable,
  type Need,
} from '../../src/app/gate-table.js';
import { loadConfig } from '../../src/config/config.js';
import type { GateKind } from '../../src/domain/run.js';
import type { KubernetesPort } from '../../src/ports/kubernetes.js';
import { createGit, type Git } from '../../src/git/git.js';
import { createLogger } from '../../src/log.js';
import { createMetrics } from '../../src/metrics.js';
import { createScrubber } from '../../src/security/scrubber.js';
import { createEtagCache } from '../../src/store/etag-cache.js';
import { createTtlCache } from '../../src/store/ttl-cache.js';
import { createFollowUps } from '../../src/store/follow-ups.js';
import { createAgentConversationStore } from '../../src/store/agent-conversation-store.js';
import { createApprovalStore } from '../../src/store/approval-store.js';
import { createClaims } from '../../src/store/claims.js';
import { createPromotionQueue } from '../../src/store/promotion-queue.js';
import { createRunIndex } from '../../src/store/run-index.js';
import type { GateStep } from '../../workers/gates/gate-step.js';
import { TEST_AUDIT_KEY_BYTES } from '../helpers/audit-key.js';

/**
 * The gate table of the composition root (issue 8): gate kind → step, built only when the outside
 * systems it needs are configured; every other gate comes back with the reason the run's card and
 * the start-up log give.
 */

const SHIPPED: GateKind[] = ['agent', 'pr', 'ci', 'merge'];
const DEPLOY: GateKind[] = ['freight', 'stage', 'argocd'];
/** Needs no outside system: its decision is made by people's clicks, in Redis. */
const PEOPLE: GateKind[] = ['approval'];
const silent = createLogger({ level: 'silent', destination: new PassThrough() });

const opened: Array<{ redis: Redis; git: Git }> = [];
afterEach(async () => {
  for (const { redis, git } of opened.splice(0)) {
    redis.disconnect();
    await git.close();
  }
});

/** Real factories over a Redis client that never connects: building gates does no I/O. */
function deps(env: Record<string, string>, extra: Partial<BuildGatesDeps> = {}): BuildGatesDeps {
  const config = loadConfig(
    { REDIS_URL: 'redis://127.0.0.1:1', ...env },
    { readFile: () => 'repos:\n  acme/shop: {}\n' },
  );
  const redis = new Redis({ lazyConnect: true });
  const git = createGit({ log: silent });
  opened.push({ redis, git });
  return {
    config,
    log: silent,
    metrics: createMetrics(),
    clock: () => new Date(0),
    scrubber: createScrubber([]),
    etagCache: createEtagCache({ redis, prefix: 'test' }),
    requiredChecksCache: createTtlCache({ redis, prefix: 'test', ttlSeconds: 60 }),
    chat: createConsoleChat({ input: new PassThrough(), output: new PassThrough(), command: '/ship' }).port,
    git,
    sandbox: createUnsandboxed(),
    followUps: createFollowUps({ redis, prefix: 'test' }),
    conversations: createAgentConversationStore({ redis, prefix: 'test', auditKey: TEST_AUDIT_KEY_BYTES }),
    index: createRunIndex({ redis, prefix: 'test' }),
    claims: createClaims({ redis, prefix: 'test' }),
    promotionQueue: createPromotionQueue({ redis, prefix: 'test', clock: () => new Date(0), isActive: async () => true, wake: async () => undefined }),
    approvals: createApprovalStore({ redis, prefix: 'test' }),
    audit: createAuditLog({ redis, prefix: 'test', clock: () => new Date(0), key: TEST_AUDIT_KEY_BYTES }),
    queues: { approvalMessage: async () => undefined },
    workRoot: '/tmp/shipgate-test-workspaces',
    ...extra,
  };
}

const GITHUB = { GITHUB_TOKEN: 'ghp_not_real' };
const MODEL = { ANTHROPIC_API_KEY: 'sk-ant-not-real' };
const step: GateStep = { run: async () => ({ kind: 'passed', summary: 'injected' }) };

describe('the gate table', () => {
  it('has a row for every gate kind; the Git four need GitHub and the model, the deploy gates a cluster, approval nothing outside', () => {
    expect(Object.keys(GATE_TABLE).sort()).toEqual([...SHIPPED, ...DEPLOY, ...PEOPLE].sort());
    for (const kind of SHIPPED) expect(GATE_TABLE[kind]).toMatchObject({ needs: ['forge', 'model'] });
    for (const kind of DEPLOY) expect(GATE_TABLE[kind]).toMatchObject({ needs: ['kubernetes'] });
    for (const kind of PEOPLE) expect(GATE_TABLE[kind]).toMatchObject({ needs: [] });
  });

  it('gives the reason from what is missing, naming the setting that provides it', () => {
    const agent = GATE_TABLE.agent;
    expect(notConfiguredReason(agent, new Set<Need>(['forge', 'model']))).toBeUndefined();
    expect(notConfiguredReason(agent, new Set<Need>(['forge']))).toBe(`needs ${NEEDS.model}`);
    expect(notConfiguredReason(agent, new Set<Need>())).toBe(`needs ${NEEDS.forge}, and ${NEEDS.model}`);
    expect(notConfiguredReason(GATE_TABLE.freight, new Set<Need>(['forge', 'model']))).toBe(`needs ${NEEDS.kubernetes}`);
    expect(notConfiguredReason(GATE_TABLE.approval, new Set<Need>())).toBeUndefined();
    expect(notConfiguredReason({ needs: [] }, new Set<Need>())).toBe(NOT_BUILT);
    expect(NEEDS.kubernetes).toContain('KUBECONFIG');
    expect(NEEDS.forge).toContain('GITHUB_TOKEN');
    expect(NEEDS.model).toContain('ANTHROPIC_API_KEY');
  });

  it('reads what is configured from the config: a token or an App for GitHub, a key or a base URL for the model', () => {
    expect([...configuredNeeds(deps({}).config)]).toEqual([]);
    expect([...configuredNeeds(deps({ ...GITHUB, ANTHROPIC_BASE_URL: 'http://127.0.0.1:9' }).config)].sort()).toEqual([
      'forge',
      'model',
    ]);
    expect([...configuredNeeds(deps({ GITHUB_APP_ID: '1', GITHUB_APP_PRIVATE_KEY: 'key' }).config)]).toEqual([
      'forge',
    ]);
  });
});

describe('buildGates', () => {
  it('builds the Git gates when GitHub and the model are configured; without a cluster the deploy gates say what they need', () => {
    const gates = buildGates(deps({ ...GITHUB, ...MODEL }));
    expect(Object.keys(gates.steps).sort()).toEqual([...SHIPPED, ...PEOPLE].sort());
    const cluster = `needs ${NEEDS.kubernetes}`;
    expect(gates.notConfigured).toEqual({ freight: cluster, stage: cluster, argocd: cluster });
  });

  it('with a cluster, builds the deploy gates too', () => {
    const kubernetes: KubernetesPort = {
      list: () => undefined,
      get: () => undefined,
      subscribe: () => () => undefined,
      findPromotions: async () => [],
      createPromotion: async () => ({ name: 'p', object: {} }),
    };
    expect([...configuredNeeds(deps({}).config, kubernetes)]).toEqual(['kubernetes']);
    const gates = buildGates(deps({ ...GITHUB, ...MODEL }, { kubernetes }));
    expect(Object.keys(gates.steps).sort()).toEqual([...SHIPPED, ...DEPLOY, ...PEOPLE].sort());
    expect(gates.notConfigured).toEqual({});
  });

  it('without the model, says so for every gate that needs it and builds none of them', () => {
    const gates = buildGates(deps(GITHUB));
    expect(Object.keys(gates.steps)).toEqual(PEOPLE);
    for (const kind of SHIPPED) expect(gates.notConfigured[kind]).toBe(`needs ${NEEDS.model}`);
  });

  it('an injected step takes the place of the table, configured or not (tests, and later other builds)', () => {
    const gates = buildGates(deps({}, { injected: { agent: step, freight: step } }));
    expect(gates.steps).toMatchObject({ agent: step, freight: step });
    expect(gates.notConfigured.agent).toBeUndefined();
    expect(gates.notConfigured.pr).toBe(`needs ${NEEDS.forge}, and ${NEEDS.model}`);
    expect(gates.notConfigured.stage).toBe(`needs ${NEEDS.kubernetes}`);
    expect(gates.notConfigured.approval).toBeUndefined();
  });

  it('builds each outside system once, shared by every gate, and only for the gates that list it', () => {
    const seen: Record<string, unknown[]> = { forge: [], model: [] };
    const spy = (kind: GateKind): GateTable[GateKind] => ({
      needs: GATE_TABLE[kind].needs,
      build: (gateDeps) => {
        for (const need of GATE_TABLE[kind].needs)
          seen[need]?.push(need === 'forge' ? gateDeps.forge() : gateDeps.model());
        return step;
      },
    });
    const table: GateTable = { ...GATE_TABLE, agent: spy('agent'), pr: spy('pr'), ci: spy('ci'), merge: spy('merge') };
    buildGates(deps({ ...GITHUB, ...MODEL }, { table }));
    expect(seen.forge).toHaveLength(4);
    expect(new Set(seen.forge).size).toBe(1);
    expect(new Set(seen.model).size).toBe(1);
  });

  it('a row that reaches for a system it does not list fails at start-up, even where that system is configured', () => {
    const table: GateTable = {
      ...GATE_TABLE,
      freight: { needs: ['model'], build: (gateDeps) => (gateDeps.forge(), step) },
    };
    expect(() => buildGates(deps({ ...GITHUB, ...MODEL }, { table }))).toThrow(
      'the freight gate uses forge but does not list it in its needs',
    );
  });
});
