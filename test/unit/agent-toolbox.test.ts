import { mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createCheckProvider, type CheckResult, type CheckRunner } from '../../src/agent/check-runner.js';
import { createEditorProvider, EDITOR_TOOL } from '../../src/agent/editor-tool.js';
import { createProtectedPaths } from '../../src/agent/protected-paths.js';
import { createRepoFiles, ToolRefusal } from '../../src/agent/repo-files.js';
import { createSearchProvider, SEARCH_TOOL } from '../../src/agent/search-tool.js';
import { createToolbox, providersFor, type ToolDefinition, type ToolProvider, type ToolResult } from '../../src/agent/toolbox.js';

const signal = new AbortController().signal;

function tool(name: string): ToolDefinition {
  return { name, description: `the ${name} tool`, input_schema: { type: 'object', properties: {} } };
}

/** An in-memory provider that records what it was asked. */
function recordingProvider(name: string, tools: readonly string[]): ToolProvider & { calls: { tool: string; input: unknown }[] } {
  const calls: { tool: string; input: unknown }[] = [];
  return {
    name,
    tools: tools.map(tool),
    calls,
    async call(toolName, input): Promise<ToolResult> {
      calls.push({ tool: toolName, input });
      return { content: `${name} did ${toolName}`, isError: false };
    },
  };
}

describe('agent toolbox', () => {
  it('offers every provider’s tools, in registration order', () => {
    const toolbox = createToolbox([recordingProvider('a', ['one', 'two']), recordingProvider('b', ['three'])]);
    expect(toolbox.definitions.map((d) => ('name' in d ? d.name : undefined))).toEqual(['one', 'two', 'three']);
  });

  it('sends each call to the provider that declared the tool, with the input untouched', async () => {
    const a = recordingProvider('a', ['one']);
    const b = recordingProvider('b', ['two', 'three']);
    const toolbox = createToolbox([a, b]);
    expect(await toolbox.execute('three', { x: 1 }, signal)).toEqual({ content: 'b did three', isError: false });
    expect(await toolbox.execute('one', 'raw', signal)).toEqual({ content: 'a did one', isError: false });
    expect(a.calls).toEqual([{ tool: 'one', input: 'raw' }]);
    expect(b.calls).toEqual([{ tool: 'three', input: { x: 1 } }]);
  });

  it('answers a tool nobody declared itself, as an error result, without asking any provider', async () => {
    const a = recordingProvider('a', ['one']);
    const result = await createToolbox([a]).execute('bash', { command: 'rm -rf /' }, signal);
    expect(result).toEqual({ content: 'There is no tool named "bash". Use only the tools you were given.', isError: true });
    expect(a.calls).toEqual([]);
  });

  it('refuses two providers declaring the same tool name', () => {
    expect(() => createToolbox([recordingProvider('a', ['one']), recordingProvider('b', ['one'])])).toThrow(/"one" is declared by both the a and the b provider/);
  });

  it('lets a provider throw an abort through: the run is being cancelled', async () => {
    const aborting: ToolProvider = {
      name: 'slow',
      tools: [tool('wait')],
      async call() {
        throw new Error('aborted');
      },
    };
    await expect(createToolbox([aborting]).execute('wait', {}, signal)).rejects.toThrow('aborted');
  });
});

describe('tool providers offered per iteration', () => {
  const always = recordingProvider('editor', ['edit']);
  const diagnosis = recordingProvider('diagnosis', ['read_ci_log']);
  const registrations = [{ provider: always }, { provider: diagnosis, offeredIn: (iteration: { feedback: string | undefined }) => iteration.feedback !== undefined }];

  it('offers a provider without a predicate in every iteration, and a conditional one only where it says so', () => {
    expect(providersFor(registrations, { number: 1, feedback: undefined }).map((p) => p.name)).toEqual(['editor']);
    expect(providersFor(registrations, { number: 2, feedback: 'CI failed: test' }).map((p) => p.name)).toEqual(['editor', 'diagnosis']);
  });

  it('answers a call to a tool of a provider not offered in this iteration as unknown', async () => {
    const toolbox = createToolbox(providersFor(registrations, { number: 1, feedback: undefined }));
    expect((await toolbox.execute('read_ci_log', {}, signal)).isError).toBe(true);
    expect(diagnosis.calls).toEqual([]);
  });
});

describe('built-in providers', () => {
  let root: string | undefined;
  afterEach(() => {
    if (root !== undefined) rmSync(root, { recursive: true, force: true });
    root = undefined;
  });

  it('the editor and search providers declare their tool and work on the run’s files', async () => {
    root = realpathSync(mkdtempSync(join(tmpdir(), 'shipgate-toolbox-')));
    writeFileSync(join(root, 'a.txt'), 'hello needle\n');
    const files = createRepoFiles({ root, protectedPaths: createProtectedPaths([]) });
    const toolbox = createToolbox([createEditorProvider(files), createSearchProvider(files)]);
    expect(toolbox.definitions).toEqual([EDITOR_TOOL, SEARCH_TOOL]);

    const edited = await toolbox.execute(EDITOR_TOOL.name, { command: 'str_replace', path: '/repo/a.txt', old_str: 'hello', new_str: 'goodbye' }, signal);
    expect(edited.isError).toBe(false);
    expect(readFileSync(join(root, 'a.txt'), 'utf8')).toBe('goodbye needle\n');
    const found = await toolbox.execute(SEARCH_TOOL.name, { pattern: 'needle' }, signal);
    expect(found.content).toContain('/repo/a.txt:1: goodbye needle');
    // Protected paths are refused through the toolbox just as through the tool.
    const refused = await toolbox.execute(EDITOR_TOOL.name, { command: 'create', path: '/repo/.github/workflows/x.yml', file_text: 'on: push\n' }, signal);
    expect(refused.isError).toBe(true);
  });

  it('the check provider runs a configured check on an in-memory runner, passing the cancel signal on', async () => {
    const seen: { name: string; signal: AbortSignal | undefined }[] = [];
    const runner: CheckRunner = {
      names: ['lint', 'test'],
      async run(name, runSignal): Promise<CheckResult> {
        seen.push({ name, signal: runSignal });
        if (name !== 'lint' && name !== 'test') throw new ToolRefusal(`Refused: there is no check "${name}".`);
        return { name, command: `npm run ${name}`, exitCode: name === 'lint' ? 0 : 1, signal: null, timedOut: false, output: `${name} output`, durationMs: 1_200 };
      },
    };
    const provider = createCheckProvider(runner);
    const [definition] = provider.tools;
    expect(definition?.name).toBe('run_check');
    expect(JSON.stringify(definition)).toContain('"enum":["lint","test"]');

    const toolbox = createToolbox([provider]);
    const failing = await toolbox.execute('run_check', { name: 'test' }, signal);
    // A failing check is a normal result: the model reads it and fixes the code.
    expect(failing).toEqual({ content: 'Check "test" (`npm run test`) failed with exit code 1 after 1.2 s.\nOutput:\ntest output', isError: false });
    expect((await toolbox.execute('run_check', { name: 'deploy' }, signal)).isError).toBe(true);
    expect((await toolbox.execute('run_check', {}, signal)).isError).toBe(true);
    expect(seen.map((s) => s.name)).toEqual(['test', 'deploy']);
    expect(seen[0]?.signal).toBe(signal);
  });
});
