import type { Result } from 'ioredis';
import { z } from 'zod';
import type { MessageRef } from '../ports/chat.js';
import type { Redis } from '../redis.js';

/**
 * What the chat outbox (workers/chat-processor.ts) remembers between attempts,
 * so that each message is posted once and card updates are coalesced and paced
 * across processes. The processor decides; this store only keeps the records.
 *
 * Key families (byte-for-byte what earlier shipgate versions wrote: a deployed
 * bot keeps finding its records across an upgrade, so do not rename them):
 *
 * - `<prefix>:posted:<postKey>` — string, 30 days. `pending` while a post is
 *   in flight (or after an attempt that died mid-call), then `ts:<ref>` once
 *   posted. The `ts:` prefix predates neutral message references (it was the
 *   Slack ts); any other value reads as no record. Post keys are
 *   `<runId>.root` for the card and `<runId>.<reply key>` for thread replies.
 * - `<prefix>:root-lease:<runId>` — `1`, 30 s, set only if absent: the job
 *   posting a run's card holds it so a second job of the run waits.
 * - `<prefix>:card:rendered:<runId>` — the run version the card last showed
 *   (decimal), no expiry; only ever moves forward (SHIPGATE_CARD_RENDERED).
 * - `<prefix>:card:slot:<runId>` — `1` for the update interval after each
 *   card write: while it exists the next update waits.
 * - `<prefix>:card:hash:<runId>` — sha256 hex of the card view last written,
 *   30 days: a refresh that renders the same card writes nothing.
 * - `<prefix>:uploaded:<uploadKey>` — string, 30 days: `pending` while a file
 *   upload is in flight, then `file:<ref>` once the chat has it. Unlike a
 *   message, an upload cannot be looked up by key afterwards, so a `pending`
 *   left by an attempt that died mid-call means "maybe uploaded": the
 *   processor uploads again (a rare duplicate file beats missing evidence).
 */

declare module 'ioredis' {
  interface RedisCommander<Context> {
    /** SHIPGATE_CARD_RENDERED, defined by createOutboxStore. */
    shipgateCardRendered(renderedKey: string, version: string): Result<unknown, Context>;
  }
}

/** What is known about one post. */
export type PostRecord =
  /** A post under this key was started; whether it reached the chat is unknown. */
  { state: 'pending' } | { state: 'posted'; ref: MessageRef };

/** What is known about one file upload. */
export type UploadRecord = { state: 'pending' } | { state: 'uploaded'; ref: string };

export type CardSlot = { taken: true } | { taken: false; retryInMs: number };

export interface OutboxStore {
  postRecord(postKey: string): Promise<PostRecord | undefined>;
  /** Written right before the chat call, so a crash during it leaves `pending` behind. */
  recordPending(postKey: string): Promise<void>;
  recordPosted(postKey: string, ref: MessageRef): Promise<void>;
  uploadRecord(uploadKey: string): Promise<UploadRecord | undefined>;
  /** Written right before the upload, so a crash during it leaves `pending` behind. */
  recordUploadPending(uploadKey: string): Promise<void>;
  recordUploaded(uploadKey: string, ref: string): Promise<void>;
  /**
   * The run's thread replies in the order they were enqueued (issue 14): `enqueueReply` records a
   * reply's place once (a retried enqueue keeps the first), `firstPendingReply` is the one to post
   * next, with the time it was first seen at the head (`now` the first time it is asked), and
   * `replyPosted` takes a posted (or given up) one off.
   */
  enqueueReply(runId: string, key: string): Promise<void>;
  firstPendingReply(runId: string, now: number): Promise<{ key: string; headSince: number } | undefined>;
  replyPosted(runId: string, key: string): Promise<void>;
  /** Whether `key` still has a place in the run's reply order (false once posted or given up). */
  isPendingReply(runId: string, key: string): Promise<boolean>;
  /** True when this caller now holds the run's root-card lease (30 s), false when another does. */
  takeRootLease(runId: string): Promise<boolean>;
  /** The run version the card last showed; undefined before the first render. */
  renderedVersion(runId: string): Promise<number | undefined>;
  /** Records that the card shows `version`, unless it already showed a later one (a slower job must not move it back). */
  advanceRendered(runId: string, version: number): Promise<void>;
  /** The digest of the card view last written. */
  cardDigest(runId: string): Promise<string | undefined>;
  recordCardDigest(runId: string, digest: string): Promise<void>;
  /** The digest of the view last written to the message posted under `postKey` (messages updated in place besides the card). */
  messageDigest(postKey: string): Promise<string | undefined>;
  recordMessageDigest(postKey: string, digest: string): Promise<void>;
  /** Takes the run's card write slot for `intervalMs`; when another write holds it, how long until it frees. */
  takeCardSlot(runId: string, intervalMs: number): Promise<CardSlot>;
  /** The card was just posted showing `version`: marker, digest and a fresh write slot, together. */
  recordRootCard(runId: string, card: { version: number; digest: string; intervalMs: number }): Promise<void>;
}

/** How long post records and card digests live: longer than any run. */
export const POST_RECORD_TTL_SECONDS = 30 * 24 * 3600;
export const ROOT_LEASE_MS = 30_000;
/** Reply ordering records outlive any run's replies by far, and then go. */
const REPLY_ORDER_TTL_SECONDS = 7 * 86_400;
const POSTED_PREFIX = 'ts:';
const PENDING = 'pending';
const UPLOADED_PREFIX = 'file:';

// KEYS: rendered marker. ARGV: version. Compare and set in one step: two card jobs of one run may finish in either order.
const SHIPGATE_CARD_RENDERED =
  "local c = tonumber(redis.call('GET', KEYS[1]) or '-1') if tonumber(ARGV[1]) > c then redis.call('SET', KEYS[1], ARGV[1]) end return 1";

function parsePostRecord(raw: string | null): PostRecord | undefined {
  if (raw === PENDING) return { state: 'pending' };
  if (raw?.startsWith(POSTED_PREFIX) === true) return { state: 'posted', ref: raw.slice(POSTED_PREFIX.length) };
  return undefined;
}

function parseUploadRecord(raw: string | null): UploadRecord | undefined {
  if (raw === PENDING) return { state: 'pending' };
  if (raw?.startsWith(UPLOADED_PREFIX) === true) return { state: 'uploaded', ref: raw.slice(UPLOADED_PREFIX.length) };
  return undefined;
}

function parseVersion(raw: string | null): number | undefined {
  if (raw === null) return undefined;
  const version = Number(raw);
  return Number.isFinite(version) ? version : undefined;
}

export function createOutboxStore({ redis, prefix }: { redis: Redis; prefix: string }): OutboxStore {
  const postedKey = (postKey: string) => `${prefix}:posted:${postKey}`;
  const rootLeaseKey = (runId: string) => `${prefix}:root-lease:${runId}`;
  const replyOrderKey = (runId: string) => `${prefix}:reply-order:${runId}`;
  const replySinceKey = (runId: string) => `${prefix}:reply-since:${runId}`;
  const replyCounterKey = (runId: string) => `${prefix}:reply-counter:${runId}`;
  const renderedKey = (runId: string) => `${prefix}:card:rendered:${runId}`;
  const slotKey = (runId: string) => `${prefix}:card:slot:${runId}`;
  const hashKey = (runId: string) => `${prefix}:card:hash:${runId}`;
  const messageHashKey = (postKey: string) => `${prefix}:message:hash:${postKey}`;
  const uploadedKey = (uploadKey: string) => `${prefix}:uploaded:${uploadKey}`;
  redis.defineCommand('shipgateCardRendered', { numberOfKeys: 1, lua: SHIPGATE_CARD_RENDERED });

  return {
    async postRecord(postKey) {
      return parsePostRecord(await redis.get(postedKey(postKey)));
    },
    async recordPending(postKey) {
      await redis.set(postedKey(postKey), PENDING, 'EX', POST_RECORD_TTL_SECONDS);
    },
    async recordPosted(postKey, ref) {
      await redis.set(postedKey(postKey), `${POSTED_PREFIX}${ref}`, 'EX', POST_RECORD_TTL_SECONDS);
    },
    async uploadRecord(uploadKey) {
      return parseUploadRecord(await redis.get(uploadedKey(uploadKey)));
    },
    async recordUploadPending(uploadKey) {
      await redis.set(uploadedKey(uploadKey), PENDING, 'EX', POST_RECORD_TTL_SECONDS);
    },
    async recordUploaded(uploadKey, ref) {
      await redis.set(uploadedKey(uploadKey), `${UPLOADED_PREFIX}${ref}`, 'EX', POST_RECORD_TTL_SECONDS);
    },
    async enqueueReply(runId, key) {
      // INCR is not idempotent, ZADD NX is: a retried enqueue burns a number and keeps its first place.
      const seq = await redis.incr(replyCounterKey(runId));
      await redis
        .multi()
        .zadd(replyOrderKey(runId), 'NX', seq, key)
        .expire(replyOrderKey(runId), REPLY_ORDER_TTL_SECONDS)
        .expire(replySinceKey(runId), REPLY_ORDER_TTL_SECONDS)
        .expire(replyCounterKey(runId), REPLY_ORDER_TTL_SECONDS)
        .exec();
    },
    async firstPendingReply(runId, now) {
      const [key] = await redis.zrange(replyOrderKey(runId), 0, 0);
      if (key === undefined) return undefined;
      const [, since] = await redis.multi().hsetnx(replySinceKey(runId), key, String(now)).hget(replySinceKey(runId), key).expire(replySinceKey(runId), REPLY_ORDER_TTL_SECONDS).exec() ?? [];
      const headSince = Number(since?.[1]);
      return { key, headSince: Number.isFinite(headSince) ? headSince : now };
    },
    async isPendingReply(runId, key) {
      return (await redis.zscore(replyOrderKey(runId), key)) !== null;
    },
    async replyPosted(runId, key) {
      await redis.multi().zrem(replyOrderKey(runId), key).hdel(replySinceKey(runId), key).exec();
    },
    async takeRootLease(runId) {
      return (await redis.set(rootLeaseKey(runId), '1', 'PX', ROOT_LEASE_MS, 'NX')) !== null;
    },
    async renderedVersion(runId) {
      return parseVersion(await redis.get(renderedKey(runId)));
    },
    async advanceRendered(runId, version) {
      z.literal(1).parse(await redis.shipgateCardRendered(renderedKey(runId), String(version)));
    },
    async cardDigest(runId) {
      return (await redis.get(hashKey(runId))) ?? undefined;
    },
    async recordCardDigest(runId, digest) {
      await redis.set(hashKey(runId), digest, 'EX', POST_RECORD_TTL_SECONDS);
    },
    async messageDigest(postKey) {
      return (await redis.get(messageHashKey(postKey))) ?? undefined;
    },
    async recordMessageDigest(postKey, digest) {
      await redis.set(messageHashKey(postKey), digest, 'EX', POST_RECORD_TTL_SECONDS);
    },
    async takeCardSlot(runId, intervalMs) {
      if ((await redis.set(slotKey(runId), '1', 'PX', intervalMs, 'NX')) !== null) return { taken: true };
      // -2 when the slot expired in between: no wait is due.
      return { taken: false, retryInMs: Math.max(await redis.pttl(slotKey(runId)), 0) };
    },
    async recordRootCard(runId, card) {
      // The card was posted just now, so the marker is set outright rather than advanced.
      const replies = await redis
        .multi()
        .set(renderedKey(runId), String(card.version))
        .set(hashKey(runId), card.digest, 'EX', POST_RECORD_TTL_SECONDS)
        .set(slotKey(runId), '1', 'PX', card.intervalMs)
        .exec();
      for (const [error] of replies ?? []) if (error !== null) throw error;
    },
  };
}
