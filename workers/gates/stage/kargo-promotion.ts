import { z } from 'zod';

/**
 * A Kargo Promotion's phase as a gate state (SPEC §5: `Pending`, `Running` → terminal `Succeeded`,
 * `Failed`, `Errored`, `Aborted`), with the step that failed and its message where the CRD records
 * them (`status.currentStep`, `status.stepExecutionMetadata[]`, `status.message`). Pure: the
 * caller picks the Promotion of this Freight to this stage; this only reads it.
 *
 * The Promotion's `spec.steps` are already inflated (the CRD's CEL rule forbids `task` there), so
 * `stepExecutionMetadata[i]` and `currentStep` index `spec.steps[i]`.
 *
 * An empty or unknown phase is `pending`, not a failure: Kargo has not picked the Promotion up, or a
 * newer Kargo added a phase; either way nothing is reported as passed that Kargo does not call done.
 */

export const kargoPromotionSchema = z.object({
  metadata: z.object({ name: z.string().optional(), namespace: z.string().optional() }).optional(),
  spec: z
    .object({
      stage: z.string().optional(),
      freight: z.string().optional(),
      steps: z.array(z.object({ uses: z.string().optional(), as: z.string().optional() })).nullish(),
    })
    .optional(),
  status: z
    .object({
      phase: z.string().optional(),
      message: z.string().optional(),
      currentStep: z.number().int().optional(),
      startedAt: z.string().optional(),
      finishedAt: z.string().optional(),
      stepExecutionMetadata: z
        .array(
          z.object({
            alias: z.string().optional(),
            status: z.string().optional(),
            message: z.string().optional(),
            errorCount: z.number().int().optional(),
            continueOnError: z.boolean().optional(),
          }),
        )
        .nullish(),
    })
    .optional(),
});

export type KargoPromotion = z.infer<typeof kargoPromotionSchema>;

export function parseKargoPromotion(raw: unknown): KargoPromotion {
  return kargoPromotionSchema.parse(raw);
}

export interface PromotionStepInfo {
  /** Zero-based index into `spec.steps`. */
  index: number;
  /** The step's alias (`as`, or Kargo's `step-N`), else its `uses`. */
  name: string;
  uses: string | null;
  status: string | null;
  message: string | null;
  errorCount: number;
  total: number;
}

export type PromotionFailurePhase = 'Failed' | 'Errored' | 'Aborted';

export type PromotionOutcome =
  | { state: 'pending'; promotion: string; phase: string; summary: string; step: PromotionStepInfo | null }
  | { state: 'passed'; promotion: string; phase: 'Succeeded'; summary: string }
  | {
      state: 'failed';
      promotion: string;
      phase: PromotionFailurePhase;
      summary: string;
      message: string | null;
      failedStep: PromotionStepInfo | null;
    };

const FAILED_PHASES: ReadonlySet<string> = new Set<PromotionFailurePhase>(['Failed', 'Errored', 'Aborted']);
const FAILED_STEP_STATUSES: ReadonlySet<string> = new Set(['Failed', 'Errored', 'Aborted']);

function isFailurePhase(phase: string): phase is PromotionFailurePhase {
  return FAILED_PHASES.has(phase);
}

export function evaluatePromotion(promotion: KargoPromotion): PromotionOutcome {
  const name = promotion.metadata?.name ?? '(unnamed promotion)';
  const status = promotion.status ?? {};
  const phase = status.phase ?? '';
  if (phase === 'Succeeded') {
    return { state: 'passed', promotion: name, phase, summary: `Promotion ${name} Succeeded` };
  }
  if (isFailurePhase(phase)) {
    const failedStep = failedStepOf(promotion);
    const where = failedStep ? ` at step ${failedStep.index + 1}/${failedStep.total} (${failedStep.name})` : '';
    const message = status.message ?? failedStep?.message ?? null;
    return {
      state: 'failed',
      promotion: name,
      phase,
      summary: `Promotion ${name} ${phase}${where}${message ? `: ${message}` : ''}`,
      message: status.message ?? null,
      failedStep,
    };
  }
  const step = status.currentStep !== undefined ? stepInfo(promotion, status.currentStep) : null;
  const where = step && phase === 'Running' ? `, step ${step.index + 1}/${step.total} (${step.name})` : '';
  return {
    state: 'pending',
    promotion: name,
    phase,
    summary: `Promotion ${name} ${phase || 'not started'}${where}`,
    step,
  };
}

/**
 * The step that ended the Promotion: the current step when its metadata says it failed, else the last
 * failed step that did not continue on error, else the current step.
 */
function failedStepOf(promotion: KargoPromotion): PromotionStepInfo | null {
  const metadata = promotion.status?.stepExecutionMetadata ?? [];
  const current = promotion.status?.currentStep;
  if (current !== undefined && FAILED_STEP_STATUSES.has(metadata[current]?.status ?? ''))
    return stepInfo(promotion, current);
  for (let i = metadata.length - 1; i >= 0; i -= 1) {
    const entry = metadata[i];
    if (entry && FAILED_STEP_STATUSES.has(entry.status ?? '') && !entry.continueOnError) return stepInfo(promotion, i);
  }
  return current !== undefined ? stepInfo(promotion, current) : null;
}

function stepInfo(promotion: KargoPromotion, index: number): PromotionStepInfo | null {
  const steps = promotion.spec?.steps ?? [];
  const metadata = promotion.status?.stepExecutionMetadata ?? [];
  const spec = steps[index];
  const meta = metadata[index];
  if (!spec && !meta) return null;
  const uses = spec?.uses ?? null;
  return {
    index,
    name: meta?.alias ?? spec?.as ?? uses ?? `step ${index + 1}`,
    uses,
    status: meta?.status ?? null,
    message: meta?.message ?? null,
    errorCount: meta?.errorCount ?? 0,
    total: Math.max(steps.length, metadata.length, index + 1),
  };
}
