import { z } from 'zod';

/**
 * SPEC §5's Argo CD rule: is one Application healthy at the promoted revision? Pure: the caller
 * hands the object an informer saw and the revisions the promoted Freight stands for; this only
 * decides. The schema names only the fields the rule reads (zod strips the rest), and every field is
 * optional because the controller writes the whole object without a status subresource (CRD
 * `subresources: {}`), so any of them may be missing on a young or broken Application.
 *
 * Judgement calls the SPEC left open:
 *
 * - Every unmet condition is reported, not only the first, so the card can say everything that is
 *   still missing ("operation running; OutOfSync; health Progressing").
 * - A last operation `Failed`/`Error` fails the gate only when it was an operation for the promoted
 *   revision (or it recorded none): a failed sync of an older revision, left in `operationState` until
 *   the next sync starts, is the previous deploy's failure, not this one's. Argo CD's phase is spelled
 *   `Error`; `Errored` is accepted too, since a red gate must not turn into an endless wait.
 * - `Degraded`/`Missing` fail only when no operation is pending or running, every source is at its
 *   desired revision and the app has been reconciled since the last operation finished: before that,
 *   the health is about what ran before the sync.
 * - Sources are paired with desired revisions by repository (and chart name for chart sources). An
 *   Application none of whose sources has a desired revision fails at once: otherwise the rule would
 *   pass vacuously and an app at the old revision would count as deployed.
 */

const REFRESH_ANNOTATION = 'argocd.argoproj.io/refresh';

const sourceSchema = z.object({
  repoURL: z.string().optional(),
  chart: z.string().optional(),
  targetRevision: z.string().optional(),
});

const revisionsSchema = {
  revision: z.string().optional(),
  revisions: z.array(z.string()).nullish(),
};

export const argoApplicationSchema = z.object({
  metadata: z
    .object({
      name: z.string().optional(),
      namespace: z.string().optional(),
      annotations: z.record(z.string(), z.string()).nullish(),
    })
    .optional(),
  // Only its presence matters: Argo CD sets it when an operation is requested and clears it when the
  // operation finishes.
  operation: z.unknown().optional(),
  spec: z
    .object({
      source: sourceSchema.nullish(),
      sources: z.array(sourceSchema).nullish(),
      // Where the application deploys: the namespace the agent's diagnosis may read (SPEC §4).
      destination: z.object({ namespace: z.string().optional() }).nullish(),
    })
    .optional(),
  status: z
    .object({
      conditions: z.array(z.object({ type: z.string(), message: z.string().optional() })).nullish(),
      health: z.object({ status: z.string().optional(), message: z.string().optional() }).optional(),
      sync: z.object({ status: z.string().optional(), ...revisionsSchema }).optional(),
      reconciledAt: z.string().optional(),
      operationState: z
        .object({
          phase: z.string().optional(),
          message: z.string().optional(),
          startedAt: z.string().optional(),
          finishedAt: z.string().optional(),
          operation: z.object({ sync: z.object(revisionsSchema).optional() }).optional(),
          syncResult: z
            .object({
              ...revisionsSchema,
              resources: z
                .array(
                  z.object({
                    kind: z.string().optional(),
                    namespace: z.string().optional(),
                    name: z.string().optional(),
                    status: z.string().optional(),
                    hookPhase: z.string().optional(),
                    message: z.string().optional(),
                  }),
                )
                .nullish(),
            })
            .optional(),
        })
        .optional(),
      resources: z
        .array(
          z.object({
            kind: z.string().optional(),
            namespace: z.string().optional(),
            name: z.string().optional(),
            health: z.object({ status: z.string().optional(), message: z.string().optional() }).optional(),
          }),
        )
        .nullish(),
    })
    .optional(),
});

export type ArgoApplication = z.infer<typeof argoApplicationSchema>;

/** The namespace `raw` (an Application from the cache) deploys to, when it is readable and says. */
export function destinationNamespaceOf(raw: unknown): string | undefined {
  const parsed = argoApplicationSchema.safeParse(raw);
  const namespace = parsed.success ? parsed.data.spec?.destination?.namespace : undefined;
  return namespace === undefined || namespace === '' ? undefined : namespace;
}

/** Parses what the informer handed over; throws a `ZodError` on a shape the rule cannot read. */
export function parseArgoApplication(raw: unknown): ArgoApplication {
  return argoApplicationSchema.parse(raw);
}

/**
 * A revision the promoted Freight stands for: a git commit for the source in `repoURL`, or, with
 * `chart`, the version of that Helm chart (Argo CD records a chart source's version as its revision).
 */
export interface DesiredRevision {
  repoURL: string;
  revision: string;
  chart?: string;
}

export type ProgressCode =
  | 'operation-requested'
  | 'refresh-requested'
  | 'no-operation'
  | 'operation-running'
  | 'operation-not-succeeded'
  | 'not-reconciled'
  | 'out-of-sync'
  | 'condition-error'
  | 'revision-behind'
  | 'health-not-ready';

export interface ProgressReason {
  code: ProgressCode;
  message: string;
}

export interface UnhealthyResource {
  kind: string;
  namespace: string | null;
  name: string;
  health: string;
  message: string | null;
}

export interface FailedSyncResource {
  kind: string;
  namespace: string | null;
  name: string;
  status: string;
  message: string | null;
}

export interface AppConditionInfo {
  type: string;
  message: string;
}

export type ArgoFailureCode = 'operation-failed' | 'degraded' | 'missing' | 'no-desired-source';

export type ArgoHealthOutcome =
  | { state: 'healthy'; app: string; summary: string }
  | { state: 'progressing'; app: string; summary: string; reasons: ProgressReason[] }
  | {
      state: 'failed';
      app: string;
      code: ArgoFailureCode;
      summary: string;
      /** The last operation's phase and message, when one is recorded. */
      operation: { phase: string; message: string | null } | null;
      /** From `status.resources[]`: every resource whose health is known and not `Healthy`, Degraded/Missing first. */
      unhealthyResources: UnhealthyResource[];
      /** From the last operation's sync result: resources that failed to apply or whose hook failed. */
      failedSyncResources: FailedSyncResource[];
      conditions: AppConditionInfo[];
    };

const ERROR_CONDITIONS: ReadonlySet<string> = new Set(['ComparisonError', 'InvalidSpecError']);
const FAILED_OPERATION_PHASES: ReadonlySet<string> = new Set(['Failed', 'Error', 'Errored']);
const RUNNING_OPERATION_PHASES: ReadonlySet<string> = new Set(['Running', 'Terminating']);
const FAILED_HEALTH: ReadonlySet<string> = new Set(['Degraded', 'Missing']);
const SHA = /^[0-9a-f]{40}$/i;

export function evaluateArgoHealth(input: {
  application: ArgoApplication;
  desired: readonly DesiredRevision[];
}): ArgoHealthOutcome {
  const { application, desired } = input;
  const app = appName(application);
  const status = application.status ?? {};
  const opState = status.operationState;
  const opPhase = opState?.phase ?? '';
  const health = status.health?.status ?? '';

  const failure = (code: ArgoFailureCode, summary: string): ArgoHealthOutcome => ({
    state: 'failed',
    app,
    code,
    summary,
    operation: opState?.phase ? { phase: opState.phase, message: opState.message ?? null } : null,
    unhealthyResources: unhealthyResources(application),
    failedSyncResources: failedSyncResources(application),
    conditions: (status.conditions ?? []).map((c) => ({ type: c.type, message: c.message ?? '' })),
  });

  const sources = checkSources(application, desired);
  if (sources.checked === 0) {
    return failure(
      'no-desired-source',
      `${app}: none of its sources is one the promoted Freight names (${describeDesired(desired)}), so its revision cannot be checked`,
    );
  }

  const requested = application.operation != null;
  const refresh = application.metadata?.annotations?.[REFRESH_ANNOTATION];
  const running = RUNNING_OPERATION_PHASES.has(opPhase);
  const idle = !requested && refresh === undefined && !running;
  const reconciled = reconciledSinceOperation(status.reconciledAt, opState?.finishedAt);

  if (idle && FAILED_OPERATION_PHASES.has(opPhase) && operationTargets(application, desired) !== 'other') {
    return failure(
      'operation-failed',
      `${app}: the last sync ${opPhase === 'Failed' ? 'failed' : 'errored'}${opState?.message ? `: ${opState.message}` : ''}`,
    );
  }
  if (idle && opPhase === 'Succeeded' && reconciled && sources.behind.length === 0 && FAILED_HEALTH.has(health)) {
    const message = status.health?.message;
    return failure(
      health === 'Missing' ? 'missing' : 'degraded',
      `${app} is ${health} at the promoted revision${message ? `: ${message}` : ''}`,
    );
  }

  const reasons: ProgressReason[] = [];
  if (requested) reasons.push({ code: 'operation-requested', message: 'a sync operation is requested' });
  if (refresh !== undefined)
    reasons.push({ code: 'refresh-requested', message: `a ${refresh || 'normal'} refresh is waiting` });
  if (!opState?.phase) reasons.push({ code: 'no-operation', message: 'no sync operation is recorded yet' });
  else if (running) reasons.push({ code: 'operation-running', message: `the sync operation is ${opPhase}` });
  else if (opPhase !== 'Succeeded')
    reasons.push({ code: 'operation-not-succeeded', message: `the last sync operation is ${opPhase}` });
  if (opState?.phase && !running && !reconciled)
    reasons.push({ code: 'not-reconciled', message: 'not reconciled since the last sync finished' });
  const syncStatus = status.sync?.status ?? '';
  if (syncStatus !== 'Synced')
    reasons.push({ code: 'out-of-sync', message: syncStatus ? `sync status is ${syncStatus}` : 'sync status unknown' });
  for (const condition of status.conditions ?? []) {
    if (ERROR_CONDITIONS.has(condition.type))
      reasons.push({ code: 'condition-error', message: `${condition.type}: ${condition.message ?? ''}`.trim() });
  }
  for (const behind of sources.behind) reasons.push({ code: 'revision-behind', message: behind });
  if (health !== 'Healthy')
    reasons.push({ code: 'health-not-ready', message: health ? `health is ${health}` : 'health unknown' });

  if (reasons.length === 0)
    return { state: 'healthy', app, summary: `${app} is Synced and Healthy at ${describeDesired(desired)}` };
  return { state: 'progressing', app, summary: `${app}: ${reasons.map((r) => r.message).join('; ')}`, reasons };
}

function appName(application: ArgoApplication): string {
  const name = application.metadata?.name ?? '(unnamed application)';
  return application.metadata?.namespace ? `${application.metadata.namespace}/${name}` : name;
}

type Source = z.infer<typeof sourceSchema>;

/** The application's sources in `status.sync.revisions` order: `spec.sources` when set, else `spec.source`. */
function appSources(application: ArgoApplication): { sources: Source[]; multi: boolean } {
  const many = application.spec?.sources ?? [];
  if (many.length > 0) return { sources: many, multi: true };
  const one = application.spec?.source;
  return { sources: one ? [one] : [], multi: false };
}

/** Counts the sources that have a desired revision, and describes each one that is not at it. */
function checkSources(
  application: ArgoApplication,
  desired: readonly DesiredRevision[],
): { checked: number; behind: string[] } {
  const { sources, multi } = appSources(application);
  const sync = application.status?.sync;
  let checked = 0;
  const behind: string[] = [];
  sources.forEach((source, i) => {
    const want = desiredFor(source, desired);
    if (!want) return;
    checked += 1;
    const actual = multi ? sync?.revisions?.[i] : sync?.revision;
    if (actual !== undefined && sameRevision(actual, want.revision)) return;
    const label = source.chart ? `chart ${source.chart}` : (source.repoURL ?? `source ${i + 1}`);
    behind.push(
      `${label} is at ${actual ? shortRevision(actual) : 'no revision'}, not ${shortRevision(want.revision)}`,
    );
  });
  return { checked, behind };
}

function desiredFor(source: Source, desired: readonly DesiredRevision[]): DesiredRevision | undefined {
  if (!source.repoURL) return undefined;
  const repo = normaliseRepo(source.repoURL);
  if (source.chart) {
    // Kargo names an OCI chart by its full reference (`oci://host/path/chart`), Argo CD by repository plus chart.
    const chartRepo = `${repo}/${source.chart.toLowerCase()}`;
    return desired.find((d) => d.chart === source.chart && [repo, chartRepo].includes(normaliseRepo(d.repoURL)));
  }
  return desired.find((d) => d.chart === undefined && normaliseRepo(d.repoURL) === repo);
}

/** Repository URLs compare without scheme noise, case, a trailing slash or `.git`. */
export function normaliseRepo(url: string): string {
  return url
    .trim()
    .toLowerCase()
    .replace(/^oci:\/\//, '')
    .replace(/\/+$/, '')
    .replace(/\.git$/, '');
}

/** Commits compare as full 40-hex SHAs, case-insensitively; anything else (a chart version) exactly. */
function sameRevision(actual: string, want: string): boolean {
  if (SHA.test(actual) && SHA.test(want)) return actual.toLowerCase() === want.toLowerCase();
  return actual === want;
}

function shortRevision(revision: string): string {
  return SHA.test(revision) ? revision.slice(0, 12) : revision;
}

function describeDesired(desired: readonly DesiredRevision[]): string {
  if (desired.length === 0) return 'no revision';
  return desired.map((d) => (d.chart ? `${d.chart} ${d.revision}` : shortRevision(d.revision))).join(', ');
}

/**
 * Whether the last operation was for the promoted revisions: `desired` when every revision it
 * recorded (sync result first, else the requested one) is one of them, `other` when one is not,
 * `unknown` when it recorded none.
 */
function operationTargets(
  application: ArgoApplication,
  desired: readonly DesiredRevision[],
): 'desired' | 'other' | 'unknown' {
  const op = application.status?.operationState;
  const recorded = [op?.syncResult, op?.operation?.sync]
    .map((r) => (r?.revisions && r.revisions.length > 0 ? r.revisions : r?.revision ? [r.revision] : []))
    .find((list) => list.length > 0);
  if (!recorded) return 'unknown';
  const wanted = desired.map((d) => d.revision);
  return recorded.every((rev) => wanted.some((w) => sameRevision(rev, w))) ? 'desired' : 'other';
}

/** `reconciledAt` not older than the operation's `finishedAt`; unknown times count as not reconciled. */
function reconciledSinceOperation(reconciledAt: string | undefined, finishedAt: string | undefined): boolean {
  if (!reconciledAt || !finishedAt) return false;
  const r = Date.parse(reconciledAt);
  const f = Date.parse(finishedAt);
  return Number.isFinite(r) && Number.isFinite(f) && r >= f;
}

const HEALTH_ORDER: Readonly<Record<string, number>> = { Degraded: 0, Missing: 1 };

function unhealthyResources(application: ArgoApplication): UnhealthyResource[] {
  return (application.status?.resources ?? [])
    .filter((r) => r.health?.status && r.health.status !== 'Healthy')
    .map((r) => ({
      kind: r.kind ?? '',
      namespace: r.namespace ?? null,
      name: r.name ?? '',
      health: r.health?.status ?? '',
      message: r.health?.message ?? null,
    }))
    .sort((a, b) => (HEALTH_ORDER[a.health] ?? 2) - (HEALTH_ORDER[b.health] ?? 2));
}

function failedSyncResources(application: ArgoApplication): FailedSyncResource[] {
  return (application.status?.operationState?.syncResult?.resources ?? [])
    .filter((r) => r.status === 'SyncFailed' || r.hookPhase === 'Failed' || r.hookPhase === 'Error')
    .map((r) => ({
      kind: r.kind ?? '',
      namespace: r.namespace ?? null,
      name: r.name ?? '',
      status: r.status === 'SyncFailed' ? r.status : `hook ${r.hookPhase ?? ''}`.trim(),
      message: r.message ?? null,
    }));
}
