import { PassThrough } from 'node:stream';
import { expect, it } from 'vitest';
import { createConsoleChat } from '../../src/adapters/console/console-chat.js';
import type { CommandEvent } from '../../src/ports/chat.js';

/**
 * A console command's deliveryId is its duplicate-request key, kept a day: it must differ between
 * sessions even in the same process id (a restart in a fresh PID namespace is PID 1 again).
 */

async function deliveryIdsOfOneSession(lines: readonly string[]): Promise<string[]> {
  const input = new PassThrough();
  const chat = createConsoleChat({ input, output: new PassThrough(), command: '/ship' });
  const seen: CommandEvent[] = [];
  await chat.start({
    onCommand: async (event) => {
      seen.push(event);
      return {};
    },
    onAction: async () => ({}),
  });
  for (const line of lines) input.write(`${line}\n`);
  input.end();
  await chat.closed;
  return seen.map((event) => event.deliveryId);
}

it('gives every command of a session its own delivery id, and two sessions of one process different ones', async () => {
  const first = await deliveryIdsOfOneSession(['/ship acme/shop add a /healthz endpoint', '/ship status']);
  const second = await deliveryIdsOfOneSession(['/ship acme/shop fix the footer']);
  expect(first).toHaveLength(2);
  expect(new Set(first).size).toBe(2);
  expect(second).toHaveLength(1);
  expect(first).not.toContain(second[0]);
  for (const id of [...first, ...second]) expect(id).toMatch(/^console\.[0-9a-f]{16}\.\d+$/);
});
