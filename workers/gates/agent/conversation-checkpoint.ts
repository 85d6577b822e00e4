import { lstat, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { AgentBudget, AgentConversation, AgentSpend } from '../../../src/agent/agent-loop.js';
import { normaliseRelativePath } from '../../../src/agent/protected-paths.js';
import { decodeText, MAX_FILE_BYTES, ToolRefusal, type RepoFiles } from '../../../src/agent/repo-files.js';
import { ExternalOutageError } from '../../../src/errors.js';
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
  git: Pick<Git, 'changedFiles' | 'restorePaths'>;
  /** The editor's view of the workspace: stored paths are written back under its rules. */
  files: RepoFiles;
  dir: string;
  runId: string;
  key: Extract<ConversationKey, { phase: 'agent' }>;
  maxBytes?: number | undefined;
  clock: () => Date;
  log: Logger;
}

/**
 * What the run itself knows when a stored conversation is resumed. The record comes from Redis and
 * is not trusted to lower any of it: a record saying nothing was spent must not hand the budgets
 * back to a restarted agent.
 */
export interface RunFigures {
  /** The spend in the run record (every earlier worker's model calls included). */
  spend: AgentSpend;
  budget: Pick<AgentBudget, 'maxTurns' | 'maxTokens' | 'maxCostUsd'>;
  maxCheckRounds: number;
  /** The follow-ups pending in the run's thread, oldest first (the ones given are acknowledged only after the push). */
  pendingFollowUps: readonly string[];
}

export interface ResumedIteration {
  messages: AgentConversation['messages'];
  progress: CheckRoundsProgress;
  spend: AgentSpend;
}

export interface IterationCheckpoint {
  /**
   * The stored conversation of this iteration with its files written back, or undefined to start
   * afresh on the tree as it was (or, if writing back had begun, on exactly the head). Throws
   * ExternalOutageError when the tree could be put back to neither.
   */
  resume(known: RunFigures): Promise<ResumedIteration | undefined>;
  save(conversation: AgentConversation, spend: AgentSpend, progress: CheckRoundsProgress): Promise<void>;
}

function errorCode(error: unknown): string | undefined {
  return typeof error === 'object' && error !== null && 'code' in error && typeof error.code === 'string'
    ? error.code
    : undefined;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
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

/** At least what the run knows; from the record at most the budget (over it means spent, not more). */
function figure(stored: number, known: number, budget: number): number {
  return Math.max(known, Math.min(stored, budget));
}

/**
 * The figures to go on with: field by field the larger of the record's and the run's, the record's
 * capped at the budget; the check round within the rounds there are; and of the follow-ups only those
 * the thread really has, in its order (one the record claims but the thread lacks would otherwise hide
 * a real one from the agent, and be acknowledged without being given).
 */
export function resumedFigures(
  stored: Pick<ResumedIteration, 'spend' | 'progress'>,
  known: RunFigures,
): Pick<ResumedIteration, 'spend' | 'progress'> {
  const { budget } = known;
  const { usage } = stored.spend;
  const knownUsage = known.spend.usage;
  const given: string[] = [];
  for (const [index, text] of stored.progress.followUps.entries()) {
    if (known.pendingFollowUps[index] !== text) break;
    given.push(text);
  }
  return {
    spend: {
      turns: figure(stored.spend.turns, known.spend.turns, budget.maxTurns),
      usage: {
        inputTokens: figure(usage.inputTokens, knownUsage.inputTokens, budget.maxTokens),
        outputTokens: figure(usage.outputTokens, knownUsage.outputTokens, budget.maxTokens),
        cacheReadTokens: figure(usage.cacheReadTokens, knownUsage.cacheReadTokens, budget.maxTokens),
        cacheWriteTokens: figure(usage.cacheWriteTokens, knownUsage.cacheWriteTokens, budget.maxTokens),
        costUsd: figure(usage.costUsd, knownUsage.costUsd, budget.maxCostUsd),
      },
    },
    progress: {
      // The run record does not keep the round: the record's is only kept within the rounds there are.
      round: Math.max(1, Math.min(stored.progress.round, known.maxCheckRounds)),
      followUps: given,
    },
  };
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

  /**
   * Why the stored paths cannot all be written back as they are, or undefined — decided before
   * anything is written. Each must be writable under the editor's rules, its bytes ones the editor
   * could have written (text, within its size limit: only the editor writes the tree, the checks run
   * on a copy), and the tree must take it as a plain file: every directory on the way a real directory
   * (not a file, not a link) or not there yet, the path itself a regular file or nothing. The editor
   * writes only regular files and cannot turn a file into a directory, so a record of its own never
   * asks for anything else.
   */
  async function refusal(stored: readonly TreeEntry[]): Promise<string | undefined> {
    const paths = new Set(stored.map((entry) => entry.path));
    for (const entry of stored) {
      const { path } = entry;
      await writable(path);
      if ('base64' in entry) {
        const bytes = Buffer.from(entry.base64, 'base64');
        if (bytes.length > MAX_FILE_BYTES) return `${path} is larger than the editor writes`;
        if (decodeText(bytes) === undefined) return `${path} is not text the editor could have written`;
      }
      const segments = path.split('/');
      for (let depth = 1; depth < segments.length; depth++) {
        const parent = segments.slice(0, depth).join('/');
        if (paths.has(parent)) return `${parent} is both a file and a directory in the snapshot`;
      }
      let real = files.realRoot;
      for (const [index, segment] of segments.entries()) {
        real = join(real, segment);
        const stats = await lstat(real).catch((error: unknown) => {
          if (errorCode(error) === 'ENOENT') return undefined;
          throw error;
        });
        // Nothing there: the rest of the path is made by the write.
        if (stats === undefined) break;
        const last = index === segments.length - 1;
        if (last && !stats.isFile()) return `${path} is not a regular file in the tree`;
        if (!last && !stats.isDirectory())
          return `${segments.slice(0, index + 1).join('/')} is not a directory in the tree`;
      }
    }
    return undefined;
  }

  async function put(entry: TreeEntry): Promise<void> {
    const real = await writable(entry.path);
    if ('deleted' in entry) {
      await rm(real, { force: true });
      return;
    }
    await mkdir(dirname(real), { recursive: true });
    await writeFile(real, Buffer.from(entry.base64, 'base64'));
  }

  /**
   * After a failed write-back: the tree exactly at the head again — every path written and every path
   * git sees changed — so the fresh start works on the head and on nothing that came from the record.
   * If even that fails the step stops as an outage: going on would run the agent and the checks on a
   * tree that is neither the head nor the snapshot. The record is kept, so the retry tries again.
   */
  async function backToHead(touched: ReadonlySet<string>, cause: unknown): Promise<void> {
    let failure: unknown;
    try {
      // First every path the write-back touched, by name: taking away what the head lacks needs no
      // listing of the tree, so even a tree git cannot list any more (a name git refuses to add makes
      // changedFiles fail) loses what was written into it.
      await git.restorePaths(dir, key.head, [...touched]);
    } catch (error) {
      failure = error;
      // One path restorePaths refuses must not keep the others in the tree: each on its own.
      for (const path of touched) await git.restorePaths(dir, key.head, [path]).catch(() => undefined);
    }
    try {
      // Then whatever else git sees changed (an edit no persisted turn made), and a last look.
      await git.restorePaths(dir, key.head, await git.changedFiles(dir, key.head));
      const left = await git.changedFiles(dir, key.head);
      if (left.length > 0) throw new Error(`still changed: ${left.slice(0, 5).join(', ')}`);
    } catch (error) {
      failure ??= error;
    }
    if (failure === undefined) return;
    log.error(
      { err: failure, failure: cause instanceof Error ? cause.message : cause, iteration: key.iteration },
      'the tree could not be put back to the head',
    );
    throw new ExternalOutageError(
      'workspace',
      `the tree could not be put back to ${key.head.slice(0, 12)} (${messageOf(cause)}): ${messageOf(failure)}`,
      { cause: failure },
    );
  }

  /**
   * A fresh start begins on the head: a reused workspace may still hold edits of a conversation that
   * is not continued (its record over the cap, refused or of no use), which the new one would neither
   * know of nor have asked for, and would commit.
   */
  async function afresh(): Promise<undefined> {
    try {
      const left = await git.changedFiles(dir, key.head);
      if (left.length === 0) return undefined;
      log.info(
        { files: left.length, iteration: key.iteration },
        'edits of a conversation not continued put back to the head',
      );
      await backToHead(new Set(left), 'a fresh start on a changed tree');
    } catch (error) {
      // Best effort: nothing here came from Redis, and a tree git cannot make clean (case-colliding
      // paths on a case-insensitive disk, say) must not fail every attempt of the run; the fresh
      // conversation then starts on the tree as it is, as it did before this step existed.
      log.warn({ err: error, iteration: key.iteration }, 'a fresh start could not put the tree back to the head');
    }
    return undefined;
  }

  /** Makes the tree exactly `stored` (relative to the head); a string says why it could not. */
  async function restore(stored: readonly TreeEntry[]): Promise<string | undefined> {
    // Every stored path is checked before anything is written: a hostile record changes nothing.
    const refused = await refusal(stored);
    if (refused !== undefined) return refused;
    const current = await snapshot();
    if (typeof current === 'string') return current;
    if (sameTree(current, stored)) return undefined;
    const wanted = new Set(stored.map((entry) => entry.path));
    const touched = new Set<string>();
    let problem: string | undefined;
    let written = false;
    try {
      // Changes no persisted turn made (a tool ran, the worker died before the turn was stored) go back to the head.
      const strays = current.filter((entry) => !wanted.has(entry.path)).map((entry) => entry.path);
      for (const path of strays) touched.add(path);
      await git.restorePaths(dir, key.head, strays);
      for (const entry of stored) {
        touched.add(entry.path);
        await put(entry);
      }
      written = true;
      // What counts is the tree git sees, the one the checks and the commit get.
      const after = await snapshot();
      problem =
        typeof after === 'string'
          ? after
          : sameTree(after, stored)
            ? undefined
            : 'the tree differs from the snapshot after writing it back';
    } catch (error) {
      await backToHead(touched, error);
      // A refusal or a filesystem error: the record cannot be written back, and the tree is the head again.
      if (error instanceof ToolRefusal || (error instanceof Error && errorCode(error) !== undefined)) {
        return error.message;
      }
      // git could not read the tree as written back, yet read the head just now (backToHead listed it
      // twice): what it failed on came from the record. Kept, the record would fail every retry the same way.
      if (written) return `git cannot read the tree as written back: ${messageOf(error)}`;
      throw error;
    }
    if (problem !== undefined) await backToHead(touched, problem);
    return problem;
  }

  return {
    async resume(known) {
      const loaded = await store.load(runId, key);
      if (loaded.kind === 'none') return afresh();
      if (loaded.kind === 'stale') {
        log.info({ stored: loaded.stored }, 'stored agent conversation is of another iteration: starting afresh');
        return afresh();
      }
      if (loaded.kind === 'invalid') {
        log.warn({ reason: loaded.reason }, 'stored agent conversation unreadable: starting afresh');
        await store.clear(runId, 'agent');
        return afresh();
      }
      const stored = loaded.conversation;
      if (stored.phase !== 'agent') return afresh();
      // The run's spend is stored after each model call and the record after each turn, so the latest
      // record is at most one call behind the run. One further behind is an older record put back (a
      // replay of this bot's own sealed text): resuming it would hand back the check rounds spent since.
      if (stored.spend.turns + 1 < known.spend.turns) {
        log.warn(
          { stored: stored.spend.turns, run: known.spend.turns, iteration: key.iteration },
          'stored agent conversation is older than the run: starting afresh',
        );
        await store.clear(runId, 'agent');
        return afresh();
      }
      let problem: string | undefined;
      try {
        problem = await restore(stored.tree);
      } catch (error) {
        // Only a refusal or a filesystem error means the record cannot be used; anything else (an outage
        // putting the tree back included) is the step's, and the record stays for its retry.
        if (!(error instanceof ToolRefusal) && errorCode(error) === undefined) throw error;
        problem = error instanceof Error ? error.message : 'the files could not be written back';
      }
      if (problem !== undefined) {
        log.warn(
          { reason: problem, iteration: key.iteration },
          'stored agent conversation not resumed: starting afresh',
        );
        await store.clear(runId, 'agent');
        return afresh();
      }
      const figures = resumedFigures(
        { spend: stored.spend, progress: { round: stored.round, followUps: stored.followUps } },
        known,
      );
      log.info(
        {
          iteration: key.iteration,
          messages: stored.messages.length,
          files: stored.tree.length,
          round: figures.progress.round,
          ...(figures.progress.followUps.length === stored.followUps.length
            ? {}
            : { followUpsStored: stored.followUps.length, followUpsKept: figures.progress.followUps.length }),
        },
        'agent conversation resumed',
      );
      return { messages: stored.messages, ...figures };
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
  /**
   * The stored diagnosis conversation of this fix, or undefined to start afresh. `known.turns` is the
   * run's: the stored start of the diagnosis is never later (a later one would widen its own turn cap).
   */
  resume(known: {
    turns: number;
  }): Promise<{ messages: AgentConversation['messages']; turnsAtStart: number } | undefined>;
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
    async resume(known) {
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
      return { messages: conversation.messages, turnsAtStart: Math.min(conversation.turnsAtStart, known.turns) };
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
