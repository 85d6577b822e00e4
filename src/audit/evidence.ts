import { z } from 'zod';
import type { AuditEvent } from './audit-log.js';

/**
 * The evidence vocabulary (SPEC §7): the `data` each event type of a run's chain of custody carries,
 * as schemas naming only the fields the evidence readers use (the `/ship audit` summary, the
 * trust-boundary invariant checker). Writers add more fields freely; a reader that finds an event
 * whose data does not parse treats the link as missing, never as present.
 *
 * The chain, in order: `run.requested` (who) → `commit.created` (what, on which branch) →
 * `pr.opened` → `ci.verdict` (green for that commit) → `pr.merged` (the merge commit) →
 * `freight.found` (the Freight carrying the merge commit) → `stage.verdict` per pre-production
 * stage → `approval.requested` → `approval.approved` per counted approver (or `approval.rejected`,
 * `approval.expired`; refused clicks are `approval.refused`) → `promotion.created` into the
 * approved stage → its `stage.verdict`.
 */

/** `gates` names the run's gates in order as it was created: which links its chain must have. */
export const runRequestedData = z.object({ repo: z.string(), task: z.string(), at: z.string().optional(), channel: z.string().optional(), gates: z.array(z.string()).optional() });

export const commitCreatedData = z.object({ commit: z.string(), branch: z.string() });

export const prOpenedData = z.object({ number: z.number(), url: z.string().optional(), head: z.string().optional(), commit: z.string().optional() });

export const ciVerdictData = z.object({ commit: z.string(), pr: z.number().optional(), verdict: z.string() });

/** Written by the merge gate when it sees the pull request merged; `head` is the run's branch (null when it had none). */
export const prMergedData = z.object({ pr: z.number(), mergeCommit: z.string(), head: z.string().nullable().optional() });

export const freightFoundData = z.object({ freight: z.string(), commit: z.string(), alias: z.string().nullable().optional() });

export const stageVerdictData = z.object({
  stage: z.string(),
  freight: z.string().optional(),
  promotion: z.string().optional(),
  verdict: z.enum(['passed', 'failed']),
  kind: z.string().optional(),
});

/** Written by the approval gate when it opens (or re-opens for another Freight) the request. */
export const approvalRequestedData = z.object({
  stage: z.string(),
  freight: z.string(),
  nonce: z.string(),
  mergeCommit: z.string().optional(),
  requester: z.string(),
  approvers: z.array(z.string()),
  minApprovals: z.number().int(),
  allowSelfApproval: z.boolean(),
  requestedAt: z.string(),
  expiresAt: z.string(),
});

/**
 * One counted Approve (actor: the approver's chat user id). `count` is how many distinct approvers
 * counted after it, `complete` whether it completed the approval.
 */
export const approvalApprovedData = z.object({
  stage: z.string(),
  freight: z.string(),
  nonce: z.string(),
  userId: z.string(),
  userName: z.string().optional(),
  /** Whether the approver was authorised when the click was judged: a listed user, or the group through which. */
  via: z.string(),
  at: z.string(),
  count: z.number().int(),
  of: z.number().int(),
  complete: z.boolean(),
});

/** A click that did not count (actor: the clicker), with why. */
export const approvalRefusedData = z.object({
  action: z.enum(['approve', 'reject']),
  freight: z.string(),
  nonce: z.string(),
  reason: z.string(),
  message: z.string(),
  userName: z.string().optional(),
  at: z.string(),
});

export const approvalRejectedData = z.object({
  stage: z.string(),
  freight: z.string(),
  nonce: z.string(),
  userId: z.string(),
  userName: z.string().optional(),
  by: z.enum(['approver', 'requester']),
  reason: z.string().optional(),
  at: z.string(),
});

export const approvalExpiredData = z.object({
  stage: z.string(),
  freight: z.string(),
  nonce: z.string(),
  expiresAt: z.string(),
  approvers: z.array(z.string()),
});

export const promotionCreatedData = z.object({
  stage: z.string(),
  freight: z.string(),
  promotion: z.string(),
  kargoStage: z.string().optional(),
  /** For a stage behind an approval: the people whose approvals it carries (also on the Promotion's annotations). */
  approvers: z.array(z.string()).optional(),
});

/** How a run ended (`run.done`, `run.failed`, …): its outcome line (`reason` when the worker forced the end, `atGate` for a cancel). */
export const runEndedData = z.object({ outcome: z.string().nullable().optional(), reason: z.string().optional(), atGate: z.string().nullable().optional() });

/** One `/ship audit` export (actor: who asked); its JSON Lines run through this event itself. */
export const auditExportedData = z.object({ request: z.string(), channel: z.string(), filename: z.string() });

/** The event's data through `schema`, or `undefined` when it is of another type or does not parse. */
export function evidenceOf<T>(event: AuditEvent, type: AuditEvent['type'], schema: z.ZodType<T>): T | undefined {
  if (event.type !== type) return undefined;
  const parsed = schema.safeParse(event.data);
  return parsed.success ? parsed.data : undefined;
}
