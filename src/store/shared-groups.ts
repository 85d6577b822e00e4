import { z } from 'zod';
import type { Groups } from '../domain/principals.js';
import type { Redis } from '../redis.js';

/**
 * Group membership (Slack user groups) cached in Redis, so every web replica judges a click by the
 * same list and a chat's group API (neither fast nor free) is asked once per group and expiry, not
 * once per click or replica. Entries expire after `ttlSeconds`; `refresh` replaces one at once when
 * the chat says the group changed (Slack's `subteam_members_changed`). Concurrent look-ups of one
 * group in one process share a call. A failed look-up is not cached: the next click asks again.
 */
export interface SharedGroups extends Groups {
  /** Reads the group's members from the chat now and stores them (the group changed). */
  refresh(groupId: string): Promise<void>;
}

const membersSchema = z.array(z.string());

/** A stored entry, or undefined when it is not a list of ids (then it is read again from the chat). */
function readMembers(stored: string): readonly string[] | undefined {
  try {
    const parsed = membersSchema.safeParse(JSON.parse(stored));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

export function createSharedGroups({ redis, prefix, source, ttlSeconds }: { redis: Redis; prefix: string; source: Groups; ttlSeconds: number }): SharedGroups {
  const key = (groupId: string) => `${prefix}:group:${groupId}`;
  const inFlight = new Map<string, Promise<readonly string[]>>();

  async function fetchAndStore(groupId: string): Promise<readonly string[]> {
    const members = await source.members(groupId);
    await redis.set(key(groupId), JSON.stringify(members), 'EX', ttlSeconds);
    return members;
  }

  function shared(groupId: string): Promise<readonly string[]> {
    const running = inFlight.get(groupId);
    if (running !== undefined) return running;
    const work = fetchAndStore(groupId).finally(() => inFlight.delete(groupId));
    inFlight.set(groupId, work);
    return work;
  }

  return {
    isGroup: (id) => source.isGroup(id),
    async members(groupId) {
      const stored = await redis.get(key(groupId));
      const cached = stored === null ? undefined : readMembers(stored);
      if (cached !== undefined) return cached;
      return shared(groupId);
    },
    async refresh(groupId) {
      if (!source.isGroup(groupId)) return;
      await fetchAndStore(groupId);
    },
  };
}
