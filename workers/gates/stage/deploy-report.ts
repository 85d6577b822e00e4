import type { ArgoHealthOutcome } from './argocd-health.js';
import type { PromotionOutcome } from './kargo-promotion.js';
import type { AnalysisSummary, VerificationOutcome } from './verification.js';

/**
 * What a person needs from a red deploy gate (SPEC §1: the failed step and message, the unhealthy
 * resources with their messages, the analysis result), as neutral plain-text lines: the chat
 * renderer escapes and formats them, and the same lines go to the agent as the failure to fix.
 * Bounded, because resource lists and controller messages can be long: each line is cut at
 * `MAX_LINE` characters, each list at `MAX_ITEMS` entries, the whole at `MAX_LINES` lines.
 */

export type DeployFailure =
  | { kind: 'promotion'; stage: string; outcome: Extract<PromotionOutcome, { state: 'failed' }> }
  | { kind: 'application'; stage: string; outcome: Extract<ArgoHealthOutcome, { state: 'failed' }> }
  | {
      kind: 'verification';
      stage: string;
      outcome: Extract<VerificationOutcome, { state: 'failed' }>;
      /** The AnalysisRun's summary, when the caller could read it. */
      analysis: AnalysisSummary | null;
    };

export const MAX_LINE = 300;
export const MAX_ITEMS = 8;
export const MAX_LINES = 30;

export function renderDeployFailure(failure: DeployFailure): string[] {
  const lines = [`Deploy gate stage:${failure.stage} failed.`, ...body(failure)];
  const bounded =
    lines.length > MAX_LINES
      ? [...lines.slice(0, MAX_LINES - 1), `… ${lines.length - MAX_LINES + 1} more lines`]
      : lines;
  return bounded.map(cut);
}

function body(failure: DeployFailure): string[] {
  switch (failure.kind) {
    case 'promotion': {
      const { outcome } = failure;
      const lines = [`Promotion ${outcome.promotion} ended ${outcome.phase}.`];
      const step = outcome.failedStep;
      if (step) {
        const uses = step.uses && step.uses !== step.name ? ` (${step.uses})` : '';
        lines.push(
          `Failed step: ${step.index + 1}/${step.total} ${step.name}${uses}${step.status ? `, ${step.status}` : ''}.`,
        );
        if (step.message) lines.push(`Step message: ${oneLine(step.message)}`);
      }
      if (outcome.message && outcome.message !== step?.message) lines.push(`Message: ${oneLine(outcome.message)}`);
      return lines;
    }
    case 'application': {
      const { outcome } = failure;
      const lines = [oneLine(outcome.summary)];
      if (outcome.operation && outcome.code !== 'operation-failed' && outcome.operation.phase !== 'Succeeded')
        lines.push(
          `Last sync: ${outcome.operation.phase}${outcome.operation.message ? `: ${oneLine(outcome.operation.message)}` : ''}`,
        );
      lines.push(
        ...list(
          'Unhealthy resources:',
          outcome.unhealthyResources.map(
            (r) =>
              `${r.kind} ${r.namespace ? `${r.namespace}/` : ''}${r.name}: ${r.health}${r.message ? ` — ${oneLine(r.message)}` : ''}`,
          ),
        ),
        ...list(
          'Resources that failed to sync:',
          outcome.failedSyncResources.map(
            (r) =>
              `${r.kind} ${r.namespace ? `${r.namespace}/` : ''}${r.name}: ${r.status}${r.message ? ` — ${oneLine(r.message)}` : ''}`,
          ),
        ),
        ...list(
          'Conditions:',
          outcome.conditions.map((c) => `${c.type}: ${oneLine(c.message)}`),
        ),
      );
      return lines;
    }
    case 'verification': {
      const { outcome, analysis } = failure;
      const lines = [`Verification ${outcome.phase}${outcome.message ? `: ${oneLine(outcome.message)}` : '.'}`];
      const run = analysis?.name ?? outcome.analysisRun?.name;
      if (run) {
        const namespace = outcome.analysisRun?.namespace;
        lines.push(
          `AnalysisRun ${namespace ? `${namespace}/` : ''}${run}${analysis?.phase ? `: ${analysis.phase}` : ''}`,
        );
      }
      if (analysis?.message && analysis.message !== outcome.message)
        lines.push(`Analysis: ${oneLine(analysis.message)}`);
      if (analysis) {
        lines.push(
          ...list(
            'Metrics:',
            analysis.metrics.map((m) => {
              const value = m.lastValue !== null ? `, last value ${m.lastValue}` : '';
              const counts = `${m.counts.failed} failed, ${m.counts.error} errors of ${m.counts.count}`;
              const message = m.message ?? m.lastMessage;
              return `${m.name}: ${m.phase || 'unknown'} (${counts}${value})${message ? ` — ${oneLine(message)}` : ''}`;
            }),
          ),
        );
      }
      return lines;
    }
  }
}

function list(title: string, items: string[]): string[] {
  if (items.length === 0) return [];
  const shown = items.slice(0, MAX_ITEMS).map((item) => `- ${item}`);
  if (items.length > MAX_ITEMS) shown.push(`- … and ${items.length - MAX_ITEMS} more`);
  return [title, ...shown];
}

/** Controller messages can carry newlines (webhook denials, multi-error syncs): one line each here. */
function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ').trim();
}

function cut(line: string): string {
  return line.length > MAX_LINE ? `${line.slice(0, MAX_LINE - 1)}…` : line;
}
