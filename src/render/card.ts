import {
  currentGate,
  isTerminal,
  type Gate,
  type Run,
  type RunLinks,
  type RunState,
  type Usage,
} from '../domain/run.js';
import {
  bold,
  code,
  concat,
  joinRich,
  link as linkSpan,
  plainText,
  principal,
  quote,
  rich,
  type BlockView,
  type ButtonView,
  type Inline,
  type MessageView,
  type RichText,
} from './view.js';

/**
 * What a run looks like in chat (SPEC §2): the live root card, the thread
 * replies for gate results and the run's end, help and status text. Pure: no
 * I/O and no clock, so the same run always renders the same message and the
 * card can be re-rendered on every stored change.
 *
 * Everything is the chat-neutral view of ./view.ts: user text (task,
 * summaries, outcome, stage names) goes in as literal spans, and each chat
 * adapter escapes it for its platform, so a task cannot ping a channel or
 * smuggle a link whatever the chat.
 */

export const CANCEL_ACTION_ID = 'shipgate.cancel';
/** Local mode's Merge button (a repository with `merge: { requireApproval: true }`): never the requester's to press. */
export const MERGE_ACTION_ID = 'shipgate.merge';

/** How much of the task the card quotes: enough to recognise it, not a wall of text on every update. */
const CARD_TASK_MAX_CHARS = 500;
const CARD_TASK_MAX_LINES = 8;
/** Gate summaries on the card stay on one line; the full text goes to the gate's thread reply. */
const CARD_SUMMARY_MAX_CHARS = 300;
/** Thread replies carry failure details, but chats cap a message section (Slack: 3,000 characters). */
const REPLY_SUMMARY_MAX_CHARS = 2800;
const SHORT_TASK_MAX_CHARS = 80;

// ---------------------------------------------------------------------------
// text helpers

/**
 * Truncates by code points (never splitting an emoji's surrogate pair) and
 * marks the cut with an ellipsis.
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

/** A link for http(s) URLs only: anything else a gate recorded is not offered as a link. */
function link(url: string, label: string): Inline | undefined {
  return /^https?:\/\//i.test(url) ? linkSpan(url, label) : undefined;
}

function truncateLines(text: string, maxLines: number, maxChars: number): string {
  const lines = text.trim().split(/\r?\n/);
  const kept = lines.length > maxLines ? `${lines.slice(0, maxLines).join('\n')}…` : lines.join('\n');
  return truncate(kept, maxChars);
}

/** Short one-line task for lists and fallback text. */
function shortTask(task: string): string {
  return truncate(oneLine(task), SHORT_TASK_MAX_CHARS);
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
function gateLine(gate: Gate, isCurrent: boolean, summaryMax: number): RichText {
  const summary = gate.summary === undefined || gate.summary.trim() === '' ? undefined : oneLine(gate.summary);
  let detail: string | undefined;
  if (gate.notConfigured === true) {
    // The summary usually already says so; don't repeat "not configured" twice.
    detail =
      summary === undefined
        ? 'not configured'
        : /not configured/i.test(summary)
          ? truncate(summary, summaryMax)
          : `not configured: ${truncate(summary, summaryMax)}`;
  } else if (summary !== undefined) {
    detail = truncate(summary, summaryMax);
  }
  return rich`${gateEmoji(gate, isCurrent)} ${bold(gate.name)}${detail === undefined ? '' : ` — ${detail}`}`;
}

function gateLines(run: Run, summaryMax: number): RichText {
  const current = isTerminal(run.state) ? undefined : currentGate(run);
  return joinRich(
    run.gates.map((gate) => gateLine(gate, gate === current, summaryMax)),
    '\n',
  );
}

/** `running · at *ci*`, `queued · position 2 in queue`, `failed — ci failed: …`. */
function stateWords(run: Run, queuePosition?: number): RichText {
  const state = `${RUN_STATE_EMOJI[run.state]} ${run.state}`;
  if (isTerminal(run.state)) {
    const outcome = run.outcome?.trim();
    return outcome === undefined || outcome === '' ? rich`${state}` : rich`${state} — ${truncate(oneLine(outcome), 500)}`;
  }
  const parts: RichText[] = [rich`${state}`];
  if (run.state === 'queued' && queuePosition !== undefined) parts.push(rich`position ${queuePosition} in queue`);
  const gate = currentGate(run);
  if (gate !== undefined && run.state !== 'queued') {
    parts.push(rich`at ${bold(gate.name)}${gate.notConfigured === true ? ' (not configured)' : ''}`);
  }
  return joinRich(parts, ' · ');
}

function linksLine(links: RunLinks): RichText | undefined {
  const entries: Array<[string | undefined, string]> = [
    [links.pr, 'Pull request'],
    [links.ci, 'CI'],
    [links.argocd, 'Argo CD'],
    [links.kargo, 'Kargo'],
  ];
  const rendered = entries
    .map(([url, label]) => (url === undefined ? undefined : link(url, label)))
    .filter((value): value is Inline => value !== undefined)
    .map((span) => [span]);
  return rendered.length === 0 ? undefined : joinRich(rendered, ' · ');
}

function cancelLine(run: Run): RichText {
  return rich`🛑 cancel requested by ${run.cancel === undefined ? 'someone' : principal(run.cancel.by)}, stopping…`;
}

/** `run `sg-…` on *acme/shop*`; `Run …` at the start of a sentence. */
function runLabel(run: Run, capital = false): RichText {
  return rich`${capital ? 'Run' : 'run'} ${code(run.id)} on ${bold(run.repo)}`;
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
  const blocks: BlockView[] = [{ type: 'header', text: `shipgate run ${run.id} · ${run.repo}` }];
  if (options.unsandboxedChecks === true) {
    blocks.push({
      type: 'context',
      text: rich`⚠️ ${bold('Checks run unsandboxed')} on this installation (policy ${code('sandbox: none')}): repository code runs as the worker.`,
    });
  }

  blocks.push({ type: 'section', text: [quote(truncateLines(run.task, CARD_TASK_MAX_LINES, CARD_TASK_MAX_CHARS))] });
  blocks.push({
    type: 'section',
    text: rich`${bold('Repository:')} ${run.repo} · ${bold('Requested by:')} ${principal(run.requester.userId)}\n${bold('State:')} ${stateWords(run)}`,
  });
  if (run.state === 'cancelling') blocks.push({ type: 'section', text: cancelLine(run) });

  blocks.push({ type: 'divider' });
  if (run.gates.length > 0) blocks.push({ type: 'section', text: gateLines(run, CARD_SUMMARY_MAX_CHARS) });

  if (!isTerminal(run.state) && run.activity !== undefined && run.activity !== '') {
    const turns = run.artifacts.agent?.turns;
    const turn = turns === undefined || currentGate(run)?.name !== 'agent' ? '' : `turn ${turns} · `;
    blocks.push({ type: 'context', text: rich`Now: ${turn}${truncate(oneLine(run.activity), 200)}` });
  }
  const links = linksLine(run.links);
  if (links !== undefined) blocks.push({ type: 'context', text: links });
  const usage = formatUsage(run.usage);
  if (usage !== undefined) blocks.push({ type: 'context', text: rich`${usage}` });

  // Cancelling already asked; a second button would only invite double clicks while the work stops.
  if (CANCELLABLE.has(run.state)) {
    const merge: ButtonView[] =
      currentGate(run)?.kind === 'merge' && run.artifacts.merge?.awaitingClick === true ? [{ actionId: MERGE_ACTION_ID, label: 'Merge', value: run.id, style: 'primary' }] : [];
    blocks.push({
      type: 'actions',
      buttons: [...merge, { actionId: CANCEL_ACTION_ID, label: 'Cancel', value: run.id, style: 'danger' }],
    });
  }

  const gate = isTerminal(run.state) ? undefined : currentGate(run);
  const text =
    `shipgate run ${run.id} on ${run.repo}: ${run.state}` +
    `${gate !== undefined && run.state !== 'queued' ? ` (${gate.name})` : ''} — ${shortTask(run.task)}`;
  return { text, blocks };
}

// ---------------------------------------------------------------------------
// thread replies

/** The thread reply for one gate's result (SPEC §2): passed, failed or skipped, with what a person needs to know. */
export function renderGateReply(run: Run, gateName: string): MessageView {
  const gate = run.gates.find((candidate) => candidate.name === gateName);
  if (gate === undefined) {
    const text = rich`Gate ${bold(gateName)} is not part of ${runLabel(run)}.`;
    return { text: plainText(text), blocks: [{ type: 'section', text }] };
  }
  const words = gateStateWords(gate);
  const blocks: BlockView[] = [{ type: 'section', text: rich`${gateEmoji(gate, false)} ${bold(gateName)} ${words}` }];
  const summary = gate.summary?.trim();
  if (summary !== undefined && summary !== '') {
    // Multi-line on purpose: failing check names and annotation excerpts read better as lines.
    blocks.push({ type: 'section', text: rich`${truncate(summary, REPLY_SUMMARY_MAX_CHARS)}` });
  }
  blocks.push({ type: 'context', text: runLabel(run, true) });
  const fallback = `${gateName} ${words}${summary === undefined || summary === '' ? '' : `: ${oneLine(summary)}`}`;
  return { text: truncate(fallback, 300), blocks };
}

/**
 * The agent's diagnosis of a red deploy gate (issue 11), posted before its fix forward starts: what
 * the model found (its words, quoted: model text about cluster text) and the bot's own list of the
 * read-only calls it made.
 */
export function renderDiagnosisReply(run: Run, diagnosis: { stage: string; fix: number; text: string; looked: readonly string[]; clusterUnavailable?: string | undefined }): MessageView {
  const blocks: BlockView[] = [{ type: 'section', text: rich`🔎 ${bold(`diagnosis of ${diagnosis.stage}`)} before fix ${String(diagnosis.fix)}` }];
  blocks.push({ type: 'section', text: [{ kind: 'quote', text: truncate(diagnosis.text.trim(), REPLY_SUMMARY_MAX_CHARS) }] });
  const reads =
    diagnosis.looked.length === 0
      ? 'no reads'
      : `${diagnosis.looked.length} read-only call${diagnosis.looked.length === 1 ? '' : 's'}: ${truncate(diagnosis.looked.join('; '), 600)}`;
  const unavailable = diagnosis.clusterUnavailable === undefined ? '' : ` Cluster tools unavailable: ${truncate(diagnosis.clusterUnavailable, 200)}.`;
  blocks.push({ type: 'context', text: rich`${reads}.${unavailable} ${runLabel(run, true)}` });
  return { text: truncate(`diagnosis of ${diagnosis.stage}: ${oneLine(diagnosis.text)}`, 300), blocks };
}

/** An outside system out of reach while a gate ran: the job tries again (issue 12). */
export function renderRetryReply(run: Run, retry: { gate: string; attempt: number; of: number; reason: string }): MessageView {
  const text = rich`⏳ ${bold(retry.gate)} retrying (${String(retry.attempt)} of ${String(retry.of)}): ${truncate(oneLine(retry.reason), 300)}`;
  return { text: truncate(`${retry.gate} retrying (${retry.attempt} of ${retry.of}): ${oneLine(retry.reason)}`, 300), blocks: [{ type: 'section', text }, { type: 'context', text: runLabel(run, true) }] };
}

/**
 * The thread reply when the run reaches a terminal state. `command` is the
 * configured slash command, used in the retry hint.
 */
export function renderRunEnded(run: Run, command = '/ship'): MessageView {
  const label = runLabel(run, true);
  const outcome = run.outcome === undefined || run.outcome.trim() === '' ? undefined : truncate(run.outcome.trim(), 2000);
  let headline: RichText;
  const details: RichText[] = [];
  switch (run.state) {
    case 'done':
      headline = rich`✅ ${label} is done${outcome === undefined ? '.' : `: ${outcome}.`}`;
      break;
    case 'failed': {
      headline = rich`❌ ${label} failed${outcome === undefined ? '.' : `: ${outcome}`}`;
      const failed = run.gates.find((gate) => gate.state === 'failed');
      details.push(
        rich`Fix the cause, then ${code(`${command} retry ${run.id}`)} resumes from ${failed === undefined ? 'the failed gate' : bold(failed.name)}.`,
      );
      break;
    }
    case 'cancelled': {
      headline = rich`🛑 ${label} was cancelled${run.cancel === undefined ? '' : concat(' by ', principal(run.cancel.by))}.`;
      // SPEC §2: a cancel is confirmed only once the work really stopped, so this reply may say so.
      details.push(rich`The work has stopped: the agent is no longer running and nothing more will be pushed or promoted.`);
      if (outcome !== undefined) details.push(rich`${outcome}`);
      break;
    }
    case 'rejected':
      headline = rich`🚫 ${label} was rejected${outcome === undefined ? '.' : `: ${outcome}`}`;
      details.push(rich`Nothing was promoted to the stage that asked for approval.`);
      break;
    case 'expired':
      headline = rich`⌛ ${label} expired${outcome === undefined ? '.' : `: ${outcome}`}`;
      break;
    default:
      // Not terminal: callers should not get here, but a truthful message beats a wrong "ended".
      headline = rich`${RUN_STATE_EMOJI[run.state]} ${label} is ${run.state}.`;
  }

  const blocks: BlockView[] = [{ type: 'section', text: headline }];
  if (details.length > 0) blocks.push({ type: 'section', text: joinRich(details, '\n') });
  const usage = formatUsage(run.usage);
  const context = [linksLine(run.links), usage === undefined ? undefined : rich`${usage}`].filter(
    (value): value is RichText => value !== undefined,
  );
  if (context.length > 0) blocks.push({ type: 'context', text: joinRich(context, ' · ') });
  return { text: plainText(headline), blocks };
}

// ---------------------------------------------------------------------------
// ephemeral text

/** Usage for `/ship help` and for answers to malformed commands; `command` is the configured name. */
export function renderHelp(command: string): RichText {
  const usage = (args: string, what: string): RichText => rich`• ${code(args === '' ? command : `${command} ${args}`)} — ${what}`;
  return joinRich(
    [
      rich`${bold('shipgate')} — an AI agent proposes changes; your pipeline decides.`,
      usage('<owner/repo> <task…>', 'start a run on a repository'),
      usage('<task…>', 'start a run in a channel that has a default repository'),
      usage('status [run-id]', 'the active runs you can see, with queue positions, or one run in detail'),
      usage('cancel <run-id>', 'cancel a run (confirmed once the work has really stopped)'),
      usage('retry <run-id>', 'resume a failed run from its failed gate'),
      usage('audit <run-id>', "the run's evidence: every event, who, when, and whether the hash chain verifies"),
      usage('clear [all]', 'cancel your runs that wait at a gate not configured here (all: every active run of yours)'),
      usage('help', 'this message'),
      rich`Mention the bot in a run's thread to give that run's agent a follow-up instruction.`,
    ],
    '\n',
  );
}

function statusHeadline(run: Run, queuePosition?: number): RichText {
  return rich`${code(run.id)} · ${bold(run.repo)} · ${stateWords(run, queuePosition)}`;
}

/** `/ship status`: one line per active run, with queue positions for queued runs. */
export function renderStatusList(entries: Array<{ run: Run; queuePosition?: number | undefined }>): RichText {
  if (entries.length === 0) return rich`No active runs that you can see right now. ✨`;
  const lines = entries.map(({ run, queuePosition }) => rich`• ${statusHeadline(run, queuePosition)} — “${shortTask(run.task)}”`);
  return joinRich([rich`${bold(`Active runs (${entries.length})`)}`, ...lines], '\n');
}

/** `/ship status <run-id>`: one run in detail. */
export function renderRunStatus(run: Run, queuePosition?: number): RichText {
  const lines: RichText[] = [
    statusHeadline(run, queuePosition),
    [quote(truncateLines(run.task, 3, 200))],
    rich`Requested by ${principal(run.requester.userId)}`,
  ];
  if (run.state === 'cancelling') lines.push(cancelLine(run));
  if (run.gates.length > 0) lines.push(gateLines(run, CARD_SUMMARY_MAX_CHARS));
  const links = linksLine(run.links);
  if (links !== undefined) lines.push(links);
  const usage = formatUsage(run.usage);
  if (usage !== undefined) lines.push(rich`${usage}`);
  return joinRich(lines, '\n');
}
