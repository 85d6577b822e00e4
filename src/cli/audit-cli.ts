import { isEntryModule } from './entry.js';
import { AuditKeyFileError, readLocalAuditKey } from '../audit/audit-key.js';
import {
  createAuditLog,
  formatCheckpoint,
  parseCheckpoint,
  type AuditCheckpoint,
  type AuditVerifyResult,
} from '../audit/audit-log.js';
import { ConfigError, loadAuditCliConfig } from '../config/config.js';
import { createRedis } from '../redis.js';

/**
 * `npm run audit-log -- verify [--checkpoint <seq:hash>]…`,
 * `npm run audit-log -- export <run-id> [--checkpoint <seq:hash>]…` and
 * `npm run audit-log -- checkpoint` (SPEC §7): checks the keyed audit chain
 * (and that it still holds the checkpoints kept outside Redis), exports one
 * run's evidence as JSON Lines, and prints the verified head for an operator
 * to store elsewhere. `main` takes env and streams as arguments so tests can
 * run it in-process; only the entry block at the bottom touches the real process.
 */

const USAGE = `usage: audit-log verify [--checkpoint <seq:hash>]...
       audit-log export <run-id> [--checkpoint <seq:hash>]...
       audit-log checkpoint

  verify            check the whole audit chain (HMAC with SHIPGATE_AUDIT_KEY); exit 0 if intact,
                    1 if broken or if the key does not match
  export <run-id>   write the run's audit events as JSON Lines to stdout, then the chain
                    verification to stderr; exit 1 if the run is unknown or the chain is broken
  checkpoint        verify the chain and print its head as <seq>:<hash>, to store outside Redis
  --checkpoint <seq:hash>
                    (repeatable) a head recorded earlier (by "checkpoint", or an "audit checkpoint"
                    log line's seq and hash): the chain must still hold event #seq with that hash,
                    which detects events cut off the end of the log

environment: the bot's own (.env.example): REDIS_URL, SHIPGATE_REDIS_PREFIX, SHIPGATE_AUDIT_KEY
(in local mode without it: the key file .shipgate/audit.key that the bot generated)
`;

type Command =
  | { kind: 'verify'; checkpoints: AuditCheckpoint[] }
  | { kind: 'export'; runId: string; checkpoints: AuditCheckpoint[] }
  | { kind: 'checkpoint' };

type Parsed = { ok: true; command: Command } | { ok: false; problem?: string };

function parseArgs(argv: readonly string[]): Parsed {
  const [command, ...rest] = argv;
  const positional: string[] = [];
  const checkpoints: AuditCheckpoint[] = [];
  for (let i = 0; i < rest.length; i += 1) {
    const arg = rest[i] ?? '';
    if (arg === '--checkpoint' || arg.startsWith('--checkpoint=')) {
      let value: string | undefined = arg.slice('--checkpoint='.length);
      if (arg === '--checkpoint') {
        i += 1;
        value = rest[i];
      }
      if (value === undefined) return { ok: false, problem: '--checkpoint needs a value, <seq>:<hash>' };
      const checkpoint = parseCheckpoint(value);
      if (checkpoint === undefined) {
        return {
          ok: false,
          problem: `--checkpoint ${value}: expected <seq>:<hash>, a positive number, a colon and 64 lowercase hex digits`,
        };
      }
      if (checkpoints.some((other) => other.seq === checkpoint.seq && other.hash !== checkpoint.hash)) {
        return { ok: false, problem: `two --checkpoint values name event #${checkpoint.seq} with different hashes` };
      }
      checkpoints.push(checkpoint);
    } else if (arg.startsWith('-')) {
      return { ok: false };
    } else {
      positional.push(arg);
    }
  }
  if (command === 'verify' && positional.length === 0) return { ok: true, command: { kind: 'verify', checkpoints } };
  if (command === 'checkpoint' && rest.length === 0) return { ok: true, command: { kind: 'checkpoint' } };
  const runId = positional[0];
  if (command === 'export' && positional.length === 1 && runId !== undefined && runId.trim() !== '') {
    return { ok: true, command: { kind: 'export', runId, checkpoints } };
  }
  return { ok: false };
}

export function describeVerification(result: AuditVerifyResult, checkpoints: readonly AuditCheckpoint[] = []): string {
  if (result.ok) {
    const seqs = [...new Set(checkpoints.map((c) => c.seq))].sort((a, b) => a - b);
    const matched =
      seqs.length === 0
        ? ''
        : `; checkpoint${seqs.length === 1 ? '' : 's'} ${seqs.map((seq) => `#${seq}`).join(', ')} present`;
    return `audit chain OK: ${result.count} events${matched}`;
  }
  const { seq, runId, type, reason, problem } = result.broken;
  const where = `event #${seq} (run ${runId ?? '(none)'}, type ${type})`;
  if (problem === 'wrong-key') return `audit chain NOT VERIFIED at ${where}: ${reason}`;
  return `audit chain BROKEN at ${where}: ${reason}`;
}

type KeyResult = { ok: true; key: Buffer } | { ok: false; message: string };

function auditKeyFor(source: ReturnType<typeof loadAuditCliConfig>['auditKey']): KeyResult {
  if (source.kind === 'env') return { ok: true, key: source.key };
  // Local mode: read the key the bot generated, never make one (a new key could only fail verification).
  try {
    const local = readLocalAuditKey(source.path);
    if (local !== undefined) return { ok: true, key: local.key };
  } catch (error) {
    if (error instanceof AuditKeyFileError)
      return { ok: false, message: `SHIPGATE_AUDIT_KEY: is unset and ${error.message}` };
    throw error;
  }
  return {
    ok: false,
    message: `SHIPGATE_AUDIT_KEY: is unset and there is no local audit key at ${source.path} (the bot creates it on its first start in local mode). Fix: set SHIPGATE_AUDIT_KEY to the key the bot uses, or run from the bot's working directory`,
  };
}

export async function main(
  argv: string[],
  env: NodeJS.ProcessEnv,
  out: { stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream },
  options: { cwd?: string } = {},
): Promise<number> {
  if (argv.length === 1 && (argv[0] === '--help' || argv[0] === '-h' || argv[0] === 'help')) {
    out.stdout.write(USAGE);
    return 0;
  }
  const parsed = parseArgs(argv);
  if (!parsed.ok) {
    if (parsed.problem !== undefined) out.stderr.write(`audit-log: ${parsed.problem}\n`);
    out.stderr.write(USAGE);
    return 2;
  }
  const { command } = parsed;
  let config: ReturnType<typeof loadAuditCliConfig>;
  try {
    config = loadAuditCliConfig(env, options);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    for (const problem of error.problems) out.stderr.write(`audit-log: ${problem}\n`);
    return 2;
  }
  const key = auditKeyFor(config.auditKey);
  if (!key.ok) {
    out.stderr.write(`audit-log: ${key.message}\n`);
    return 2;
  }

  const redis = createRedis(config.redisUrl, 'command');
  // Connection failures surface as rejected commands below; without a listener ioredis would also print them raw.
  redis.on('error', () => undefined);
  try {
    // The clock only stamps appends, which this CLI never makes.
    const audit = createAuditLog({ redis, prefix: config.redisPrefix, clock: () => new Date(), key: key.key });
    if (command.kind === 'verify') {
      const result = await audit.verify({ checkpoints: command.checkpoints });
      out.stdout.write(`${describeVerification(result, command.checkpoints)}\n`);
      return result.ok ? 0 : 1;
    }
    if (command.kind === 'checkpoint') {
      const result = await audit.verify();
      out.stderr.write(`${describeVerification(result)}\n`);
      // Only a verified head is worth storing: a checkpoint of a forged tail would vouch for it.
      if (!result.ok) return 1;
      if (result.head === null) {
        out.stderr.write('audit-log: the audit log is empty: nothing to checkpoint yet\n');
        return 1;
      }
      out.stdout.write(`${formatCheckpoint(result.head)}\n`);
      return 0;
    }
    const jsonl = await audit.exportRun(command.runId);
    if (jsonl === '') {
      out.stderr.write(
        `audit-log: no audit events for run ${command.runId} (unknown run id, or a different SHIPGATE_REDIS_PREFIX)\n`,
      );
      return 1;
    }
    out.stdout.write(jsonl);
    // Exported evidence is only worth as much as the chain it came from, so say so next to it.
    const result = await audit.verify({ checkpoints: command.checkpoints });
    out.stderr.write(`${describeVerification(result, command.checkpoints)}\n`);
    return result.ok ? 0 : 1;
  } catch (error) {
    // Host only: REDIS_URL may carry a password.
    const where = new URL(config.redisUrl).host;
    out.stderr.write(`audit-log: ${error instanceof Error ? error.message : String(error)} (Redis at ${where})\n`);
    return 1;
  } finally {
    if (redis.status === 'ready') await redis.quit().catch(() => redis.disconnect());
    else redis.disconnect();
  }
}


if (isEntryModule(process.argv[1], import.meta.url)) {
  const code = await main(process.argv.slice(2), process.env, { stdout: process.stdout, stderr: process.stderr });
  process.exitCode = code;
}
