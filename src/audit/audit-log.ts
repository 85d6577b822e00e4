import { createHmac, timingSafeEqual } from 'node:crypto';
import type { Redis, Result } from 'ioredis';
import { z } from 'zod';
import { scrubSecrets, type Logger } from '../log.js';
import { AUDIT_CHAIN_ALG, auditKeyId } from './audit-key.js';

/**
 * The tamper-evident audit trail (SPEC §7). Every event of every run goes into
 * ONE Redis list, and each event carries the hash of the event before it in
 * the whole log, so editing or deleting any stored row breaks the chain at a
 * point `verify()` can name.
 *
 * The hashes are HMAC-SHA256 keyed with SHIPGATE_AUDIT_KEY, which Redis never
 * holds: someone who can write to Redis but lacks the key cannot re-hash a
 * rewritten, reordered or shortened chain so that it verifies. Each event
 * names the scheme (`alg`) and the key (`keyId`, an HMAC of a constant), so
 * verifying with the wrong key says "the audit key does not match" rather than
 * calling every event altered.
 *
 * What the key cannot stop is cutting events off the end (with the head moved
 * back): the remaining prefix is still a valid chain. For that the head is
 * checkpointed outside Redis: a structured log line `audit checkpoint
 * { seq, hash }` every `checkpointEvery` events and on close(), which
 * `verify({ checkpoints })` (CLI: `verify --checkpoint seq:hash`) checks
 * against the chain.
 *
 * Key layout (all under `${prefix}:audit:`):
 *   log          LIST   the events, oldest first, as canonical JSON; event #seq is at index seq-1
 *   head         HASH   { hash, seq } of the newest event; kept apart from the list so that
 *                       deleting the tail of the list is detectable
 *   run:<runId>  LIST   seqs of that run's events (an index into `log`)
 *   keys         HASH   idempotency key -> seq of the event it produced
 */

export const AUDIT_EVENT_TYPES = [
  'run.requested',
  'run.queued',
  'run.started',
  'run.cancel_requested',
  'run.cancelled',
  'run.failed',
  'run.done',
  'run.retried',
  'run.rejected',
  'run.expired',
  'gate.started',
  'gate.passed',
  'gate.failed',
  'gate.skipped',
  'gate.not_configured',
  'command.refused',
  'action.refused',
  'message.posted',
  'agent.iteration',
  'commit.created',
  'pr.opened',
  'pr.merged',
  'approval.requested',
  'approval.approved',
  'approval.rejected',
  'approval.refused',
  'approval.expired',
  'promotion.created',
  'gate.sent_back',
  'run.follow_up',
  'ci.verdict',
  'freight.found',
  'stage.verdict',
  'audit.exported',
  'diagnosis.tool_call',
  'diagnosis.made',
  'merge.approved',
] as const;

export type AuditEventType = (typeof AUDIT_EVENT_TYPES)[number];

/** The hash the first event links to. */
export const GENESIS_HASH = '0'.repeat(64);

const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex digits');

/** Fields every keyed event has; a row without them was written by the unkeyed chain (or forged). */
const CHAIN_FIELDS = ['alg', 'keyId'] as const;

/**
 * `.strict()` matters for tamper evidence: a stripping schema would silently
 * drop a field someone added to a stored row, and the recomputed hash would
 * still match.
 */
const storedEventSchema = z
  .object({
    seq: z.number().int().positive(),
    at: z.iso.datetime(),
    runId: z.string().min(1).nullable(),
    type: z.enum(AUDIT_EVENT_TYPES),
    actor: z.string(),
    data: z.record(z.string(), z.unknown()),
    key: z.string().min(1).optional(),
    alg: z.literal(AUDIT_CHAIN_ALG),
    keyId: z.string().regex(/^[0-9a-f]{16}$/, 'must be 16 lowercase hex digits'),
    prevHash: sha256Hex,
    hash: sha256Hex,
  })
  .strict();

export type AuditEvent = z.infer<typeof storedEventSchema>;

export interface AuditAppendInput {
  type: AuditEventType;
  /** Who caused the event: a chat user id, `shipgate`, `agent`, `github` … */
  actor: string;
  runId?: string | undefined;
  /** Must be JSON-serialisable; it is stored (and hashed) as its JSON form. */
  data?: Record<string, unknown> | undefined;
  /** Idempotency key: a second append with the same key returns the first event instead of appending. */
  key?: string | undefined;
}

/** A point of the chain recorded outside Redis: event #seq had this hash. Written as `seq:hash`. */
export interface AuditCheckpoint {
  seq: number;
  hash: string;
}

/**
 * Why verification failed: `wrong-key` (an event names another key than the
 * configured one), `tampered` (the stored log contradicts itself or its HMACs),
 * `checkpoint` (the chain is self-consistent but lacks a checkpointed event:
 * truncated, or rewritten before the key was lost).
 */
export type AuditProblem = 'wrong-key' | 'tampered' | 'checkpoint';

export type AuditVerifyResult =
  | { ok: true; count: number; head: AuditCheckpoint | null }
  | {
      ok: false;
      count: number;
      broken: { seq: number; runId: string | null; type: string; reason: string; problem: AuditProblem };
    };

export interface AuditVerifyOptions {
  /** Heads recorded outside Redis; each must still be in the chain with the same hash. */
  checkpoints?: readonly AuditCheckpoint[] | undefined;
}

export interface AuditLog {
  append(input: AuditAppendInput): Promise<AuditEvent>;
  /** The run's events in log order; throws AuditIntegrityError if an indexed event is missing or unreadable. */
  eventsForRun(runId: string): Promise<AuditEvent[]>;
  /** Every event of the log (all runs), oldest first; throws AuditIntegrityError if a row is unreadable or out of place. */
  allEvents(): Promise<AuditEvent[]>;
  /** Walks the whole log and names the first event where the chain breaks, or a checkpoint it lacks. */
  verify(options?: AuditVerifyOptions): Promise<AuditVerifyResult>;
  /**
   * JSON Lines of the run's events exactly as stored ('' for a run with no events): the one export
   * behind both `npm run audit-log -- export` and the file `/ship audit` uploads. `throughSeq`
   * stops at that event, so a retried upload sends the same bytes even when the run moved on.
   */
  exportRun(runId: string, options?: { throughSeq?: number | undefined }): Promise<string>;
  /** Logs the current head as `audit checkpoint { seq, hash }` and returns it (null for an empty log). */
  checkpoint(): Promise<AuditCheckpoint | null>;
  /** Waits for this process's pending appends and logs a final checkpoint; never throws. */
  close(): Promise<void>;
}

/** The fixed pino message of a checkpoint line; its metadata is `{ seq, hash }`. */
export const CHECKPOINT_MESSAGE = 'audit checkpoint';

export const DEFAULT_CHECKPOINT_EVERY = 100;

export interface AuditLogOptions {
  redis: Redis;
  prefix: string;
  clock: () => Date;
  /** SHIPGATE_AUDIT_KEY: the HMAC key of the chain. Redis never sees it. */
  key: Uint8Array;
  /** Where checkpoints (and contradictions noticed while appending) are logged. */
  log?: Pick<Logger, 'info' | 'warn' | 'error'> | undefined;
  /** Log a checkpoint whenever an appended event's seq is a multiple of this (default 100). */
  checkpointEvery?: number | undefined;
  /** Applied to every string of an event's data and to its actor before it is written (default scrubSecrets). */
  scrub?: ((text: string) => string) | undefined;
  /** LRANGE page size for verify(); small values only make sense in tests. */
  pageSize?: number | undefined;
}

/** The stored log contradicts itself (a row is missing or unreadable); thrown by reads, reported by verify(). */
export class AuditIntegrityError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AuditIntegrityError';
  }
}

/**
 * JSON with object keys sorted at every depth, so a hash computed on one
 * machine can be recomputed from the stored row anywhere. Input must already
 * be plain JSON data (see toJsonData).
 */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map((item) => canonicalJson(item)).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value)
      .filter(([, item]) => item !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, item]) => `${JSON.stringify(k)}:${canonicalJson(item)}`).join(',')}}`;
  }
  // Only reachable for undefined inside arrays, which JSON also writes as null.
  return JSON.stringify(value) ?? 'null';
}

/**
 * Hash of an event: HMAC-SHA256, keyed with the audit key, of the canonical
 * JSON of every field except `hash`. That text includes `prevHash` (the link
 * to the event before), `seq`, `alg` and `keyId`.
 */
export function hashEvent(event: Omit<AuditEvent, 'hash'> & { hash?: string }, key: Uint8Array): string {
  const { hash: _ignored, ...rest } = event;
  return createHmac('sha256', key).update(canonicalJson(rest)).digest('hex');
}

function sameHash(a: string, b: string): boolean {
  const left = Buffer.from(a, 'utf8');
  const right = Buffer.from(b, 'utf8');
  return left.length === right.length && timingSafeEqual(left, right);
}

/** `seq:hash` as printed by `audit-log checkpoint`; undefined when the text is not one. */
export function parseCheckpoint(text: string): AuditCheckpoint | undefined {
  const match = /^([1-9][0-9]*):([0-9a-f]{64})$/.exec(text.trim());
  if (match === null) return undefined;
  const seq = Number(match[1]);
  if (!Number.isSafeInteger(seq)) return undefined;
  return { seq, hash: match[2] ?? '' };
}

export function formatCheckpoint(checkpoint: AuditCheckpoint): string {
  return `${checkpoint.seq}:${checkpoint.hash}`;
}

const jsonRecordSchema = z.record(z.string(), z.unknown());

/**
 * Round-trips data through JSON first, so what is hashed is exactly what a
 * later reader will parse back (Dates become strings, undefined disappears).
 */
function toJsonData(data: Record<string, unknown> | undefined): Record<string, unknown> {
  if (data === undefined) return {};
  let text: string;
  try {
    text = JSON.stringify(data);
  } catch (error) {
    throw new TypeError(
      `audit event data must be JSON-serialisable: ${error instanceof Error ? error.message : String(error)}`,
      {
        cause: error,
      },
    );
  }
  return jsonRecordSchema.parse(JSON.parse(text));
}

/** Every string in plain JSON data through `scrub`; object keys are left alone. */
function scrubJson(value: unknown, scrub: (text: string) => string): unknown {
  if (typeof value === 'string') return scrub(value);
  if (Array.isArray(value)) return value.map((item) => scrubJson(item, scrub));
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, scrubJson(item, scrub)]));
  }
  return value;
}

type ParsedRow = { ok: true; event: AuditEvent } | { ok: false; reason: string };

function parseRow(row: string): ParsedRow {
  let raw: unknown;
  try {
    raw = JSON.parse(row);
  } catch {
    return { ok: false, reason: 'stored row is not valid JSON' };
  }
  const parsed = storedEventSchema.safeParse(raw);
  if (!parsed.success) {
    if (raw !== null && typeof raw === 'object' && 'hash' in raw && CHAIN_FIELDS.every((field) => !(field in raw))) {
      return {
        ok: false,
        reason:
          'the event has no alg/keyId: it is in the unkeyed SHA-256 format (written before SHIPGATE_AUDIT_KEY, or forged by someone without the key) and cannot be verified',
      };
    }
    const problems = parsed.error.issues.map(
      (issue) => `${issue.path.map(String).join('.') || '(root)'}: ${issue.message}`,
    );
    return { ok: false, reason: `stored row does not match the event schema (${problems.join('; ')})` };
  }
  return { ok: true, event: parsed.data };
}

/** Best-effort labels for an unparseable row, so verify() can still say which row it was. */
const looseRowSchema = z.object({
  runId: z.string().nullable().optional().catch(undefined),
  type: z.string().optional().catch(undefined),
});

function describeBadRow(row: string): { runId: string | null; type: string } {
  try {
    const loose = looseRowSchema.safeParse(JSON.parse(row));
    if (loose.success) return { runId: loose.data.runId ?? null, type: loose.data.type ?? 'unknown' };
  } catch {
    // Not JSON at all: nothing to salvage.
  }
  return { runId: null, type: 'unknown' };
}

/**
 * Compare-and-set commit. Hashing happens in JS (Lua in Redis has no
 * SHA-256), so the script only accepts the event if the head is still the
 * one the hash was computed against; otherwise it returns the current head
 * and the caller rebuilds the event on top of it.
 *
 * KEYS: log, head, keys, [run index]   ARGV: prevHash, hash, seq, row, idempotency key ('' = none)
 */
const APPEND_SCRIPT = `
local idem = ARGV[5]
if idem ~= '' then
  local existing = redis.call('HGET', KEYS[3], idem)
  if existing then
    local row = redis.call('LINDEX', KEYS[1], tonumber(existing) - 1)
    return {'dup', existing, row or ''}
  end
end
local head = redis.call('HMGET', KEYS[2], 'hash', 'seq')
local headHash = head[1]
local headSeq = head[2]
if not headHash then
  -- A missing head over a non-empty log means someone deleted it; starting a
  -- second chain at #1 would bury that, so refuse instead.
  if redis.call('LLEN', KEYS[1]) > 0 then return {'headless'} end
  headHash = '${GENESIS_HASH}'
  headSeq = '0'
end
if headHash ~= ARGV[1] then
  return {'conflict', headHash, headSeq or '0'}
end
redis.call('RPUSH', KEYS[1], ARGV[4])
redis.call('HSET', KEYS[2], 'hash', ARGV[2], 'seq', ARGV[3])
if idem ~= '' then redis.call('HSET', KEYS[3], idem, ARGV[3]) end
if #KEYS >= 4 then redis.call('RPUSH', KEYS[4], ARGV[3]) end
return {'ok'}
`;

// APPEND_SCRIPT as ioredis commands, one per key count (the run index is the optional fourth key);
// defineCommand sends EVALSHA and loads the script again when a restarted Redis has lost it.
declare module 'ioredis' {
  interface RedisCommander<Context> {
    shipgateAuditAppend(
      log: string,
      head: string,
      keys: string,
      prevHash: string,
      hash: string,
      seq: string,
      row: string,
      idempotencyKey: string,
    ): Result<unknown, Context>;
    shipgateAuditAppendForRun(
      log: string,
      head: string,
      keys: string,
      runIndex: string,
      prevHash: string,
      hash: string,
      seq: string,
      row: string,
      idempotencyKey: string,
    ): Result<unknown, Context>;
  }
}

const scriptReplySchema = z.union([
  z.tuple([z.literal('ok')]),
  z.tuple([z.literal('dup'), z.string(), z.string()]),
  z.tuple([z.literal('conflict'), z.string(), z.string()]),
  z.tuple([z.literal('headless')]),
]);

const headSchema = z.tuple([z.string().nullable(), z.string().nullable()]);

/** Enough for every appender to win eventually even when dozens race; each lost round means someone else committed. */
const MAX_APPEND_ATTEMPTS = 500;

const DEFAULT_PAGE_SIZE = 1000;

export function createAuditLog({
  redis,
  prefix,
  clock,
  key: auditKey,
  log,
  checkpointEvery = DEFAULT_CHECKPOINT_EVERY,
  scrub = scrubSecrets,
  pageSize = DEFAULT_PAGE_SIZE,
}: AuditLogOptions): AuditLog {
  if (!Number.isSafeInteger(checkpointEvery) || checkpointEvery < 1) {
    throw new RangeError(`checkpointEvery must be a positive integer (got ${checkpointEvery})`);
  }
  const base = `${prefix}:audit:`;
  const logKey = `${base}log`;
  const headKey = `${base}head`;
  const idemKey = `${base}keys`;
  const runKey = (runId: string): string => `${base}run:${runId}`;
  const keyId = auditKeyId(auditKey);
  redis.defineCommand('shipgateAuditAppend', { numberOfKeys: 3, lua: APPEND_SCRIPT });
  redis.defineCommand('shipgateAuditAppendForRun', { numberOfKeys: 4, lua: APPEND_SCRIPT });

  /** The newest event this process appended: the head must never be found behind it. */
  let lastAppended: AuditCheckpoint | undefined;

  function noticeHead(headSeq: number, headHash: string): void {
    if (lastAppended === undefined) return;
    const behind = headSeq < lastAppended.seq;
    if (behind || (headSeq === lastAppended.seq && headHash !== lastAppended.hash)) {
      log?.error(
        { headSeq, appendedSeq: lastAppended.seq, appendedHash: lastAppended.hash },
        'audit head contradicts an event this process appended',
      );
    }
  }

  function emitCheckpoint(checkpoint: AuditCheckpoint): void {
    log?.info({ seq: checkpoint.seq, hash: checkpoint.hash }, CHECKPOINT_MESSAGE);
  }

  async function readHead(): Promise<{ hash: string; seq: number } | null> {
    const [hash, seq] = headSchema.parse(await redis.hmget(headKey, 'hash', 'seq'));
    if (hash === null) return null;
    return { hash, seq: Number(seq ?? '0') };
  }

  async function runScript(
    runId: string | null,
    args: [prevHash: string, hash: string, seq: string, row: string, idempotencyKey: string],
  ): Promise<unknown> {
    return runId === null
      ? redis.shipgateAuditAppend(logKey, headKey, idemKey, ...args)
      : redis.shipgateAuditAppendForRun(logKey, headKey, idemKey, runKey(runId), ...args);
  }

  function parseExisting(key: string, seq: string, row: string): AuditEvent {
    const parsed = parseRow(row);
    if (!parsed.ok)
      throw new AuditIntegrityError(`audit event #${seq} (idempotency key ${key}) is unreadable: ${parsed.reason}`);
    // The idempotency index lives in Redis too; never hand back another event as this key's.
    if (parsed.event.key !== key || String(parsed.event.seq) !== seq) {
      throw new AuditIntegrityError(
        `the idempotency index maps key ${key} to event #${seq}, which is not that key's event: the log was altered`,
      );
    }
    return parsed.event;
  }

  // Appends from this process go one at a time. Racing them would only make all but one lose the
  // compare-and-set and retry, work that grows with the square of the burst (200 concurrent
  // commands measured ~2.7 s per ack); across processes the compare-and-set still decides.
  let tail: Promise<unknown> = Promise.resolve();
  function append(input: AuditAppendInput): Promise<AuditEvent> {
    const next = tail.then(() => appendNow(input));
    tail = next.catch(() => undefined);
    return next;
  }

  async function appendNow(input: AuditAppendInput): Promise<AuditEvent> {
    // Scrubbed before hashing: what is hashed is exactly what is stored.
    const data = jsonRecordSchema.parse(scrubJson(toJsonData(input.data), scrub));
    const actor = scrub(input.actor);
    const key = input.key === undefined || input.key === '' ? undefined : input.key;
    const runId = input.runId === undefined || input.runId === '' ? null : input.runId;

    // Redeliveries are the common case for keyed appends; answer them without a CAS round.
    if (key !== undefined) {
      const seq = await redis.hget(idemKey, key);
      if (seq !== null) {
        const row = await redis.lindex(logKey, Number(seq) - 1);
        return parseExisting(key, seq, row ?? '');
      }
    }

    const head = await readHead();
    let prevHash = head?.hash ?? GENESIS_HASH;
    let prevSeq = head?.seq ?? 0;
    for (let attempt = 1; attempt <= MAX_APPEND_ATTEMPTS; attempt += 1) {
      noticeHead(prevSeq, prevHash);
      const unhashed: Omit<AuditEvent, 'hash'> = {
        seq: prevSeq + 1,
        at: clock().toISOString(),
        runId,
        type: input.type,
        actor,
        data,
        ...(key === undefined ? {} : { key }),
        alg: AUDIT_CHAIN_ALG,
        keyId,
        prevHash,
      };
      // Checked before writing: a row the reader's schema rejects would read as tampering forever after.
      const event = storedEventSchema.parse({ ...unhashed, hash: hashEvent(unhashed, auditKey) });
      const reply = scriptReplySchema.parse(
        await runScript(runId, [prevHash, event.hash, String(event.seq), canonicalJson(event), key ?? '']),
      );
      switch (reply[0]) {
        case 'ok':
          lastAppended = { seq: event.seq, hash: event.hash };
          if (event.seq % checkpointEvery === 0) emitCheckpoint(lastAppended);
          return event;
        case 'dup':
          return parseExisting(key ?? '', reply[1], reply[2]);
        case 'headless':
          throw new AuditIntegrityError(`${headKey} is missing but ${logKey} is not empty: the audit head was deleted`);
        case 'conflict':
          prevHash = reply[1];
          prevSeq = Number(reply[2]);
          break;
      }
    }
    throw new Error(`audit append gave up after ${MAX_APPEND_ATTEMPTS} compare-and-set conflicts`);
  }

  /** Raw rows of a run, checked to be the events the index says they are. */
  async function runRows(runId: string): Promise<{ row: string; event: AuditEvent }[]> {
    const seqs = await redis.lrange(runKey(runId), 0, -1);
    if (seqs.length === 0) return [];
    const pipeline = redis.pipeline();
    for (const seq of seqs) pipeline.lindex(logKey, Number(seq) - 1);
    const replies = (await pipeline.exec()) ?? [];
    return seqs.map((seq, index) => {
      const [error, row] = replies[index] ?? [new Error('no reply'), null];
      if (error) throw error;
      if (typeof row !== 'string')
        throw new AuditIntegrityError(`audit event #${seq} of run ${runId} is missing from the log`);
      const parsed = parseRow(row);
      if (!parsed.ok)
        throw new AuditIntegrityError(`audit event #${seq} of run ${runId} is unreadable: ${parsed.reason}`);
      // A deletion in the middle shifts every later index; never hand out another run's event as this run's.
      if (String(parsed.event.seq) !== seq || parsed.event.runId !== runId) {
        throw new AuditIntegrityError(
          `audit log position of event #${seq} holds event #${parsed.event.seq} of run ${parsed.event.runId ?? '(none)'}: the log was altered`,
        );
      }
      return { row, event: parsed.event };
    });
  }

  async function verify(options: AuditVerifyOptions = {}): Promise<AuditVerifyResult> {
    let count = 0;
    let prevHash = GENESIS_HASH;
    let last: AuditEvent | undefined;
    const checkpoints = new Map<number, string>();
    for (const checkpoint of options.checkpoints ?? []) {
      const earlier = checkpoints.get(checkpoint.seq);
      if (earlier !== undefined && earlier !== checkpoint.hash) {
        throw new RangeError(`two checkpoints name event #${checkpoint.seq} with different hashes`);
      }
      checkpoints.set(checkpoint.seq, checkpoint.hash);
    }
    const broken = (
      seq: number,
      runId: string | null,
      type: string,
      reason: string,
      problem: AuditProblem = 'tampered',
    ): Extract<AuditVerifyResult, { ok: false }> => ({
      ok: false,
      count,
      broken: { seq, runId, type, reason, problem },
    });

    for (;;) {
      // Pages are read while other processes may still append; the list only
      // grows, so indexes already read stay valid.
      const rows = await redis.lrange(logKey, count, count + pageSize - 1);
      for (const row of rows) {
        const expectedSeq = count + 1;
        const parsed = parseRow(row);
        if (!parsed.ok) {
          const { runId, type } = describeBadRow(row);
          return broken(expectedSeq, runId, type, parsed.reason);
        }
        const event = parsed.event;
        if (event.seq !== expectedSeq) {
          return broken(
            event.seq,
            event.runId,
            event.type,
            `seq is ${event.seq} but position ${expectedSeq} was expected: an event was deleted or inserted before it`,
          );
        }
        if (event.keyId !== keyId) {
          return broken(
            event.seq,
            event.runId,
            event.type,
            expectedSeq === 1
              ? `the audit key does not match: the log was chained with key id ${event.keyId}, but SHIPGATE_AUDIT_KEY has key id ${keyId} (a different key, or a log rewritten with another key)`
              : `the audit key does not match: this event names key id ${event.keyId}, but the events before it and SHIPGATE_AUDIT_KEY have key id ${keyId} (a key change, or an event forged with another key)`,
            'wrong-key',
          );
        }
        if (event.prevHash !== prevHash) {
          return broken(
            event.seq,
            event.runId,
            event.type,
            expectedSeq === 1
              ? 'prevHash of the first event is not the genesis hash'
              : `prevHash does not match the hash of event #${expectedSeq - 1}`,
          );
        }
        if (!sameHash(hashEvent(event, auditKey), event.hash)) {
          return broken(
            event.seq,
            event.runId,
            event.type,
            'hash does not match the content under SHIPGATE_AUDIT_KEY: the event was altered after it was written (or re-hashed without the key)',
          );
        }
        const checkpointed = checkpoints.get(event.seq);
        if (checkpointed !== undefined && checkpointed !== event.hash) {
          return broken(
            event.seq,
            event.runId,
            event.type,
            `event #${event.seq} has hash ${event.hash}, not the checkpointed ${checkpointed}: the log was replaced from here on (or the checkpoint is from another log)`,
            'checkpoint',
          );
        }
        prevHash = event.hash;
        last = event;
        count += 1;
      }
      if (rows.length === pageSize) continue;

      // Read head and length together so a concurrent append cannot land between them.
      const replies = await redis.multi().hmget(headKey, 'hash', 'seq').llen(logKey).exec();
      const headReply = replies?.[0];
      const lengthReply = replies?.[1];
      if (!headReply || !lengthReply || headReply[0] || lengthReply[0]) {
        throw new Error('could not read the audit head');
      }
      const [headHash, headSeqText] = headSchema.parse(headReply[1]);
      const length = z.number().parse(lengthReply[1]);
      if (length > count) continue; // appended while we walked: keep walking
      if (length < count) {
        return broken(
          count,
          last?.runId ?? null,
          last?.type ?? 'unknown',
          `the log shrank from ${count} to ${length} events while being verified`,
        );
      }
      if (headHash === null) {
        if (count > 0) {
          return broken(
            count,
            last?.runId ?? null,
            last?.type ?? 'unknown',
            'the head record is missing: it was deleted',
          );
        }
      } else {
        const headSeq = Number(headSeqText ?? '0');
        if (headSeq < count) {
          const extra = parseRow((await redis.lindex(logKey, headSeq)) ?? '');
          return broken(
            headSeq + 1,
            extra.ok ? extra.event.runId : null,
            extra.ok ? extra.event.type : 'unknown',
            `the head covers only ${headSeq} events: events from #${headSeq + 1} on were written outside the audit log`,
          );
        }
        if (headSeq > count) {
          return broken(
            count + 1,
            null,
            'unknown',
            `${headSeq === count + 1 ? `event #${headSeq} is` : `events #${count + 1}..#${headSeq} are`} missing: the head records ${headSeq} events but the log ends at #${count}`,
          );
        }
        if (headHash !== prevHash) {
          return broken(
            count,
            last?.runId ?? null,
            last?.type ?? 'unknown',
            `the head hash does not match event #${count}: the tail of the log was replaced`,
          );
        }
      }
      // A self-consistent chain can still be a truncated one: only a checkpoint kept elsewhere tells.
      const beyond = [...checkpoints.keys()].filter((seq) => seq > count).sort((a, b) => a - b)[0];
      if (beyond !== undefined) {
        return broken(
          beyond,
          null,
          'unknown',
          `the log ends at #${count}, but a checkpoint records event #${beyond}: events #${count + 1}..#${beyond} or more were cut off the end`,
          'checkpoint',
        );
      }
      return { ok: true, count, head: last === undefined ? null : { seq: last.seq, hash: last.hash } };
    }
  }

  async function checkpoint(): Promise<AuditCheckpoint | null> {
    await tail;
    const head = await readHead();
    let current: AuditCheckpoint | null = head === null ? null : { seq: head.seq, hash: head.hash };
    if (lastAppended !== undefined) {
      noticeHead(head?.seq ?? 0, head?.hash ?? GENESIS_HASH);
      // What this process appended itself is the better witness when the stored head went backwards.
      if (current === null || current.seq < lastAppended.seq) current = lastAppended;
    }
    if (current !== null) emitCheckpoint(current);
    return current;
  }

  return {
    append,
    async eventsForRun(runId) {
      return (await runRows(runId)).map(({ event }) => event);
    },
    async allEvents() {
      const events: AuditEvent[] = [];
      for (;;) {
        const rows = await redis.lrange(logKey, events.length, events.length + pageSize - 1);
        for (const row of rows) {
          const expected = events.length + 1;
          const parsed = parseRow(row);
          if (!parsed.ok) throw new AuditIntegrityError(`audit event #${expected} is unreadable: ${parsed.reason}`);
          if (parsed.event.seq !== expected)
            throw new AuditIntegrityError(`audit log position ${expected} holds event #${parsed.event.seq}: the log was altered`);
          events.push(parsed.event);
        }
        if (rows.length < pageSize) return events;
      }
    },
    verify,
    async exportRun(runId, options = {}) {
      const { throughSeq } = options;
      const rows = await runRows(runId);
      return rows
        .filter(({ event }) => throughSeq === undefined || event.seq <= throughSeq)
        .map(({ row }) => `${row}\n`)
        .join('');
    },
    checkpoint,
    async close() {
      try {
        await checkpoint();
      } catch (error) {
        log?.warn({ err: error }, 'audit checkpoint failed');
      }
    },
  };
}
