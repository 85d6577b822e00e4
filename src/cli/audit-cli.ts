import { pathToFileURL } from 'node:url';
import { z } from 'zod';
import { createAuditLog, type AuditVerifyResult } from '../audit/audit-log.js';
import { createRedis } from '../redis.js';

/**
 * `npm run audit-log -- verify` / `npm run audit-log -- export <run-id>`
 * (SPEC §7): checks the audit hash chain and exports one run's evidence as
 * JSON Lines. `main` takes env and streams as arguments so tests can run it
 * in-process; only the entry block at the bottom touches the real process.
 */

const USAGE = `usage: audit-log verify
       audit-log export <run-id>

  verify            check the whole audit hash chain; exit 0 if intact, 1 if broken
  export <run-id>   write the run's audit events as JSON Lines to stdout, then the
                    chain verification to stderr; exit 1 if the run is unknown or the chain is broken

environment: REDIS_URL (default redis://127.0.0.1:6379), SHIPGATE_REDIS_PREFIX (default shipgate)
`;

/** Same rules as the bot's own config (src/config/config.ts), so the CLI reads the keys the bot wrote. */
const envSchema = z.object({
  REDIS_URL: z
    .string()
    .optional()
    .transform((value) => (value === undefined || value.trim() === '' ? 'redis://127.0.0.1:6379' : value.trim()))
    .pipe(z.url().regex(/^rediss?:\/\//, 'must start with redis:// or rediss://')),
  SHIPGATE_REDIS_PREFIX: z
    .string()
    .optional()
    .transform((value) => (value === undefined || value.trim() === '' ? 'shipgate' : value.trim()))
    .pipe(z.string().regex(/^[A-Za-z0-9_-]+$/, 'use letters, digits, - and _ only')),
});

type Command = { kind: 'verify' } | { kind: 'export'; runId: string };

function parseArgs(argv: readonly string[]): Command | undefined {
  const [command, ...rest] = argv;
  if (command === 'verify' && rest.length === 0) return { kind: 'verify' };
  const runId = rest[0];
  if (
    command === 'export' &&
    rest.length === 1 &&
    runId !== undefined &&
    runId.trim() !== '' &&
    !runId.startsWith('-')
  ) {
    return { kind: 'export', runId };
  }
  return undefined;
}

export function describeVerification(result: AuditVerifyResult): string {
  if (result.ok) return `audit chain OK: ${result.count} events`;
  const { seq, runId, type, reason } = result.broken;
  return `audit chain BROKEN at event #${seq} (run ${runId ?? '(none)'}, type ${type}): ${reason}`;
}

export async function main(
  argv: string[],
  env: NodeJS.ProcessEnv,
  out: { stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream },
): Promise<number> {
  if (argv.length === 1 && (argv[0] === '--help' || argv[0] === '-h' || argv[0] === 'help')) {
    out.stdout.write(USAGE);
    return 0;
  }
  const command = parseArgs(argv);
  if (command === undefined) {
    out.stderr.write(USAGE);
    return 2;
  }
  const parsedEnv = envSchema.safeParse(env);
  if (!parsedEnv.success) {
    for (const issue of parsedEnv.error.issues)
      out.stderr.write(`audit-log: ${issue.path.map(String).join('.')}: ${issue.message}\n`);
    return 2;
  }

  const redis = createRedis(parsedEnv.data.REDIS_URL, 'command');
  // Connection failures surface as rejected commands below; without a listener ioredis would also print them raw.
  redis.on('error', () => undefined);
  try {
    // The clock only stamps appends, which this CLI never makes.
    const audit = createAuditLog({ redis, prefix: parsedEnv.data.SHIPGATE_REDIS_PREFIX, clock: () => new Date() });
    if (command.kind === 'verify') {
      const result = await audit.verify();
      out.stdout.write(`${describeVerification(result)}\n`);
      return result.ok ? 0 : 1;
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
    const result = await audit.verify();
    out.stderr.write(`${describeVerification(result)}\n`);
    return result.ok ? 0 : 1;
  } catch (error) {
    // Host only: REDIS_URL may carry a password.
    const where = new URL(parsedEnv.data.REDIS_URL).host;
    out.stderr.write(`audit-log: ${error instanceof Error ? error.message : String(error)} (Redis at ${where})\n`);
    return 1;
  } finally {
    if (redis.status === 'ready') await redis.quit().catch(() => redis.disconnect());
    else redis.disconnect();
  }
}

const entry = process.argv[1];
if (entry !== undefined && import.meta.url === pathToFileURL(entry).href) {
  const code = await main(process.argv.slice(2), process.env, { stdout: process.stdout, stderr: process.stderr });
  process.exitCode = code;
}
