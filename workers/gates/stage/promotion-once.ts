import { z } from 'zod';
import { RefusedError } from '../../../src/errors.js';
import { KubernetesRequestError, type KubernetesPort } from '../../../src/ports/kubernetes.js';
import type { Claims } from '../../../src/store/claims.js';

/**
 * Exactly one Promotion per run and stage, whatever happens (SPEC §6, §10): a retry after a crash
 * between creating and recording, a redelivered job, two looks in a row before the informer saw the
 * first create. The Promotion is found by deterministic labels (the run and the stage) with a live
 * LIST before it is created, and created with `generateName` (the server picks the name, so the bot
 * never relies on one it chose). The production approval (issue 10) uses the same path.
 */

export const RUN_LABEL = 'shipgate.io/run';

/** Another worker holds the claim on this Promotion's look-then-create: look again later. */
export class PromotionBusyError extends Error {
  override name = 'PromotionBusyError';
}

/**
 * Kargo refused the Promotion because the Freight is not available to the Stage yet (upstream
 * verification, an approval or a soak time still outstanding): Kargo decides when, so the gate waits.
 */
export class PromotionNotYetAllowedError extends Error {
  override name = 'PromotionNotYetAllowedError';
}
export const STAGE_LABEL = 'shipgate.io/stage';

const labelledPromotion = z.object({
  metadata: z.object({ name: z.string(), creationTimestamp: z.string().optional() }),
  spec: z.object({ stage: z.string(), freight: z.string().optional() }),
});

/** The part of the Stage a Promotion is built from: Kargo's webhook re-populates the steps from it anyway. */
const stageTemplateSchema = z.object({
  spec: z.object({
    promotionTemplate: z
      .object({
        spec: z
          .object({ steps: z.array(z.record(z.string(), z.unknown())).nullish(), vars: z.array(z.record(z.string(), z.unknown())).nullish() })
          .optional(),
      })
      .nullish(),
    vars: z.array(z.record(z.string(), z.unknown())).nullish(),
  }),
});

export interface PromotionTarget {
  namespace: string;
  /** Kargo's Stage name. */
  kargoStage: string;
  freight: string;
  runId: string;
  /** The policy's stage name (the label's value). */
  stage: string;
  /** The Stage object (from the cache): its promotion template gives the steps. */
  stageObject: unknown;
  annotations: Record<string, string>;
}

/** The run's Promotion of `freight` into the stage: found, or created once. */
/** How long one look-then-create may hold the claim; far longer than a LIST and a POST take. */
const CLAIM_MS = 60_000;

export async function ensurePromotion(
  kubernetes: Pick<KubernetesPort, 'findPromotions' | 'createPromotion'>,
  claims: Claims,
  target: PromotionTarget,
): Promise<{ name: string; created: boolean }> {
  // Two workers holding the same run's job at once (a lapsed lock) must not both look and create.
  return claims.withClaim(
    `promotion:${target.runId}:${target.stage}:${target.freight}`,
    CLAIM_MS,
    () => findOrCreate(kubernetes, target),
    () => {
      throw new PromotionBusyError(`another worker is creating the Promotion of Freight ${target.freight} into ${target.kargoStage}`);
    },
  );
}

async function findOrCreate(
  kubernetes: Pick<KubernetesPort, 'findPromotions' | 'createPromotion'>,
  target: PromotionTarget,
): Promise<{ name: string; created: boolean }> {
  const labels = { [RUN_LABEL]: target.runId, [STAGE_LABEL]: target.stage };
  const existing = (await kubernetes.findPromotions(target.namespace, labels))
    .map((raw) => labelledPromotion.safeParse(raw))
    .flatMap((parsed) => (parsed.success ? [parsed.data] : []))
    .filter((p) => p.spec.stage === target.kargoStage && p.spec.freight === target.freight)
    .sort((a, b) => (a.metadata.creationTimestamp ?? '').localeCompare(b.metadata.creationTimestamp ?? ''));
  const first = existing[0];
  if (first !== undefined) return { name: first.metadata.name, created: false };

  const stage = stageTemplateSchema.safeParse(target.stageObject);
  const steps = stage.success ? (stage.data.spec.promotionTemplate?.spec?.steps ?? []) : [];
  const vars = stage.success ? [...(stage.data.spec.vars ?? []), ...(stage.data.spec.promotionTemplate?.spec?.vars ?? [])] : [];
  if (steps.length === 0)
    throw new RefusedError(`Kargo Stage ${target.namespace}/${target.kargoStage} defines no promotion steps, so there is nothing to promote with`);
  try {
    const created = await kubernetes.createPromotion({
      namespace: target.namespace,
      generateName: `${target.kargoStage}.`,
      labels,
      annotations: target.annotations,
      // Kargo's webhook re-populates steps and vars from the Stage anyway; sent too, so that the object
      // is complete as it leaves the bot (the CRD requires steps) and means what the Stage means.
      spec: { stage: target.kargoStage, freight: target.freight, steps, ...(vars.length === 0 ? {} : { vars }) },
    });
    return { name: created.name, created: true };
  } catch (error) {
    throw kargoRefusal(error, target) ?? error;
  }
}

/** Whether the run's Promotion `name` into the stage still exists, asked of the API server (not the cache). */
export async function promotionStillExists(
  kubernetes: Pick<KubernetesPort, 'findPromotions'>,
  namespace: string,
  runId: string,
  stage: string,
  name: string,
): Promise<boolean> {
  const found = await kubernetes.findPromotions(namespace, { [RUN_LABEL]: runId, [STAGE_LABEL]: stage });
  return found.some((raw) => labelledPromotion.safeParse(raw).data?.metadata.name === name);
}

/**
 * A refusal retrying cannot change, said plainly: RBAC (`promote` not granted; Kargo's webhook answers
 * 500 wrapping a Forbidden), Freight not available to the Stage, an invalid object. Anything else is
 * an outage, retried by the queue.
 */
function kargoRefusal(error: unknown, target: PromotionTarget): Error | undefined {
  if (!(error instanceof KubernetesRequestError)) return undefined;
  const status = error.statusCode ?? 0;
  if (status === 422 && /not available/i.test(error.message))
    return new PromotionNotYetAllowedError(`Kargo does not let Freight ${target.freight} into ${target.kargoStage} yet: ${error.message}`);
  const forbidden = status === 403 || /forbidden/i.test(error.message);
  const refused = forbidden || (status >= 400 && status < 500 && status !== 429 && status !== 408);
  if (!refused) return undefined;
  const why = forbidden ? ' (the bot may not promote into this Stage: grant it Kargo\'s `promote` verb on it)' : '';
  return new RefusedError(`Kargo refused the Promotion of Freight ${target.freight} into ${target.kargoStage}${why}: ${error.message}`);
}
