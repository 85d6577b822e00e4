import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { describe, expect, it, onTestFinished } from 'vitest';
import { createConsoleChat } from '../../src/adapters/console/console-chat.js';

/** The console's stand-in for a file in a thread: the exact bytes on disk, and the thread says where. */
describe('console chat uploadFile', () => {
  it('writes the content to the files directory and prints its path in the thread', async () => {
    const output = new PassThrough();
    let printed = '';
    output.on('data', (chunk: Buffer) => {
      printed += chunk.toString('utf8');
    });
    const filesDir = mkdtempSync(join(tmpdir(), 'shipgate-console-files-'));
    onTestFinished(() => rmSync(filesDir, { recursive: true, force: true }));
    const chat = createConsoleChat({ input: new PassThrough(), output, command: '/ship', filesDir });
    const content = '{"seq":1,"type":"run.requested","task":"ünïcode"}\n';
    const { ref } = await chat.port.uploadFile({ channel: 'CLOCAL', thread: '1700000000.000001', filename: '../sg-x-evidence-1.jsonl', title: 'Audit evidence of sg-x', content, key: 'sg-x.evidence.1.file' });
    await new Promise((r) => setImmediate(r));
    // The name cannot climb out of the directory.
    expect(ref).toBe(join(filesDir, 'sg-x-evidence-1.jsonl'));
    expect(readFileSync(ref, 'utf8')).toBe(content);
    expect(printed).toContain(`Audit evidence of sg-x: ${ref} (${Buffer.byteLength(content)} bytes)`);
    expect(printed).toContain('thread 1700000000.000001');
  });
});
