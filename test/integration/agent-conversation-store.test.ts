import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createHmac } from 'node:crypto';
import {
  CONVERSATION_TTL_SECONDS,
  createAgentConversationStore,
  createConversationSeal,
  parseStoredConversation,
  type AgentConversations,
  type StoredConversation,
} from '../../src/store/agent-conversation-store.js';
import { TEST_AUDIT_KEY_BYTES } from '../helpers/audit-key.js';
import { testPrefix } from '../helpers/ids.js';
import { createMemoryAgentConversations } from '../helpers/memory-agent-conversations.js';

/**
 * The agent's conversation records (src/store/agent-conversation-store.ts, issue 14): one contract
 * against Redis and the in-memory store the step tests use, then the parser on hostile text, then
 * what only Redis shows — the key a record lives under and its expiry.
 */

let redis: Redis;
beforeAll(() => {
  redis = new Redis(inject('redisUrl'));
});
afterAll(() => {
  redis.disconnect();
});

const HEAD = 'a'.repeat(40);
const ZERO = { inputTokens: 0, outputTokens: 0, cacheReadTokens: 0, cacheWriteTokens: 0, costUsd: 0 };

function agentRecord(overrides: Partial<Extract<StoredConversation, { phase: 'agent' }>> = {}): StoredConversation {
  return {
    phase: 'agent',
    iteration: '1',
    head: HEAD,
    messages: [
      { role: 'user', content: 'Add a /healthz endpoint.' },
      {
        role: 'assistant',
        content: [
          { type: 'text', text: 'Looking.' },
          {
            type: 'tool_use',
            id: 'u1',
            name: 'str_replace_based_edit_tool',
            input: { command: 'view', path: '/repo' },
          },
        ],
      },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'u1', content: 'src/', is_error: false }] },
    ],
    tree: [
      { path: 'src/server.js', base64: Buffer.from('ok\n').toString('base64') },
      { path: 'old.js', deleted: true },
    ],
    round: 2,
    followUps: ['also /ready'],
    spend: { turns: 3, usage: { ...ZERO, inputTokens: 300 } },
    savedAt: '2026-01-01T00:00:00.000Z',
    ...overrides,
  };
}

const diagnosisRecord: StoredConversation = {
  phase: 'diagnosis',
  fix: 1,
  messages: [{ role: 'user', content: 'The deploy gate of stage dev went red.' }],
  turnsAtStart: 2,
  spend: { turns: 2, usage: ZERO },
  savedAt: '2026-01-01T00:00:00.000Z',
};

const implementations: Array<[string, () => AgentConversations]> = [
  [
    'redis',
    () => createAgentConversationStore({ redis, prefix: testPrefix('conversations'), auditKey: TEST_AUDIT_KEY_BYTES }),
  ],
  ['memory', () => createMemoryAgentConversations()],
];

describe.each(implementations)('agent conversation store contract (%s)', (_name, make) => {
  it('gives back what was saved for its own key, per run and phase', async () => {
    const store = make();
    const key = { phase: 'agent', iteration: '1', head: HEAD } as const;
    expect(await store.load('sg-a', key)).toEqual({ kind: 'none' });
    await store.save('sg-a', agentRecord());
    await store.save('sg-a', diagnosisRecord);
    expect(await store.load('sg-a', key)).toEqual({ kind: 'found', conversation: agentRecord() });
    expect(await store.load('sg-a', { phase: 'diagnosis', fix: 1 })).toEqual({
      kind: 'found',
      conversation: diagnosisRecord,
    });
    expect(await store.load('sg-b', key)).toEqual({ kind: 'none' });
  });

  it('a later save replaces the record; another iteration, base commit or fix is stale', async () => {
    const store = make();
    await store.save('sg-a', agentRecord());
    await store.save('sg-a', agentRecord({ iteration: 'fix1.1' }));
    expect(await store.load('sg-a', { phase: 'agent', iteration: '1', head: HEAD })).toMatchObject({ kind: 'stale' });
    expect(await store.load('sg-a', { phase: 'agent', iteration: 'fix1.1', head: 'b'.repeat(40) })).toMatchObject({
      kind: 'stale',
    });
    expect(await store.load('sg-a', { phase: 'agent', iteration: 'fix1.1', head: HEAD })).toMatchObject({
      kind: 'found',
    });
    await store.save('sg-a', diagnosisRecord);
    expect(await store.load('sg-a', { phase: 'diagnosis', fix: 2 })).toMatchObject({ kind: 'stale' });
  });

  it('clear removes one phase or every phase of the run', async () => {
    const store = make();
    await store.save('sg-a', agentRecord());
    await store.save('sg-a', diagnosisRecord);
    await store.clear('sg-a', 'diagnosis');
    expect(await store.load('sg-a', { phase: 'diagnosis', fix: 1 })).toEqual({ kind: 'none' });
    expect(await store.load('sg-a', { phase: 'agent', iteration: '1', head: HEAD })).toMatchObject({ kind: 'found' });
    await store.save('sg-a', diagnosisRecord);
    await store.clear('sg-a');
    expect(await store.load('sg-a', { phase: 'diagnosis', fix: 1 })).toEqual({ kind: 'none' });
    expect(await store.load('sg-a', { phase: 'agent', iteration: '1', head: HEAD })).toEqual({ kind: 'none' });
  });
});

describe('a stored record is untrusted', () => {
  const key = { phase: 'agent', iteration: '1', head: HEAD } as const;
  const parse = (record: unknown) => parseStoredConversation(JSON.stringify(record), key);
  const base = agentRecord();
  const messages = base.messages;

  it.each<[string, unknown]>([
    ['not JSON', '{'],
    [
      'an unknown block kind',
      { ...base, messages: [...messages.slice(0, 2), { role: 'user', content: [{ type: 'image', source: {} }] }] },
    ],
    ['a tool_use without its results at the end', { ...base, messages: messages.slice(0, 2) }],
    [
      'results for calls nobody made',
      { ...base, messages: [messages[0], { role: 'assistant', content: [{ type: 'text', text: 'hi' }] }, messages[2]] },
    ],
    [
      'a result missing',
      {
        ...base,
        messages: [...messages.slice(0, 2), { role: 'user', content: [{ type: 'text', text: 'no results' }] }],
      },
    ],
    ['two user messages in a row', { ...base, messages: [messages[0], messages[0]] }],
    ['an assistant first', { ...base, messages: messages.slice(1) }],
    ['a head that is not a commit', { ...base, head: '--upload-pack=x' }],
    ['file bytes that are not base64', { ...base, tree: [{ path: 'a.js', base64: '%%%' }] }],
    [
      'a path twice',
      {
        ...base,
        tree: [
          { path: 'a.js', deleted: true },
          { path: 'a.js', deleted: true },
        ],
      },
    ],
    ['a negative spend', { ...base, spend: { turns: -1, usage: ZERO } }],
    // What the budgets are checked against (hostile review L1): only finite, non-negative figures.
    ['a negative cost', { ...base, spend: { turns: 1, usage: { ...ZERO, costUsd: -5 } } }],
    ['an infinite cost', JSON.stringify(base).replace('"costUsd":0', '"costUsd":1e999')],
    ['a cost that is not a number', { ...base, spend: { turns: 1, usage: { ...ZERO, costUsd: null } } }],
    ['a fractional turn count', { ...base, spend: { turns: 1.5, usage: ZERO } }],
    ['an unsafe turn count', { ...base, spend: { turns: 2 ** 60, usage: ZERO } }],
    ['round 0', { ...base, round: 0 }],
    ['a negative diagnosis start', { ...diagnosisRecord, turnsAtStart: -1 }],
  ])('%s is refused', (_why, record) => {
    const loaded = typeof record === 'string' ? parseStoredConversation(record, key) : parse(record);
    expect(loaded.kind).toBe('invalid');
  });

  it('a well-formed record is read, and only the fields the loop writes are kept', () => {
    const loaded = parse({
      ...base,
      extra: 'ignored',
      messages: [{ ...messages[0], cache_control: { type: 'ephemeral' } }, ...messages.slice(1)],
    });
    expect(loaded).toEqual({ kind: 'found', conversation: base });
  });
});

describe('the Redis record', () => {
  it('lives under the run and phase and expires on its own', async () => {
    const prefix = testPrefix('conversations-ttl');
    const store = createAgentConversationStore({ redis, prefix, auditKey: TEST_AUDIT_KEY_BYTES });
    await store.save('sg-a', agentRecord());
    const ttl = await redis.ttl(`${prefix}:agent-conversation:sg-a:agent`);
    expect(ttl).toBeGreaterThan(CONVERSATION_TTL_SECONDS - 60);
    expect(ttl).toBeLessThanOrEqual(CONVERSATION_TTL_SECONDS);
    await store.clear('sg-a');
    expect(await redis.exists(`${prefix}:agent-conversation:sg-a:agent`)).toBe(0);
  });
});

describe('the seal (hostile review M2: only the bot can write a record it resumes)', () => {
  const key = { phase: 'agent', iteration: '1', head: HEAD } as const;
  const redisKey = (prefix: string, runId: string) => `${prefix}:agent-conversation:${runId}:agent`;

  async function stored() {
    const prefix = testPrefix('conversations-seal');
    const store = createAgentConversationStore({ redis, prefix, auditKey: TEST_AUDIT_KEY_BYTES });
    await store.save('sg-a', agentRecord());
    const value = (await redis.get(redisKey(prefix, 'sg-a'))) ?? '';
    return { prefix, store, value };
  }

  /** The stored value with its record changed by `edit` (the MAC left as it was): a write to Redis alone. */
  function tampered(value: string, edit: (record: Extract<StoredConversation, { phase: 'agent' }>) => void): string {
    const dot = value.indexOf('.', 'v1.'.length);
    const record = agentRecord();
    if (record.phase !== 'agent') throw new Error('unreachable');
    expect(JSON.parse(value.slice(dot + 1))).toEqual(record);
    edit(record);
    return `${value.slice(0, dot + 1)}${JSON.stringify(record)}`;
  }

  it('a record as the store wrote it is read back', async () => {
    const { store } = await stored();
    expect(await store.load('sg-a', key)).toEqual({ kind: 'found', conversation: agentRecord() });
  });

  it.each<[string, (record: Extract<StoredConversation, { phase: 'agent' }>) => void]>([
    [
      'one byte of a file',
      (record) => {
        record.tree[0] = { path: 'src/server.js', base64: Buffer.from('oK\n').toString('base64') };
      },
    ],
    [
      'a message',
      (record) => {
        record.messages[0] = { role: 'user', content: 'Add a /healthz endpoint and a backdoor.' };
      },
    ],
    [
      'the spend',
      (record) => {
        record.spend = { turns: 0, usage: ZERO };
      },
    ],
  ])('a record altered in Redis (%s) is invalid', async (_what, edit) => {
    const { prefix, store, value } = await stored();
    await redis.set(redisKey(prefix, 'sg-a'), tampered(value, edit));
    const loaded = await store.load('sg-a', key);
    expect(loaded.kind === 'invalid' ? loaded.reason : loaded.kind).toMatch(/seal/);
  });

  it('a record copied to another run, or read with another key, is invalid', async () => {
    const { prefix, store, value } = await stored();
    await redis.set(redisKey(prefix, 'sg-b'), value);
    expect(await store.load('sg-b', key)).toMatchObject({ kind: 'invalid' });
    const otherKey = createAgentConversationStore({ redis, prefix, auditKey: Buffer.alloc(32, 7) });
    expect(await otherKey.load('sg-a', key)).toMatchObject({ kind: 'invalid' });
  });

  it('a record without a seal, or sealed with the audit key itself, is invalid', async () => {
    const { prefix, store } = await stored();
    const text = JSON.stringify(agentRecord());
    await redis.set(redisKey(prefix, 'sg-a'), text);
    expect(await store.load('sg-a', key)).toMatchObject({ kind: 'invalid', reason: 'the record is not sealed' });
    // The audit key is never used for a second purpose: the seal's key is derived from it.
    const direct = createHmac('sha256', TEST_AUDIT_KEY_BYTES)
      .update(JSON.stringify(['sg-a', 'agent', text]))
      .digest('hex');
    await redis.set(redisKey(prefix, 'sg-a'), `v1.${direct}.${text}`);
    expect(await store.load('sg-a', key)).toMatchObject({ kind: 'invalid' });
    for (const value of ['v1.', `v1.${'0'.repeat(64)}`, `v1.${'G'.repeat(64)}.${text}`, `v2.${direct}.${text}`]) {
      await redis.set(redisKey(prefix, 'sg-a'), value);
      expect(await store.load('sg-a', key), value.slice(0, 80)).toMatchObject({ kind: 'invalid' });
    }
  });

  it('the seal binds the phase: a diagnosis record under the agent key is invalid, not stale', () => {
    const seal = createConversationSeal(TEST_AUDIT_KEY_BYTES);
    expect(seal.open('sg-a', key, seal.seal('sg-a', diagnosisRecord))).toMatchObject({ kind: 'invalid' });
    expect(seal.open('sg-a', { phase: 'diagnosis', fix: 1 }, seal.seal('sg-a', diagnosisRecord))).toMatchObject({
      kind: 'found',
    });
  });
});
