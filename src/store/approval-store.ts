import type { Result } from 'ioredis';
import { z } from 'zod';
import type { AcceptedClick, Approval, ApprovalRecord, ApprovalRequest, ApprovalStatus } from '../domain/approval.js';
import type { Redis } from '../redis.js';

/**
 * The approval requests of runs in Redis (SPEC §6, §10: exactly one decision whatever the clicks).
 * One hash per run holds its current request, its status and its counted approvals. Every change
 * is one Lua script, so the checks (decided? expired? this user already counted?) and the write
 * that follows them cannot be interleaved by another web replica or worker: of any number of
 * concurrent clicks exactly one sees the count reach `minApprovals` and flips the request to
 * `approved`, and a Reject, an approval and the expiry race to a single winner.
 *
 * Who may click is not checked here (group membership lives in the chat's cache): `decide` takes a
 * click `judgeClick` accepted, and re-checks only what can change between the judgement and the
 * write, plus the two rules whose breach would be a forged or buggy judgement (a requester's
 * Approve without `allowSelfApproval`, a requester's withdrawal by someone else), which it refuses
 * with an error rather than an outcome.
 *
 * Hash fields: `request` (JSON), copies of the fields the scripts compare (`freight`, `nonce`,
 * `requester`, `allowSelf`, `min`, `expiresAtMs`, `expiresAt`), `status`, `decidedAt`,
 * `rejection` (JSON), `count`, `approval:<n>` (JSON, n from 1, in counting order) and
 * `approver:<user id>` (→ n, for the dedupe).
 */

declare module 'ioredis' {
  interface RedisCommander<Context> {
    /** OPEN_SCRIPT, defined by createApprovalStore. */
    shipgateApprovalOpen(
      key: string,
      requestJson: string,
      freight: string,
      nonce: string,
      requester: string,
      allowSelf: '1' | '0',
      minApprovals: string,
      expiresAtMs: string,
      expiresAt: string,
      ttlMs: string,
    ): Result<unknown, Context>;
    /** DECIDE_SCRIPT, defined by createApprovalStore. */
    shipgateApprovalDecide(
      key: string,
      action: 'approve' | 'reject',
      userId: string,
      freight: string,
      nonce: string,
      atMs: string,
      at: string,
      by: 'approver' | 'requester' | '',
      payloadJson: string,
    ): Result<unknown, Context>;
    /** POSTED_SCRIPT, defined by createApprovalStore. */
    shipgateApprovalPosted(key: string, nonce: string, postedAt: string, expiresAtMs: string, expiresAt: string): Result<unknown, Context>;
    /** EXPIRE_SCRIPT, defined by createApprovalStore. */
    shipgateApprovalExpire(key: string, atMs: string): Result<unknown, Context>;
  }
}

// Same Freight: the request stands as first opened (nonce, deadline, approvals), so a retried or
// restarted gate step neither invalidates the buttons already posted nor extends the deadline.
// Another Freight: the old request (and every approval given for it) is replaced, never carried over.
// Replies {1 created | 0 existing | 2 replaced, fields, previous fields}.
const OPEN_SCRIPT = `
local existing = redis.call('HGET', KEYS[1], 'freight')
if existing == ARGV[2] then
  return {0, redis.call('HGETALL', KEYS[1]), {}}
end
local previous = {}
local code = 1
if existing then
  previous = redis.call('HGETALL', KEYS[1])
  redis.call('DEL', KEYS[1])
  code = 2
end
redis.call('HSET', KEYS[1], 'request', ARGV[1], 'freight', ARGV[2], 'nonce', ARGV[3], 'requester', ARGV[4],
  'allowSelf', ARGV[5], 'min', ARGV[6], 'expiresAtMs', ARGV[7], 'expiresAt', ARGV[8], 'status', 'pending', 'count', '0')
redis.call('PEXPIRE', KEYS[1], ARGV[9])
return {code, redis.call('HGETALL', KEYS[1]), previous}
`;

// The order of the checks is the order of judgeClick: a click for another request first, then the
// same person's approval again, then a decision already taken, then the deadline (a click on it is too late, and flips a pending request
// to expired so the record never reads pending past its deadline), then the click itself.
// Replies {outcome, fields}.
const DECIDE_SCRIPT = `
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'missing', {}}
end
local f = redis.call('HMGET', KEYS[1], 'freight', 'nonce', 'status', 'expiresAtMs', 'min', 'requester', 'allowSelf', 'expiresAt')
local function reply(outcome)
  return {outcome, redis.call('HGETALL', KEYS[1])}
end
if f[1] ~= ARGV[3] or f[2] ~= ARGV[4] then
  return reply('stale')
end
-- The same person approving again (a double click, a retried delivery) is answered as a duplicate
-- whatever was decided since: their approval already counts, there is nothing to refuse.
if ARGV[1] == 'approve' and redis.call('HEXISTS', KEYS[1], 'approver:' .. ARGV[2]) == 1 then
  return reply('duplicate')
end
if f[3] ~= 'pending' then
  return reply('already-decided')
end
if tonumber(ARGV[5]) >= tonumber(f[4]) then
  redis.call('HSET', KEYS[1], 'status', 'expired', 'decidedAt', f[8])
  return reply('expired')
end
if ARGV[1] == 'approve' then
  if ARGV[2] == f[6] and f[7] ~= '1' then
    return redis.error_reply('approval store: the requester cannot approve their own run (allowSelfApproval is off)')
  end
  local n = redis.call('HINCRBY', KEYS[1], 'count', 1)
  redis.call('HSET', KEYS[1], 'approval:' .. n, ARGV[8], 'approver:' .. ARGV[2], tostring(n))
  if n >= tonumber(f[5]) then
    redis.call('HSET', KEYS[1], 'status', 'approved', 'decidedAt', ARGV[6])
    return reply('approved-now')
  end
  return reply('counted')
end
if ARGV[7] == 'requester' and ARGV[2] ~= f[6] then
  return redis.error_reply('approval store: a withdrawal by the requester must come from the requester')
end
redis.call('HSET', KEYS[1], 'status', 'rejected', 'rejection', ARGV[8], 'decidedAt', ARGV[6])
return reply('rejected-now')
`;

// SPEC §6: the deadline runs from the moment the request is posted, which is after it is opened (the
// chat outbox posts it). Once per request: a re-post after a crash does not move it again, and a
// request already decided keeps the deadline it was decided under. Replies {1 set | 0 not}.
const POSTED_SCRIPT = `
local f = redis.call('HMGET', KEYS[1], 'nonce', 'status', 'postedAt')
if f[1] ~= ARGV[1] or f[2] ~= 'pending' or f[3] then
  return 0
end
redis.call('HSET', KEYS[1], 'postedAt', ARGV[2], 'expiresAtMs', ARGV[3], 'expiresAt', ARGV[4])
return 1
`;

// Replies {outcome, fields}.
const EXPIRE_SCRIPT = `
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'missing', {}}
end
local f = redis.call('HMGET', KEYS[1], 'status', 'expiresAtMs', 'expiresAt')
if f[1] ~= 'pending' then
  return {'already-decided', redis.call('HGETALL', KEYS[1])}
end
if tonumber(ARGV[1]) < tonumber(f[2]) then
  return {'not-due', redis.call('HGETALL', KEYS[1])}
end
redis.call('HSET', KEYS[1], 'status', 'expired', 'decidedAt', f[3])
return {'expired-now', redis.call('HGETALL', KEYS[1])}
`;

export type DecideOutcome =
  | 'approved-now'
  | 'counted'
  | 'duplicate'
  | 'rejected-now'
  | 'already-decided'
  | 'expired'
  /** The click's Freight or nonce is not the run's current request (it was replaced meanwhile). */
  | 'stale'
  /** The run has no approval request. */
  | 'missing';

export type OpenOutcome = 'created' | 'existing' | 'replaced';
export type ExpireOutcome = 'expired-now' | 'already-decided' | 'not-due' | 'missing';

export interface ApprovalStore {
  /**
   * Opens the run's approval request. Idempotent: for the same run and Freight the stored request
   * is returned unchanged (nonce, deadline and approvals kept); for another Freight it replaces the
   * stored one, which is returned as `superseded`.
   */
  open(request: ApprovalRequest): Promise<{ outcome: OpenOutcome; record: ApprovalRecord; superseded?: ApprovalRecord }>;
  /** Applies a click `judgeClick` accepted, atomically (see DECIDE_SCRIPT). */
  decide(runId: string, click: AcceptedClick): Promise<{ outcome: DecideOutcome; approvals: readonly Approval[]; record?: ApprovalRecord }>;
  /**
   * Starts the request's deadline at `postedAt` (SPEC §6), once per request: `expiresAt` becomes
   * `postedAt` plus the request's `expiresAfter` (its `expiresAt` − `requestedAt` as opened).
   * False when the request is another one, already decided, or already posted.
   */
  markPosted(runId: string, nonce: string, postedAt: string): Promise<boolean>;
  /** Flips a pending request whose deadline is at or before `at` to `expired`, once. */
  expire(runId: string, at: string): Promise<{ outcome: ExpireOutcome; record?: ApprovalRecord }>;
  get(runId: string): Promise<ApprovalRecord | undefined>;
}

export class ApprovalStoreError extends Error {
  override name = 'ApprovalStoreError';
}

export interface ApprovalStoreDeps {
  redis: Redis;
  prefix: string;
  /** How long a request is kept after its deadline (default 30 days); the audit log is the lasting evidence. */
  retentionMs?: number;
}

const DEFAULT_RETENTION_MS = 30 * 24 * 3600 * 1000;

const requestSchema = z.object({
  runId: z.string(),
  freight: z.string(),
  nonce: z.string(),
  stage: z.string(),
  requester: z.string(),
  approvers: z.array(z.string()),
  minApprovals: z.number().int().min(1),
  allowSelfApproval: z.boolean(),
  requestedAt: z.string(),
  expiresAt: z.string(),
});

const approvalSchema = z.object({ userId: z.string(), userName: z.string().optional(), freight: z.string(), at: z.string(), via: z.string().optional() });

const rejectionSchema = z.object({
  userId: z.string(),
  userName: z.string().optional(),
  freight: z.string(),
  at: z.string(),
  by: z.enum(['approver', 'requester']),
  reason: z.string().optional(),
});

const statusSchema = z.enum(['pending', 'approved', 'rejected', 'expired']);

const fieldsSchema = z.array(z.string()).refine((flat) => flat.length % 2 === 0, 'an HGETALL reply has an even length');
const openReplySchema = z.tuple([z.union([z.literal(0), z.literal(1), z.literal(2)]), fieldsSchema, fieldsSchema]);
const decideReplySchema = z.tuple([
  z.enum(['approved-now', 'counted', 'duplicate', 'rejected-now', 'already-decided', 'expired', 'stale', 'missing']),
  fieldsSchema,
]);
const expireReplySchema = z.tuple([z.enum(['expired-now', 'already-decided', 'not-due', 'missing']), fieldsSchema]);

function json(runId: string, field: string, value: string | undefined): unknown {
  if (value === undefined) throw new ApprovalStoreError(`stored approval of run ${runId} has no ${field}`);
  try {
    return JSON.parse(value);
  } catch {
    throw new ApprovalStoreError(`stored approval of run ${runId} has a ${field} that is not JSON`);
  }
}

function parsed<T>(runId: string, what: string, schema: z.ZodType<T>, value: unknown): T {
  const result = schema.safeParse(value);
  if (!result.success) throw new ApprovalStoreError(`stored approval of run ${runId}: ${what} does not match its schema: ${result.error.message}`);
  return result.data;
}

/** The record from a hash's fields (an HGETALL reply, flat); `undefined` for no fields. */
function recordFrom(runId: string, flat: readonly string[]): ApprovalRecord | undefined {
  if (flat.length === 0) return undefined;
  const fields = new Map<string, string>();
  for (let index = 0; index + 1 < flat.length; index += 2) fields.set(flat[index] ?? '', flat[index + 1] ?? '');
  const request = parsed(runId, 'the request', requestSchema, json(runId, 'request', fields.get('request')));
  const status: ApprovalStatus = parsed(runId, 'the status', statusSchema, fields.get('status'));
  const count = Number(fields.get('count') ?? '0');
  if (!Number.isInteger(count) || count < 0) throw new ApprovalStoreError(`stored approval of run ${runId} has a bad count`);
  const approvals: Approval[] = [];
  for (let n = 1; n <= count; n++)
    approvals.push(parsed(runId, `approval ${n}`, approvalSchema, json(runId, `approval:${n}`, fields.get(`approval:${n}`))));
  const rejectionField = fields.get('rejection');
  const decidedAt = fields.get('decidedAt');
  const postedAt = fields.get('postedAt');
  // The deadline as the scripts compare it: moved to postedAt + expiresAfter once the request was posted.
  const expiresAt = fields.get('expiresAt') ?? request.expiresAt;
  return {
    request: { ...request, expiresAt },
    ...(postedAt === undefined ? {} : { postedAt }),
    status,
    approvals,
    ...(rejectionField === undefined ? {} : { rejection: parsed(runId, 'the rejection', rejectionSchema, json(runId, 'rejection', rejectionField)) }),
    ...(decidedAt === undefined ? {} : { decidedAt }),
  };
}

function millis(iso: string, what: string): number {
  const value = Date.parse(iso);
  if (Number.isNaN(value)) throw new ApprovalStoreError(`${what} is not a time: ${iso}`);
  return value;
}

export function createApprovalStore({ redis, prefix, retentionMs = DEFAULT_RETENTION_MS }: ApprovalStoreDeps): ApprovalStore {
  const key = (runId: string) => `${prefix}:approval:${runId}`;
  redis.defineCommand('shipgateApprovalOpen', { numberOfKeys: 1, lua: OPEN_SCRIPT });
  redis.defineCommand('shipgateApprovalDecide', { numberOfKeys: 1, lua: DECIDE_SCRIPT });
  redis.defineCommand('shipgateApprovalExpire', { numberOfKeys: 1, lua: EXPIRE_SCRIPT });
  redis.defineCommand('shipgateApprovalPosted', { numberOfKeys: 1, lua: POSTED_SCRIPT });

  return {
    async open(request) {
      const expiresAtMs = millis(request.expiresAt, 'expiresAt');
      // Kept for the request's lifetime plus the retention, so the decision outlives the deadline.
      const ttlMs = Math.max(0, expiresAtMs - millis(request.requestedAt, 'requestedAt')) + retentionMs;
      const [code, fields, previous] = openReplySchema.parse(
        await redis.shipgateApprovalOpen(
          key(request.runId),
          JSON.stringify(request),
          request.freight,
          request.nonce,
          request.requester,
          request.allowSelfApproval ? '1' : '0',
          String(request.minApprovals),
          String(expiresAtMs),
          request.expiresAt,
          String(ttlMs),
        ),
      );
      const record = recordFrom(request.runId, fields);
      if (record === undefined) throw new ApprovalStoreError(`the open script stored nothing for run ${request.runId}`);
      const superseded = recordFrom(request.runId, previous);
      const outcome: OpenOutcome = code === 1 ? 'created' : code === 0 ? 'existing' : 'replaced';
      return { outcome, record, ...(superseded === undefined ? {} : { superseded }) };
    },

    async decide(runId, click) {
      const payload =
        click.action === 'approve'
          ? JSON.stringify({ userId: click.userId, userName: click.userName, freight: click.freight, at: click.at, via: click.via } satisfies Approval)
          : JSON.stringify({ userId: click.userId, userName: click.userName, freight: click.freight, at: click.at, by: click.by, reason: click.reason });
      const [outcome, fields] = decideReplySchema.parse(
        await redis.shipgateApprovalDecide(
          key(runId),
          click.action,
          click.userId,
          click.freight,
          click.nonce,
          String(millis(click.at, 'the click time')),
          click.at,
          click.action === 'reject' ? click.by : '',
          payload,
        ),
      );
      const record = recordFrom(runId, fields);
      return { outcome, approvals: record?.approvals ?? [], ...(record === undefined ? {} : { record }) };
    },

    async markPosted(runId, nonce, postedAt) {
      const stored = await redis.hget(key(runId), 'request');
      if (stored === null) return false;
      const request = parsed(runId, 'the request', requestSchema, json(runId, 'request', stored));
      const expiresAtMs = millis(postedAt, 'postedAt') + (millis(request.expiresAt, 'expiresAt') - millis(request.requestedAt, 'requestedAt'));
      const set = await redis.shipgateApprovalPosted(key(runId), nonce, postedAt, String(expiresAtMs), new Date(expiresAtMs).toISOString());
      return set === 1;
    },

    async expire(runId, at) {
      const [outcome, fields] = expireReplySchema.parse(await redis.shipgateApprovalExpire(key(runId), String(millis(at, 'the expiry time'))));
      const record = recordFrom(runId, fields);
      return { outcome, ...(record === undefined ? {} : { record }) };
    },

    async get(runId) {
      const flat = await redis.hgetall(key(runId));
      return recordFrom(runId, Object.entries(flat).flat());
    },
  };
}
