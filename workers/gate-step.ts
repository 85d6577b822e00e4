import type { Logger } from '../src/log.js';
import type { Gate, GateKind, GateOutcome, Run } from '../src/domain/run.js';

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
