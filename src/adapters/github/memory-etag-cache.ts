import type { EtagCache } from '../../ports/github.js';

/** Entries of the default in-memory ETag cache (one per URL, so a few per watched commit). */
const MEMORY_ETAG_ENTRIES = 2_000;

/** A bounded LRU, for adapters built without a shared cache (tests, one-off CLIs). */
export function createMemoryEtagCache(maxEntries = MEMORY_ETAG_ENTRIES): EtagCache {
  const entries = new Map<string, { etag: string; body: string }>();
  return {
    async get(key) {
      const entry = entries.get(key);
      if (entry !== undefined) {
        entries.delete(key);
        entries.set(key, entry);
      }
      return entry;
    },
    async set(key, entry) {
      entries.delete(key);
      entries.set(key, entry);
      for (const oldest of entries.keys()) {
        if (entries.size <= maxEntries) break;
        entries.delete(oldest);
      }
    },
  };
}
