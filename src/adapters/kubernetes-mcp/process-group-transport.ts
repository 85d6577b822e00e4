import { spawn, type ChildProcess } from 'node:child_process';
import type { Transport } from '@modelcontextprotocol/sdk/shared/transport.js';
import { ReadBuffer, serializeMessage } from '@modelcontextprotocol/sdk/shared/stdio.js';
import type { JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js';

/**
 * MCP over a child's stdin/stdout, like the SDK's `StdioClientTransport` (same framing: its
 * `ReadBuffer` and `serializeMessage`), but with the process lifecycle the bot needs:
 * - the child leads its own process group (`detached`), so `close` can end it and anything it
 *   started (an exec credential plugin) with one signal to the group;
 * - no environment is inherited: the caller passes the whole of it (the bot's tokens stay out);
 * - nothing else holds the child: its stdin is our pipe, so when the bot dies, even by SIGKILL,
 *   the pipe closes and kubernetes-mcp-server's stdio loop ends on EOF
 *   (test/integration/diagnosis-mcp.test.ts kills a parent and looks for orphans in /proc);
 * - stderr is kept as a short tail, for the message when the server fails to start;
 * - `exited` resolves when the child is really gone, so closing can wait for it.
 */

export interface ProcessGroupTransportOptions {
  command: string;
  args: readonly string[];
  env: Record<string, string>;
  cwd: string;
  /** Largest message (one line of stdout) accepted; beyond it the transport errors and closes. */
  maxMessageBytes: number;
  /** How long `close` waits after ending stdin, then after SIGTERM, before SIGKILL of the group. */
  graceMs?: number;
}

const STDERR_TAIL_BYTES = 4_096;

export class ProcessGroupTransport implements Transport {
  onclose?: (() => void) | undefined;
  onerror?: ((error: Error) => void) | undefined;
  onmessage?: Transport['onmessage'];

  private child: ChildProcess | undefined;
  private readonly buffer: ReadBuffer;
  private stderr = '';
  private exitResolve: (() => void) | undefined;
  /** Resolves once the child has exited (immediately if it never started). */
  readonly exited: Promise<void>;
  private hasExited = false;

  constructor(private readonly options: ProcessGroupTransportOptions) {
    this.buffer = new ReadBuffer({ maxBufferSize: options.maxMessageBytes });
    this.exited = new Promise((resolve) => {
      this.exitResolve = resolve;
    });
  }

  /** The child's pid, once started (the process group has the same id). */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** The last few KiB the child wrote to stderr (unscrubbed: scrub before showing it anywhere). */
  get stderrTail(): string {
    return this.stderr;
  }

  async start(): Promise<void> {
    if (this.child !== undefined) throw new Error('ProcessGroupTransport already started');
    const child = spawn(this.options.command, [...this.options.args], {
      env: this.options.env,
      cwd: this.options.cwd,
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true,
      shell: false,
    });
    this.child = child;
    const markExited = (): void => {
      if (this.hasExited) return;
      this.hasExited = true;
      this.exitResolve?.();
      this.onclose?.();
    };
    child.on('exit', markExited);
    child.stdout?.on('data', (chunk: Buffer) => {
      try {
        this.buffer.append(chunk);
        for (let message = this.buffer.readMessage(); message !== null; message = this.buffer.readMessage())
          this.onmessage?.(message);
      } catch (error) {
        // An oversized or malformed answer: this session cannot be trusted to frame the next one.
        this.onerror?.(error instanceof Error ? error : new Error('unreadable MCP message'));
        void this.close();
      }
    });
    child.stderr?.on('data', (chunk: Buffer) => {
      this.stderr = (this.stderr + chunk.toString('utf8')).slice(-STDERR_TAIL_BYTES);
    });
    // A write after the child died (EPIPE) is reported through onerror and the exit, not thrown.
    child.stdin?.on('error', (error) => this.onerror?.(error));
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', () => resolve());
      child.once('error', (error) => {
        markExited();
        reject(error);
      });
    });
  }

  async send(message: JSONRPCMessage): Promise<void> {
    const stdin = this.child?.stdin;
    if (stdin === undefined || stdin === null || this.hasExited) throw new Error('the MCP server is not running');
    if (!stdin.write(serializeMessage(message))) await new Promise<void>((resolve) => stdin.once('drain', resolve));
  }

  /** Ends stdin (the server's cue to stop), then SIGTERM, then SIGKILL to the whole group; resolves once the child is gone. */
  async close(): Promise<void> {
    const child = this.child;
    if (child === undefined || this.hasExited) {
      this.buffer.clear();
      return;
    }
    const grace = this.options.graceMs ?? 2_000;
    const gone = (ms: number): Promise<boolean> =>
      Promise.race([
        this.exited.then(() => true),
        new Promise<boolean>((resolve) => setTimeout(() => resolve(false), ms).unref()),
      ]);
    child.stdin?.end();
    if (!(await gone(grace))) {
      this.signalGroup('SIGTERM');
      if (!(await gone(grace))) {
        this.signalGroup('SIGKILL');
        await this.exited;
      }
    }
    // The leader is gone; anything it left in its group goes too.
    this.signalGroup('SIGKILL');
    this.buffer.clear();
  }

  /** Synchronous last resort for a process `exit` handler: SIGKILL to the group. */
  killNow(): void {
    this.signalGroup('SIGKILL');
  }

  private signalGroup(signal: NodeJS.Signals): void {
    const pid = this.child?.pid;
    if (pid === undefined) return;
    try {
      process.kill(-pid, signal);
    } catch {
      // ESRCH: the group is already empty.
    }
  }
}
