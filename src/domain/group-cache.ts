import type { Groups } from './principals.js';

/**
 * Caches group membership for a short while: commands consult it before
 * their ack, and a chat's group API (Slack's usergroups) is neither fast nor
 * free. Concurrent lookups of one group share a single call.
 */
export function cachedGroups(groups: Groups, options: { ttlMs: number; now: () => number }): Groups {
  const cache = new Map<string, { at: number; members: Promise<readonly string[]> }>();
  return {
    isGroup: (id) => groups.isGroup(id),
    async members(groupId) {
      const hit = cache.get(groupId);
      if (hit !== undefined && options.now() - hit.at < options.ttlMs) return hit.members;
      const members = groups.members(groupId);
      cache.set(groupId, { at: options.now(), members });
      // A failed lookup must not be cached: the next command asks again.
      members.catch(() => cache.delete(groupId));
      return members;
    },
  };
}
