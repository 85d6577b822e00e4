import { createHmac, timingSafeEqual } from 'node:crypto';
import type Anthropic from '@anthropic-ai/sdk';
import { z } from 'zod';
import type { Usage } from '../domain/run.js';
import type { Redis } from '../redis.js';

/**
 * The agent's conversation as of its last completed turn (issue 14), so that a worker that dies
 * mid-conversation is followed by one that continues it instead of paying for every earlier turn
 * again. One record per run and phase — the fix iteration's conversation, with the files it changed,
 * and a fix forward's diagnosis — written after each turn (model answer plus tool results), removed
 * when the iteration ends, and expiring on its own as a backstop.
 *
 * What comes back from Redis is untrusted. Every record is sealed with an HMAC-SHA256 over its exact
 * stored text, the run id and the phase, keyed by a key derived from the audit key (SPEC §7: a secret
 * Redis never holds); a record without the right seal — altered, written by someone who can only
 * write Redis, or copied from another run — is `invalid` and never resumed (its bytes would otherwise
 * be committed and pushed as the agent's work). Then it is parsed with zod, the tool_use/tool_result
 * pairing is checked (a conversation the API would refuse is not resumed), and a record of another
 * iteration, fix or base commit is never returned. The file snapshot is checked by whoever writes it
 * back (the editor tool's rules for paths and contents, and the tree must take each path as a plain
 * file), and the figures (spend, round, follow-ups, a diagnosis' start) never lower what the run
 * record knows (workers/gates/agent/conversation-checkpoint.ts).
 */

/** A backstop only: the record is removed when its iteration ends, and a run's own time budget is far shorter. */
export const CONVERSATION_TTL_SECONDS = 24 * 60 * 60;

/** Which conversation a record belongs to. */
export type ConversationKey =
  | {
      phase: 'agent';
      /** The iteration within the run (`fix<N>.` for a fix forward's, then the CI iteration number). */
      iteration: string;
      /** The commit the iteration started from: the file snapshot is relative to it. */
      head: string;
    }
  | { phase: 'diagnosis'; fix: number };

/** A file the agent changed relative to the iteration's head: its bytes (base64), or that it is gone. */
export type TreeEntry = { path: string; base64: string } | { path: string; deleted: true };

interface StoredCommon {
  /** The conversation after its last completed turn: never a tool_use without its results. */
  messages: Anthropic.MessageParam[];
  /** The run's spend when the record was written (the run record holds the same or more). */
  spend: { turns: number; usage: Usage };
  savedAt: string;
}

/** A stored conversation: its key's fields, then what the phase keeps. */
export type StoredConversation =
  | (StoredCommon &
      Extract<ConversationKey, { phase: 'agent' }> & {
        /** Every path that differs from the key's head, as the tree was right after that turn. */
        tree: TreeEntry[];
        /** The check round the iteration was in (rounds are a budget too: a restart does not reset them). */
        round: number;
        /** The follow-ups the conversation has been given, oldest first. */
        followUps: string[];
      })
  | (StoredCommon &
      Extract<ConversationKey, { phase: 'diagnosis' }> & {
        /** The run's turns when the diagnosis began: its own turn cap counts from there. */
        turnsAtStart: number;
      });

export type LoadedConversation =
  | { kind: 'none' }
  /** A record of another iteration, fix or base commit: never resumed. */
  | { kind: 'stale'; stored: string }
  | { kind: 'invalid'; reason: string }
  | { kind: 'found'; conversation: StoredConversation };

export interface AgentConversations {
  save(runId: string, conversation: StoredConversation): Promise<void>;
  load(runId: string, key: ConversationKey): Promise<LoadedConversation>;
  /** Removes the run's record of `phase`, or of every phase. */
  clear(runId: string, phase?: ConversationKey['phase']): Promise<void>;
}

const PHASES: ReadonlyArray<ConversationKey['phase']> = ['agent', 'diagnosis'];

// --- the stored shape, parsed on read -------------------------------------------------------

const idSchema = z.string().min(1).max(256);
const textBlock = z.object({ type: z.literal('text'), text: z.string() });
const toolUseBlock = z.object({
  type: z.literal('tool_use'),
  id: idSchema,
  name: idSchema,
  input: z.record(z.string(), z.json()),
});
const toolResultBlock = z.object({
  type: z.literal('tool_result'),
  tool_use_id: idSchema,
  content: z.string(),
  is_error: z.boolean(),
});
// Only the block kinds the loop itself writes (asParams, tool results, feedback text).
const assistantMessage = z.object({
  role: z.literal('assistant'),
  content: z.array(z.discriminatedUnion('type', [textBlock, toolUseBlock])),
});
const userMessage = z.object({
  role: z.literal('user'),
  content: z.union([z.string(), z.array(z.discriminatedUnion('type', [textBlock, toolResultBlock])).min(1)]),
});
const messageSchema = z.discriminatedUnion('role', [userMessage, assistantMessage]);

const usageSchema = z.object({
  inputTokens: z.number().nonnegative(),
  outputTokens: z.number().nonnegative(),
  cacheReadTokens: z.number().nonnegative(),
  cacheWriteTokens: z.number().nonnegative(),
  costUsd: z.number().nonnegative(),
});
const common = {
  messages: z.array(messageSchema).min(1),
  spend: z.object({ turns: z.number().int().nonnegative(), usage: usageSchema }),
  savedAt: z.string(),
};
const pathSchema = z.string().min(1).max(4096);
const treeEntrySchema = z.union([
  z.object({ path: pathSchema, deleted: z.literal(true) }),
  z.object({ path: pathSchema, base64: z.base64() }),
]);
const storedSchema = z.discriminatedUnion('phase', [
  z.object({
    phase: z.literal('agent'),
    iteration: z.string().min(1).max(200),
    head: z.string().regex(/^[0-9a-f]{40,64}$/),
    tree: z.array(treeEntrySchema),
    round: z.number().int().positive(),
    followUps: z.array(z.string()),
    ...common,
  }),
  z.object({
    phase: z.literal('diagnosis'),
    fix: z.number().int().positive(),
    turnsAtStart: z.number().int().nonnegative(),
    ...common,
  }),
]);

type StoredMessage = z.infer<typeof messageSchema>;

/**
 * Why the messages are not a conversation the Messages API takes and the loop can continue, or
 * undefined: it starts with the user, the roles alternate, every tool_use is answered by exactly
 * its tool_results in the next message (and nothing else answers), and it does not end on an
 * unanswered tool_use.
 */
function conversationProblem(messages: readonly StoredMessage[]): string | undefined {
  if (messages[0]?.role !== 'user') return 'it does not start with the user';
  for (const [index, message] of messages.entries()) {
    const previous = index === 0 ? undefined : messages[index - 1];
    if (previous !== undefined && previous.role === message.role)
      return `two ${message.role} messages in a row at ${index}`;
    const asked =
      previous?.role === 'assistant'
        ? previous.content.flatMap((block) => (block.type === 'tool_use' ? [block.id] : []))
        : [];
    const answered =
      message.role === 'user' && typeof message.content !== 'string'
        ? message.content.flatMap((block) => (block.type === 'tool_result' ? [block.tool_use_id] : []))
        : [];
    if (asked.length > 0 && (answered.length !== asked.length || asked.some((id) => !answered.includes(id)))) {
      return `the tool calls of message ${index - 1} are not answered exactly by message ${index}`;
    }
    if (asked.length === 0 && answered.length > 0) return `message ${index} answers tool calls nobody made`;
  }
  const last = messages.at(-1);
  if (last?.role === 'assistant' && last.content.some((block) => block.type === 'tool_use')) {
    return 'it ends on tool calls without their results';
  }
  return undefined;
}

/** The key of a stored conversation. */
export function keyOf(stored: StoredConversation): ConversationKey {
  return stored.phase === 'agent'
    ? { phase: 'agent', iteration: stored.iteration, head: stored.head }
    : { phase: 'diagnosis', fix: stored.fix };
}

function sameKey(a: ConversationKey, b: ConversationKey): boolean {
  if (a.phase === 'agent' && b.phase === 'agent') return a.iteration === b.iteration && a.head === b.head;
  if (a.phase === 'diagnosis' && b.phase === 'diagnosis') return a.fix === b.fix;
  return false;
}

function describeKey(key: ConversationKey): string {
  return key.phase === 'agent'
    ? `iteration ${key.iteration} on ${key.head.slice(0, 12)}`
    : `the diagnosis of fix ${key.fix}`;
}

/** Parses a stored record (untrusted) and returns it only when it is `key`'s. */
export function parseStoredConversation(raw: string | null, key: ConversationKey): LoadedConversation {
  if (raw === null) return { kind: 'none' };
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch {
    return { kind: 'invalid', reason: 'not JSON' };
  }
  const parsed = storedSchema.safeParse(json);
  if (!parsed.success) return { kind: 'invalid', reason: parsed.error.issues[0]?.message ?? 'unreadable' };
  const stored = parsed.data;
  if (!sameKey(keyOf(stored), key)) return { kind: 'stale', stored: describeKey(keyOf(stored)) };
  const problem = conversationProblem(stored.messages);
  if (problem !== undefined) return { kind: 'invalid', reason: problem };
  if (stored.phase === 'agent') {
    const paths = stored.tree.map((entry) => entry.path);
    if (new Set(paths).size !== paths.length)
      return { kind: 'invalid', reason: 'a path appears twice in the file snapshot' };
  }
  return { kind: 'found', conversation: stored };
}

// --- the seal ------------------------------------------------------------------------------

/**
 * The label the sealing key is derived with: the audit key itself is never used for a second purpose,
 * so no checkpoint MAC can ever pass as an audit hash or the other way round.
 */
const SEAL_KEY_LABEL = 'shipgate conversation checkpoint v1';
/** What a sealed value starts with: the version, then the MAC in hex, then the record's JSON text. */
const SEAL_PREFIX = 'v1.';
const MAC_HEX_LENGTH = 64;

/** Seals a record's stored text and opens sealed values, for one run at a time. */
export interface ConversationSeal {
  /** The value to store for `runId`: the record's JSON text with its MAC in front. */
  seal(runId: string, conversation: StoredConversation): string;
  /** A stored value (untrusted) read back: `invalid` unless its MAC is right for this run and phase. */
  open(runId: string, key: ConversationKey, raw: string | null): LoadedConversation;
}

export function createConversationSeal(auditKey: Uint8Array): ConversationSeal {
  const sealKey = createHmac('sha256', auditKey).update(SEAL_KEY_LABEL).digest();
  // The run id and the phase are bound in, so a record moved to another run's (or phase's) key fails;
  // JSON of the three strings keeps their boundaries unambiguous.
  const mac = (runId: string, phase: ConversationKey['phase'], text: string) =>
    createHmac('sha256', sealKey)
      .update(JSON.stringify([runId, phase, text]))
      .digest();
  return {
    seal(runId, conversation) {
      const text = JSON.stringify(conversation);
      return `${SEAL_PREFIX}${mac(runId, conversation.phase, text).toString('hex')}.${text}`;
    },
    open(runId, key, raw) {
      if (raw === null) return { kind: 'none' };
      const hex = raw.slice(SEAL_PREFIX.length, SEAL_PREFIX.length + MAC_HEX_LENGTH);
      if (
        !raw.startsWith(SEAL_PREFIX) ||
        !/^[0-9a-f]{64}$/.test(hex) ||
        raw[SEAL_PREFIX.length + MAC_HEX_LENGTH] !== '.'
      ) {
        return { kind: 'invalid', reason: 'the record is not sealed' };
      }
      const text = raw.slice(SEAL_PREFIX.length + MAC_HEX_LENGTH + 1);
      // Constant time: how much of a forged MAC matched must not show in how long the check took.
      if (!timingSafeEqual(Buffer.from(hex, 'hex'), mac(runId, key.phase, text))) {
        return {
          kind: 'invalid',
          reason: 'the seal does not match (altered, or not written by this bot for this run)',
        };
      }
      return parseStoredConversation(text, key);
    },
  };
}

export function createAgentConversationStore({
  redis,
  prefix,
  auditKey,
  ttlSeconds = CONVERSATION_TTL_SECONDS,
}: {
  redis: Redis;
  prefix: string;
  /** SHIPGATE_AUDIT_KEY (resolved): the records are sealed with a key derived from it. */
  auditKey: Uint8Array;
  ttlSeconds?: number;
}): AgentConversations {
  const sealing = createConversationSeal(auditKey);
  // One key per run and phase: a new iteration's first turn replaces the last one's record.
  const redisKey = (runId: string, phase: ConversationKey['phase']) => `${prefix}:agent-conversation:${runId}:${phase}`;
  return {
    async save(runId, conversation) {
      // One SET: a reader sees the previous turn's record or this one, never half of each.
      await redis.set(redisKey(runId, conversation.phase), sealing.seal(runId, conversation), 'EX', ttlSeconds);
    },
    async load(runId, key) {
      return sealing.open(runId, key, await redis.get(redisKey(runId, key.phase)));
    },
    async clear(runId, phase) {
      await redis.del(...(phase === undefined ? PHASES : [phase]).map((p) => redisKey(runId, p)));
    },
  };
}
