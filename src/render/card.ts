import {
  currentGate,
  isTerminal,
  type Gate,
  type Run,
  type RunLinks,
  type RunState,
  type Usage,
} from '../domain/run.js';
import type { BlockView, MessageView } from './view.js';

/**
 * What a run looks like in chat (SPEC §2): the live root card, the thread
 * replies for gate results and the run's end, help and status text. Pure: no
 * I/O and no clock, so the same run always renders the same message and the
 * card can be re-rendered on every stored change.
 *
 * All text is Slack mrkdwn. Anything a person typed or an outside system
 * produced (task, summaries, outcome, stage names) goes through
 * `escapeMrkdwn`, so a task cannot ping `<!channel>` or smuggle a link.
 */

export const CANCEL_ACTION_ID = 'shipgate.cancel';

/** How much of the task the card quotes: enough to recognise it, not a wall of text on every update. */
const CARD_TASK_MAX_CHARS = 500;
const CARD_TASK_MAX_LINES = 8;
/** Gate summaries on the card stay on one line; the full text goes to the gate's thread reply. */
const CARD_SUMMARY_MAX_CHARS = 300;
/** Thread replies carry failure details, but Slack caps a section at 3,000 characters. */
const REPLY_SUMMARY_MAX_CHARS = 2800;
const SHORT_TASK_MAX_CHARS = 80;

// ---------------------------------------------------------------------------
// mrkdwn helpers

/** Escapes Slack's control characters so user text is shown, never interpreted as mentions or links. */
export function escapeMrkdwn(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/**
 * Truncates by code points (never splitting an emoji's surrogate pair) and
 * marks the cut with an ellipsis. Apply before escaping, so that an entity
 * like `&amp;` is never cut in half.
 */
export function truncate(text: string, maxChars: number): string {
  const chars = Array.from(text);
  if (chars.length <= maxChars) return text;
  return `${chars
    .slice(0, Math.max(0, maxChars - 1))
    .join('')
    .trimEnd()}…`;
}

/** One line: collapses newlines and runs of whitespace, for places where a summary must not break the layout. */
function oneLine(text: string): string {
  return text.replace(/\s+/g, ' ').trim();
}

/**
 * A Slack mention for a user id; anything that does not look like a Slack id
 * (a console user, a name) is shown as escaped text, so it cannot become a
 * broken or hostile `<@…>` token.
 */
export function mention(userId: string): string {
  return /^[UW][A-Z0-9]+$/.test(userId) ? `<@${userId}>` : `@${escapeMrkdwn(userId)}`;
}

/** `<url|label>` for http(s) URLs only; characters that would end the link token early are encoded. */
function link(url: string, label: string): string | undefined {
  if (!/^https?:\/\//i.test(url)) return undefined;
  const safeUrl = url.replace(/&/g, '&amp;').replace(/</g, '%3C').replace(/>/g, '%3E').replace(/\|/g, '%7C');
  return `<${safeUrl}|${label}>`;
}

/** The task as a block quote; each line quoted, user `>` escaped so it cannot end the quote. */
function quote(text: string): string {
  return text
    .split('\n')
    .map((line) => `> ${escapeMrkdwn(line)}`)
    .join('\n');
}

function truncateLines(text: string, maxLines: number, maxChars: number): string {
  const lines = text.trim().split(/\r?\n/);
  const kept = lines.length > maxLines ? `${lines.slice(0, maxLines).join('\n')}…` : lines.join('\n');
  return truncate(kept, maxChars);
}

/** Short one-line task for lists and fallback text. */
function shortTask(task: string): string {
  return escapeMrkdwn(truncate(oneLine(task), SHORT_TASK_MAX_CHARS));
}

// ---------------------------------------------------------------------------
// numbers

/** `950`, `12.3k`, `2.1M`: token counts a person can take in at a glance. */
export function formatCount(n: number): string {
  if (!Number.isFinite(n) || n < 1000) return String(Math.max(0, Math.round(Number.isFinite(n) ? n : 0)));
  const compact = (value: number, unit: string): string => `${value.toFixed(1).replace(/\.0$/, '')}${unit}`;
  // Rounding can carry over (999,960 → "1000.0k"), so decide the unit after rounding.
  if (Math.round(n / 100) < 10_000) return compact(n / 1000, 'k');
  return compact(n / 1_000_000, 'M');
}

export function formatCost(usd: number): string {
  if (usd > 0 && usd < 0.005) return '<$0.01';
  return `$${usd.toFixed(2)}`;
}

export function totalTokens(usage: Usage): number {
  return usage.inputTokens + usage.outputTokens + usage.cacheReadTokens + usage.cacheWriteTokens;
}

/** `12.3k tokens (in 10k · out 2.3k · cache read 0 · cache write 0) · $0.42`, or undefined before any tokens were used. */
export function formatUsage(usage: Usage): string | undefined {
  const total = totalTokens(usage);
  if (total <= 0) return undefined;
  const parts = [
    `in ${formatCount(usage.inputTokens)}`,
    `out ${formatCount(usage.outputTokens)}`,
    `cache read ${formatCount(usage.cacheReadTokens)}`,
    `cache write ${formatCount(usage.cacheWriteTokens)}`,
  ];
  return `${formatCount(total)} tokens (${parts.join(' · ')}) · ${formatCost(usage.costUsd)}`;
}

// ---------------------------------------------------------------------------
// gates and states

const RUN_STATE_EMOJI: Record<RunState, string> = {
  queued: '⏳',
  running: '🔄',
  waiting: '⏸️',
  cancelling: '🛑',
  done: '✅',
  failed: '❌',
  cancelled: '🛑',
  rejected: '🚫',
  expired: '⌛',
};

function gateEmoji(gate: Gate, isCurrent: boolean): string {
  // Checked first on purpose: a gate this build cannot evaluate must never look green, whatever its state says.
  if (gate.notConfigured === true) return '⚠️';
  switch (gate.state) {
    case 'passed':
      return '✅';
    case 'failed':
      return '❌';
    case 'skipped':
      return '⏭️';
    case 'running':
      return '🔄';
    case 'pending':
      return isCurrent ? '⏳' : '⚪';
  }
}

function gateStateWords(gate: Gate): string {
  return gate.notConfigured === true ? 'not configured' : gate.state;
}

/** One line per gate for the card and status: emoji, name, state where not obvious, summary. */
function gateLine(gate: Gate, isCurrent: boolean, summaryMax: number): string {
  const name = `*${escapeMrkdwn(gate.name)}*`;
  const summary = gate.summary === undefined || gate.summary.trim() === '' ? undefined : oneLine(gate.summary);
  let detail: string | undefined;
  if (gate.notConfigured === true) {
    // The summary usually already says so; don't repeat "not configured" twice.
    detail =
      summary === undefined
        ? 'not configured'
        : /not configured/i.test(summary)
          ? escapeMrkdwn(truncate(summary, summaryMax))
          : `not configured: ${escapeMrkdwn(truncate(summary, summaryMax))}`;
  } else if (summary !== undefined) {
    detail = escapeMrkdwn(truncate(summary, summaryMax));
  }
  return `${gateEmoji(gate, isCurrent)} ${name}${detail === undefined ? '' : ` — ${detail}`}`;
}

function gateLines(run: Run, summaryMax: number): string {
  const current = isTerminal(run.state) ? undefined : currentGate(run);
  return run.gates.map((gate) => gateLine(gate, gate === current, summaryMax)).join('\n');
}

/** `running · at *ci*`, `queued · position 2 in queue`, `failed — ci failed: …`. */
function stateWords(run: Run, queuePosition?: number): string {
  const state = `${RUN_STATE_EMOJI[run.state]} ${run.state}`;
  if (isTerminal(run.state)) {
    const outcome = run.outcome?.trim();
    return outcome === undefined || outcome === ''
      ? state
      : `${state} — ${escapeMrkdwn(truncate(oneLine(outcome), 500))}`;
  }
  const parts = [state];
  if (run.state === 'queued' && queuePosition !== undefined) parts.push(`position ${queuePosition} in queue`);
  const gate = currentGate(run);
  if (gate !== undefined && run.state !== 'queued') {
    parts.push(`at *${escapeMrkdwn(gate.name)}*${gate.notConfigured === true ? ' (not configured)' : ''}`);
  }
  return parts.join(' · ');
}

function linksLine(links: RunLinks): string | undefined {
  const entries: Array<[string | undefined, string]> = [
    [links.pr, 'Pull request'],
    [links.ci, 'CI'],
    [links.argocd, 'Argo CD'],
    [links.kargo, 'Kargo'],
  ];
  const rendered = entries
    .map(([url, label]) => (url === undefined ? undefined : link(url, label)))
    .filter((value): value is string => value !== undefined);
  return rendered.length === 0 ? undefined : rendered.join(' · ');
}

function cancelLine(run: Run): string {
  const by = run.cancel === undefined ? 'someone' : mention(run.cancel.by);
  return `🛑 cancel requested by ${by}, stopping…`;
}

function runLabel(run: Run): string {
  return `run \`${escapeMrkdwn(run.id)}\` on *${escapeMrkdwn(run.repo)}*`;
}

// ---------------------------------------------------------------------------
// the card

const CANCELLABLE: ReadonlySet<RunState> = new Set<RunState>(['queued', 'running', 'waiting']);

export interface CardOptions {
  /** The installation runs checks without a sandbox (`sandbox: none`): said on every card, never hidden. */
  unsandboxedChecks?: boolean | undefined;
}

/** The run's live root card (SPEC §2), re-rendered and updated in place on every change. */
export function renderCard(run: Run, options: CardOptions = {}): MessageView {
  const blocks: BlockView[] = [
    { type: 'header', text: `shipgate run ${escapeMrkdwn(run.id)} · ${escapeMrkdwn(run.repo)}` },
  ];
  if (options.unsandboxedChecks === true) {
    blocks.push({ type: 'context', text: '⚠️ *Checks run unsandboxed* on this installation (policy `sandbox: none`): repository code runs as the worker.' });
  }

  blocks.push({ type: 'section', text: quote(truncateLines(run.task, CARD_TASK_MAX_LINES, CARD_TASK_MAX_CHARS)) });
  blocks.push({
    type: 'section',
    text: `*Repository:* ${escapeMrkdwn(run.repo)} · *Requested by:* ${mention(run.requester.userId)}\n*State:* ${stateWords(run)}`,
  });
  if (run.state === 'cancelling') blocks.push({ type: 'section', text: cancelLine(run) });

  blocks.push({ type: 'divider' });
  if (run.gates.length > 0) blocks.push({ type: 'section', text: gateLines(run, CARD_SUMMARY_MAX_CHARS) });

  if (!isTerminal(run.state) && run.activity !== undefined && run.activity !== '') {
    const turn = run.artifacts.agentTurns === undefined || currentGate(run)?.name !== 'agent' ? '' : `turn ${run.artifacts.agentTurns} · `;
    blocks.push({ type: 'context', text: `Now: ${turn}${escapeMrkdwn(truncate(oneLine(run.activity), 200))}` });
  }
  const links = linksLine(run.links);
  if (links !== undefined) blocks.push({ type: 'context', text: links });
  const usage = formatUsage(run.usage);
  if (usage !== undefined) blocks.push({ type: 'context', text: usage });

  // Cancelling already asked; a second button would only invite double clicks while the work stops.
  if (CANCELLABLE.has(run.state)) {
    blocks.push({
      type: 'actions',
      buttons: [{ actionId: CANCEL_ACTION_ID, label: 'Cancel', value: run.id, style: 'danger' }],
    });
  }

  const gate = isTerminal(run.state) ? undefined : currentGate(run);
  const text =
    `shipgate run ${escapeMrkdwn(run.id)} on ${escapeMrkdwn(run.repo)}: ${run.state}` +
    `${gate !== undefined && run.state !== 'queued' ? ` (${escapeMrkdwn(gate.name)})` : ''} — ${shortTask(run.task)}`;
  return { text, blocks };
}

// ---------------------------------------------------------------------------
// thread replies

/** The thread reply for one gate's result (SPEC §2): passed, failed or skipped, with what a person needs to know. */
export function renderGateReply(run: Run, gateName: string): MessageView {
  const gate = run.gates.find((candidate) => candidate.name === gateName);
  const name = escapeMrkdwn(gateName);
  if (gate === undefined) {
    const text = `Gate *${name}* is not part of ${runLabel(run)}.`;
    return { text, blocks: [{ type: 'section', text }] };
  }
  const words = gateStateWords(gate);
  const headline = `${gateEmoji(gate, false)} *${name}* ${words}`;
  const blocks: BlockView[] = [{ type: 'section', text: headline }];
  const summary = gate.summary?.trim();
  if (summary !== undefined && summary !== '') {
    // Multi-line on purpose: failing check names and annotation excerpts read better as lines.
    blocks.push({ type: 'section', text: escapeMrkdwn(truncate(summary, REPLY_SUMMARY_MAX_CHARS)) });
  }
  blocks.push({ type: 'context', text: capitalise(runLabel(run)) });
  const fallback = `${gateName} ${words}${summary === undefined || summary === '' ? '' : `: ${oneLine(summary)}`}`;
  return { text: escapeMrkdwn(truncate(fallback, 300)), blocks };
}

/**
 * The thread reply when the run reaches a terminal state. `command` is the
 * configured slash command, used in the retry hint.
 */
export function renderRunEnded(run: Run, command = '/ship'): MessageView {
  const label = runLabel(run);
  const outcome =
    run.outcome === undefined || run.outcome.trim() === ''
      ? undefined
      : escapeMrkdwn(truncate(run.outcome.trim(), 2000));
  let headline: string;
  const details: string[] = [];
  switch (run.state) {
    case 'done':
      headline = `✅ ${capitalise(label)} is done${outcome === undefined ? '.' : `: ${outcome}.`}`;
      break;
    case 'failed': {
      headline = `❌ ${capitalise(label)} failed${outcome === undefined ? '.' : `: ${outcome}`}`;
      const failed = run.gates.find((gate) => gate.state === 'failed');
      details.push(
        `Fix the cause, then \`${escapeMrkdwn(command)} retry ${escapeMrkdwn(run.id)}\` resumes from ${
          failed === undefined ? 'the failed gate' : `*${escapeMrkdwn(failed.name)}*`
        }.`,
      );
      break;
    }
    case 'cancelled': {
      const by = run.cancel === undefined ? '' : ` by ${mention(run.cancel.by)}`;
      headline = `🛑 ${capitalise(label)} was cancelled${by}.`;
      // SPEC §2: a cancel is confirmed only once the work really stopped, so this reply may say so.
      details.push('The work has stopped: the agent is no longer running and nothing more will be pushed or promoted.');
      if (outcome !== undefined) details.push(outcome);
      break;
    }
    case 'rejected':
      headline = `🚫 ${capitalise(label)} was rejected${outcome === undefined ? '.' : `: ${outcome}`}`;
      details.push('Nothing was promoted to the stage that asked for approval.');
      break;
    case 'expired':
      headline = `⌛ ${capitalise(label)} expired${outcome === undefined ? '.' : `: ${outcome}`}`;
      break;
    default:
      // Not terminal: callers should not get here, but a truthful message beats a wrong "ended".
      headline = `${RUN_STATE_EMOJI[run.state]} ${capitalise(label)} is ${run.state}.`;
  }

  const blocks: BlockView[] = [{ type: 'section', text: headline }];
  if (details.length > 0) blocks.push({ type: 'section', text: details.join('\n') });
  const context = [linksLine(run.links), formatUsage(run.usage)].filter(
    (value): value is string => value !== undefined,
  );
  if (context.length > 0) blocks.push({ type: 'context', text: context.join(' · ') });
  return { text: headline, blocks };
}

function capitalise(text: string): string {
  return text.length === 0 ? text : `${text.charAt(0).toUpperCase()}${text.slice(1)}`;
}

// ---------------------------------------------------------------------------
// ephemeral text

/** Usage for `/ship help` and for answers to malformed commands; `command` is the configured name. */
export function renderHelp(command: string): string {
  const c = escapeMrkdwn(command);
  return [
    '*shipgate* — an AI agent proposes changes; your pipeline decides.',
    `• \`${c} &lt;owner/repo&gt; &lt;task…&gt;\` — start a run on a repository`,
    `• \`${c} &lt;task…&gt;\` — start a run in a channel that has a default repository`,
    `• \`${c} status [run-id]\` — the active runs you can see, with queue positions, or one run in detail`,
    `• \`${c} cancel &lt;run-id&gt;\` — cancel a run (confirmed once the work has really stopped)`,
    `• \`${c} retry &lt;run-id&gt;\` — resume a failed run from its failed gate`,
    `• \`${c} audit &lt;run-id&gt;\` — the run's evidence: every event, who, when, and whether the hash chain verifies`,
    `• \`${c} help\` — this message`,
    "Mention the bot in a run's thread to give that run's agent a follow-up instruction.",
  ].join('\n');
}

function statusHeadline(run: Run, queuePosition?: number): string {
  return `\`${escapeMrkdwn(run.id)}\` · *${escapeMrkdwn(run.repo)}* · ${stateWords(run, queuePosition)}`;
}

/** `/ship status`: one line per active run, with queue positions for queued runs. */
export function renderStatusList(entries: Array<{ run: Run; queuePosition?: number | undefined }>): string {
  if (entries.length === 0) return 'No active runs that you can see right now. ✨';
  const lines = entries.map(
    ({ run, queuePosition }) => `• ${statusHeadline(run, queuePosition)} — “${shortTask(run.task)}”`,
  );
  return [`*Active runs (${entries.length})*`, ...lines].join('\n');
}

/** `/ship status <run-id>`: one run in detail. */
export function renderRunStatus(run: Run, queuePosition?: number): string {
  const lines = [
    statusHeadline(run, queuePosition),
    quote(truncateLines(run.task, 3, 200)),
    `Requested by ${mention(run.requester.userId)}`,
  ];
  if (run.state === 'cancelling') lines.push(cancelLine(run));
  if (run.gates.length > 0) lines.push(gateLines(run, CARD_SUMMARY_MAX_CHARS));
  const links = linksLine(run.links);
  if (links !== undefined) lines.push(links);
  const usage = formatUsage(run.usage);
  if (usage !== undefined) lines.push(usage);
  return lines.join('\n');
}
