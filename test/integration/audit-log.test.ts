import { createHash } from 'node:crypto';
import { PassThrough } from 'node:stream';
import { Redis } from 'ioredis';
import { afterEach, beforeEach, describe, expect, inject, it } from 'vitest';
import { z } from 'zod';
import { canonicalJson, createAuditLog, GENESIS_HASH, type AuditLog } from '../../src/audit/audit-log.js';
import { main } from '../../src/cli/audit-cli.js';
import { testPrefix } from '../helpers/ids.js';

const redisUrl = inject('redisUrl');

const storedRowSchema = z.object({
  seq: z.number(),
  runId: z.string().nullable(),
  type: z.string(),
  data: z.record(z.string(), z.unknown()),
  prevHash: z.string(),
  hash: z.string(),
});

const objectSchema = z.record(z.string(), z.unknown());

/** A stored row as a plain object, for tests that tamper with it. */
function rowObject(row: string | null): Record<string, unknown> {
  return objectSchema.parse(JSON.parse(row ?? ''));
}

/** A clock that ticks one second per call, so timestamps are distinct and deterministic. */
function tickingClock(): () => Date {
  let t = Date.parse('2025-01-01T00:00:00.000Z');
  return () => new Date((t += 1000));
}

function capture(): { stream: PassThrough; text: () => string } {
  const stream = new PassThrough();
  let text = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    text += chunk;
  });
  return { stream, text: () => text };
}

async function runCli(
  argv: string[],
  env: NodeJS.ProcessEnv,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const stdout = capture();
  const stderr = capture();
  const code = await main(argv, env, { stdout: stdout.stream, stderr: stderr.stream });
  // 'data' handlers run on the next tick after write.
  await new Promise((r) => setImmediate(r));
  return { code, stdout: stdout.text(), stderr: stderr.text() };
}

describe('audit log (SPEC §7)', () => {
  let prefix: string;
  let redis: Redis;
  let audit: AuditLog;
  const extraClients: Redis[] = [];

  beforeEach(() => {
    prefix = testPrefix('audit');
    redis = new Redis(redisUrl);
    audit = createAuditLog({ redis, prefix, clock: tickingClock() });
  });

  afterEach(async () => {
    const keys = await redis.keys(`${prefix}:*`);
    if (keys.length > 0) await redis.del(...keys);
    await Promise.all([redis, ...extraClients.splice(0)].map((client) => client.quit()));
  });

  async function seedRuns(): Promise<void> {
    await audit.append({ type: 'run.requested', actor: 'U1', runId: 'r1', data: { task: 'fix the bug' } });
    await audit.append({ type: 'run.requested', actor: 'U2', runId: 'r2', data: { task: 'add a test' } });
    await audit.append({ type: 'run.queued', actor: 'shipgate', runId: 'r1' });
    await audit.append({
      type: 'agent.iteration',
      actor: 'agent',
      runId: 'r1',
      data: { iteration: 1, tokens: { input: 120, output: 40 } },
    });
    await audit.append({ type: 'message.posted', actor: 'shipgate' });
    await audit.append({ type: 'gate.passed', actor: 'shipgate', runId: 'r2', data: { gate: 'ci' } });
    await audit.append({ type: 'run.done', actor: 'shipgate', runId: 'r1' });
  }

  it('chains events of several runs into one log that verifies', async () => {
    await seedRuns();
    await expect(audit.verify()).resolves.toEqual({ ok: true, count: 7 });

    const r1 = await audit.eventsForRun('r1');
    expect(r1.map((e) => e.type)).toEqual(['run.requested', 'run.queued', 'agent.iteration', 'run.done']);
    expect(r1.map((e) => e.seq)).toEqual([1, 3, 4, 7]);
    expect(r1[0]?.prevHash).toBe(GENESIS_HASH);
    expect(r1[2]?.data).toEqual({ iteration: 1, tokens: { input: 120, output: 40 } });
    expect(r1[0]?.at).toBe('2025-01-01T00:00:01.000Z');

    // The chain runs through the whole log, not per run: r1's second event links to r2's first.
    const r2 = await audit.eventsForRun('r2');
    expect(r1[1]?.prevHash).toBe(r2[0]?.hash);
    await expect(audit.eventsForRun('nope')).resolves.toEqual([]);
  });

  it('an empty log verifies', async () => {
    await expect(audit.verify()).resolves.toEqual({ ok: true, count: 0 });
  });

  it('verifies across page boundaries', async () => {
    const paged = createAuditLog({ redis, prefix, clock: tickingClock(), pageSize: 3 });
    for (let i = 0; i < 10; i += 1)
      await paged.append({ type: 'agent.iteration', actor: 'agent', runId: 'r1', data: { i } });
    await expect(paged.verify()).resolves.toEqual({ ok: true, count: 10 });
    await redis.lset(
      `${prefix}:audit:log`,
      7,
      (await redis.lindex(`${prefix}:audit:log`, 7))?.replace('"i":7', '"i":70') ?? '',
    );
    const result = await paged.verify();
    expect(result).toMatchObject({ ok: false, count: 7, broken: { seq: 8 } });
  });

  it('keeps one unforked chain under concurrent appends from separate connections', async () => {
    const clients = [new Redis(redisUrl), new Redis(redisUrl), new Redis(redisUrl)];
    extraClients.push(...clients);
    const logs = clients.map((client) => createAuditLog({ redis: client, prefix, clock: () => new Date() }));
    const appended = await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        logs[i % logs.length]!.append({
          type: 'agent.iteration',
          actor: `worker-${i % 3}`,
          runId: `run-${i % 5}`,
          data: { i },
        }),
      ),
    );

    expect(appended.map((e) => e.seq).sort((a, b) => a - b)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
    expect(new Set(appended.map((e) => e.prevHash)).size).toBe(50);
    await expect(audit.verify()).resolves.toEqual({ ok: true, count: 50 });

    const stored = (await redis.lrange(`${prefix}:audit:log`, 0, -1)).map((row) =>
      storedRowSchema.parse(JSON.parse(row)),
    );
    expect(stored.map((e) => e.seq)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
    for (let i = 1; i < stored.length; i += 1) expect(stored[i]?.prevHash).toBe(stored[i - 1]?.hash);
    const perRun = await Promise.all(Array.from({ length: 5 }, (_, r) => audit.eventsForRun(`run-${r}`)));
    expect(perRun.map((events) => events.length)).toEqual([10, 10, 10, 10, 10]);
  });

  it('appends an event with an idempotency key only once, even when redelivered concurrently', async () => {
    const first = await audit.append({
      type: 'commit.created',
      actor: 'agent',
      runId: 'r1',
      data: { sha: 'abc123' },
      key: 'job-1:commit',
    });
    const again = await audit.append({
      type: 'commit.created',
      actor: 'agent',
      runId: 'r1',
      data: { sha: 'abc123' },
      key: 'job-1:commit',
    });
    expect(again).toEqual(first);
    expect(first.key).toBe('job-1:commit');

    const otherClient = new Redis(redisUrl);
    extraClients.push(otherClient);
    const other = createAuditLog({ redis: otherClient, prefix, clock: () => new Date() });
    const racers = await Promise.all(
      Array.from({ length: 6 }, (_, i) =>
        (i % 2 === 0 ? audit : other).append({
          type: 'pr.opened',
          actor: 'github',
          runId: 'r1',
          data: { pr: 7 },
          key: 'job-1:pr',
        }),
      ),
    );
    expect(new Set(racers.map((e) => e.seq)).size).toBe(1);

    expect(await redis.llen(`${prefix}:audit:log`)).toBe(2);
    expect((await audit.eventsForRun('r1')).map((e) => e.type)).toEqual(['commit.created', 'pr.opened']);
    await expect(audit.verify()).resolves.toEqual({ ok: true, count: 2 });
  });

  it('detects an edited event and names it', async () => {
    await seedRuns();
    const logKey = `${prefix}:audit:log`;
    const row = await redis.lindex(logKey, 3);
    const original = storedRowSchema.parse(JSON.parse(row ?? ''));
    expect(original.type).toBe('agent.iteration');
    await redis.lset(
      logKey,
      3,
      JSON.stringify({ ...rowObject(row), data: { iteration: 1, tokens: { input: 1, output: 1 } } }),
    );

    const result = await audit.verify();
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.broken).toMatchObject({ seq: 4, runId: 'r1', type: 'agent.iteration' });
    expect(result.broken.reason).toMatch(/altered/);
    expect(result.count).toBe(3);
  });

  it('detects a rewritten event whose hash was recomputed (the next link breaks)', async () => {
    await seedRuns();
    const logKey = `${prefix}:audit:log`;
    const parsed = rowObject(await redis.lindex(logKey, 1));
    const { hash: _old, ...withoutHash } = parsed;
    const rest = { ...withoutHash, actor: 'someone-else' };
    const forged = { ...rest, hash: createHash('sha256').update(canonicalJson(rest)).digest('hex') };
    await redis.lset(logKey, 1, canonicalJson(forged));

    const result = await audit.verify();
    expect(result).toMatchObject({ ok: false, broken: { seq: 3, runId: 'r1', type: 'run.queued' } });
  });

  it('reports an unparseable or padded row as broken instead of throwing', async () => {
    await seedRuns();
    const logKey = `${prefix}:audit:log`;
    const row = rowObject(await redis.lindex(logKey, 2));
    // An extra field would survive a stripping schema with a matching hash; it must not.
    await redis.lset(logKey, 2, JSON.stringify({ ...row, approvedBy: 'mallory' }));
    await expect(audit.verify()).resolves.toMatchObject({
      ok: false,
      broken: { seq: 3, runId: 'r1', type: 'run.queued' },
    });

    await redis.lset(logKey, 2, 'not json {');
    const result = await audit.verify();
    expect(result).toMatchObject({ ok: false, count: 2, broken: { seq: 3, runId: null, type: 'unknown' } });
    await expect(audit.eventsForRun('r1')).rejects.toThrow(/#3 of run r1 is unreadable/);
  });

  it('detects deletion of the last event, and of one in the middle', async () => {
    await seedRuns();
    const logKey = `${prefix}:audit:log`;
    await redis.rpop(logKey);
    const result = await audit.verify();
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.broken.seq).toBe(7);
    expect(result.broken.reason).toMatch(/missing/);
    await expect(audit.exportRun('r1')).rejects.toThrow(/#7 of run r1 is missing/);

    const row = await redis.lindex(logKey, 1);
    await redis.lrem(logKey, 1, row ?? '');
    await expect(audit.verify()).resolves.toMatchObject({
      ok: false,
      count: 1,
      broken: { seq: 3, type: 'run.queued' },
    });
  });

  it('refuses to start a second chain when the head was deleted', async () => {
    await seedRuns();
    await redis.del(`${prefix}:audit:head`);
    await expect(audit.verify()).resolves.toMatchObject({ ok: false, broken: { seq: 7 } });
    await expect(audit.append({ type: 'run.failed', actor: 'shipgate', runId: 'r1' })).rejects.toThrow(
      /head was deleted/,
    );
  });

  it('exports only the run’s events as JSON Lines in stored form', async () => {
    await seedRuns();
    const jsonl = await audit.exportRun('r2');
    expect(jsonl.endsWith('\n')).toBe(true);
    const lines = jsonl.trimEnd().split('\n');
    expect(lines).toHaveLength(2);
    const events = lines.map((line) => storedRowSchema.parse(JSON.parse(line)));
    expect(events.map((e) => [e.seq, e.runId, e.type])).toEqual([
      [2, 'r2', 'run.requested'],
      [6, 'r2', 'gate.passed'],
    ]);
    expect(lines[0]).toBe(await redis.lindex(`${prefix}:audit:log`, 1));
    await expect(audit.exportRun('unknown')).resolves.toBe('');
  });

  it('serialises data as JSON before hashing, so Dates and undefined verify later', async () => {
    const event = await audit.append({
      type: 'approval.approved',
      actor: 'U9',
      runId: 'r1',
      data: { at: new Date('2025-02-02T00:00:00Z'), note: undefined, list: [1, 'two', null] },
    });
    expect(event.data).toEqual({ at: '2025-02-02T00:00:00.000Z', list: [1, 'two', null] });
    await expect(audit.eventsForRun('r1')).resolves.toEqual([event]);
    await expect(audit.verify()).resolves.toEqual({ ok: true, count: 1 });
  });

  it('rejects an event the reader could not parse back, before writing it', async () => {
    const unchecked: unknown = { type: 'run.teleported', actor: 'U1', runId: 'r1' };
    const input = z.object({ type: z.custom<'run.done'>(), actor: z.string(), runId: z.string() }).parse(unchecked);
    await expect(audit.append(input)).rejects.toThrow();
    await expect(audit.verify()).resolves.toEqual({ ok: true, count: 0 });
  });

  describe('CLI', () => {
    const env = (): NodeJS.ProcessEnv => ({ REDIS_URL: redisUrl, SHIPGATE_REDIS_PREFIX: prefix });

    it('verify prints OK and exits 0 on an intact chain', async () => {
      await seedRuns();
      const result = await runCli(['verify'], env());
      expect(result).toEqual({ code: 0, stdout: 'audit chain OK: 7 events\n', stderr: '' });
    });

    it('verify prints BROKEN with the event and exits 1 on a tampered chain', async () => {
      await seedRuns();
      const logKey = `${prefix}:audit:log`;
      const row = rowObject(await redis.lindex(logKey, 5));
      await redis.lset(logKey, 5, JSON.stringify({ ...row, data: { gate: 'prod' } }));
      const result = await runCli(['verify'], env());
      expect(result.code).toBe(1);
      expect(result.stdout).toMatch(
        /^audit chain BROKEN at event #6 \(run r2, type gate\.passed\): hash does not match/,
      );
    });

    it('export writes JSONL to stdout and the verification to stderr', async () => {
      await seedRuns();
      const result = await runCli(['export', 'r1'], env());
      expect(result.code).toBe(0);
      const lines = result.stdout
        .trimEnd()
        .split('\n')
        .map((line) => storedRowSchema.parse(JSON.parse(line)));
      expect(lines.map((e) => e.seq)).toEqual([1, 3, 4, 7]);
      expect(result.stderr).toBe('audit chain OK: 7 events\n');
    });

    it('export of an unknown run exits 1 with a clear message', async () => {
      await seedRuns();
      const result = await runCli(['export', 'no-such-run'], env());
      expect(result.code).toBe(1);
      expect(result.stdout).toBe('');
      expect(result.stderr).toMatch(/no audit events for run no-such-run/);
    });

    it('bad arguments print usage and exit 2', async () => {
      for (const argv of [[], ['export'], ['export', 'a', 'b'], ['verify', 'x'], ['frobnicate']]) {
        const result = await runCli(argv, env());
        expect(result.code).toBe(2);
        expect(result.stderr).toMatch(/^usage: audit-log verify/);
      }
      const badEnv = await runCli(['verify'], { REDIS_URL: 'http://nope', SHIPGATE_REDIS_PREFIX: prefix });
      expect(badEnv.code).toBe(2);
      expect(badEnv.stderr).toMatch(/REDIS_URL/);
    });
  });
});
