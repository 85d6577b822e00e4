import {
  POST_RECORD_TTL_SECONDS,
  ROOT_LEASE_MS,
  type OutboxStore,
  type PostRecord,
  type UploadRecord,
} from '../../src/store/outbox-store.js';

/**
 * The outbox store in memory, for tests of the chat processor's logic. It keeps the Redis store's
 * semantics (test/integration/outbox-store.test.ts runs one contract against both), expiries
 * included, on a clock the test moves.
 */
export function createMemoryOutboxStore(
  now: () => number = Date.now,
): OutboxStore & { posts: Map<string, PostRecord>; uploads: Map<string, UploadRecord> } {
  const posts = new Map<string, PostRecord>();
  const uploads = new Map<string, { record: UploadRecord; until: number }>();
  const postExpiry = new Map<string, number>();
  const leases = new Map<string, number>();
  const slots = new Map<string, number>();
  const rendered = new Map<string, number>();
  const messageDigests = new Map<string, { digest: string; until: number }>();
  const digests = new Map<string, { digest: string; until: number }>();
  const replyOrder = new Map<string, Map<string, { seq: number; since: number | undefined }>>();
  let replySeq = 0;

  const live = (until: number | undefined): until is number => until !== undefined && until > now();
  const recordPost = (key: string, record: PostRecord) => {
    posts.set(key, record);
    postExpiry.set(key, now() + POST_RECORD_TTL_SECONDS * 1000);
  };

  const recordUpload = (key: string, record: UploadRecord) => {
    uploads.set(key, { record, until: now() + POST_RECORD_TTL_SECONDS * 1000 });
  };

  return {
    posts,
    get uploads() {
      return new Map([...uploads].filter(([, entry]) => live(entry.until)).map(([key, entry]) => [key, entry.record]));
    },
    async uploadRecord(key) {
      const entry = uploads.get(key);
      return entry !== undefined && live(entry.until) ? entry.record : undefined;
    },
    async recordUploadPending(key) {
      recordUpload(key, { state: 'pending' });
    },
    async recordUploaded(key, ref) {
      recordUpload(key, { state: 'uploaded', ref });
    },
    async postRecord(key) {
      return live(postExpiry.get(key)) ? posts.get(key) : undefined;
    },
    async recordPending(key) {
      recordPost(key, { state: 'pending' });
    },
    async recordPosted(key, ref) {
      recordPost(key, { state: 'posted', ref });
    },
    async enqueueReply(runId, key) {
      const order = replyOrder.get(runId) ?? new Map<string, { seq: number; since: number | undefined }>();
      replySeq += 1;
      if (!order.has(key)) order.set(key, { seq: replySeq, since: undefined });
      replyOrder.set(runId, order);
    },
    async firstPendingReply(runId, at) {
      const first = [...(replyOrder.get(runId) ?? new Map<string, { seq: number; since: number | undefined }>())].sort((a, b) => a[1].seq - b[1].seq)[0];
      if (first === undefined) return undefined;
      first[1].since ??= at;
      return { key: first[0], headSince: first[1].since };
    },
    async isPendingReply(runId, key) {
      return replyOrder.get(runId)?.has(key) === true;
    },
    async replyPosted(runId, key) {
      replyOrder.get(runId)?.delete(key);
    },
    async takeRootLease(runId) {
      if (live(leases.get(runId))) return false;
      leases.set(runId, now() + ROOT_LEASE_MS);
      return true;
    },
    async renderedVersion(runId) {
      return rendered.get(runId);
    },
    async advanceRendered(runId, version) {
      if (version > (rendered.get(runId) ?? -1)) rendered.set(runId, version);
    },
    async cardDigest(runId) {
      const entry = digests.get(runId);
      return entry !== undefined && live(entry.until) ? entry.digest : undefined;
    },
    async recordCardDigest(runId, digest) {
      digests.set(runId, { digest, until: now() + POST_RECORD_TTL_SECONDS * 1000 });
    },
    async messageDigest(postKey) {
      const entry = messageDigests.get(postKey);
      return entry !== undefined && live(entry.until) ? entry.digest : undefined;
    },
    async recordMessageDigest(postKey, digest) {
      messageDigests.set(postKey, { digest, until: now() + POST_RECORD_TTL_SECONDS * 1000 });
    },
    async takeCardSlot(runId, intervalMs) {
      const until = slots.get(runId);
      if (live(until)) return { taken: false, retryInMs: until - now() };
      slots.set(runId, now() + intervalMs);
      return { taken: true };
    },
    async recordRootCard(runId, card) {
      rendered.set(runId, card.version);
      digests.set(runId, { digest: card.digest, until: now() + POST_RECORD_TTL_SECONDS * 1000 });
      slots.set(runId, now() + card.intervalMs);
    },
  };
}
