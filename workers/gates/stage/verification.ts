import { z } from 'zod';

/**
 * Verification of one Freight in one Stage (SPEC §1 gate 6, §5), from the Stage's
 * `status.freightHistory[].verificationHistory[]` and the Freight's `status.verifiedIn`, plus the
 * AnalysisRun summary a red gate's reply needs. Pure: the caller hands the objects its informers saw.
 *
 * Decisions:
 *
 * - Kargo keeps both stacks newest first: the first `freightHistory` entry holding this Freight is
 *   its latest stay in the stage, and that entry's first verification is the latest run. Older runs
 *   (a Failed one before a re-verify) do not decide.
 * - With verification configured (`spec.verification`), only `Successful` passes; `Failed`/`Error`
 *   fail; `Running`, `Pending`, `Inconclusive`, `Aborted` and anything unknown wait (an aborted or
 *   inconclusive run is for a person to re-run or judge in Kargo, not a verdict).
 * - Without it, Kargo marks the Freight verified as soon as it is in the stage: `verifiedIn[stage]`
 *   passes, and when the caller gives the promotion's finish time, a `verifiedAt` older than it is a
 *   previous stay's verification and does not.
 */

const analysisRunRef = z.object({ name: z.string(), namespace: z.string().optional(), phase: z.string().optional() });

const verificationInfo = z.object({
  id: z.string().optional(),
  phase: z.string().optional(),
  message: z.string().optional(),
  analysisRun: analysisRunRef.nullish(),
  startTime: z.string().optional(),
  finishTime: z.string().optional(),
});

export const kargoStageSchema = z.object({
  metadata: z.object({ name: z.string().optional(), namespace: z.string().optional() }).optional(),
  // Only its presence matters: it says whether the stage verifies at all.
  spec: z.object({ verification: z.unknown().optional() }).optional(),
  status: z
    .object({
      freightHistory: z
        .array(
          z.object({
            id: z.string().optional(),
            items: z.record(z.string(), z.object({ name: z.string() })).nullish(),
            verificationHistory: z.array(verificationInfo).nullish(),
          }),
        )
        .nullish(),
    })
    .optional(),
});

export type KargoStage = z.infer<typeof kargoStageSchema>;

/** The Freight's status as the verification reads it (`kargo get freight -o jsonpath={.status}`). */
export const kargoFreightStatusSchema = z.object({
  verifiedIn: z.record(z.string(), z.object({ verifiedAt: z.string().optional() }).nullable()).nullish(),
});

export type KargoFreightStatus = z.infer<typeof kargoFreightStatusSchema>;

export interface VerificationFailure {
  phase: string;
  message: string | null;
  analysisRun: { name: string; namespace: string | null } | null;
}

export type VerificationOutcome =
  | { state: 'passed'; summary: string; analysisRun: { name: string; namespace: string | null } | null }
  | { state: 'pending'; summary: string; phase: string | null }
  | ({ state: 'failed'; summary: string } & VerificationFailure);

const FAILED_PHASES: ReadonlySet<string> = new Set(['Failed', 'Error']);

export function evaluateVerification(input: {
  stage: KargoStage;
  stageName: string;
  freightName: string;
  freightStatus: KargoFreightStatus | undefined;
  /** When the Promotion that brought this Freight in finished; omit when unknown. */
  promotedAt?: string;
}): VerificationOutcome {
  const { stage, stageName, freightName } = input;
  const label = `Freight ${freightName} in ${stageName}`;

  if (stage.spec?.verification == null) {
    const verified = input.freightStatus?.verifiedIn?.[stageName];
    if (verified === undefined) return { state: 'pending', summary: `${label}: not marked verified yet`, phase: null };
    // After a known promotion, only a verification that says when, and not before it, counts.
    if (input.promotedAt && !verified?.verifiedAt) return { state: 'pending', summary: `${label}: marked verified without a time; waiting for Kargo`, phase: null };
    if (input.promotedAt && verified?.verifiedAt && Date.parse(verified.verifiedAt) < Date.parse(input.promotedAt)) {
      return { state: 'pending', summary: `${label}: verified before this promotion; waiting for Kargo`, phase: null };
    }
    return {
      state: 'passed',
      summary: `${label}: no verification configured; Kargo marked it verified`,
      analysisRun: null,
    };
  }

  const stay = (stage.status?.freightHistory ?? []).find((entry) =>
    Object.values(entry.items ?? {}).some((item) => item.name === freightName),
  );
  if (!stay) return { state: 'pending', summary: `${label}: not in the stage yet`, phase: null };
  const latest = stay.verificationHistory?.[0];
  if (!latest) return { state: 'pending', summary: `${label}: verification not started`, phase: null };

  // The same Freight may have been in the stage before: a verification that started before this
  // promotion finished is that earlier stay's (Kargo starts a new one after the promotion).
  if (input.promotedAt && latest.startTime && Date.parse(latest.startTime) < Date.parse(input.promotedAt))
    return { state: 'pending', summary: `${label}: the latest verification is from before this promotion`, phase: null };
  const phase = latest.phase ?? '';
  const analysisRun = latest.analysisRun
    ? { name: latest.analysisRun.name, namespace: latest.analysisRun.namespace ?? null }
    : null;
  if (phase === 'Successful') return { state: 'passed', summary: `${label}: verification Successful`, analysisRun };
  if (FAILED_PHASES.has(phase)) {
    const message = latest.message ?? null;
    const run = analysisRun ? ` (AnalysisRun ${analysisRun.name})` : '';
    return {
      state: 'failed',
      summary: `${label}: verification ${phase}${run}${message ? `: ${message}` : ''}`,
      phase,
      message,
      analysisRun,
    };
  }
  return { state: 'pending', summary: `${label}: verification ${phase || 'pending'}`, phase: phase || null };
}

/** An Argo Rollouts AnalysisRun (`argoproj.io/v1alpha1`), as far as the red-gate reply reads it. */
export const analysisRunSchema = z.object({
  metadata: z.object({ name: z.string().optional(), namespace: z.string().optional() }).optional(),
  status: z
    .object({
      phase: z.string().optional(),
      message: z.string().optional(),
      metricResults: z
        .array(
          z.object({
            name: z.string(),
            phase: z.string().optional(),
            message: z.string().optional(),
            count: z.number().optional(),
            successful: z.number().optional(),
            failed: z.number().optional(),
            inconclusive: z.number().optional(),
            error: z.number().optional(),
            measurements: z
              .array(
                z.object({
                  phase: z.string().optional(),
                  value: z.string().optional(),
                  message: z.string().optional(),
                }),
              )
              .nullish(),
          }),
        )
        .nullish(),
    })
    .optional(),
});

export type AnalysisRun = z.infer<typeof analysisRunSchema>;

export interface MetricSummary {
  name: string;
  phase: string;
  message: string | null;
  /** The last measurement's value, when the provider recorded one (a job provider records none). */
  lastValue: string | null;
  lastMessage: string | null;
  counts: { count: number; successful: number; failed: number; inconclusive: number; error: number };
}

export interface AnalysisSummary {
  name: string;
  phase: string;
  message: string | null;
  metrics: MetricSummary[];
}

export function summariseAnalysisRun(run: AnalysisRun): AnalysisSummary {
  return {
    name: run.metadata?.name ?? '(unnamed analysis run)',
    phase: run.status?.phase ?? '',
    message: run.status?.message ?? null,
    metrics: (run.status?.metricResults ?? []).map((m) => {
      const last = m.measurements?.at(-1);
      return {
        name: m.name,
        phase: m.phase ?? '',
        message: m.message ?? null,
        lastValue: last?.value ?? null,
        lastMessage: last?.message ?? null,
        counts: {
          count: m.count ?? 0,
          successful: m.successful ?? 0,
          failed: m.failed ?? 0,
          inconclusive: m.inconclusive ?? 0,
          error: m.error ?? 0,
        },
      };
    }),
  };
}
