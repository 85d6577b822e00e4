import {
  parseStoredConversation,
  type AgentConversations,
  type ConversationKey,
} from '../../src/store/agent-conversation-store.js';

/**
 * The agent conversation store in memory, for step-level tests. It keeps what Redis would: the
 * record as JSON text, parsed with the Redis store's own parser on every read, so a test can put
 * hostile text in `raw` and see it treated as untrusted. The contract both share is
 * test/integration/agent-conversation-store.test.ts.
 */
export function createMemoryAgentConversations(): AgentConversations & {
  raw: Map<string, string>;
  saves: number;
} {
  const raw = new Map<string, string>();
  const key = (runId: string, phase: ConversationKey['phase']) => `${runId}:${phase}`;
  const store = {
    raw,
    saves: 0,
    async save(runId: string, conversation: Parameters<AgentConversations['save']>[1]) {
      store.saves += 1;
      raw.set(key(runId, conversation.phase), JSON.stringify(conversation));
    },
    async load(runId: string, wanted: ConversationKey) {
      return parseStoredConversation(raw.get(key(runId, wanted.phase)) ?? null, wanted);
    },
    async clear(runId: string, phase?: ConversationKey['phase']) {
      for (const p of phase === undefined ? (['agent', 'diagnosis'] as const) : [phase]) raw.delete(key(runId, p));
    },
  };
  return store;
}
