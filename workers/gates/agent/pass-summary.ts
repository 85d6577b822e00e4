import type { Run } from '../../../src/domain/run.js';

/** The agent gate's verdict once the branch is pushed: the test-weakening flag first, then what was pushed and why. */
export function passSummary(run: Run): string {
  const checks = run.artifacts.agent?.checks ?? [];
  const checkText = checks.length === 0 ? 'no checks configured' : `checks passed: ${checks.map((c) => c.name).join(', ')}`;
  const warnings = run.artifacts.agent?.testWarnings ?? [];
  return [
    warnings.length === 0 ? '' : `⚠️ FLAGGED — this change weakens tests; review it closely:\n${warnings.map((w) => `• ${w}`).join('\n')}\n`,
    `pushed ${run.artifacts.agent?.branch ?? ''} at ${run.artifacts.agent?.commitSha?.slice(0, 12) ?? ''} (${checkText})`,
    run.artifacts.agent?.summary === undefined ? '' : `\n${run.artifacts.agent?.summary.slice(0, 1_500)}`,
    run.artifacts.agent?.diffStat === undefined ? '' : `\n${run.artifacts.agent?.diffStat}`,
  ].join('');
}
