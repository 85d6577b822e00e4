import type { Logger } from '../../src/log.js';
import type { Gate, GateKind, GateOutcome, Run } from '../../src/domain/run.js';
import type { ReplyContent } from '../../src/queue/queues.js';

/** The evidence a gate step writes itself (SPEC §7); gate results and run events are the run processor's. */
export type GateAuditType =
  | 'agent.iteration'
  | 'commit.created'
  | 'pr.opened'
  | 'pr.merged'
  | 'ci.verdict'
  | 'freight.found'
  | 'approval.requested'
  | 'approval.expired'
  | 'promotion.created'
  | 'stage.verdict'
  | 'diagnosis.tool_call'
  | 'diagnosis.made';

/** A thread reply a step posts itself (gate results are the run processor's). */
export type StepReply = Extract<ReplyContent, { type: 'diagnosis' }>;

/** What a gate step sees: the run, its gate, a logger bound to both, and the cancel signal. */
export interface GateContext {
  run: Run;
  gate: Gate;
  signal: AbortSignal;
  log: Logger;
  /**
   * Stores a change to the run (artifacts, links, usage, activity) right away,
   * so progress shows on the card and survives a crash. Returns the stored run.
   */
  record: (change: (run: Run) => Partial<Pick<Run, 'artifacts' | 'links' | 'usage' | 'activity'>>) => Promise<Run>;
  /**
   * Appends an event to the run's audit trail. `discriminator` names what the event is about (a
   * commit sha, a PR number): with the run, gate, type and the gate's attempt it makes the event's
   * idempotency key, so a step that runs again after a crash records it once, and a retried gate
   * records its own. `once: true` leaves the attempt out: for facts that happen once per subject
   * whatever the attempt (a commit created, a pull request opened).
   */
  audit: (type: GateAuditType, data: Record<string, unknown>, discriminator: string, options?: { once?: boolean }) => Promise<void>;
  /**
   * Posts a reply of the step's own in the run's thread (the diagnosis of a red deploy), once under
   * `discriminator` whatever the attempt: a step that runs again after a crash posts nothing new.
   */
  reply: (discriminator: string, content: StepReply) => Promise<void>;
}

/**
 * One pluggable gate (SPEC §1). A step must be idempotent: BullMQ is
 * at-least-once, so it may run again after a crash for the same gate.
 * Throw RefusedError to fail the gate for good; any other error is retried.
 */
export interface GateStep {
  run(context: GateContext): Promise<GateOutcome>;
}

export type GateSteps = Partial<Record<GateKind, GateStep>>;
