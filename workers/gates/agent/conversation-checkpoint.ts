import { lstat, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { AgentConversation, AgentSpend } from '../../../src/agent/agent-loop.js';
import { normaliseRelativePath } from '../../../src/agent/protected-paths.js';
import { ToolRefusal, type RepoFiles } from '../../../src/agent/repo-files.js';
import type { Git } from '../../../src/git/git.js';
import type { Logger } from '../../../src/log.js';
import type {
  AgentConversations,
  ConversationKey,
  StoredConversation,
  TreeEntry,
} from '../../../src/store/agent-conversation-store.js';
import type { CheckRoundsProgress } from './check-rounds.js';

/**
 * The fix iteration's checkpoint (issue 14): after every turn, the conversation, the check round
 * and the files the agent changed since the iteration's head commit; on a restart, all of it back,
 * so the resumed conversation sees exactly the tree its messages describe — whether the new worker
 * has the old workspace (with perhaps an edit of a turn that was never persisted) or a fresh clone
 * on another machine.
 */

/** Largest record kept (conversation plus file snapshot, as stored): past it a restart begins the iteration again. */
export const MAX_CHECKPOINT_BYTES = 4 * 1024 * 1024;

export interface IterationCheckpointDeps {
  store: AgentConversations;
  git: Pick<Git, 'changedFiles' | 'readFileAt'>;
  /** The editor's view of the workspace: stored paths are written back under its rules. */
  files: RepoFiles;
  dir: string;
  runId: string;
  key: Extract<ConversationKey, { phase: 'agent' }>;
  maxBytes?: number | undefined;
  clock: () => Date;
  log: Logger;
}

export interface ResumedIteration {
  messages: AgentConversation['messages'];
  progress: CheckRoundsProgress;
  spend: AgentSpend;
}

export interface IterationCheckpoint {
  /** The stored conversation of this iteration with its files written back, or undefined to start afresh. */
  resume(): Promise<ResumedIteration | undefined>;
  save(conversation: AgentConversation, spend: AgentSpend, progress: CheckRoundsProgress): Promise<void>;
}

function errorCode(error: unknown): string | undefined {
  return typeof error === 'object' && error !== null && 'code' in error && typeof error.code === 'string'
    ? error.code
    : undefined;
}

function sameTree(a: readonly TreeEntry[], b: readonly TreeEntry[]): boolean {
  const text = (entries: readonly TreeEntry[]) =>
    JSON.stringify(
      [...entries]
        .sort((x, y) => (x.path < y.path ? -1 : x.path > y.path ? 1 : 0))
        .map((entry) => ('deleted' in entry ? [entry.path] : [entry.path, entry.base64])),
    );
  return text(a) === text(b);
}

export function createIterationCheckpoint(deps: IterationCheckpointDeps): IterationCheckpoint {
  const { store, git, files, dir, runId, key, log } = deps;
  const maxBytes = deps.maxBytes ?? MAX_CHECKPOINT_BYTES;
  let overCapLogged = false;

  /** Every path that differs from the head, as the tree has it now; a string says why it cannot be kept. */
  async function snapshot(): Promise<TreeEntry[] | string> {
    const entries: TreeEntry[] = [];
    for (const path of await git.changedFiles(dir, key.head)) {
      // The path comes from git's own diff of this tree: read it where it is, without following a link.
      const real = join(files.realRoot, ...path.split('/'));
      const stats = await lstat(real).catch((error: unknown) => {
        if (errorCode(error) === 'ENOENT') return undefined;
        throw error;
      });
      if (stats === undefined) entries.push({ path, deleted: true });
      else if (stats.isFile()) entries.push({ path, base64: (await readFile(real)).toString('base64') });
      // Only the editor writes here, and it writes regular files; anything else is not ours to restore.
      else return `${path} is not a regular file`;
    }
    return entries;
  }

  /** The stored path, if it is one the editor could have written: canonical, inside the tree, not protected. */
  async function writable(path: string): Promise<string> {
    if (normaliseRelativePath(path) !== path || path.split('/').includes('..')) {
      throw new ToolRefusal(`Refused: ${JSON.stringify(path.slice(0, 200))} is not a repository path.`);
    }
    return (await files.resolve(files.toVirtual(path), 'write')).realPath;
  }

  async function put(path: string, entry: TreeEntry | undefined): Promise<void> {
    const real = await writable(path);
    if (entry === undefined || 'deleted' in entry) {
      await rm(real, { force: true });
      return;
    }
    await mkdir(dirname(real), { recursive: true });
    await writeFile(real, Buffer.from(entry.base64, 'base64'));
  }

  /** Makes the tree exactly `stored` (relative to the head); a string says why it could not. */
  async function restore(stored: readonly TreeEntry[]): Promise<string | undefined> {
    // Every stored path is checked before anything is written: a hostile record changes nothing.
    for (const entry of stored) await writable(entry.path);
    const current = await snapshot();
    if (typeof current === 'string') return current;
    if (sameTree(current, stored)) return undefined;
    const wanted = new Map(stored.map((entry) => [entry.path, entry]));
    // Changes no persisted turn made (a tool ran, the worker died before the turn was stored) go back to the head.
    for (const entry of current) {
      if (wanted.has(entry.path)) continue;
      const original = await git.readFileAt(dir, key.head, entry.path);
      // git's text of a binary file is not its bytes: such a file cannot be put back from here.
      if (original !== undefined && original.includes('\uFFFD')) return `${entry.path} cannot be put back as it was`;
      await put(
        entry.path,
        original === undefined
          ? undefined
          : { path: entry.path, base64: Buffer.from(original, 'utf8').toString('base64') },
      );
    }
    for (const entry of stored) await put(entry.path, entry);
    // What counts is the tree git sees, the one the checks and the commit get.
    const after = await snapshot();
    if (typeof after === 'string') return after;
    return sameTree(after, stored) ? undefined : 'the tree differs from the snapshot after writing it back';
  }

  return {
    async resume() {
      const loaded = await store.load(runId, key);
      if (loaded.kind === 'none') return undefined;
      if (loaded.kind === 'stale') {
        log.info({ stored: loaded.stored }, 'stored agent conversation is of another iteration: starting afresh');
        return undefined;
      }
      if (loaded.kind === 'invalid') {
        log.warn({ reason: loaded.reason }, 'stored agent conversation unreadable: starting afresh');
        await store.clear(runId, 'agent');
        return undefined;
      }
      const stored = loaded.conversation;
      if (stored.phase !== 'agent') return undefined;
      let problem: string | undefined;
      try {
        problem = await restore(stored.tree);
      } catch (error) {
        if (!(error instanceof ToolRefusal) && errorCode(error) === undefined) throw error;
        problem = error instanceof Error ? error.message : 'the files could not be written back';
      }
      if (problem !== undefined) {
        log.warn(
          { reason: problem, iteration: key.iteration },
          'stored agent conversation not resumed: starting afresh',
        );
        await store.clear(runId, 'agent');
        return undefined;
      }
      log.info(
        { iteration: key.iteration, messages: stored.messages.length, files: stored.tree.length, round: stored.round },
        'agent conversation resumed',
      );
      return {
        messages: stored.messages,
        progress: { round: stored.round, followUps: stored.followUps },
        spend: stored.spend,
      };
    },

    async save(conversation, spend, progress) {
      const tree = await snapshot();
      const record: StoredConversation | undefined =
        typeof tree === 'string'
          ? undefined
          : {
              ...key,
              messages: conversation.messages,
              tree,
              round: progress.round,
              followUps: progress.followUps,
              spend,
              savedAt: deps.clock().toISOString(),
            };
      const bytes = record === undefined ? 0 : Buffer.byteLength(JSON.stringify(record), 'utf8');
      if (record !== undefined && bytes <= maxBytes) {
        await store.save(runId, record);
        return;
      }
      // The older record goes too: resuming it would undo the edits made since and replay those turns.
      // Past the cap a restart simply begins the iteration again, as before checkpoints.
      await store.clear(runId, 'agent');
      if (!overCapLogged) {
        overCapLogged = true;
        log.warn(
          { bytes, maxBytes, reason: typeof tree === 'string' ? tree : 'over the size cap' },
          'agent conversation not kept: a restart begins the iteration again',
        );
      }
    },
  };
}

export interface DiagnosisCheckpointDeps {
  store: AgentConversations;
  runId: string;
  /** The fix forward whose diagnosis this is. */
  fix: number;
  maxBytes?: number | undefined;
  clock: () => Date;
  log: Logger;
}

export interface DiagnosisCheckpoint {
  /** The stored diagnosis conversation of this fix, or undefined to start afresh. */
  resume(): Promise<{ messages: AgentConversation['messages']; turnsAtStart: number } | undefined>;
  save(conversation: AgentConversation, spend: AgentSpend, turnsAtStart: number): Promise<void>;
  clear(): Promise<void>;
}

/**
 * The diagnosis conversation of a fix forward, kept the same way (it reads the cluster and changes
 * no file, so there is no tree to keep): a worker killed mid-diagnosis is followed by one that
 * continues it, its own turn cap still counted from where it began.
 */
export function createDiagnosisCheckpoint(deps: DiagnosisCheckpointDeps): DiagnosisCheckpoint {
  const { store, runId, log } = deps;
  const key: ConversationKey = { phase: 'diagnosis', fix: deps.fix };
  const maxBytes = deps.maxBytes ?? MAX_CHECKPOINT_BYTES;
  let overCapLogged = false;
  return {
    async resume() {
      const loaded = await store.load(runId, key);
      if (loaded.kind === 'stale')
        log.info({ stored: loaded.stored }, 'stored diagnosis is of another fix: starting afresh');
      if (loaded.kind === 'invalid') {
        log.warn({ reason: loaded.reason }, 'stored diagnosis unreadable: starting afresh');
        await store.clear(runId, 'diagnosis');
      }
      if (loaded.kind !== 'found' || loaded.conversation.phase !== 'diagnosis') return undefined;
      const { conversation } = loaded;
      log.info({ fix: deps.fix, messages: conversation.messages.length }, 'diagnosis conversation resumed');
      return { messages: conversation.messages, turnsAtStart: conversation.turnsAtStart };
    },
    async save(conversation, spend, turnsAtStart) {
      const record: StoredConversation = {
        phase: 'diagnosis',
        fix: deps.fix,
        messages: conversation.messages,
        turnsAtStart,
        spend,
        savedAt: deps.clock().toISOString(),
      };
      const bytes = Buffer.byteLength(JSON.stringify(record), 'utf8');
      if (bytes <= maxBytes) {
        await store.save(runId, record);
        return;
      }
      await store.clear(runId, 'diagnosis');
      if (!overCapLogged) {
        overCapLogged = true;
        log.warn({ bytes, maxBytes }, 'diagnosis conversation not kept: a restart begins it again');
      }
    },
    clear: () => store.clear(runId, 'diagnosis'),
  };
}
