import type { AgentConversation } from '../../../src/agent/agent-loop.js';
import type { CheckResult, CheckRunner } from '../../../src/agent/check-runner.js';
import { checksFailedMessage, followUpMessage } from '../../../src/agent/prompt.js';
import type { Logger } from '../../../src/log.js';

export interface CheckRoundsDeps {
  /** One agent pass: runs the conversation to the model's final answer and returns its text. */
  agent: (conversation: AgentConversation) => Promise<string>;
  checks: Pick<CheckRunner, 'names' | 'run'>;
  /** Every instruction from the run's thread not yet acknowledged, oldest first. */
  pendingFollowUps: () => Promise<string[]>;
  /** Told when the bot starts its own checks (the card says so). */
  onChecking: () => Promise<void>;
  /** Rounds of "checks failed, fix them" before the gate fails (bounded by the budgets as well). */
  maxCheckRounds: number;
  log: Logger;
  signal: AbortSignal;
  /** Told whenever the round or the follow-ups given change (the step persists them with the conversation). */
  onProgress?: ((progress: CheckRoundsProgress) => void) | undefined;
}

/** Where the rounds stand: the round under way and every follow-up the conversation has been given. */
export interface CheckRoundsProgress {
  round: number;
  followUps: string[];
}

export type CheckRoundsOutcome =
  | {
      kind: 'passed';
      /** The model's last final answer (untrusted text). */
      summary: string;
      /** Every configured check, run by the bot after that answer; all passed. */
      results: CheckResult[];
      /** The follow-ups handled, oldest first: the ones the opening message had, and those that arrived since. */
      followUps: string[];
    }
  | { kind: 'failed'; summary: string };

export function formatFailures(results: readonly CheckResult[]): string {
  return results
    .map((r) => `${r.name} ${r.timedOut ? 'timed out' : `exited with ${r.exitCode ?? r.signal ?? 'a signal'}`}\n${r.output.split('\n').slice(-15).join('\n')}`)
    .join('\n\n');
}

/**
 * The agent works until its checks pass, in rounds: the agent finishes, the
 * bot runs every configured check itself (the model's claim that they pass is
 * not evidence), and failures go back to the agent, at most `maxCheckRounds`
 * times. Follow-ups that arrived while the agent worked are given to it before
 * any check runs, and do not use up a round.
 */
export async function runCheckRounds(
  deps: CheckRoundsDeps,
  conversation: AgentConversation,
  alreadyGiven: readonly string[],
  // A conversation resumed after a restart goes on in the round it was in: rounds are a budget too.
  firstRound = 1,
): Promise<CheckRoundsOutcome> {
  let followUps = [...alreadyGiven];
  for (let round = firstRound; ; round++) {
    deps.onProgress?.({ round, followUps });
    const summary = await deps.agent(conversation);
    // Instructions that arrived while the agent worked are handled before anything is committed.
    const arrived = (await deps.pendingFollowUps()).slice(followUps.length);
    if (arrived.length > 0) {
      followUps = [...followUps, ...arrived];
      conversation.messages.push({ role: 'user', content: followUpMessage(arrived) });
      round--;
      continue;
    }
    await deps.onChecking();
    const results: CheckResult[] = [];
    for (const name of deps.checks.names) results.push(await deps.checks.run(name, deps.signal));
    const failed = results.filter((r) => r.exitCode !== 0 || r.timedOut);
    if (failed.length === 0) return { kind: 'passed', summary, results, followUps };
    deps.log.info({ round, failed: failed.map((f) => f.name) }, 'checks failed after the agent finished');
    if (round >= deps.maxCheckRounds) {
      return { kind: 'failed', summary: `checks still failing after ${round} rounds:\n${formatFailures(failed)}` };
    }
    conversation.messages.push({ role: 'user', content: checksFailedMessage(failed) });
  }
}
