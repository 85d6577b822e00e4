/**
 * Backoff for gates that watch an outside system: a tenth of the time the
 * gate has been waiting, between `first` and `max`. Stateless, so restarts
 * and several workers agree on it: young gates are polled often, old ones rarely.
 */
export function pollDelay(startedAt: string | undefined, now: Date, first: number, max: number): number {
  const waited = startedAt === undefined ? 0 : now.getTime() - Date.parse(startedAt);
  return Math.round(Math.min(Math.max(first, waited / 10), max));
}
