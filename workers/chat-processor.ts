import { createHash } from 'node:crypto';
import { DelayedError, RateLimitError, type Job } from 'bullmq';
import { isTerminal, type Run } from '../src/domain/run.js';
import type { Logger } from '../src/log.js';
import type { ChatPort } from '../src/ports/chat.js';
import type { ChatJob, ReplyContent } from '../src/queue/queues.js';
import { renderApprovalRequest, renderSupersededApproval } from '../src/render/approval.js';
import { renderCard, renderDiagnosisReply, renderGateReply, renderRetryReply, renderRunEnded } from '../src/render/card.js';
import { mapMessageView, type MessageView } from '../src/render/view.js';
import type { Scrub } from '../src/security/scrubber.js';
import { AuditIntegrityError, type AuditLog } from '../src/audit/audit-log.js';
import { readRunEvidence } from '../src/audit/run-evidence.js';
import { renderAuditSummary, renderUnreadableEvidence } from '../src/render/audit-summary.js';
import type { ApprovalStore } from '../src/store/approval-store.js';
import type { OutboxStore } from '../src/store/outbox-store.js';
import type { RunIndex } from '../src/store/run-index.js';
import type { WriteLimiter } from '../src/store/write-limiter.js';
import { BOT_ACTOR } from './run-processor.js';
import type { RunStore } from '../src/store/run-store.js';

function digestOf(view: MessageView): string {
  return createHash('sha256').update(JSON.stringify(view)).digest('hex');
}

/** How long a run's reply waits for an earlier one that is not posted before it goes anyway (that one's job was lost). */
export const REPLY_ORDER_PATIENCE_MS = 15_000;

/** Slack allows roughly one update per second per message; SPEC §10 asks for at most one per 3 s in any chat. */
export const CARD_UPDATE_INTERVAL_MS = 3_000;

/** What the processor uses of a BullMQ job (a narrow type so tests can hand it a plain object). */
export type ChatProcessorJob = Pick<Job<ChatJob>, 'data' | 'moveToDelayed'> & { timestamp?: number };

/** How long an 'ended' reply re-checks often for the run's terminal state before it slows down. */
const ENDED_PROMPT_WAIT_MS = 30_000;

export interface ChatProcessorDeps {
  chat: ChatPort;
  store: RunStore;
  /** Where the outbox keeps its records (posted keys, the root lease, the card's coalescing state). */
  outbox: OutboxStore;
  log: Logger;
  updateIntervalMs?: number;
  /**
   * Shared pacing of chat writes (SPEC §10); without it writes are not paced. Over budget, `hold`
   * rate-limits the whole chat queue until the next window (BullMQ's `Queue.rateLimit`) and the job
   * goes back to waiting with no attempt spent.
   */
  writes?: { limiter: WriteLimiter; hold(ms: number): Promise<void> } | undefined;
  /** The slash command's name, for hints such as "/ship retry <id>". */
  command?: string | undefined;
  /** Where mentions in a thread find their run. */
  index?: RunIndex | undefined;
  /** The policy says `sandbox: none`: every card says that checks run unsandboxed. */
  unsandboxedChecks?: boolean | undefined;
  /** Secret scrubbing of every message posted or updated (SPEC §4): checked here, on write, whoever rendered it. */
  scrub: Scrub;
  /** The approval requests the approval messages are rendered from; their deadline starts when posted. */
  approvals?: Pick<ApprovalStore, 'get' | 'markPosted'> | undefined;
  /**
   * Where `approval.requested` is recorded (the moment the request is posted is the evidence's), and
   * what `/ship audit` reads, verifies and exports.
   */
  audit?: Pick<AuditLog, 'append' | 'eventsForRun' | 'exportRun' | 'verify'> | undefined;
  clock?: (() => Date) | undefined;
}

/**
 * Everything shipgate writes to a run's thread goes through this outbox, so
 * that a write is durable (a queued job) and happens once:
 *
 * - A post is recorded under its key: `pending` before the call and the
 *   message reference after it. Finding `pending` means an earlier attempt died
 *   mid-call; the platform is then asked whether the message landed (by the
 *   key stored in its metadata) before posting again.
 * - Card updates are coalesced: every state change asks for a card job, BullMQ
 *   keeps at most one waiting per run (deduplication), and a job renders only
 *   when the card has not shown the stored version yet; a per-message slot key
 *   spaces updates at least `updateIntervalMs` apart.
 * - Writes are paced across workers (`writes`): over budget, the chat queue is
 *   held by BullMQ's rate limit and the job handed back.
 *
 * The records live in the outbox store (src/store/outbox-store.ts); this is
 * the logic over them.
 */
export function createChatProcessor(deps: ChatProcessorDeps): (job: ChatProcessorJob, token?: string) => Promise<void> {
  const { chat, store, outbox, scrub } = deps;
  const interval = deps.updateIntervalMs ?? CARD_UPDATE_INTERVAL_MS;
  const cardOptions = { unsandboxedChecks: deps.unsandboxedChecks === true };
  const safe = (view: MessageView): MessageView => mapMessageView(view, scrub);

  /** Posts at most once per key; `fresh` is false when an earlier attempt's message was found instead. */
  /** A slot for one chat write, or the job handed back to BullMQ until the next window (it runs again from the top: every write is keyed). */
  async function takeWriteSlot(): Promise<void> {
    if (deps.writes === undefined) return;
    const slot = await deps.writes.limiter.take();
    if (slot.taken) return;
    await deps.writes.hold(slot.retryInMs);
    throw new RateLimitError();
  }

  async function postOnce(
    input: { channel: string; thread?: string | undefined; view: MessageView; key: string },
    { slotTaken = false }: { slotTaken?: boolean } = {},
  ): Promise<{ ref: string; fresh: boolean }> {
    const record = await outbox.postRecord(input.key);
    if (record?.state === 'posted') return { ref: record.ref, fresh: false };
    if (record?.state === 'pending') {
      const found = await chat.findMessageByKey({ channel: input.channel, thread: input.thread, key: input.key });
      if (found !== undefined) {
        await outbox.recordPosted(input.key, found.ref);
        return { ref: found.ref, fresh: false };
      }
    }
    if (!slotTaken) await takeWriteSlot();
    await outbox.recordPending(input.key);
    const { ref } = await chat.postMessage(input);
    await outbox.recordPosted(input.key, ref);
    return { ref, fresh: true };
  }

  /**
   * Posts the root card if it does not exist yet; returns the run with `chat.card` set, and whether
   * the card now shows this version (false when an interrupted earlier post was found instead).
   */
  async function ensureRoot(run: Run, job: ChatProcessorJob, token: string | undefined): Promise<{ run: Run; current: boolean }> {
    if (run.chat.card !== undefined) return { run, current: false };
    // The write slot before the lease: a job handed back for want of a slot must not leave the lease
    // held, or every job of the run would wait out its lifetime.
    await takeWriteSlot();
    // Two jobs of one run (the first card and the first change) may both get here: one posts, the
    // other waits for it. The lease expires, so a holder that died does not block the run.
    if (!(await outbox.takeRootLease(run.id))) {
      // The holder may have died after its post landed but before it stored where: adopt that message
      // now instead of waiting out the lease (replies would wait with it). Otherwise wait.
      const landed = await landedRoot(run);
      if (landed === undefined) return delay(job, token, 300);
      return adoptRoot(run, landed, false);
    }
    const view = safe(renderCard(run, cardOptions));
    const { ref, fresh } = await postOnce({ channel: run.chat.channel, view, key: `${run.id}.root` }, { slotTaken: true });
    if (fresh) await outbox.recordRootCard(run.id, { version: run.version, digest: digestOf(view), intervalMs: interval });
    return adoptRoot(run, ref, fresh);
  }

  /** The root card another job posted (its record, or the chat's message under its key), if it landed. */
  async function landedRoot(run: Run): Promise<string | undefined> {
    const key = `${run.id}.root`;
    const record = await outbox.postRecord(key);
    if (record?.state === 'posted') return record.ref;
    if (record?.state !== 'pending') return undefined;
    const found = await chat.findMessageByKey({ channel: run.chat.channel, key });
    if (found !== undefined) await outbox.recordPosted(key, found.ref);
    return found?.ref;
  }

  /** Records where the run's card lives (the thread of its replies), once. */
  async function adoptRoot(run: Run, ref: string, fresh: boolean): Promise<{ run: Run; current: boolean }> {
    await deps.index?.link({ kind: 'thread', channel: run.chat.channel, message: ref }, run.id);
    // Silent: recording where the card lives is not a change the card needs to show.
    const change = await store.update(run.id, (latest) => (latest.chat.card === undefined ? { ...latest, chat: { ...latest.chat, card: ref } } : undefined), { silent: true });
    return { run: change?.after ?? { ...run, chat: { ...run.chat, card: ref } }, current: fresh };
  }

  async function delay(job: ChatProcessorJob, token: string | undefined, ms: number): Promise<never> {
    await job.moveToDelayed(Date.now() + ms, token);
    throw new DelayedError();
  }

  async function refreshCard(job: ChatProcessorJob, token: string | undefined, runId: string): Promise<void> {
    const stored = await store.get(runId);
    if (stored === undefined) return;
    // The stored run, not the job's `version`, decides: card jobs are deduplicated per run, so this
    // job stands for every change made since it was added (src/queue/queues.ts).
    const rendered = (await outbox.renderedVersion(runId)) ?? -1;
    if (rendered >= stored.version) return;
    const rooted = await ensureRoot(stored, job, token);
    if (rooted.current) return;
    const run = rooted.run;
    if (run.chat.card === undefined) return;
    const view = safe(renderCard(run, cardOptions));
    const digest = digestOf(view);
    // A change that renders the same card (a poll that saw nothing new) costs no chat write.
    const unchanged = (await outbox.cardDigest(runId)) === digest;
    if (!unchanged) {
      const slot = await outbox.takeCardSlot(runId, interval);
      if (!slot.taken) await delay(job, token, Math.max(slot.retryInMs, 50));
      await takeWriteSlot();
      await chat.updateMessage({ channel: run.chat.channel, ref: run.chat.card, view });
      await outbox.recordCardDigest(runId, digest);
    }
    // Only ever move the marker forward: a slower job must not claim an older version was shown last.
    await outbox.advanceRendered(runId, run.version);
    deps.log.debug({ runId, version: run.version }, 'card updated');
  }

  function replyView(run: Run, content: ReplyContent): MessageView {
    if (content.type === 'ended') return renderRunEnded(run, deps.command);
    if (content.type === 'diagnosis') return renderDiagnosisReply(run, content);
    if (content.type === 'retrying') return renderRetryReply(run, content);
    // Render the outcome carried by the job, not the gate's current state, which may have moved on.
    const asDecided: Run = {
      ...run,
      gates: run.gates.map((gate) =>
        // A verdict that sent the run back (red CI) reads as failed, with the summary saying what happens next.
        gate.name === content.gate ? { ...gate, state: content.outcome === 'retry-from' ? 'failed' : content.outcome, summary: content.summary } : gate,
      ),
    };
    return renderGateReply(asDecided, content.gate);
  }

  /**
   * Posts the approval request once (keyed by its nonce), starts its deadline from that moment, and
   * afterwards replaces the same message with the request's current state: who approved, who
   * rejected, or that it expired, without buttons once decided. A request replaced by another
   * Freight's loses its buttons and points to the newer one.
   */
  async function approvalMessage(job: ChatProcessorJob, token: string | undefined, runId: string, nonce: string): Promise<void> {
    const run = await store.get(runId);
    const record = await deps.approvals?.get(runId);
    if (run === undefined) return;
    const key = `${runId}.approval.${nonce}`;
    const posted = await outbox.postRecord(key);
    if (record === undefined || record.request.nonce !== nonce) {
      if (posted?.state === 'posted') await updateInPlace(run.chat.channel, key, posted.ref, safe(renderSupersededApproval(run)));
      return;
    }
    const { run: rooted } = await ensureRoot(run, job, token);
    // The request is marked posted and audited before the message goes out, so no click (which can
    // only follow the post) is ever in the log ahead of the request it answers, and a crash anywhere
    // here is mended by the retry: markPosted moves the deadline once, the event is keyed. The
    // deadline so starts when the bot posts, moments before the chat shows the message.
    let latest = record;
    if (latest.postedAt === undefined) {
      await deps.approvals?.markPosted(runId, nonce, (deps.clock ?? (() => new Date()))().toISOString());
      latest = (await deps.approvals?.get(runId)) ?? record;
    }
    const { request } = latest;
    const mergeCommit = run.artifacts.merge?.commitSha;
    await deps.audit?.append({
      type: 'approval.requested',
      actor: BOT_ACTOR,
      runId,
      data: {
        stage: request.stage,
        freight: request.freight,
        nonce: request.nonce,
        ...(mergeCommit === undefined ? {} : { mergeCommit }),
        requester: request.requester,
        approvers: request.approvers,
        minApprovals: request.minApprovals,
        allowSelfApproval: request.allowSelfApproval,
        requestedAt: latest.postedAt ?? request.requestedAt,
        expiresAt: request.expiresAt,
      },
      key: `${key}.requested`,
    });
    const view = safe(renderApprovalRequest(rooted, latest));
    const ref = posted?.state === 'posted' ? posted.ref : (await postOnce({ channel: rooted.chat.channel, thread: rooted.chat.card, view, key })).ref;
    // Posted earlier (this is a later state of the request) or just now: show the state that counts.
    // Jobs of two states of one request can run side by side, and the one that rendered the older
    // state may write last: so after each write, read the request again and write again while it
    // moved on (level-triggered; the last writer always ends on the state that is stored).
    let shown = latest;
    let shownView = view;
    for (let round = 0; round < 10; round += 1) {
      await updateInPlace(rooted.chat.channel, key, ref, shownView);
      const now = await deps.approvals?.get(runId);
      if (now === undefined || now.request.nonce !== nonce || JSON.stringify(now) === JSON.stringify(shown)) return;
      shown = now;
      shownView = safe(renderApprovalRequest(rooted, now));
    }
  }

  /** One update of a posted message, skipped when it would show the same thing again. */
  async function updateInPlace(channel: string, postKey: string, ref: string, view: MessageView): Promise<void> {
    const digest = digestOf(view);
    if ((await outbox.messageDigest(postKey)) === digest) return;
    await takeWriteSlot();
    await chat.updateMessage({ channel, ref, view });
    await outbox.recordMessageDigest(postKey, digest);
  }

  /** Uploads at most once per key; a `pending` record (an attempt died mid-call) uploads again, see the outbox store. */
  async function uploadOnce(input: Parameters<ChatPort['uploadFile']>[0]): Promise<string> {
    const record = await outbox.uploadRecord(input.key);
    if (record?.state === 'uploaded') return record.ref;
    await takeWriteSlot();
    await outbox.recordUploadPending(input.key);
    const { ref } = await chat.uploadFile(input);
    await outbox.recordUploaded(input.key, ref);
    return ref;
  }

  /**
   * `/ship audit`: the run's chain of custody as a thread reply and its JSON Lines export as a file
   * in the thread, once per request. The export is recorded first (`audit.exported`, keyed), and the
   * file runs through that event: so the file names its own export, and a retried job sends the same
   * bytes however far the run has moved on since.
   */
  async function evidence(job: ChatProcessorJob, token: string | undefined, data: Extract<ChatJob, { kind: 'evidence' }>): Promise<void> {
    const audit = deps.audit;
    if (audit === undefined) throw new Error('the chat processor has no audit log to answer /ship audit from');
    const run = await store.get(data.runId);
    if (run === undefined) return;
    const { run: rooted } = await ensureRoot(run, job, token);
    const thread = rooted.chat.card;
    if (thread === undefined) return;
    const base = `${run.id}.evidence.${data.request}`;
    const filename = `${run.id}-evidence-${data.request}.jsonl`;
    const post = (view: MessageView) => postOnce({ channel: rooted.chat.channel, thread, view: safe(view), key: `${base}.summary` });
    try {
      if ((await audit.eventsForRun(run.id)).length === 0) {
        // Nothing recorded yet (the run's first job has not run): an export would be an empty file.
        await post(renderAuditSummary({ evidence: readRunEvidence(run.id, []), verification: await audit.verify(), command: deps.command }));
        return;
      }
      const exported = await audit.append({
        type: 'audit.exported',
        actor: data.requestedBy,
        runId: run.id,
        data: { request: data.request, channel: data.channel, filename },
        key: `${base}.exported`,
      });
      const events = (await audit.eventsForRun(run.id)).filter((event) => event.seq <= exported.seq);
      // Not scrubbed here: the rows were scrubbed before they were hashed, and any change would break
      // both the HMACs a reader checks and the byte-for-byte match with `npm run audit-log -- export`.
      const jsonl = await audit.exportRun(run.id, { throughSeq: exported.seq });
      const verification = await audit.verify();
      await post(renderAuditSummary({ evidence: readRunEvidence(run.id, events), verification, filename, command: deps.command }));
      await uploadOnce({ channel: rooted.chat.channel, thread, filename, title: `Audit evidence of ${run.id}`, content: jsonl, key: `${base}.file` });
      deps.log.info({ runId: run.id, request: data.request, events: events.length, verified: verification.ok }, 'evidence posted');
    } catch (error) {
      // The run's own rows contradict the log: say so in the thread instead of failing quietly in the queue.
      if (!(error instanceof AuditIntegrityError)) throw error;
      deps.log.warn({ runId: run.id, err: error }, 'evidence unreadable');
      await post(renderUnreadableEvidence(run.id, error.message));
    }
  }

  return async function processChat(job, token) {
    const data = job.data;
    if (data.kind === 'evidence') {
      await evidence(job, token, data);
      return;
    }
    if (data.kind === 'card') {
      await refreshCard(job, token, data.runId);
      return;
    }
    if (data.kind === 'approval') {
      await approvalMessage(job, token, data.runId, data.nonce);
      return;
    }
    const run = await store.get(data.runId);
    if (run === undefined) return;
    // The run processor enqueues the 'ended' reply before it stores the end (crash-safety order);
    // rendering now could announce "is cancelling". Wait until the terminal state is stored: at once
    // at first (the store follows within milliseconds), then gently, since a run processor that died
    // in between stores the end only when its job is retried, after BullMQ's backoff.
    if (data.content.type === 'ended' && !isTerminal(run.state)) {
      const now = (deps.clock ?? (() => new Date()))().getTime();
      const waited = now - (job.timestamp ?? now);
      await delay(job, token, waited < ENDED_PROMPT_WAIT_MS ? 250 : 5_000);
    }
    // Thread order is enqueue order (issue 14): an earlier reply of the run still unposted goes first,
    // unless it has been at the head for REPLY_ORDER_PATIENCE_MS (its job lost), which must not
    // silence the thread; the next head gets its own patience.
    const now = (deps.clock ?? (() => new Date()))().getTime();
    for (;;) {
      const first = await outbox.firstPendingReply(run.id, now);
      if (first === undefined || first.key === data.key) break;
      // A head already posted came back with a re-enqueue whose job BullMQ dropped as a duplicate: off.
      if ((await outbox.postRecord(`${run.id}.${first.key}`))?.state === 'posted') {
        await outbox.replyPosted(run.id, first.key);
        continue;
      }
      // This reply lost its place (given up on earlier): it waits for nobody.
      if (!(await outbox.isPendingReply(run.id, data.key))) break;
      if (now - first.headSince < REPLY_ORDER_PATIENCE_MS) await delay(job, token, 200);
      // Stuck past patience: out of the order, so the replies after it keep theirs.
      deps.log.warn({ runId: run.id, stuck: first.key, waiting: data.key }, 'a reply waited too long for an earlier one; posting without it');
      await outbox.replyPosted(run.id, first.key);
    }
    const { run: rooted } = await ensureRoot(run, job, token);
    await postOnce({ channel: rooted.chat.channel, thread: rooted.chat.card, view: safe(replyView(rooted, data.content)), key: `${run.id}.${data.key}` });
    await outbox.replyPosted(run.id, data.key);
  };
}
