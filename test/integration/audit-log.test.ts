import { createHash, createHmac } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { Redis } from 'ioredis';
import { afterEach, beforeEach, describe, expect, inject, it } from 'vitest';
import { z } from 'zod';
import { auditKeyId, loadOrCreateLocalAuditKey } from '../../src/audit/audit-key.js';
import {
  canonicalJson,
  CHECKPOINT_MESSAGE,
  createAuditLog,
  formatCheckpoint,
  GENESIS_HASH,
  hashEvent,
  type AuditLog,
  type AuditLogOptions,
} from '../../src/audit/audit-log.js';
import { main } from '../../src/cli/audit-cli.js';
import { createShipgate } from '../../src/app/create-shipgate.js';
import { loadConfig } from '../../src/config/config.js';
import { createLogger } from '../../src/log.js';
import { TEST_AUDIT_KEY, TEST_AUDIT_KEY_BYTES } from '../helpers/audit-key.js';
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

const KEY = TEST_AUDIT_KEY_BYTES;
/** A key an attacker might use: right length, wrong secret. */
const OTHER_KEY = Buffer.from('9'.repeat(64), 'hex');

const logLineSchema = z.looseObject({ level: z.string(), msg: z.string() });
const checkpointLineSchema = z.looseObject({ msg: z.literal(CHECKPOINT_MESSAGE), seq: z.number(), hash: z.string() });

/** A pino logger into memory, and its lines parsed. */
function captureLog(): { log: ReturnType<typeof createLogger>; lines: () => z.infer<typeof logLineSchema>[] } {
  const destination = new PassThrough();
  let raw = '';
  destination.on('data', (chunk: Buffer) => {
    raw += chunk.toString();
  });
  return {
    log: createLogger({ level: 'info', destination }),
    lines: () =>
      raw
        .split('\n')
        .filter((line) => line !== '')
        .map((line) => logLineSchema.parse(JSON.parse(line))),
  };
}

function checkpointLines(lines: z.infer<typeof logLineSchema>[]): { seq: number; hash: string }[] {
  return lines
    .filter((line) => line.msg === CHECKPOINT_MESSAGE)
    .map((line) => checkpointLineSchema.parse(line))
    .map(({ seq, hash }) => ({ seq, hash }));
}

const sha256 = (unhashed: Record<string, unknown>): string =>
  createHash('sha256').update(canonicalJson(unhashed)).digest('hex');
const hmacWith =
  (key: Buffer) =>
  (unhashed: Record<string, unknown>): string =>
    createHmac('sha256', key).update(canonicalJson(unhashed)).digest('hex');

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
  cwd?: string,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const stdout = capture();
  const stderr = capture();
  const code = await main(
    argv,
    env,
    { stdout: stdout.stream, stderr: stderr.stream },
    cwd === undefined ? {} : { cwd },
  );
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
    audit = createAuditLog({ redis, prefix, clock: tickingClock(), key: KEY });
  });

  afterEach(async () => {
    const keys = await redis.keys(`${prefix}:*`);
    if (keys.length > 0) await redis.del(...keys);
    await Promise.all([redis, ...extraClients.splice(0)].map((client) => client.quit()));
  });

  const logKey = (): string => `${prefix}:audit:log`;

  /**
   * What someone with write access to Redis, but without the key, can do:
   * read every row, change them, re-link and re-hash the whole chain with a
   * hash function of their choice, and write it all back with a matching head.
   */
  async function rewriteChain(
    mutate: (events: Record<string, unknown>[]) => Record<string, unknown>[],
    hash: (unhashed: Record<string, unknown>) => string,
  ): Promise<void> {
    const events = mutate((await redis.lrange(logKey(), 0, -1)).map((row) => rowObject(row)));
    let prevHash = GENESIS_HASH;
    const rows = events.map((event) => {
      const { hash: _old, ...rest } = event;
      const unhashed = { ...rest, prevHash };
      prevHash = hash(unhashed);
      return canonicalJson({ ...unhashed, hash: prevHash });
    });
    await redis.del(logKey());
    if (rows.length > 0) await redis.rpush(logKey(), ...rows);
    await redis.hset(`${prefix}:audit:head`, { hash: prevHash, seq: String(rows.length) });
  }

  function auditWith(options: Partial<AuditLogOptions>): AuditLog {
    return createAuditLog({ redis, prefix, clock: tickingClock(), key: KEY, ...options });
  }

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
    const verdict = await audit.verify();
    expect(verdict).toMatchObject({ ok: true, count: 7 });

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

    // Keyed chain: every event names the scheme and the key, and its hash is the HMAC of the rest.
    const last = r1[3]!;
    expect(last).toMatchObject({ seq: 7, alg: 'hmac-sha256', keyId: auditKeyId(KEY) });
    const { hash: _hash, ...unhashed } = last;
    expect(last.hash).toBe(createHmac('sha256', KEY).update(canonicalJson(unhashed)).digest('hex'));
    expect(hashEvent(last, KEY)).toBe(last.hash);
    expect(verdict).toEqual({ ok: true, count: 7, head: { seq: 7, hash: last.hash } });
  });

  it('an empty log verifies', async () => {
    await expect(audit.verify()).resolves.toEqual({ ok: true, count: 0, head: null });
  });

  it('verifies across page boundaries', async () => {
    const paged = auditWith({ pageSize: 3 });
    for (let i = 0; i < 10; i += 1)
      await paged.append({ type: 'agent.iteration', actor: 'agent', runId: 'r1', data: { i } });
    await expect(paged.verify()).resolves.toMatchObject({ ok: true, count: 10 });
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
    const logs = clients.map((client) => createAuditLog({ redis: client, prefix, clock: () => new Date(), key: KEY }));
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
    await expect(audit.verify()).resolves.toMatchObject({ ok: true, count: 50 });

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
    const other = createAuditLog({ redis: otherClient, prefix, clock: () => new Date(), key: KEY });
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
    await expect(audit.verify()).resolves.toMatchObject({ ok: true, count: 2 });
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
    expect(result.broken).toMatchObject({ seq: 4, runId: 'r1', type: 'agent.iteration', problem: 'tampered' });
    expect(result.broken.reason).toMatch(/altered/);
    expect(result.count).toBe(3);
  });

  it('detects a rewritten event whose hash was recomputed without the key (its own HMAC breaks)', async () => {
    await seedRuns();
    const logKey = `${prefix}:audit:log`;
    const parsed = rowObject(await redis.lindex(logKey, 1));
    const { hash: _old, ...withoutHash } = parsed;
    const rest = { ...withoutHash, actor: 'someone-else' };
    const forged = { ...rest, hash: createHash('sha256').update(canonicalJson(rest)).digest('hex') };
    await redis.lset(logKey, 1, canonicalJson(forged));

    const result = await audit.verify();
    expect(result).toMatchObject({ ok: false, broken: { seq: 2, runId: 'r2', type: 'run.requested' } });
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
    // Each exported line carries what an auditor needs to check it with the key.
    expect(rowObject(lines[0] ?? '')).toMatchObject({ alg: 'hmac-sha256', keyId: auditKeyId(KEY) });
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
    await expect(audit.verify()).resolves.toMatchObject({ ok: true, count: 1 });
  });

  it('rejects an event the reader could not parse back, before writing it', async () => {
    const unchecked: unknown = { type: 'run.teleported', actor: 'U1', runId: 'r1' };
    const input = z.object({ type: z.custom<'run.done'>(), actor: z.string(), runId: z.string() }).parse(unchecked);
    await expect(audit.append(input)).rejects.toThrow();
    await expect(audit.verify()).resolves.toEqual({ ok: true, count: 0, head: null });
  });

  describe('keyed chain (issue 7)', () => {
    it('a chain rewritten and re-hashed with plain SHA-256 fails verify', async () => {
      await seedRuns();
      await rewriteChain(
        (events) => events.map((event) => (event.seq === 2 ? { ...event, actor: 'mallory' } : event)),
        sha256,
      );
      const result = await audit.verify();
      expect(result).toMatchObject({ ok: false, count: 0, broken: { seq: 1, problem: 'tampered' } });
      if (!result.ok) expect(result.broken.reason).toMatch(/hash does not match the content under SHIPGATE_AUDIT_KEY/);
    });

    it('a chain re-hashed with HMAC under another key fails: as a key mismatch when it says so, as altered when it claims our key', async () => {
      await seedRuns();
      const approveAsMallory = (events: Record<string, unknown>[]) =>
        events.map((event) => (event.seq === 5 ? { ...event, actor: 'mallory', type: 'approval.approved' } : event));

      await rewriteChain(
        (events) => approveAsMallory(events).map((e) => ({ ...e, keyId: auditKeyId(OTHER_KEY) })),
        hmacWith(OTHER_KEY),
      );
      const ownKeyId = await audit.verify();
      expect(ownKeyId).toMatchObject({ ok: false, broken: { seq: 1, problem: 'wrong-key' } });
      if (!ownKeyId.ok) expect(ownKeyId.broken.reason).toMatch(/^the audit key does not match/);

      await rewriteChain((events) => events.map((e) => ({ ...e, keyId: auditKeyId(KEY) })), hmacWith(OTHER_KEY));
      const claimsOurKey = await audit.verify();
      expect(claimsOurKey).toMatchObject({ ok: false, broken: { seq: 1, problem: 'tampered' } });
      if (!claimsOurKey.ok) expect(claimsOurKey.broken.reason).toMatch(/altered/);
    });

    it('verifying an intact chain with the wrong key says the key does not match, not that event #1 was altered', async () => {
      await seedRuns();
      const result = await auditWith({ key: OTHER_KEY }).verify();
      expect(result).toMatchObject({ ok: false, count: 0, broken: { seq: 1, runId: 'r1', problem: 'wrong-key' } });
      if (result.ok) return;
      expect(result.broken.reason).toContain(`chained with key id ${auditKeyId(KEY)}`);
      expect(result.broken.reason).toContain(`SHIPGATE_AUDIT_KEY has key id ${auditKeyId(OTHER_KEY)}`);
      expect(result.broken.reason).not.toMatch(/altered/);
    });

    it('an edited event fails, even when only its data changed and nothing else was touched', async () => {
      await seedRuns();
      const row = rowObject(await redis.lindex(logKey(), 4));
      await redis.lset(logKey(), 4, canonicalJson({ ...row, data: { note: 'nothing happened here' } }));
      await expect(audit.verify()).resolves.toMatchObject({
        ok: false,
        count: 4,
        broken: { seq: 5, type: 'message.posted', problem: 'tampered' },
      });
    });

    it('a deleted middle event fails, also when the later events are renumbered and re-linked without the key', async () => {
      await seedRuns();
      const dropThird = (events: Record<string, unknown>[]) =>
        events.filter((e) => e.seq !== 3).map((e, index) => ({ ...e, seq: index + 1 }));

      await rewriteChain(dropThird, sha256);
      await expect(audit.verify()).resolves.toMatchObject({ ok: false, broken: { seq: 1, problem: 'tampered' } });

      // Plain deletion, head left alone: the gap shows at the event after it.
      await redis.del(logKey());
      await redis.del(`${prefix}:audit:head`);
      const fresh = auditWith({});
      for (let i = 1; i <= 5; i += 1)
        await fresh.append({ type: 'agent.iteration', actor: 'agent', runId: 'r1', data: { i } });
      await redis.lrem(logKey(), 1, (await redis.lindex(logKey(), 2)) ?? '');
      await expect(fresh.verify()).resolves.toMatchObject({
        ok: false,
        count: 2,
        broken: { seq: 4, problem: 'tampered' },
      });
    });

    it('a truncated tail passes plain verify but fails verify with a later checkpoint', async () => {
      await seedRuns();
      const atFive = await audit.verify();
      expect(atFive.ok).toBe(true);
      const all = (await redis.lrange(logKey(), 0, -1)).map((row) => storedRowSchema.parse(JSON.parse(row)));
      const cp5 = { seq: 5, hash: all[4]!.hash };
      const cp7 = (await audit.checkpoint())!;
      expect(cp7).toEqual({ seq: 7, hash: all[6]!.hash });

      // Cut the last two events and move the head back: every remaining link and HMAC is genuine.
      await redis.rpop(logKey(), 2);
      await redis.hset(`${prefix}:audit:head`, { hash: cp5.hash, seq: '5' });
      await expect(audit.verify()).resolves.toEqual({ ok: true, count: 5, head: cp5 });
      await expect(audit.verify({ checkpoints: [cp5] })).resolves.toMatchObject({ ok: true, count: 5 });

      const result = await audit.verify({ checkpoints: [cp5, cp7] });
      expect(result).toMatchObject({ ok: false, count: 5, broken: { seq: 7, problem: 'checkpoint' } });
      if (!result.ok)
        expect(result.broken.reason).toMatch(/ends at #5, but a checkpoint records event #7.*cut off the end/);
    });

    it('a checkpoint whose hash differs from the event at its seq fails', async () => {
      await seedRuns();
      const result = await audit.verify({ checkpoints: [{ seq: 3, hash: 'f'.repeat(64) }] });
      expect(result).toMatchObject({
        ok: false,
        count: 2,
        broken: { seq: 3, type: 'run.queued', problem: 'checkpoint' },
      });
      if (!result.ok) expect(result.broken.reason).toMatch(/not the checkpointed f{64}/);
    });

    it('logs an audit checkpoint every N events and on close, each naming a real event', async () => {
      const { log, lines } = captureLog();
      const logged = auditWith({ log, checkpointEvery: 3 });
      const events = [];
      for (let i = 1; i <= 7; i += 1)
        events.push(await logged.append({ type: 'agent.iteration', actor: 'agent', runId: 'r1', data: { i } }));
      await new Promise((r) => setImmediate(r));
      expect(checkpointLines(lines())).toEqual([
        { seq: 3, hash: events[2]!.hash },
        { seq: 6, hash: events[5]!.hash },
      ]);

      await logged.close();
      await new Promise((r) => setImmediate(r));
      const all = checkpointLines(lines());
      expect(all.at(-1)).toEqual({ seq: 7, hash: events[6]!.hash });
      expect(lines().find((line) => line.msg === CHECKPOINT_MESSAGE)).toMatchObject({ level: 'info' });
      await expect(logged.verify({ checkpoints: all })).resolves.toMatchObject({ ok: true, count: 7 });
    });

    it('on close, checkpoints what this process appended when the stored head went backwards, and says so', async () => {
      const { log, lines } = captureLog();
      const logged = auditWith({ log });
      for (let i = 1; i <= 4; i += 1)
        await logged.append({ type: 'agent.iteration', actor: 'agent', runId: 'r1', data: { i } });
      const fourth = rowObject(await redis.lindex(logKey(), 3));
      const second = rowObject(await redis.lindex(logKey(), 1));
      await redis.rpop(logKey(), 2);
      await redis.hset(`${prefix}:audit:head`, { hash: String(second.hash), seq: '2' });

      await expect(logged.checkpoint()).resolves.toEqual({ seq: 4, hash: fourth.hash });
      await new Promise((r) => setImmediate(r));
      expect(lines()).toContainEqual(
        expect.objectContaining({
          level: 'error',
          msg: 'audit head contradicts an event this process appended',
          headSeq: 2,
          appendedSeq: 4,
        }),
      );
      expect(checkpointLines(lines()).at(-1)).toEqual({ seq: 4, hash: fourth.hash });
    });

    it('close() does not throw when Redis is gone; it logs that the checkpoint failed', async () => {
      const { log, lines } = captureLog();
      const client = new Redis(redisUrl, { maxRetriesPerRequest: 0, retryStrategy: () => null });
      const logged = createAuditLog({ redis: client, prefix, clock: tickingClock(), key: KEY, log });
      await logged.append({ type: 'run.done', actor: 'shipgate', runId: 'r1' });
      client.disconnect();
      await expect(logged.close()).resolves.toBeUndefined();
      await new Promise((r) => setImmediate(r));
      expect(lines().map((line) => line.msg)).toContain('audit checkpoint failed');
    });

    it('reports a row in the old unkeyed SHA-256 format as such', async () => {
      await seedRuns();
      const { alg: _alg, keyId: _keyId, hash: _hash, ...legacy } = rowObject(await redis.lindex(logKey(), 0));
      await redis.lset(logKey(), 0, canonicalJson({ ...legacy, hash: sha256(legacy) }));
      const result = await audit.verify();
      expect(result).toMatchObject({ ok: false, count: 0, broken: { seq: 1, runId: 'r1', type: 'run.requested' } });
      if (!result.ok) expect(result.broken.reason).toMatch(/unkeyed SHA-256 format/);
    });

    it('never answers an idempotent append with an event the idempotency index was pointed at', async () => {
      await seedRuns();
      await redis.hset(`${prefix}:audit:keys`, 'job-9:approval', '4');
      await expect(
        audit.append({ type: 'approval.approved', actor: 'U9', runId: 'r1', key: 'job-9:approval' }),
      ).rejects.toThrow(/idempotency index maps key job-9:approval to event #4/);
    });

    it('scrubs secrets from data and actor before hashing; the scrubber can be injected', async () => {
      const event = await audit.append({
        type: 'gate.failed',
        actor: 'agent',
        runId: 'r1',
        data: { output: 'push failed for xoxb-123-abcdef', nested: [{ token: 'ghp_' + 'a'.repeat(36) }] },
      });
      expect(JSON.stringify(event.data)).not.toMatch(/xoxb-123|ghp_a/);
      expect(event.data).toEqual({ output: 'push failed for [REDACTED]', nested: [{ token: '[REDACTED]' }] });

      const custom = auditWith({ scrub: (text) => text.replaceAll('hunter2', '***') });
      const other = await custom.append({
        type: 'gate.failed',
        actor: 'hunter2',
        runId: 'r1',
        data: { note: 'pw hunter2' },
      });
      expect(other).toMatchObject({ actor: '***', data: { note: 'pw ***' } });
      expect(await redis.lindex(logKey(), 1)).not.toContain('hunter2');
      await expect(audit.verify()).resolves.toMatchObject({ ok: true, count: 2 });
    });
  });

  describe('local mode key file and the stop path', () => {
    it('generates the key file when the app is first built, reuses it the next time, and checkpoints the head on stop', async () => {
      const cwd = mkdtempSync(join(tmpdir(), 'shipgate-local-key-'));
      try {
        const env = { REDIS_URL: redisUrl, SHIPGATE_REDIS_PREFIX: prefix, PORT: '0' };
        const config = loadConfig(env, { readFile: () => 'repos:\n  acme/shop: {}\n', cwd });
        const keyPath = join(cwd, '.shipgate', 'audit.key');
        expect(config.auditKey).toEqual({ kind: 'generate-local', path: keyPath });

        const build = () => {
          const { log, lines } = captureLog();
          const app = createShipgate({ config, log, console: { input: new PassThrough(), output: new PassThrough() } });
          // Not started: starting and at once stopping BullMQ workers races their connection set-up,
          // and none of that is under test here. The key is resolved when the app is built.
          return { app, lines };
        };
        const first = build();
        await new Promise((r) => setImmediate(r));
        expect(existsSync(keyPath)).toBe(true);
        expect(first.lines()).toContainEqual(
          expect.objectContaining({
            level: 'warn',
            msg: 'SHIPGATE_AUDIT_KEY is unset: generated a local audit key',
            path: keyPath,
          }),
        );
        const event = await first.app.audit.append({ type: 'run.requested', actor: 'U1', runId: 'r1' });
        await first.app.stop();
        await new Promise((r) => setImmediate(r));
        expect(checkpointLines(first.lines())).toEqual([{ seq: 1, hash: event.hash }]);

        const second = build();
        await new Promise((r) => setImmediate(r));
        expect(second.lines()).toContainEqual(
          expect.objectContaining({
            level: 'info',
            msg: 'SHIPGATE_AUDIT_KEY is unset: using the local audit key',
            path: keyPath,
          }),
        );
        // The same key: the first run's event still verifies.
        await second.app.audit.append({ type: 'run.done', actor: 'shipgate', runId: 'r1' });
        await expect(second.app.audit.verify({ checkpoints: [{ seq: 1, hash: event.hash }] })).resolves.toMatchObject({
          ok: true,
          count: 2,
        });
        await second.app.stop();
        expect(loadOrCreateLocalAuditKey(keyPath)).toMatchObject({ created: false, readableByOthers: false });
      } finally {
        rmSync(cwd, { recursive: true, force: true });
      }
    });
  });

  describe('CLI', () => {
    const env = (): NodeJS.ProcessEnv => ({
      REDIS_URL: redisUrl,
      SHIPGATE_REDIS_PREFIX: prefix,
      SHIPGATE_AUDIT_KEY: TEST_AUDIT_KEY,
    });

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

    it('verify with the wrong SHIPGATE_AUDIT_KEY says the key does not match', async () => {
      await seedRuns();
      const result = await runCli(['verify'], { ...env(), SHIPGATE_AUDIT_KEY: OTHER_KEY.toString('hex') });
      expect(result.code).toBe(1);
      expect(result.stdout).toMatch(
        /^audit chain NOT VERIFIED at event #1 \(run r1, type run\.requested\): the audit key does not match/,
      );
    });

    it('checkpoint prints the verified head as seq:hash, which verify --checkpoint then checks', async () => {
      await seedRuns();
      const head = await runCli(['checkpoint'], env());
      expect(head.code).toBe(0);
      const last = storedRowSchema.parse(JSON.parse((await redis.lindex(logKey(), 6)) ?? ''));
      expect(head.stdout).toBe(`7:${last.hash}\n`);
      expect(head.stderr).toBe('audit chain OK: 7 events\n');

      const three = storedRowSchema.parse(JSON.parse((await redis.lindex(logKey(), 2)) ?? ''));
      const verified = await runCli(
        ['verify', '--checkpoint', head.stdout.trim(), `--checkpoint=${formatCheckpoint(three)}`],
        env(),
      );
      expect(verified).toEqual({
        code: 0,
        stdout: 'audit chain OK: 7 events; checkpoints #3, #7 present\n',
        stderr: '',
      });
    });

    it('verify --checkpoint fails on a truncated tail that plain verify accepts', async () => {
      await seedRuns();
      const checkpoint = (await runCli(['checkpoint'], env())).stdout.trim();
      const sixth = storedRowSchema.parse(JSON.parse((await redis.lindex(logKey(), 5)) ?? ''));
      await redis.rpop(logKey());
      await redis.hset(`${prefix}:audit:head`, { hash: sixth.hash, seq: '6' });

      expect((await runCli(['verify'], env())).code).toBe(0);
      const result = await runCli(['verify', '--checkpoint', checkpoint], env());
      expect(result.code).toBe(1);
      expect(result.stdout).toMatch(
        /^audit chain BROKEN at event #7 .*: the log ends at #6, but a checkpoint records event #7/,
      );
      const exported = await runCli(['export', 'r2', '--checkpoint', checkpoint], env());
      expect(exported.code).toBe(1);
      expect(exported.stderr).toMatch(/^audit chain BROKEN at event #7/);
    });

    it('checkpoint refuses a broken chain and an empty log', async () => {
      const empty = await runCli(['checkpoint'], env());
      expect(empty).toMatchObject({ code: 1, stdout: '' });
      expect(empty.stderr).toMatch(/empty: nothing to checkpoint/);

      await seedRuns();
      const row = rowObject(await redis.lindex(logKey(), 6));
      await redis.lset(logKey(), 6, canonicalJson({ ...row, actor: 'mallory' }));
      const broken = await runCli(['checkpoint'], env());
      expect(broken).toMatchObject({ code: 1, stdout: '' });
      expect(broken.stderr).toMatch(/^audit chain BROKEN at event #7/);
    });

    it('needs SHIPGATE_AUDIT_KEY outside local mode, with the same message as the bot', async () => {
      const result = await runCli(['verify'], {
        REDIS_URL: redisUrl,
        SHIPGATE_REDIS_PREFIX: prefix,
        SLACK_BOT_TOKEN: 'xoxb-1-2',
        SLACK_SIGNING_SECRET: 'shh',
      });
      expect(result.code).toBe(2);
      expect(result.stderr).toMatch(
        /^audit-log: SHIPGATE_AUDIT_KEY: is required outside local mode.*Fix: .*openssl rand -hex 32/,
      );
    });

    it('in local mode reads the key file the bot generated, and never creates one', async () => {
      const cwd = mkdtempSync(join(tmpdir(), 'shipgate-cli-key-'));
      try {
        const localEnv = { REDIS_URL: redisUrl, SHIPGATE_REDIS_PREFIX: prefix };
        const keyPath = join(cwd, '.shipgate', 'audit.key');
        const missing = await runCli(['verify'], localEnv, cwd);
        expect(missing.code).toBe(2);
        expect(missing.stderr).toContain(`no local audit key at ${keyPath}`);
        expect(existsSync(keyPath)).toBe(false);

        const { key } = loadOrCreateLocalAuditKey(keyPath);
        const local = auditWith({ key });
        await local.append({ type: 'run.requested', actor: 'U1', runId: 'r1' });
        await expect(runCli(['verify'], localEnv, cwd)).resolves.toEqual({
          code: 0,
          stdout: 'audit chain OK: 1 events\n',
          stderr: '',
        });
      } finally {
        rmSync(cwd, { recursive: true, force: true });
      }
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
      for (const argv of [
        [],
        ['export'],
        ['export', 'a', 'b'],
        ['verify', 'x'],
        ['frobnicate'],
        ['checkpoint', 'x'],
        ['checkpoint', '--checkpoint', `1:${'a'.repeat(64)}`],
        ['verify', '--frobnicate'],
      ]) {
        const result = await runCli(argv, env());
        expect(result.code).toBe(2);
        expect(result.stderr).toMatch(/^usage: audit-log verify/);
      }
      for (const value of ['7', `0:${'a'.repeat(64)}`, `7:${'A'.repeat(64)}`, `7:${'a'.repeat(63)}`]) {
        const result = await runCli(['verify', '--checkpoint', value], env());
        expect(result.code).toBe(2);
        expect(result.stderr).toMatch(/^audit-log: --checkpoint .*expected <seq>:<hash>/);
      }
      const noValue = await runCli(['verify', '--checkpoint'], env());
      expect(noValue.code).toBe(2);
      expect(noValue.stderr).toMatch(/^audit-log: --checkpoint needs a value/);
      const clash = await runCli(
        ['verify', '--checkpoint', `3:${'a'.repeat(64)}`, '--checkpoint', `3:${'b'.repeat(64)}`],
        env(),
      );
      expect(clash.code).toBe(2);
      expect(clash.stderr).toMatch(/two --checkpoint values name event #3/);
      const badEnv = await runCli(['verify'], { REDIS_URL: 'http://nope', SHIPGATE_REDIS_PREFIX: prefix });
      expect(badEnv.code).toBe(2);
      expect(badEnv.stderr).toMatch(/REDIS_URL/);
    });
  });
});
