import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import type { JsonObject, JsonValue, KubernetesServer } from './kubernetes-server.js';

/**
 * A scripted, in-process stand-in for the Kargo controller (Warehouse, Stage, Promotion,
 * verification) and the Argo CD application controller, for tests of the deploy gates. It writes
 * through the test Kubernetes server's controller methods (`put`/`modify`: status included,
 * validated and pruned against the real CRDs), so whatever it writes is what a watcher of the real
 * API would see, one transition at a time (`stepDelayMs` apart).
 *
 * The order of writes follows the real controllers (Kargo v1.x `argocd-update` step and health
 * checker, Argo CD's operation/reconcile loops):
 *
 * 1. Promotion `Pending` → `Running` (`currentStep`, `stepExecutionMetadata` one entry per step
 *    started), Stage `currentPromotion`.
 * 2. At the `argocd-update` step, Kargo's write on each Application: the `argocd.argoproj.io/refresh:
 *    hard` annotation, an `operation` (initiated by `kargo-controller`, `info` naming the
 *    Promotion) and no `status.operationState` (Kargo clears it, working around argo-cd#20875).
 * 3. Argo CD starts the sync: refresh annotation gone, `operationState` Running, sync OutOfSync at
 *    the new revision, health Progressing.
 * 4. Argo CD finishes: `operation` cleared, `operationState` Succeeded (`finishedAt`,
 *    `syncResult.revision`), sync Synced, a `history` entry; health still Progressing and
 *    `reconciledAt` older than `finishedAt` (the health loop has not run yet).
 * 5. Kargo: the step Succeeded, the Promotion Succeeded (`finishedAt`, `healthChecks` with the
 *    `argocd-update` apps and their `desiredRevisions`), Stage `lastPromotion` and a new
 *    `freightHistory[0]`, Freight `currentlyIn`.
 * 6. Argo CD reconciles: `reconciledAt` ≥ `finishedAt`, final health and resources.
 * 7. Kargo's Stage health (its Argo CD checker's order: reconciled, error conditions, sync, health)
 *    in `status.health`; only when Healthy does verification run (AnalysisRun and
 *    `verificationHistory[0]` Pending → Running → Successful/Failed/Error) or, without
 *    verification, the Freight is marked `verifiedIn` the stage.
 * 8. A verified Freight is auto-promoted to the next stage (each stage's upstream is the one before
 *    it in `stages`), when that stage has `autoPromote`.
 *
 * Where a script departs from what real controllers could produce, its doc says so.
 *
 * Deliberate simplifications: one Promotion runs per stage at a time and its job includes the
 * stage's health and verification (Kargo would start the next Promotion without waiting for
 * verification); Stage `conditions` are not written; auto-promotion picks the newest available
 * Freight (Kargo's default `NewestFreight` policy) and never an older one.
 */

/** Whether the Promotion's steps succeed and, if not, how they end. */
export type PromotionScript =
  /** Every step Succeeded, then the Promotion. */
  | 'succeed'
  /** The `git-push` step (else the first) ends `Failed` with a message; the Promotion `Failed`. */
  | 'fail'
  /** The `git-clone` step (else the first) ends `Errored`; the Promotion `Errored`. */
  | 'error'
  /** Someone aborts while the second step runs: that step `Aborted`, the Promotion `Aborted`. */
  | 'abort';

/** What the Applications of the stage do with the sync Kargo requests. */
export type AppScript =
  /** Synced and Healthy at the promoted gitops commit. */
  | 'healthy'
  /** Synced at the promoted commit, then health Degraded: the Deployment exceeded its progress deadline. */
  | 'degraded'
  /** Synced at the promoted commit, then health Missing and OutOfSync: the Deployment is gone. */
  | 'missing'
  /**
   * Argo CD never syncs: the apps stay Synced and Healthy at the gitops revision they had, yet the
   * Promotion Succeeds. Real Kargo would keep its `argocd-update` step waiting instead; this stands
   * for a report that says "done" while the app still runs the old revision (a stale read, a
   * promotion template whose sync is not the one that matters), which a gate must not pass.
   */
  | 'old-revision'
  /** The sync operation stays Running forever, so the Promotion stays Running at `argocd-update` (as Kargo's step waits). */
  | 'operation-running'
  /** Synced at the promoted commit, then the next comparison fails: condition ComparisonError, sync Unknown. */
  | 'comparison-error'
  /** The sync operation ends Failed (a resource failed to apply); Kargo's step and so the Promotion end `Errored`. */
  | 'sync-failed';

/** How the stage's verification (an AnalysisRun) ends; only for stages with `verification`. */
export type VerificationScript = 'successful' | 'failed' | 'error';

export interface StageScript {
  /** Default `succeed`. */
  promotion?: PromotionScript;
  /** Default `healthy`. */
  app?: AppScript;
  /** Default `successful`. */
  verification?: VerificationScript;
}

export interface GitOpsStage {
  name: string;
  /** Argo CD Applications (in `argocdNamespace`) this stage's Promotions sync. */
  apps: string[];
  /** Whether the Stage has `spec.verification` (an AnalysisTemplate): Freight is verified by an AnalysisRun. */
  verification?: boolean;
  /** Default true: Kargo promotes new Freight here on its own (else only Promotions someone creates run). */
  autoPromote?: boolean;
  script?: StageScript;
}

export interface GitOpsControllerOptions {
  server: KubernetesServer;
  /** The Kargo project namespace, e.g. `shop`. */
  project: string;
  /** The Warehouse whose Freight the stages request, e.g. `shop`. */
  warehouse: string;
  /** Default `argocd`. */
  argocdNamespace?: string;
  /** The application repository whose commits Freight carries, e.g. `https://github.com/acme/shop`. */
  sourceRepoURL: string;
  /** The repository the Argo CD apps track; a Promotion's desired revision is a commit here. */
  gitopsRepoURL: string;
  /** In pipeline order: each stage's upstream is the one before it; the first takes Freight from the Warehouse. */
  stages: GitOpsStage[];
  /** Delay between two controller writes, so watchers see every transition; default 20 ms. */
  stepDelayMs?: number;
  /** Default `() => new Date()`. Timestamps are written with second precision, as Kubernetes does. */
  clock?: () => Date;
}

export interface GitOpsController {
  /** Creates the Warehouse, the Stages and the Applications (Synced and Healthy at an older gitops revision, authorized for their stage). */
  install(): void;
  /**
   * Writes the Freight the Warehouse would produce for `commit` (a 40-hex SHA of `sourceRepoURL`) and
   * returns its name: a sha1 of its origin and artifacts, as Kargo names Freight, so the same input
   * gives the same name (and is not written twice).
   */
  produceFreight(commit: string, options?: { alias?: string; images?: FreightImage[] }): string;
  /** Replaces the stage's script; each decision reads the script when it is made. */
  setScript(stage: string, script: StageScript): void;
  /**
   * Starts the background loop: every few ms it lists the objects and reacts. New Freight is
   * promoted to the first stage, Freight verified in a stage to the next (stages with
   * `autoPromote`), and any Promotion that has no status yet (the bot's, created with
   * `generateName`) is run through its stage's script, one per stage at a time.
   */
  start(): void;
  /** Ends the loop and every job; rejects with the first error a job hit (a write the CRD refused). */
  stop(): Promise<void>;
  /**
   * Resolves once the loop has nothing left to do: no job running and nothing new to start
   * (Promotions queued behind an `operation-running` one count as settled). Rejects with a job's
   * error; needs `start()`.
   */
  settled(): Promise<void>;
  /** The Promotions of `stage`, in the order this controller saw them (then by name). */
  promotionsFor(stage: string): JsonObject[];
  /** The gitops commit a Promotion of `freight` to `stage` pushes: sha1 of `${stage}/${freight}`. */
  gitopsCommit(stage: string, freight: string): string;
  /** The gitops revision the stage's apps run before any Promotion. */
  initialRevision(stage: string): string;
}

export interface FreightImage {
  repoURL: string;
  tag: string;
  digest?: string;
}

const KARGO_API = 'kargo.akuity.io/v1alpha1';
const ARGO_API = 'argoproj.io/v1alpha1';
// How often the loop lists the objects: well below the step delay, so reactions look prompt.
const POLL_MS = 5;
const REFRESH_ANNOTATION = 'argocd.argoproj.io/refresh';
const PROMOTION_INFO_KEY = 'kargo.akuity.io/promotion';
// Kargo keeps the last ten Freight collections in a Stage's history.
const FREIGHT_HISTORY_LIMIT = 10;
const ANALYSIS_TEMPLATE = 'integration-test';

// --- small JSON helpers ---------------------------------------------------------------------------

function isObject(value: JsonValue | undefined): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** `parent[key]` as an object, created when absent (a controller filling in its own status). */
function child(parent: JsonObject, key: string): JsonObject {
  const value = parent[key];
  if (isObject(value)) return value;
  const created: JsonObject = {};
  parent[key] = created;
  return created;
}

/** `parent[key]` as an array, created when absent. */
function list(parent: JsonObject, key: string): JsonValue[] {
  const value = parent[key];
  if (Array.isArray(value)) return value;
  const created: JsonValue[] = [];
  parent[key] = created;
  return created;
}

/** The keys of `source` that are set, copied. */
function pick(source: JsonObject, keys: readonly string[]): JsonObject {
  const out: JsonObject = {};
  for (const key of keys) {
    const value = source[key];
    if (value !== undefined) out[key] = structuredClone(value);
  }
  return out;
}

const sha1 = (text: string): string => createHash('sha1').update(text).digest('hex');

/** Kubernetes (metav1.Time) and Argo CD write RFC 3339 with second precision. */
const stamp = (date: Date): string => date.toISOString().replace(/\.\d+Z$/u, 'Z');

const CROCKFORD = '0123456789abcdefghjkmnpqrstvwxyz';

/**
 * A lower-case ULID as Kargo puts in Promotion and AnalysisRun names: 10 characters of time, then 16
 * that Kargo draws at random and this derives from `seed`, so names are reproducible.
 */
function ulidLike(time: Date, seed: string): string {
  let t = BigInt(Math.max(0, time.getTime()));
  let head = '';
  for (let i = 0; i < 10; i += 1) {
    head = CROCKFORD.charAt(Number(t % 32n)) + head;
    t /= 32n;
  }
  let r = BigInt(`0x${sha1(seed).slice(0, 20)}`);
  let tail = '';
  for (let i = 0; i < 16; i += 1) {
    tail = CROCKFORD.charAt(Number(r % 32n)) + tail;
    r /= 32n;
  }
  return head + tail;
}

/** A UUID-shaped id derived from `seed` (verification ids are UUIDs in Kargo). */
function uuidLike(seed: string): string {
  const h = sha1(seed);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

const ALIAS_ADJECTIVES = ['brave', 'calm', 'eager', 'fancy', 'gentle', 'jolly', 'lively', 'proud', 'quiet', 'witty'];
const ALIAS_ANIMALS = ['eagle', 'otter', 'badger', 'heron', 'lynx', 'marmot', 'panda', 'quokka', 'raven', 'walrus'];

// --- what the controller reads back ------------------------------------------------------------------

const metadataSchema = z.looseObject({
  name: z.string(),
  uid: z.string().optional(),
  creationTimestamp: z.string().optional(),
});

const promotionSchema = z.looseObject({
  metadata: metadataSchema,
  spec: z.looseObject({
    stage: z.string(),
    freight: z.string().optional(),
    steps: z.array(z.looseObject({ uses: z.string().optional(), as: z.string().optional() })),
  }),
  status: z.looseObject({ phase: z.string().optional() }).optional(),
});
type Promotion = z.infer<typeof promotionSchema>;

const freightSchema = z.looseObject({
  metadata: metadataSchema,
  origin: z.object({ kind: z.string(), name: z.string() }),
  alias: z.string().optional(),
  status: z
    .looseObject({
      verifiedIn: z.record(z.string(), z.unknown()).optional(),
      currentlyIn: z.record(z.string(), z.unknown()).optional(),
    })
    .optional(),
});

const applicationSchema = z.looseObject({
  metadata: metadataSchema,
  operation: z.unknown().optional(),
  status: z
    .looseObject({
      reconciledAt: z.string().optional(),
      conditions: z.array(z.looseObject({ type: z.string(), message: z.string().optional() })).optional(),
      health: z.looseObject({ status: z.string().optional() }).optional(),
      operationState: z
        .looseObject({
          phase: z.string().optional(),
          finishedAt: z.string().optional(),
          syncResult: z.looseObject({ revision: z.string().optional() }).optional(),
        })
        .optional(),
    })
    .optional(),
});

// --- the controller --------------------------------------------------------------------------------

class Stopped extends Error {}

/** How a Promotion's `argocd-update` step ended. */
type SyncOutcome = { kind: 'synced' } | { kind: 'parked' } | { kind: 'errored'; message: string };

interface StepMetadata {
  alias: string;
  startedAt: string;
  finishedAt?: string;
  status: string;
  message?: string;
  errorCount?: number;
}

function stepJson(step: StepMetadata): JsonObject {
  const out: JsonObject = { alias: step.alias, startedAt: step.startedAt, status: step.status };
  if (step.finishedAt !== undefined) out['finishedAt'] = step.finishedAt;
  if (step.message !== undefined) out['message'] = step.message;
  if (step.errorCount !== undefined) out['errorCount'] = step.errorCount;
  return out;
}

export function createGitOpsController(options: GitOpsControllerOptions): GitOpsController {
  const { server, project, warehouse, sourceRepoURL, gitopsRepoURL } = options;
  const argocdNamespace = options.argocdNamespace ?? 'argocd';
  const stepDelayMs = options.stepDelayMs ?? 20;
  const clock = options.clock ?? ((): Date => new Date());
  const stages = options.stages.map((s) => ({ ...s, apps: [...s.apps] }));
  if (new Set(stages.map((s) => s.name)).size !== stages.length) throw new Error('stage names must be unique');
  const scripts = new Map<string, StageScript>(stages.map((s) => [s.name, { ...s.script }]));
  const stageNamed = (name: string): GitOpsStage | undefined => stages.find((s) => s.name === name);

  const now = (): string => stamp(clock());
  const gitopsCommit = (stage: string, freight: string): string => sha1(`${stage}/${freight}`);
  const initialRevision = (stage: string): string => sha1(`${stage}/initial`);

  // Loop state.
  const seen = new Map<string, number>(); // promotion name → order first seen
  const queues = new Map<string, string[]>(); // stage → promotions waiting to run, oldest first
  const jobs = new Map<string, Promise<void>>(); // stage → its running job
  const parked = new Set<string>(); // stages whose promotion waits forever (operation-running)
  const produced = new Map<string, number>(); // freight name → production order
  let order = 0;
  let scans = 0;
  let loop: Promise<void> | undefined;
  let stopping = false;
  let failure: Error | undefined;
  const waiters: { after: number; resolve: () => void; reject: (error: Error) => void }[] = [];

  const pause = async (): Promise<void> => {
    await sleep(stepDelayMs);
    if (stopping) throw new Stopped();
  };

  // --- reads ---

  const byOrderSeen = (a: Promotion, b: Promotion): number => {
    const oa = seen.get(a.metadata.name) ?? Number.MAX_SAFE_INTEGER;
    const ob = seen.get(b.metadata.name) ?? Number.MAX_SAFE_INTEGER;
    return oa !== ob ? oa - ob : a.metadata.name.localeCompare(b.metadata.name);
  };
  const promotions = (): Promotion[] =>
    server
      .list('Promotion', project)
      .map((o) => promotionSchema.parse(o))
      .sort(byOrderSeen);

  /** This warehouse's Freight, newest first (creation time, then production order, then name). */
  const freightNewestFirst = (): z.infer<typeof freightSchema>[] =>
    server
      .list('Freight', project)
      .map((o) => freightSchema.parse(o))
      .filter((f) => f.origin.kind === 'Warehouse' && f.origin.name === warehouse)
      .sort((a, b) => {
        const ta = a.metadata.creationTimestamp ?? '';
        const tb = b.metadata.creationTimestamp ?? '';
        if (ta !== tb) return ta < tb ? 1 : -1;
        const pa = produced.get(a.metadata.name) ?? -1;
        const pb = produced.get(b.metadata.name) ?? -1;
        if (pa !== pb) return pb - pa;
        return a.metadata.name.localeCompare(b.metadata.name);
      });

  /** What Kargo copies of a Freight into Promotions and Stage history (a FreightReference). */
  const freightRef = (freight: JsonObject, name: string): JsonObject => ({
    name,
    origin: { kind: 'Warehouse', name: warehouse },
    ...pick(freight, ['commits', 'images', 'charts', 'artifacts']),
  });
  const collectionOf = (ref: JsonObject, name: string): JsonObject => ({
    // Kargo identifies a Freight collection by a hash of the Freight it holds.
    id: sha1(`Warehouse/${warehouse}:${name}`),
    items: { [`Warehouse/${warehouse}`]: ref },
    verificationHistory: [],
  });

  // --- install and Freight ---

  const applicationSource = (stage: string, app: string): JsonObject => ({
    repoURL: gitopsRepoURL,
    targetRevision: `stage/${stage}`,
    path: app,
  });
  const destination = (stage: string): JsonObject => ({
    server: 'https://kubernetes.default.svc',
    namespace: `${project}-${stage}`,
  });
  const resources = (stage: string, app: string, deployment: JsonObject, sync = 'Synced'): JsonValue[] => [
    {
      group: '',
      version: 'v1',
      kind: 'Service',
      namespace: `${project}-${stage}`,
      name: app,
      status: 'Synced',
      health: { status: 'Healthy' },
    },
    {
      group: 'apps',
      version: 'v1',
      kind: 'Deployment',
      namespace: `${project}-${stage}`,
      name: app,
      status: sync,
      health: deployment,
    },
  ];
  const syncResultResources = (stage: string, app: string, deploymentStatus: string, message: string): JsonValue[] => [
    {
      group: '',
      version: 'v1',
      kind: 'Service',
      namespace: `${project}-${stage}`,
      name: app,
      status: 'Synced',
      message: `service/${app} unchanged`,
      hookPhase: 'Running',
      syncPhase: 'Sync',
    },
    {
      group: 'apps',
      version: 'v1',
      kind: 'Deployment',
      namespace: `${project}-${stage}`,
      name: app,
      status: deploymentStatus,
      message,
      hookPhase: deploymentStatus === 'SyncFailed' ? 'Failed' : 'Running',
      syncPhase: 'Sync',
    },
  ];

  const promotionSteps = (stage: GitOpsStage): JsonValue[] => [
    {
      uses: 'git-clone',
      as: 'clone',
      config: { repoURL: gitopsRepoURL, checkout: [{ branch: `stage/${stage.name}`, create: true, path: './out' }] },
    },
    { uses: 'git-commit', as: 'commit', config: { path: './out', message: 'Promote ${{ ctx.targetFreight.name }}' } },
    { uses: 'git-push', as: 'push', config: { path: './out' } },
    {
      uses: 'argocd-update',
      as: 'update',
      config: {
        apps: stage.apps.map((name) => ({
          name,
          namespace: argocdNamespace,
          sources: [{ repoURL: gitopsRepoURL, desiredRevision: '${{ outputs.commit.commit }}' }],
        })),
      },
    },
  ];

  const install = (): void => {
    server.put({
      apiVersion: KARGO_API,
      kind: 'Warehouse',
      metadata: { name: warehouse, namespace: project },
      spec: { subscriptions: [{ git: { repoURL: sourceRepoURL, branch: 'main' } }] },
    });
    // The apps' current deploy happened a while ago: its times are clearly older than any sync to come.
    const earlier = stamp(new Date(clock().getTime() - 3_600_000));
    stages.forEach((stage, i) => {
      const upstream = stages[i - 1];
      server.put({
        apiVersion: KARGO_API,
        kind: 'Stage',
        metadata: { name: stage.name, namespace: project },
        spec: {
          requestedFreight: [
            {
              origin: { kind: 'Warehouse', name: warehouse },
              sources: upstream === undefined ? { direct: true } : { stages: [upstream.name] },
            },
          ],
          promotionTemplate: { spec: { steps: promotionSteps(stage) } },
          ...(stage.verification === true
            ? { verification: { analysisTemplates: [{ name: ANALYSIS_TEMPLATE }] } }
            : {}),
        },
        status: { autoPromotionEnabled: stage.autoPromote !== false },
      });
      const revision = initialRevision(stage.name);
      for (const app of stage.apps) {
        const source = applicationSource(stage.name, app);
        const operation: JsonObject = {
          sync: { revision },
          initiatedBy: { username: 'admin' },
        };
        server.put({
          apiVersion: ARGO_API,
          kind: 'Application',
          metadata: {
            name: app,
            namespace: argocdNamespace,
            annotations: { 'kargo.akuity.io/authorized-stage': `${project}:${stage.name}` },
          },
          spec: { project: 'default', source, destination: destination(stage.name) },
          status: {
            sync: { status: 'Synced', revision, comparedTo: { source, destination: destination(stage.name) } },
            health: { status: 'Healthy', lastTransitionTime: earlier },
            operationState: {
              operation,
              phase: 'Succeeded',
              message: 'successfully synced (all tasks run)',
              startedAt: earlier,
              finishedAt: earlier,
              syncResult: {
                revision,
                source,
                resources: syncResultResources(stage.name, app, 'Synced', `deployment.apps/${app} created`),
              },
            },
            history: [{ id: 0, revision, deployStartedAt: earlier, deployedAt: earlier, source }],
            reconciledAt: earlier,
            resources: resources(stage.name, app, { status: 'Healthy' }),
            sourceType: 'Directory',
            controllerNamespace: argocdNamespace,
          },
        });
      }
    });
  };

  const produceFreight = (commit: string, extra: { alias?: string; images?: FreightImage[] } = {}): string => {
    if (!/^[0-9a-f]{40}$/iu.test(commit)) throw new Error(`produceFreight: ${commit} is not a full commit SHA`);
    const origin: JsonObject = { kind: 'Warehouse', name: warehouse };
    const commits: JsonValue[] = [{ repoURL: sourceRepoURL, id: commit, branch: 'main' }];
    const images: JsonValue[] = (extra.images ?? []).map((image) => ({
      repoURL: image.repoURL,
      tag: image.tag,
      ...(image.digest === undefined ? {} : { digest: image.digest }),
    }));
    const name = sha1(JSON.stringify({ origin, commits, images }));
    if (server.get('Freight', project, name) !== undefined) return name;
    const taken = new Set(server.list('Freight', project).map((o) => freightSchema.parse(o).alias));
    let alias = extra.alias;
    for (let i = 0; alias === undefined || taken.has(alias); i += 1) {
      const h = sha1(`${name}/${i}`);
      alias = `${ALIAS_ADJECTIVES[parseInt(h.slice(0, 4), 16) % ALIAS_ADJECTIVES.length]!}-${ALIAS_ANIMALS[parseInt(h.slice(4, 8), 16) % ALIAS_ANIMALS.length]!}`;
      if (i > 0) alias += `-${i}`;
    }
    produced.set(name, order++);
    server.put({
      apiVersion: KARGO_API,
      kind: 'Freight',
      metadata: { name, namespace: project, labels: { 'kargo.akuity.io/alias': alias } },
      alias,
      origin,
      commits,
      ...(images.length > 0 ? { images } : {}),
      discoveredAt: now(),
    });
    return name;
  };

  // --- the Promotion job ---

  const modifyStageStatus = (stage: string, mutate: (status: JsonObject) => void): void => {
    server.modify('Stage', project, stage, (o) => mutate(child(o, 'status')));
  };

  const createAutoPromotion = (stage: GitOpsStage, freight: string): void => {
    const stageObject = metadataSchema.parse(server.get('Stage', project, stage.name)?.['metadata']);
    const name = `${stage.name}.${ulidLike(clock(), `${stage.name}/${freight}/${order}`)}.${freight.slice(0, 7)}`;
    server.put({
      apiVersion: KARGO_API,
      kind: 'Promotion',
      metadata: {
        name,
        namespace: project,
        labels: { 'kargo.akuity.io/stage': stage.name },
        ownerReferences: [
          {
            apiVersion: KARGO_API,
            kind: 'Stage',
            name: stage.name,
            uid: stageObject.uid ?? '',
            blockOwnerDeletion: true,
          },
        ],
      },
      spec: { stage: stage.name, freight, steps: promotionSteps(stage) },
    });
  };

  const runPromotion = async (stage: GitOpsStage, name: string): Promise<void> => {
    const raw = server.get('Promotion', project, name);
    if (raw === undefined) return; // deleted while queued
    const promotion = promotionSchema.parse(raw);
    const script = scripts.get(stage.name) ?? {};
    const startedAt = now();
    const steps = promotion.spec.steps;
    const freightName = promotion.spec.freight ?? '';
    const freight = server.get('Freight', project, freightName);
    const writeStatus = (status: JsonObject): void => {
      server.modify('Promotion', project, name, (o) => {
        o['status'] = status;
      });
    };
    if (freight === undefined) {
      const status: JsonObject = {
        phase: 'Errored',
        message: `Freight "${freightName}" not found in namespace "${project}"`,
        startedAt,
        finishedAt: now(),
      };
      writeStatus(status);
      modifyStageStatus(stage.name, (s) => {
        s['lastPromotion'] = { name, finishedAt: now(), status };
      });
      return;
    }
    const ref = freightRef(freight, freightName);
    const collection = collectionOf(ref, freightName);
    const metadata: StepMetadata[] = [];
    const statusAt = (phase: string, currentStep: number, extra: JsonObject = {}): JsonObject => ({
      phase,
      startedAt,
      freight: ref,
      freightCollection: collection,
      currentStep,
      stepExecutionMetadata: metadata.map(stepJson),
      ...extra,
    });
    const finish = (phase: string, currentStep: number, extra: JsonObject): void => {
      const finishedAt = now();
      const status = statusAt(phase, currentStep, { finishedAt, ...extra });
      writeStatus(status);
      modifyStageStatus(stage.name, (s) => {
        delete s['currentPromotion'];
        s['lastPromotion'] = { name, freight: ref, finishedAt, status };
        if (phase === 'Succeeded') {
          s['freightHistory'] = [structuredClone(collection), ...list(s, 'freightHistory')].slice(
            0,
            FREIGHT_HISTORY_LIMIT,
          );
        }
      });
    };

    modifyStageStatus(stage.name, (s) => {
      s['currentPromotion'] = { name, freight: ref };
    });
    const failing = failingStep(script.promotion ?? 'succeed', steps);
    for (let i = 0; i < steps.length; i += 1) {
      const step = steps[i]!;
      const current: StepMetadata = { alias: step.as ?? `step-${i}`, startedAt: now(), status: 'Running' };
      metadata.push(current);
      writeStatus(statusAt('Running', i));
      await pause();
      if (failing !== undefined && failing.index === i) {
        if (failing.status === 'Aborted') {
          // The abort request arrives as an annotation, as `kargo promotion abort` writes it.
          server.modify('Promotion', project, name, (o) => {
            child(child(o, 'metadata'), 'annotations')['kargo.akuity.io/abort'] =
              '{"action":"terminate","actor":"admin"}';
          });
          await pause();
        }
        Object.assign(current, {
          status: failing.status,
          finishedAt: now(),
          message: failing.message(stage.name),
          ...(failing.status === 'Aborted' ? {} : { errorCount: 1 }),
        });
        // Kargo's final phase carries the failed step's message.
        finish(failing.phase, i, { message: failing.message(stage.name) });
        return;
      }
      if (step.uses === 'argocd-update') {
        const outcome = await syncApps(stage, name, freightName, script.app ?? 'healthy');
        if (outcome.kind === 'parked') {
          parked.add(stage.name);
          return;
        }
        if (outcome.kind === 'errored') {
          Object.assign(current, { status: 'Errored', finishedAt: now(), message: outcome.message, errorCount: 1 });
          finish('Errored', i, { message: outcome.message });
          return;
        }
      }
      Object.assign(current, { status: 'Succeeded', finishedAt: now() });
    }
    const commit = gitopsCommit(stage.name, freightName);
    const updates = steps.some((s) => s.uses === 'argocd-update');
    finish('Succeeded', Math.max(0, steps.length - 1), {
      ...(updates
        ? {
            healthChecks: [
              {
                uses: 'argocd-update',
                config: {
                  apps: stage.apps.map((app) => ({
                    name: app,
                    namespace: argocdNamespace,
                    desiredRevisions: [commit],
                  })),
                },
              },
            ],
          }
        : {}),
    });
    const since = now();
    for (const other of freightNewestFirst()) {
      const isThis = other.metadata.name === freightName;
      // Only the Freight that enters the stage and the one that leaves it change.
      if (!isThis && other.status?.currentlyIn?.[stage.name] === undefined) continue;
      server.modify('Freight', project, other.metadata.name, (o) => {
        const status = child(o, 'status');
        const currentlyIn = child(status, 'currentlyIn');
        if (isThis) currentlyIn[stage.name] = { since };
        else Reflect.deleteProperty(currentlyIn, stage.name);
      });
    }
    await pause();
    if (updates) {
      reconcileApps(stage, commit, script.app ?? 'healthy');
      await pause();
    }
    // Without an argocd-update step the Promotion registered no health check: Kargo calls the stage Healthy.
    const health = updates ? stageHealth(stage, commit) : { status: 'Healthy', issues: [] };
    modifyStageStatus(stage.name, (s) => {
      s['health'] = { status: health.status, ...(health.issues.length > 0 ? { issues: health.issues } : {}) };
    });
    if (health.status !== 'Healthy') return; // Kargo verifies only a healthy stage
    await pause();
    if (stage.verification === true) await verify(stage, name, freightName, collection);
    else markVerified(stage.name, freightName);
  };

  const markVerified = (stage: string, freight: string): void => {
    const verifiedAt = now();
    server.modify('Freight', project, freight, (o) => {
      child(child(o, 'status'), 'verifiedIn')[stage] = { verifiedAt };
    });
  };

  // --- Argo CD ---

  const modifyApp = (app: string, mutate: (o: JsonObject, status: JsonObject) => void): void => {
    server.modify('Application', argocdNamespace, app, (o) => mutate(o, child(o, 'status')));
  };

  const syncApps = async (
    stage: GitOpsStage,
    promotion: string,
    freight: string,
    app: AppScript,
  ): Promise<SyncOutcome> => {
    if (app === 'old-revision') return { kind: 'synced' }; // see AppScript: Argo CD never touches the apps
    const commit = gitopsCommit(stage.name, freight);
    const operation: JsonObject = {
      initiatedBy: { username: 'kargo-controller', automated: true },
      info: [
        { name: 'Reason', value: 'Promotion triggered a sync of this Application resource.' },
        { name: PROMOTION_INFO_KEY, value: promotion },
      ],
      sync: { revisions: [] },
    };
    // Kargo's write (dropping operationState is its workaround for argo-cd#20875).
    for (const name of stage.apps) {
      modifyApp(name, (o, status) => {
        child(child(o, 'metadata'), 'annotations')[REFRESH_ANNOTATION] = 'hard';
        o['operation'] = structuredClone(operation);
        delete status['operationState'];
      });
    }
    await pause();
    // Argo CD picks the operation up and starts syncing.
    const startedAt = now();
    for (const name of stage.apps) {
      modifyApp(name, (o, status) => {
        Reflect.deleteProperty(child(child(o, 'metadata'), 'annotations'), REFRESH_ANNOTATION);
        status['operationState'] = {
          operation: structuredClone(operation),
          phase: 'Running',
          message: 'one or more tasks are running',
          startedAt,
        };
        status['sync'] = {
          status: 'OutOfSync',
          revision: commit,
          comparedTo: { source: applicationSource(stage.name, name), destination: destination(stage.name) },
        };
        status['health'] = { status: 'Progressing', lastTransitionTime: startedAt };
        status['resources'] = resources(stage.name, name, { status: 'Progressing' }, 'OutOfSync');
      });
    }
    await pause();
    if (app === 'operation-running') return { kind: 'parked' };

    const finishedAt = now();
    const failed = app === 'sync-failed';
    let failureMessage = '';
    for (const name of stage.apps) {
      const source = applicationSource(stage.name, name);
      const applyMessage = failed
        ? `Deployment.apps "${name}" is invalid: spec.template.spec.containers[0].image: Required value`
        : `deployment.apps/${name} configured`;
      const message = failed
        ? `one or more objects failed to apply, reason: ${applyMessage}`
        : 'successfully synced (all tasks run)';
      if (failed && failureMessage === '')
        failureMessage = `Argo CD Application "${name}" in namespace "${argocdNamespace}" failed with: ${message}`;
      modifyApp(name, (o, status) => {
        delete o['operation'];
        status['operationState'] = {
          operation: structuredClone(operation),
          phase: failed ? 'Failed' : 'Succeeded',
          message,
          startedAt,
          finishedAt,
          syncResult: {
            revision: commit,
            source,
            resources: syncResultResources(stage.name, name, failed ? 'SyncFailed' : 'Synced', applyMessage),
          },
        };
        if (failed) {
          // The old pods keep running: still OutOfSync, and healthy as before the sync.
          status['health'] = { status: 'Healthy', lastTransitionTime: finishedAt };
          status['resources'] = resources(stage.name, name, { status: 'Healthy' }, 'OutOfSync');
          status['reconciledAt'] = finishedAt;
          return;
        }
        status['sync'] = {
          status: 'Synced',
          revision: commit,
          comparedTo: { source, destination: destination(stage.name) },
        };
        status['resources'] = resources(stage.name, name, { status: 'Progressing' });
        const history = list(status, 'history');
        history.push({
          id: history.length,
          revision: commit,
          deployStartedAt: startedAt,
          deployedAt: finishedAt,
          source,
        });
      });
    }
    return failed ? { kind: 'errored', message: failureMessage } : { kind: 'synced' };
  };

  /** Argo CD's health loop after the sync: `reconciledAt` catches up and the final health shows. */
  const reconcileApps = (stage: GitOpsStage, commit: string, app: AppScript): void => {
    if (app === 'old-revision') return;
    const at = now();
    for (const name of stage.apps) {
      modifyApp(name, (_o, status) => {
        status['reconciledAt'] = at;
        switch (app) {
          case 'degraded':
            status['health'] = { status: 'Degraded', lastTransitionTime: at };
            status['resources'] = resources(stage.name, name, {
              status: 'Degraded',
              message: `Deployment "${name}" exceeded its progress deadline`,
            });
            break;
          case 'missing':
            status['health'] = { status: 'Missing', lastTransitionTime: at };
            status['sync'] = { ...child(status, 'sync'), status: 'OutOfSync' };
            status['resources'] = resources(stage.name, name, { status: 'Missing' }, 'OutOfSync');
            break;
          case 'comparison-error':
            status['conditions'] = [
              {
                type: 'ComparisonError',
                message: `Failed to load target state: failed to generate manifest for source 1 of 1: rpc error: code = Unknown desc = failed to list refs: repository not found: ${gitopsRepoURL}`,
                lastTransitionTime: at,
              },
            ];
            status['sync'] = { status: 'Unknown', revision: commit };
            status['health'] = { status: 'Healthy', lastTransitionTime: at };
            status['resources'] = resources(stage.name, name, { status: 'Healthy' });
            break;
          default:
            status['health'] = { status: 'Healthy', lastTransitionTime: at };
            status['resources'] = resources(stage.name, name, { status: 'Healthy' });
        }
      });
    }
  };

  /**
   * The Stage's health as Kargo's Argo CD checker judges it, in its order: health not trusted before
   * a reconcile after the last operation, then error conditions, then an operation in progress or a
   * sync result at another revision, then the app's health. The worst app decides.
   */
  const stageHealth = (stage: GitOpsStage, desired: string): { status: string; issues: string[] } => {
    const rank: Record<string, number> = { Healthy: 0, Progressing: 1, Unknown: 2, Unhealthy: 3 };
    let status = 'Healthy';
    const issues: string[] = [];
    for (const name of stage.apps) {
      const raw = server.get('Application', argocdNamespace, name);
      const judged = ((): { status: string; issue?: string } => {
        if (raw === undefined) return { status: 'Unknown', issue: `Application ${argocdNamespace}/${name} not found` };
        const app = applicationSchema.parse(raw);
        const s = app.status ?? {};
        const finished = s.operationState?.finishedAt;
        if (finished !== undefined && (s.reconciledAt === undefined || s.reconciledAt < finished))
          return {
            status: 'Unknown',
            issue: `Application ${argocdNamespace}/${name} not reconciled since its last operation`,
          };
        const error = (s.conditions ?? []).find((c) => c.type === 'ComparisonError' || c.type === 'InvalidSpecError');
        if (error !== undefined)
          return {
            status: 'Unhealthy',
            issue: `Application ${argocdNamespace}/${name} has condition ${error.type}: ${error.message ?? ''}`,
          };
        if (app.operation !== undefined || finished === undefined)
          return { status: 'Unknown', issue: `Application ${argocdNamespace}/${name} is being synced` };
        if (s.operationState?.syncResult?.revision !== desired)
          return { status: 'Unhealthy', issue: `Application ${argocdNamespace}/${name} is not synced to ${desired}` };
        const health = s.health?.status ?? '';
        if (health === 'Healthy') return { status: 'Healthy' };
        if (health === 'Progressing' || health === '' || health === 'Suspended')
          return { status: 'Progressing', issue: `Application ${argocdNamespace}/${name} is progressing` };
        return { status: 'Unhealthy', issue: `Application ${argocdNamespace}/${name} has health ${health}` };
      })();
      if ((rank[judged.status] ?? 0) > (rank[status] ?? 0)) status = judged.status;
      if (judged.issue !== undefined) issues.push(judged.issue);
    }
    return { status, issues };
  };

  // --- verification ---

  const verify = async (
    stage: GitOpsStage,
    promotion: string,
    freight: string,
    collection: JsonObject,
  ): Promise<void> => {
    const script = scripts.get(stage.name)?.verification ?? 'successful';
    const collectionId = typeof collection['id'] === 'string' ? collection['id'] : '';
    const run = `${stage.name}.${ulidLike(clock(), `${promotion}/verification`)}.${collectionId.slice(0, 7)}`;
    const id = uuidLike(run);
    const startTime = now();
    const freightUid = metadataSchema.parse(server.get('Freight', project, freight)?.['metadata']).uid ?? '';
    server.put({
      apiVersion: ARGO_API,
      kind: 'AnalysisRun',
      metadata: {
        name: run,
        namespace: project,
        labels: { 'kargo.akuity.io/stage': stage.name, 'kargo.akuity.io/freight-collection': collectionId },
        annotations: { 'kargo.akuity.io/promotion': promotion },
        ownerReferences: [
          { apiVersion: KARGO_API, kind: 'Freight', name: freight, uid: freightUid, blockOwnerDeletion: false },
        ],
      },
      spec: {
        metrics: [
          {
            name: ANALYSIS_TEMPLATE,
            provider: {
              job: {
                spec: {
                  template: {
                    spec: {
                      containers: [
                        { name: 'test', image: 'alpine:latest', command: ['sh', '-c', './integration-test'] },
                      ],
                      restartPolicy: 'Never',
                    },
                  },
                  backoffLimit: 1,
                },
              },
            },
          },
        ],
      },
    });
    const setVerification = (entry: JsonObject): void => {
      modifyStageStatus(stage.name, (s) => {
        const stay = list(s, 'freightHistory')[0];
        if (!isObject(stay)) throw new Error(`Stage ${stage.name} has no freightHistory to verify`);
        const history = list(stay, 'verificationHistory');
        const at = history.findIndex((v) => isObject(v) && v['id'] === id);
        if (at === -1) history.unshift(entry);
        else history[at] = entry;
      });
    };
    // Kargo records the run before Argo Rollouts has picked it up: its phase is still empty.
    setVerification({ id, phase: 'Pending', startTime, analysisRun: { name: run, namespace: project, phase: '' } });
    await pause();
    const measurementStart = now();
    server.modify('AnalysisRun', project, run, (o) => {
      o['status'] = {
        phase: 'Running',
        startedAt: measurementStart,
        metricResults: [
          {
            name: ANALYSIS_TEMPLATE,
            phase: 'Running',
            count: 1,
            measurements: [{ phase: 'Running', startedAt: measurementStart }],
          },
        ],
        runSummary: { count: 1 },
        dryRunSummary: {},
      };
    });
    setVerification({
      id,
      phase: 'Running',
      startTime,
      analysisRun: { name: run, namespace: project, phase: 'Running' },
    });
    await pause();

    const finishTime = now();
    const jobMetadata: JsonObject = { 'job-name': `${id}.${ANALYSIS_TEMPLATE}.1`, 'job-namespace': project };
    const final: { phase: string; message: string | null; metric: JsonObject; summary: JsonObject } =
      script === 'failed'
        ? {
            phase: 'Failed',
            message: `Metric "${ANALYSIS_TEMPLATE}" assessed Failed due to failed (1) > failureLimit (0)`,
            metric: {
              name: ANALYSIS_TEMPLATE,
              phase: 'Failed',
              count: 1,
              failed: 1,
              measurements: [
                { phase: 'Failed', startedAt: measurementStart, finishedAt: finishTime, metadata: jobMetadata },
              ],
            },
            summary: { count: 1, failed: 1 },
          }
        : script === 'error'
          ? {
              phase: 'Error',
              message: `Metric "${ANALYSIS_TEMPLATE}" assessed Error due to consecutiveErrors (5) > consecutiveErrorLimit (4): "Error Message: job failed: BackoffLimitExceeded"`,
              metric: {
                name: ANALYSIS_TEMPLATE,
                phase: 'Error',
                count: 5,
                error: 5,
                consecutiveError: 5,
                message: 'job failed: BackoffLimitExceeded',
                measurements: [
                  {
                    phase: 'Error',
                    startedAt: measurementStart,
                    finishedAt: finishTime,
                    message: 'job failed: BackoffLimitExceeded',
                  },
                ],
              },
              summary: { count: 1, error: 1 },
            }
          : {
              phase: 'Successful',
              message: null,
              metric: {
                name: ANALYSIS_TEMPLATE,
                phase: 'Successful',
                count: 1,
                successful: 1,
                consecutiveSuccess: 1,
                measurements: [
                  { phase: 'Successful', startedAt: measurementStart, finishedAt: finishTime, metadata: jobMetadata },
                ],
              },
              summary: { count: 1, successful: 1 },
            };
    server.modify('AnalysisRun', project, run, (o) => {
      o['status'] = {
        phase: final.phase,
        ...(final.message === null ? {} : { message: final.message }),
        startedAt: measurementStart,
        completedAt: finishTime,
        metricResults: [final.metric],
        runSummary: final.summary,
        dryRunSummary: {},
      };
    });
    setVerification({
      id,
      phase: final.phase,
      ...(final.message === null ? {} : { message: final.message }),
      startTime,
      finishTime,
      analysisRun: { name: run, namespace: project, phase: final.phase },
    });
    if (final.phase === 'Successful') markVerified(stage.name, freight);
  };

  // --- the loop ---

  /** One look at the objects; true when it started or queued something. */
  const scan = (): boolean => {
    let acted = false;
    const freight = freightNewestFirst();
    stages.forEach((stage, i) => {
      if (stage.autoPromote === false) return;
      const upstream = stages[i - 1]?.name;
      const candidate = freight.find((f) => upstream === undefined || f.status?.verifiedIn?.[upstream] !== undefined);
      if (candidate === undefined) return;
      const name = candidate.metadata.name;
      if (promotions().some((p) => p.spec.stage === stage.name && p.spec.freight === name)) return;
      createAutoPromotion(stage, name);
      acted = true;
    });
    for (const promotion of promotions()) {
      const name = promotion.metadata.name;
      if (seen.has(name)) continue;
      seen.set(name, order++);
      // A Promotion with a status is someone else's (a test that wrote one): leave it alone.
      if (promotion.status?.phase !== undefined && promotion.status.phase !== '') continue;
      acted = true;
      if (stageNamed(promotion.spec.stage) === undefined) {
        server.modify('Promotion', project, name, (o) => {
          o['status'] = {
            phase: 'Errored',
            message: `Stage "${promotion.spec.stage}" not found in namespace "${project}"`,
          };
        });
        continue;
      }
      server.modify('Promotion', project, name, (o) => {
        o['status'] = { phase: 'Pending' };
      });
      const queue = queues.get(promotion.spec.stage) ?? [];
      queue.push(name);
      queues.set(promotion.spec.stage, queue);
    }
    for (const stage of stages) {
      if (jobs.has(stage.name) || parked.has(stage.name)) continue;
      const next = queues.get(stage.name)?.shift();
      if (next === undefined) continue;
      acted = true;
      const job = runPromotion(stage, next)
        .catch((error: unknown) => {
          if (error instanceof Stopped) return;
          const cause = error instanceof Error ? error : new Error(String(error));
          failure ??= new Error(`gitops controller: promotion ${next} of ${stage.name} failed: ${cause.message}`, {
            cause,
          });
          for (const waiter of waiters.splice(0)) waiter.reject(failure);
        })
        .finally(() => jobs.delete(stage.name));
      jobs.set(stage.name, job);
    }
    return acted;
  };

  const run = async (): Promise<void> => {
    while (!stopping) {
      let acted = false;
      if (failure === undefined) {
        try {
          acted = scan();
        } catch (error) {
          failure = error instanceof Error ? error : new Error(String(error));
          for (const waiter of waiters.splice(0)) waiter.reject(failure);
        }
      }
      scans += 1;
      if (failure === undefined && !acted && jobs.size === 0) {
        for (let i = waiters.length - 1; i >= 0; i -= 1) {
          const waiter = waiters[i]!;
          // Only a scan that began after the caller asked counts: it saw everything done before.
          if (waiter.after <= scans - 1) {
            waiters.splice(i, 1);
            waiter.resolve();
          }
        }
      }
      await sleep(POLL_MS);
    }
  };

  return {
    install,
    produceFreight,
    setScript(stage, script) {
      if (stageNamed(stage) === undefined) throw new Error(`setScript: no stage ${stage}`);
      scripts.set(stage, { ...script });
    },
    start() {
      if (loop !== undefined) throw new Error('the gitops controller is already started');
      stopping = false;
      loop = run();
    },
    async stop() {
      stopping = true;
      await loop;
      await Promise.all([...jobs.values()]);
      loop = undefined;
      for (const waiter of waiters.splice(0)) waiter.reject(new Error('the gitops controller stopped'));
      if (failure !== undefined) throw failure;
    },
    settled() {
      if (failure !== undefined) return Promise.reject(failure);
      if (loop === undefined || stopping)
        return Promise.reject(new Error('settled() needs a started gitops controller'));
      return new Promise((resolve, reject) => waiters.push({ after: scans, resolve, reject }));
    },
    promotionsFor(stage) {
      return server
        .list('Promotion', project)
        .map((object) => ({ object, promotion: promotionSchema.parse(object) }))
        .filter(({ promotion }) => promotion.spec.stage === stage)
        .sort((a, b) => byOrderSeen(a.promotion, b.promotion))
        .map(({ object }) => object);
    },
    gitopsCommit,
    initialRevision,
  };
}

/** Which step a failing script fails, with what. */
function failingStep(
  script: PromotionScript,
  steps: readonly { uses?: string | undefined }[],
): { index: number; status: string; phase: string; message: (stage: string) => string } | undefined {
  const indexOf = (uses: string): number =>
    Math.max(
      0,
      steps.findIndex((s) => s.uses === uses),
    );
  switch (script) {
    case 'succeed':
      return undefined;
    case 'fail':
      return {
        index: indexOf('git-push'),
        status: 'Failed',
        phase: 'Failed',
        message: (stage) =>
          `error pushing commits to remote: remote rejected the push to stage/${stage}: protected branch hook declined`,
      };
    case 'error':
      return {
        index: indexOf('git-clone'),
        status: 'Errored',
        phase: 'Errored',
        message: () => 'an unrecoverable error occurred: error cloning the repository: authentication required',
      };
    case 'abort':
      return {
        index: Math.min(1, Math.max(0, steps.length - 1)),
        status: 'Aborted',
        phase: 'Aborted',
        message: () => 'Promotion aborted by admin',
      };
  }
}

/**
 * The controller for the `acme/shop` world the deploy tests and benchmarks share: Kargo project and
 * Warehouse `shop`, Freight from github.com/acme/shop, apps tracking github.com/acme/shop-gitops,
 * and by default the stages `dev` then `staging` (with verification), each with its script if given.
 */
export function createShopGitOps(
  server: KubernetesServer,
  options: { scripts?: Readonly<Record<string, StageScript>>; stages?: GitOpsStage[]; stepDelayMs?: number } = {},
): GitOpsController {
  const scripted = (stage: GitOpsStage): GitOpsStage => {
    const script = options.scripts?.[stage.name];
    return script === undefined ? stage : { ...stage, script };
  };
  const stages = options.stages ?? [
    { name: 'dev', apps: ['shop-dev'] },
    { name: 'staging', apps: ['shop-staging'], verification: true },
  ];
  return createGitOpsController({
    server,
    project: 'shop',
    warehouse: 'shop',
    sourceRepoURL: 'https://github.com/acme/shop',
    gitopsRepoURL: 'https://github.com/acme/shop-gitops',
    stages: stages.map(scripted),
    ...(options.stepDelayMs === undefined ? {} : { stepDelayMs: options.stepDelayMs }),
  });
}
