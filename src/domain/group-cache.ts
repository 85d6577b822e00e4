import type { GroupMembers } from './authorise.js';

/**
 * Caches user-group membership for a short while: commands consult it before
 * their ack, and Slack's usergroups API is neither fast nor free. Concurrent
 * lookups of one group share a single call.
 */
export function cachedGroupMembers(lookup: GroupMembers, options: { ttlMs: number; now: () => number }): GroupMembers {
  const cache = new Map<string, { at: number; members: Promise<readonly string[]> }>();
  return async (groupId) => {
    const hit = cache.get(groupId);
    if (hit !== undefined && options.now() - hit.at < options.ttlMs) return hit.members;
    const members = lookup(groupId);
    cache.set(groupId, { at: options.now(), members });
    // A failed lookup must not be cached: the next command asks again.
    members.catch(() => cache.delete(groupId));
    return members;
  };
}
