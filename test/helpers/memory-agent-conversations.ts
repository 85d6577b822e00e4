import {
  createConversationSeal,
  type AgentConversations,
  type ConversationKey,
  type StoredConversation,
  type TreeEntry,
} from '../../src/store/agent-conversation-store.js';
import { TEST_AUDIT_KEY_BYTES } from './audit-key.js';

type StoredAgentRecord = Extract<StoredConversation, { phase: 'agent' }>;

/** A well-formed record of a run's first iteration on `head`: one view turn, nothing spent, `tree` as its files. */
export function storedAgentRecord(head: string, tree: TreeEntry[], extra: Partial<StoredAgentRecord> = {}): StoredAgentRecord {
  return {
    phase: 'agent',
    iteration: '1',
    head,
    messages: [
      { role: 'user', content: 'Add a /healthz endpoint.' },
      {
        role: 'assistant',
        content: [
          {
            type: 'tool_use',
            id: 'old1',
            name: 'str_replace_based_edit_tool',
            input: { command: 'view', path: '/repo' },
          },
        ],
      },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'old1', content: 'src/', is_error: false }] },
    ],
    tree,
    round: 1,
    followUps: [],
    spend: {
      turns: 0,
      usage: { inputTokens: 0, outputTokens: 0, cacheReadTokens: 0, cacheWriteTokens: 0, costUsd: 0 },
    },
    savedAt: new Date().toISOString(),
    ...extra,
  };
}

/**
 * The agent conversation store in memory, for step-level tests. It keeps what Redis would: the
 * record as sealed JSON text (the Redis store's own seal, keyed by the test audit key), opened and
 * parsed with the Redis store's own code on every read, so a test can put hostile text in `raw` and
 * see it treated as untrusted. The contract both share is test/integration/agent-conversation-store.test.ts.
 */
export function createMemoryAgentConversations(auditKey: Uint8Array = TEST_AUDIT_KEY_BYTES): AgentConversations & {
  raw: Map<string, string>;
  saves: number;
} {
  const sealing = createConversationSeal(auditKey);
  const raw = new Map<string, string>();
  const key = (runId: string, phase: ConversationKey['phase']) => `${runId}:${phase}`;
  const store = {
    raw,
    saves: 0,
    async save(runId: string, conversation: Parameters<AgentConversations['save']>[1]) {
      store.saves += 1;
      raw.set(key(runId, conversation.phase), sealing.seal(runId, conversation));
    },
    async load(runId: string, wanted: ConversationKey) {
      return sealing.open(runId, wanted, raw.get(key(runId, wanted.phase)) ?? null);
    },
    async clear(runId: string, phase?: ConversationKey['phase']) {
      for (const p of phase === undefined ? (['agent', 'diagnosis'] as const) : [phase]) raw.delete(key(runId, p));
    },
  };
  return store;
}
