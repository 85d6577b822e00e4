/**
 * How many public answers one person's mentions get in one thread. A Discord answer to a mention is
 * a public reply (ephemeral messages exist only for interactions), so without a bound anyone who can
 * write in a run's thread could make the bot post there as fast as they can type — every refusal an
 * extra message in the thread and a write from the bot's rate budget. Past the bound the follow-up
 * handler still decides and audits each mention; only the answer is not sent.
 */
export interface MentionAnswers {
  /** True when an answer to `user` in `thread` may be sent now (and counts it). */
  take(thread: string, user: string): boolean;
}

export interface MentionAnswersOptions {
  /** Answers per person per thread within `windowMs`. */
  max: number;
  windowMs: number;
  /** People and threads remembered at most; the longest-quiet pair is forgotten first. */
  capacity: number;
  now?: () => number;
}

export function createMentionAnswers(options: MentionAnswersOptions): MentionAnswers {
  const now = options.now ?? Date.now;
  /** `<thread>|<user>` → times of the answers still inside the window, oldest first. */
  const recent = new Map<string, number[]>();
  return {
    take(thread, user) {
      const at = now();
      const key = `${thread}|${user}`;
      const times = (recent.get(key) ?? []).filter((time) => at - time < options.windowMs);
      const allowed = times.length < options.max;
      if (allowed) times.push(at);
      // Re-inserted so the Map's order is least recently seen first, which is what eviction drops.
      recent.delete(key);
      recent.set(key, times);
      while (recent.size > options.capacity) {
        const oldest = recent.keys().next().value;
        if (oldest === undefined) break;
        recent.delete(oldest);
      }
      return allowed;
    },
  };
}
