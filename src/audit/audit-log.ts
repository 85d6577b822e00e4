import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import { z } from 'zod';

/**
 * The tamper-evident audit trail (SPEC §7). Every event of every run goes into
 * ONE Redis list, and each event carries the SHA-256 of the event before it in
 * the whole log, so editing or deleting any stored row breaks the chain at a
 * point `verify()` can name.
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
  'approval.requested',
  'approval.approved',
  'approval.rejected',
  'promotion.created',
  'gate.sent_back',
  'run.follow_up',
  'ci.verdict',
] as const;

export type AuditEventType = (typeof AUDIT_EVENT_TYPES)[number];

/** The hash the first event links to. */
export const GENESIS_HASH = '0'.repeat(64);

const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex digits');

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

export type AuditVerifyResult =
  | { ok: true; count: number }
  | { ok: false; count: number; broken: { seq: number; runId: string | null; type: string; reason: string } };

export interface AuditLog {
  append(input: AuditAppendInput): Promise<AuditEvent>;
  /** The run's events in log order; throws AuditIntegrityError if an indexed event is missing or unreadable. */
  eventsForRun(runId: string): Promise<AuditEvent[]>;
  /** Walks the whole log and names the first event where the chain breaks. */
  verify(): Promise<AuditVerifyResult>;
  /** JSON Lines of the run's events exactly as stored ('' for a run with no events). */
  exportRun(runId: string): Promise<string>;
}

export interface AuditLogOptions {
  redis: Redis;
  prefix: string;
  clock: () => Date;
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

/** Hash of an event: SHA-256 of the canonical JSON of every field except `hash`. */
export function hashEvent(event: Omit<AuditEvent, 'hash'> & { hash?: string }): string {
  const { hash: _ignored, ...rest } = event;
  return createHash('sha256').update(canonicalJson(rest)).digest('hex');
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

const APPEND_SCRIPT_SHA = createHash('sha1').update(APPEND_SCRIPT).digest('hex');

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

export function createAuditLog({ redis, prefix, clock, pageSize = DEFAULT_PAGE_SIZE }: AuditLogOptions): AuditLog {
  const base = `${prefix}:audit:`;
  const logKey = `${base}log`;
  const headKey = `${base}head`;
  const idemKey = `${base}keys`;
  const runKey = (runId: string): string => `${base}run:${runId}`;

  async function readHead(): Promise<{ hash: string; seq: number } | null> {
    const [hash, seq] = headSchema.parse(await redis.hmget(headKey, 'hash', 'seq'));
    if (hash === null) return null;
    return { hash, seq: Number(seq ?? '0') };
  }

  async function runScript(keys: string[], args: string[]): Promise<unknown> {
    try {
      return await redis.evalsha(APPEND_SCRIPT_SHA, keys.length, ...keys, ...args);
    } catch (error) {
      // Script caches are empty after a Redis restart or failover; load once and carry on.
      if (error instanceof Error && error.message.includes('NOSCRIPT')) {
        return redis.eval(APPEND_SCRIPT, keys.length, ...keys, ...args);
      }
      throw error;
    }
  }

  function parseExisting(key: string, seq: string, row: string): AuditEvent {
    const parsed = parseRow(row);
    if (!parsed.ok)
      throw new AuditIntegrityError(`audit event #${seq} (idempotency key ${key}) is unreadable: ${parsed.reason}`);
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
    const data = toJsonData(input.data);
    const key = input.key === undefined || input.key === '' ? undefined : input.key;
    const runId = input.runId === undefined || input.runId === '' ? null : input.runId;
    const keys = runId === null ? [logKey, headKey, idemKey] : [logKey, headKey, idemKey, runKey(runId)];

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
      const unhashed = {
        seq: prevSeq + 1,
        at: clock().toISOString(),
        runId,
        type: input.type,
        actor: input.actor,
        data,
        ...(key === undefined ? {} : { key }),
        prevHash,
      };
      // Checked before writing: a row the reader's schema rejects would read as tampering forever after.
      const event = storedEventSchema.parse({ ...unhashed, hash: hashEvent(unhashed) });
      const reply = scriptReplySchema.parse(
        await runScript(keys, [prevHash, event.hash, String(event.seq), canonicalJson(event), key ?? '']),
      );
      switch (reply[0]) {
        case 'ok':
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

  async function verify(): Promise<AuditVerifyResult> {
    let count = 0;
    let prevHash = GENESIS_HASH;
    let last: AuditEvent | undefined;
    const broken = (
      seq: number,
      runId: string | null,
      type: string,
      reason: string,
    ): Extract<AuditVerifyResult, { ok: false }> => ({ ok: false, count, broken: { seq, runId, type, reason } });

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
        if (hashEvent(event) !== event.hash) {
          return broken(
            event.seq,
            event.runId,
            event.type,
            'hash does not match the content: the event was altered after it was written',
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
        if (count === 0) return { ok: true, count };
        return broken(
          count,
          last?.runId ?? null,
          last?.type ?? 'unknown',
          'the head record is missing: it was deleted',
        );
      }
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
      return { ok: true, count };
    }
  }

  return {
    append,
    async eventsForRun(runId) {
      return (await runRows(runId)).map(({ event }) => event);
    },
    verify,
    async exportRun(runId) {
      const rows = await runRows(runId);
      return rows.map(({ row }) => `${row}\n`).join('');
    },
  };
}
