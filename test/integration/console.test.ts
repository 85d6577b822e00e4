import { afterEach, describe, expect, inject, it } from 'vitest';
import { z } from 'zod';
import { eventually } from '../helpers/eventually.js';
import { testPrefix } from '../helpers/ids.js';
import { killAll, spawnShipgate, writePolicyFile, type ShipgateProcess } from '../helpers/process.js';

/**
 * SPEC §2: the console adapter is a terminal chat behind the same chat port
 * as Slack. Driven here as a person would: a real `src/main.ts` process, lines
 * typed on stdin, the conversation read from stdout, logs on stderr.
 */

const POLICY = `
repos:
  acme/shop:
    checks: { test: npm test }
`;

const logLineSchema = z.looseObject({ level: z.string(), msg: z.string() });

let proc: ShipgateProcess | undefined;

afterEach(async () => {
  const p = proc;
  proc = undefined;
  if (p !== undefined) await killAll([p]);
});

function startConsole(name: string): ShipgateProcess {
  // No Slack variables: console mode.
  proc = spawnShipgate({
    REDIS_URL: inject('redisUrl'),
    SHIPGATE_REDIS_PREFIX: testPrefix(name),
    PORT: '0',
    LOG_LEVEL: 'info',
    SHIPGATE_CONFIG: writePolicyFile(POLICY),
  });
  return proc;
}

function type(p: ShipgateProcess, line: string): void {
  p.child.stdin.write(`${line}\n`);
}

/** Waits for `pattern` in what the process printed after `from` characters of stdout. */
async function printedAfter(
  p: ShipgateProcess,
  from: number,
  pattern: RegExp,
  description: string,
  timeoutMs = 10_000,
): Promise<RegExpExecArray> {
  try {
    return await eventually(async () => pattern.exec(p.stdout().slice(from)) ?? undefined, description, timeoutMs);
  } catch (error) {
    const why = error instanceof Error ? error.message : String(error);
    throw new Error(`${why}\n--- stdout ---\n${p.stdout()}\n--- stderr ---\n${p.stderr()}`, { cause: error });
  }
}

/** The text of every printed message with this ts (the post and its updates), each up to the next message or prompt line. */
function messageBodies(stdout: string, ts: string): string[] {
  const bodies: string[] = [];
  const header = new RegExp(`── message ${ts.replace('.', '\\.')} in #CLOCAL(?: \\(updated\\))? ──\\n`, 'g');
  for (let match = header.exec(stdout); match !== null; match = header.exec(stdout)) {
    const rest = stdout.slice(match.index + match[0].length);
    const end = rest.search(/\n(?:\n── message |\n\(only you can see this\)|Console chat:)/);
    bodies.push(end === -1 ? rest : rest.slice(0, end));
  }
  return bodies;
}

function stderrLogs(p: ShipgateProcess): z.infer<typeof logLineSchema>[] {
  return p
    .stderr()
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => logLineSchema.parse(JSON.parse(line)));
}

describe('console chat, end to end in a spawned process', { timeout: 60_000 }, () => {
  it('requests a run, shows status, refuses a stranger’s cancel, cancels for the requester, then quits cleanly', async () => {
    const p = startConsole('console-flow');
    await p.waitForOutput(/console chat — you are ULOCAL in #CLOCAL/);

    // 1. The request: an ephemeral ack and the live card with its gates and a Cancel "button".
    let mark = p.stdout().length;
    type(p, '/ship acme/shop add a /healthz endpoint');
    const ack = await printedAfter(
      p,
      mark,
      /\(only you can see this\) Queued run (sg-[a-z0-9]{8}) on acme\/shop/,
      'the ack',
    );
    const runId = ack[1] ?? '';
    const card = await printedAfter(
      p,
      mark,
      new RegExp(
        `── message (\\d+\\.\\d+) in #CLOCAL ──\\nshipgate run ${runId} · acme/shop\\n[\\s\\S]*?\\[Cancel\\] type: click cancel ${runId}`,
      ),
      'the run card',
    );
    const cardTs = card[1] ?? '';
    const cardText = card[0];
    expect(cardText).toContain('add a /healthz endpoint');
    expect(cardText).toContain('Requested by: @ULOCAL');
    for (const gate of ['agent', 'pr', 'ci', 'merge']) expect(cardText).toMatch(new RegExp(`^\\S+ ${gate}\\b`, 'm'));
    // No Kargo pipeline: the run ends at merge (SPEC §1).
    expect(cardText).not.toMatch(/freight|approval/);

    // 2. Status lists the run.
    mark = p.stdout().length;
    type(p, '/ship status');
    const status = await printedAfter(
      p,
      mark,
      /\(only you can see this\) Active runs[^\n]*\n(?:[^\n]+\n?)*/,
      'the status list',
    );
    expect(status[0]).toContain(runId);
    expect(status[0]).toContain('acme/shop');

    // 3. Someone else presses Cancel: refused, only to them, and the run goes on.
    mark = p.stdout().length;
    type(p, `as UMALLORY click cancel ${runId}`);
    const refusal = await printedAfter(p, mark, /\(only you can see this\) ([^\n]*)/, 'the refusal');
    expect(refusal[1]).toContain('Only the requester');
    expect(refusal[1]).toContain('@ULOCAL');

    // 4. The requester presses Cancel: acknowledged, then confirmed in the thread once the work stopped.
    mark = p.stdout().length;
    type(p, `click cancel ${runId}`);
    await printedAfter(p, mark, new RegExp(`\\(only you can see this\\) Cancelling run ${runId}`), 'the cancel ack');
    const reply = await printedAfter(
      p,
      mark,
      new RegExp(`── message \\d+\\.\\d+ in #CLOCAL thread ${cardTs.replace('.', '\\.')} ──\\n([^\\n]*)`),
      'the cancel reply in the thread',
    );
    expect(reply[1]).toContain(runId);
    expect(reply[1]).toMatch(/was cancelled by @ULOCAL/);
    // The card is updated in place (coalesced, at most one update per 3 s) to show the end.
    await eventually(
      async () => {
        const latest = messageBodies(p.stdout(), cardTs).at(-1) ?? '';
        return /State: \S+ cancelled/.test(latest) && !latest.includes('[Cancel]');
      },
      'the card updated to cancelled without a Cancel button',
      10_000,
    );
    // One reply in the thread for the one cancellation; the stranger's click is credited nowhere.
    expect(p.stdout().match(new RegExp(`in #CLOCAL thread ${cardTs.replace('.', '\\.')} ──`, 'g'))).toHaveLength(1);
    expect(p.stdout()).not.toMatch(/cancelled by \S*UMALLORY/);

    // 5. quit stops shipgate cleanly.
    type(p, 'quit');
    expect(await p.exited).toBe(0);
    const logs = stderrLogs(p);
    expect(logs.map((line) => line.msg)).toContain('shipgate stopped');
    // stdout is the conversation: no JSON log lines mixed in.
    expect(p.stdout()).not.toMatch(/^\{"level"/m);
  });

  it('prints usage for /ship help, the console help for a line it does not understand, and stops at end of input', async () => {
    const p = startConsole('console-help');
    await p.waitForOutput(/console chat — you are ULOCAL/);

    let mark = p.stdout().length;
    type(p, '/ship help');
    const usage = await printedAfter(p, mark, /\(only you can see this\) [^\n]*\n(?:[^\n]+\n?)*/, 'the usage');
    expect(usage[0]).toContain('/ship <owner/repo> <task…>');
    expect(usage[0]).toContain('/ship status [run-id]');
    expect(usage[0]).toContain('/ship cancel <run-id>');

    mark = p.stdout().length;
    type(p, 'please deploy');
    const help = await printedAfter(p, mark, /Console chat: [\s\S]*quit[^\n]*\n/, 'the console help');
    expect(help[0]).toContain('click cancel <run-id>');
    expect(help[0]).toContain('as <user-id> <line>');
    // An unknown line starts nothing.
    expect(p.stdout().slice(mark)).not.toContain('Queued run');

    mark = p.stdout().length;
    type(p, '/ship fix the footer');
    const error = await printedAfter(p, mark, /\(only you can see this\) ([^\n]*)/, 'the command error');
    expect(error[1]).toContain('Name the repository first');

    // Ctrl-D (end of input) stops shipgate like `quit`.
    p.child.stdin.end();
    expect(await p.exited).toBe(0);
    expect(stderrLogs(p).map((line) => line.msg)).toContain('shipgate stopped');
  });
});
