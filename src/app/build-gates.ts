import { basename } from 'node:path';
import type { GateSteps } from '../../workers/gates/gate-step.js';
import { createAnthropicModel } from '../adapters/anthropic/anthropic-model.js';
import type { GitHubAuth } from '../adapters/github/options.js';
import { createGitHubRest } from '../adapters/github/github-rest.js';
import { createPrometheusHttp } from '../adapters/prometheus/prometheus-http.js';
import { createDiagnosisOpener } from '../agent/diagnosis-tools.js';
import type { AuditLog } from '../audit/audit-log.js';
import type { LocalForge } from '../adapters/local-forge/local-forge.js';
import { localRepos } from '../config/policy.js';
import { routeForge } from './route-forge.js';
import type { Config } from '../config/config.js';
import type { GateKind } from '../domain/run.js';
import type { Git } from '../git/git.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { ChatPort } from '../ports/chat.js';
import type { EtagCache } from '../ports/github.js';
import type { ClusterDiagnosisPort } from '../ports/diagnosis.js';
import type { KubernetesPort } from '../ports/kubernetes.js';
import type { SandboxPort } from '../ports/sandbox.js';
import type { Scrubber } from '../security/scrubber.js';
import type { AgentConversations } from '../store/agent-conversation-store.js';
import type { FollowUps } from '../store/follow-ups.js';
import type { Claims } from '../store/claims.js';
import type { PromotionQueue } from '../store/promotion-queue.js';
import type { ApprovalStore } from '../store/approval-store.js';
import type { Queues } from '../queue/queues.js';
import type { RunIndex } from '../store/run-index.js';
import type { TtlCache } from '../store/ttl-cache.js';
import { GATE_TABLE, NOT_BUILT, notConfiguredReason, type GateDeps, type GateTable, type Need } from './gate-table.js';

export interface GateTuning {
  githubRetryAfterBaseMs?: number | undefined;
  githubLimiterId?: string | undefined;
  modelMaxRetries?: number | undefined;
  checkTimeoutMs?: number | undefined;
  firstPollMs?: number | undefined;
  /** First fallback re-check of the deploy gates (informer events wake them sooner). */
  deployPollMs?: number | undefined;
}

export interface BuildGatesDeps {
  config: Pick<Config, 'github' | 'anthropic' | 'policy' | 'policyPath' | 'kargoUrl' | 'argocdUrl' | 'prometheusUrl'>;
  log: Logger;
  metrics: Metrics;
  clock: () => Date;
  scrubber: Scrubber;
  etagCache: EtagCache;
  requiredChecksCache: TtlCache;
  chat: ChatPort;
  git: Git;
  sandbox: SandboxPort;
  followUps: FollowUps;
  conversations: AgentConversations;
  index: RunIndex;
  claims: Claims;
  promotionQueue: PromotionQueue;
  approvals: ApprovalStore;
  audit: Pick<AuditLog, 'append'>;
  queues: Pick<Queues, 'approvalMessage'>;
  workRoot: string;
  /** The cluster, when one is configured and the policy's pipelines need it (build-kubernetes.ts). */
  kubernetes?: KubernetesPort | undefined;
  /** The forge of the repositories with a local `path:` (local mode, SPEC §8). */
  localForge?: LocalForge | undefined;
  /** The read-only cluster sessions of red deploy gates, on the same cluster configuration. */
  clusterDiagnosis?: ClusterDiagnosisPort | undefined;
  tuning?: GateTuning | undefined;
  /** Steps given by the caller (tests): they take the place of the table's, configured or not. */
  injected?: GateSteps | undefined;
  table?: GateTable | undefined;
}

export interface Gates {
  steps: GateSteps;
  /** The gates without a step, and why (the table's reasons). */
  notConfigured: Partial<Record<GateKind, string>>;
}

function githubAuth(github: BuildGatesDeps['config']['github']): GitHubAuth | undefined {
  if (github.app !== undefined)
    return {
      kind: 'app',
      appId: github.app.appId,
      privateKey: github.app.privateKey,
      installationId: github.app.installationId,
    };
  return github.token !== undefined ? { kind: 'token', token: github.token } : undefined;
}

/** Memoised: every gate shares one client (one ETag cache, one rate limiter). */
function memo<T>(make: () => T): () => T {
  let made: { value: T } | undefined;
  return () => (made ??= { value: make() }).value;
}

/** The outside systems configured here, out of those gates can need. */
export function configuredNeeds(config: Pick<Config, 'github' | 'anthropic' | 'policy'>, kubernetes?: KubernetesPort): Set<Need> {
  const needs = new Set<Need>();
  if (kubernetes !== undefined) needs.add('kubernetes');
  if (githubAuth(config.github) !== undefined || Object.keys(localRepos(config.policy)).length > 0) needs.add('forge');
  if (config.anthropic.apiKey !== undefined || config.anthropic.baseUrl !== undefined) needs.add('model');
  return needs;
}

/** Builds the gate steps whose outside systems are configured (GATE_TABLE); the others come back with their reason. */
export function buildGates(deps: BuildGatesDeps): Gates {
  const { config, log, metrics, scrubber, tuning } = deps;
  const scrub = scrubber.scrub;
  const configured = configuredNeeds(config, deps.kubernetes);
  const { kubernetes } = deps;
  const auth = githubAuth(config.github);
  const metricsQuery = memo(() => {
    const baseUrl = config.prometheusUrl;
    return baseUrl === undefined ? undefined : createPrometheusHttp({ baseUrl, metrics });
  });
  const githubRest = memo(() => {
    if (auth === undefined) throw new Error('GitHub is not configured (a gate that needs it was built anyway)');
    return createGitHubRest({
      apiUrl: config.github.apiUrl,
      auth,
      log,
      metrics,
      retry: { retryAfterBaseMs: tuning?.githubRetryAfterBaseMs },
      limiterId: tuning?.githubLimiterId,
      etagCache: deps.etagCache,
      scrub,
      onSecret: (secret) => scrubber.add(secret),
    });
  });
  const gateDeps: GateDeps = {
    policy: config.policy,
    policyFileName: basename(config.policyPath),
    modelId: config.anthropic.model,
    git: deps.git,
    sandbox: deps.sandbox,
    chat: deps.chat,
    clock: deps.clock,
    scrub,
    followUps: deps.followUps,
    conversations: deps.conversations,
    index: deps.index,
    claims: deps.claims,
    promotionQueue: deps.promotionQueue,
    approvals: deps.approvals,
    audit: deps.audit,
    queues: deps.queues,
    requiredChecksCache: deps.requiredChecksCache,
    workRoot: deps.workRoot,
    tuning: { checkTimeoutMs: tuning?.checkTimeoutMs, firstPollMs: tuning?.firstPollMs, deployPollMs: tuning?.deployPollMs },
    deployUi: { kargo: config.kargoUrl, argocd: config.argocdUrl },
    metricsQuery,
    // What a fix forward reads first: the cluster session (where one is configured), the informers'
    // status of the run's objects, and the stage's golden signals.
    diagnosis: memo(() =>
      createDiagnosisOpener({ policy: config.policy, clusterPort: deps.clusterDiagnosis, kubernetes, metrics: metricsQuery(), scrub }),
    ),
    kubernetes: () => {
      if (kubernetes === undefined) throw new Error('no cluster is configured (a gate that needs it was built anyway)');
      return kubernetes;
    },
    forge: memo(() => routeForge(deps.localForge, auth === undefined ? undefined : githubRest)),
    model: memo(() => {
      if (!configured.has('model'))
        throw new Error('the model is not configured (a gate that needs it was built anyway)');
      return createAnthropicModel({
        apiKey: config.anthropic.apiKey,
        baseUrl: config.anthropic.baseUrl,
        log,
        metrics,
        maxRetries: tuning?.modelMaxRetries,
        scrub,
      });
    }),
  };
  return resolveGates(deps.table ?? GATE_TABLE, gateDeps, configured, deps.injected ?? {});
}

/** A row reaches only the outside systems it lists, so its reason can never leave one out. */
function listedOnly(deps: GateDeps, needs: readonly Need[], kind: GateKind): GateDeps {
  const guard =
    <T>(need: Need, get: () => T) =>
    (): T => {
      if (!needs.includes(need)) throw new Error(`the ${kind} gate uses ${need} but does not list it in its needs`);
      return get();
    };
  return {
    ...deps,
    forge: guard('forge', deps.forge),
    model: guard('model', deps.model),
    kubernetes: guard('kubernetes', deps.kubernetes),
  };
}

/** Applies the table: an injected step wins, then the table's step when its needs are met, else the reason. */
export function resolveGates(
  table: GateTable,
  deps: GateDeps,
  configured: ReadonlySet<Need>,
  injected: GateSteps,
): Gates {
  const gates: Gates = { steps: {}, notConfigured: {} };
  for (const kind of Object.keys(table) as GateKind[]) {
    const factory = table[kind];
    const given = injected[kind];
    const reason = notConfiguredReason(factory, configured);
    if (given !== undefined) gates.steps[kind] = given;
    else if (reason === undefined && factory.build !== undefined)
      gates.steps[kind] = factory.build(listedOnly(deps, factory.needs, kind));
    else gates.notConfigured[kind] = reason ?? NOT_BUILT;
  }
  return gates;
}
