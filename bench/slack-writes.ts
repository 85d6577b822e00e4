import type { RecordedCall, SlackServer } from '../test/helpers/slack-server.js';
import { maxInWindow, maxPerBucket } from './stats.js';

/**
 * What the fake Slack Web API saw during the burst (section 2): chat writes
 * per run, per message and per second.
 */
export interface WriteAnalysis {
  rootPosts: number;
  /** Distinct idempotency keys among the root cards (one per run when nothing was posted twice). */
  distinctRootKeys: number;
  replies: number;
  updates: number;
  total: number;
  /** Calls answered with an error or a non-200 status (429s included). */
  failed: number;
  rateLimited: number;
  perRun: number;
  /** Most chat.update calls on one message inside any 3 s window. */
  maxUpdatesPerMessagePer3s: number;
  /** Smallest gap between two consecutive writes (post or update) to the same message. */
  minGapSameMessageMs: number;
  peakPerCalendarSecond: number;
  peakPerSlidingSecond: number;
  /** First to last write. */
  spanMs: number;
}

const isWrite = (c: RecordedCall): boolean => c.method === 'chat.postMessage' || c.method === 'chat.update';
const ok = (c: RecordedCall): boolean => c.status === 200 && c.error === undefined;

export function lastWriteAt(slack: SlackServer): number {
  let last = 0;
  for (const c of slack.calls) if (isWrite(c)) last = Math.max(last, c.at);
  return last;
}

export function rootMessages(slack: SlackServer, channel: string): ReturnType<SlackServer['messages']> {
  return slack.messages(channel).filter((m) => m.thread_ts === undefined || m.thread_ts === m.ts);
}

export function analyseWrites(slack: SlackServer, channel: string, since: number, runs: number): WriteAnalysis {
  const writes = slack.calls.filter((c) => isWrite(c) && c.at >= since);
  const inChannel = writes.filter((c) => c.body['channel'] === channel && ok(c));
  const rootCalls = inChannel.filter((c) => c.method === 'chat.postMessage' && c.body['thread_ts'] === undefined);
  const replyCalls = inChannel.filter((c) => c.method === 'chat.postMessage' && c.body['thread_ts'] !== undefined);
  const updateCalls = inChannel.filter((c) => c.method === 'chat.update');

  // The fake stores a successful post synchronously with recording the call, so the i-th root
  // post call is the i-th root message of the channel; that gives each post its message ts.
  const roots = rootMessages(slack, channel);
  const timesByMessage = new Map<string, number[]>();
  rootCalls.forEach((call, i) => {
    const ts = roots[i]?.ts;
    if (ts !== undefined) timesByMessage.set(ts, [call.at]);
  });
  const updatesByMessage = new Map<string, number[]>();
  for (const call of updateCalls) {
    const raw = call.body['ts'];
    const ts = typeof raw === 'string' ? raw : JSON.stringify(raw);
    updatesByMessage.set(ts, [...(updatesByMessage.get(ts) ?? []), call.at]);
    timesByMessage.set(ts, [...(timesByMessage.get(ts) ?? []), call.at]);
  }
  let maxUpdates = 0;
  for (const times of updatesByMessage.values()) maxUpdates = Math.max(maxUpdates, maxInWindow(times, 3_000));
  let minGap = Number.POSITIVE_INFINITY;
  for (const times of timesByMessage.values()) {
    const sorted = [...times].sort((a, b) => a - b);
    for (let i = 1; i < sorted.length; i++) minGap = Math.min(minGap, sorted[i]! - sorted[i - 1]!);
  }
  const rootKeys = new Set(
    roots.map((m) => {
      const key = m.metadata?.event_payload['key'];
      return typeof key === 'string' ? key : m.ts;
    }),
  );

  const okWrites = writes.filter(ok);
  const times = okWrites.map((c) => c.at);
  const total = rootCalls.length + replyCalls.length + updateCalls.length;
  return {
    rootPosts: rootCalls.length,
    distinctRootKeys: rootKeys.size,
    replies: replyCalls.length,
    updates: updateCalls.length,
    total,
    failed: writes.length - okWrites.length,
    rateLimited: writes.filter((c) => c.status === 429).length,
    perRun: total / runs,
    maxUpdatesPerMessagePer3s: maxUpdates,
    minGapSameMessageMs: minGap,
    peakPerCalendarSecond: maxPerBucket(times, 1_000),
    peakPerSlidingSecond: maxInWindow(times, 1_000),
    spanMs: times.length === 0 ? 0 : Math.max(...times) - Math.min(...times),
  };
}
