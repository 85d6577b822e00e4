import type Anthropic from '@anthropic-ai/sdk';
import type { Dirent, Stats } from 'node:fs';
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { z } from 'zod';
import {
  MAX_FILE_BYTES,
  MAX_OUTPUT_CHARS,
  ToolRefusal,
  decodeText,
  describeFsError,
  truncateOutput,
  type PathIntent,
  type RepoFiles,
  type ResolvedPath,
} from './repo-files.js';
import type { ToolProvider, ToolResult } from './toolbox.js';

/**
 * Anthropic's own text editor tool (SPEC §4): schema-less on our side, Claude
 * knows its commands. `max_characters` tells the model how much one `view`
 * returns; the truncation itself happens here.
 */
export const EDITOR_TOOL: Anthropic.ToolTextEditor20250728 = {
  type: 'text_editor_20250728',
  name: 'str_replace_based_edit_tool',
  max_characters: MAX_OUTPUT_CHARS,
};

/** Viewing may read larger files than editing may write (lock files), since the output is cut anyway. */
const MAX_VIEW_BYTES = 8 * 1024 * 1024;
const SNIPPET_CONTEXT_LINES = 4;
const LISTING_DEPTH = 2;
const SKIPPED_DIRECTORIES = new Set(['.git', 'node_modules']);
const SUPPORTED_COMMANDS = ['view', 'create', 'str_replace', 'insert'] as const;

const pathField = z.string({ error: 'path is required (a string such as /repo/src/index.ts)' });

const viewInput = z.object({
  command: z.literal('view'),
  path: pathField,
  view_range: z.tuple([z.number().int(), z.number().int()]).nullish(),
});
const createInput = z.object({
  command: z.literal('create'),
  path: pathField,
  file_text: z.string({ error: 'file_text is required for create (the whole content of the file)' }),
});
const strReplaceInput = z.object({
  command: z.literal('str_replace'),
  path: pathField,
  old_str: z.string({ error: 'old_str is required for str_replace' }),
  // Omitted new_str deletes old_str, as in Anthropic's reference implementation.
  new_str: z.string().nullish(),
});
const insertInput = z
  .object({
    command: z.literal('insert'),
    path: pathField,
    insert_line: z.number({ error: 'insert_line is required for insert (0 inserts at the start)' }).int().min(0),
    // text_editor_20250728 models send `insert_text`; the documentation and older versions say `new_str`.
    insert_text: z.string().nullish(),
    new_str: z.string().nullish(),
  })
  .refine((input) => typeof input.insert_text === 'string' || typeof input.new_str === 'string', {
    message: 'insert_text is required for insert (the text to insert)',
  });
const editorInput = z.discriminatedUnion('command', [viewInput, createInput, strReplaceInput, insertInput]);
const commandOnly = z.object({ command: z.string() });

function ok(content: string): ToolResult {
  return { content, isError: false };
}

function failed(content: string): ToolResult {
  return { content, isError: true };
}

function formatIssues(error: z.ZodError): string {
  return error.issues
    .map((issue) => (issue.path.length > 0 ? `${issue.path.map(String).join('.')}: ${issue.message}` : issue.message))
    .join('; ');
}

/** Lines of a text as shown to the model: no trailing empty line for a final newline, no `\r`. */
function displayLines(text: string): string[] {
  if (text === '') return [];
  const body = text.endsWith('\n') ? text.slice(0, -1) : text;
  return body.split('\n').map((line) => (line.endsWith('\r') ? line.slice(0, -1) : line));
}

/** `cat -n` numbering, the format Claude's text editor training uses. */
function numbered(lines: readonly string[], firstLineNumber: number): string {
  return lines.map((line, index) => `${String(index + firstLineNumber).padStart(6)}\t${line}`).join('\n');
}

function lineCount(text: string): number {
  return displayLines(text).length;
}

function usesCrlf(text: string): boolean {
  return text.includes('\r\n');
}

/** The model writes `\n`; a CRLF file keeps its line endings. */
function withLineEndings(text: string, crlf: boolean): string {
  return crlf ? text.replace(/\r?\n/g, '\r\n') : text;
}

function shorten(text: string, max = 200): string {
  return text.length <= max ? text : `${text.slice(0, max)}… (${text.length} characters)`;
}

async function statOrUndefined(path: string): Promise<Stats | undefined> {
  try {
    return await stat(path);
  } catch (error) {
    if (typeof error === 'object' && error !== null && 'code' in error && error.code === 'ENOENT') return undefined;
    throw error;
  }
}

/** Reads an existing regular text file for editing; a string result is the reason it cannot be edited. */
async function readEditable(target: ResolvedPath): Promise<{ text: string } | { problem: string }> {
  const stats = await statOrUndefined(target.realPath);
  if (stats === undefined)
    return { problem: `${target.virtualPath} does not exist. Use the create command to make a new file.` };
  if (stats.isDirectory()) return { problem: `${target.virtualPath} is a directory, not a file.` };
  if (!stats.isFile()) return { problem: `${target.virtualPath} is not a regular file.` };
  if (stats.size > MAX_FILE_BYTES) {
    return {
      problem: `${target.virtualPath} is ${stats.size} bytes, larger than the ${MAX_FILE_BYTES}-byte limit for edits.`,
    };
  }
  const text = decodeText(await readFile(target.realPath));
  if (text === undefined)
    return { problem: `${target.virtualPath} is a binary file; only UTF-8 text files can be edited.` };
  return { text };
}

async function writeText(target: ResolvedPath, text: string): Promise<ToolResult | undefined> {
  const size = Buffer.byteLength(text, 'utf8');
  if (size > MAX_FILE_BYTES) {
    return failed(
      `Refused: the new content of ${target.virtualPath} would be ${size} bytes, larger than the ${MAX_FILE_BYTES}-byte limit.`,
    );
  }
  // Parents are created inside the repository only: resolve() put every missing component
  // under a real, checked directory of the repository.
  await mkdir(dirname(target.realPath), { recursive: true });
  await writeFile(target.realPath, text, 'utf8');
  return undefined;
}

/** Numbered lines around an edit, so the model can check it without another view. */
function snippet(text: string, firstChangedLine: number, changedLineCount: number): string {
  const lines = displayLines(text);
  const from = Math.max(1, firstChangedLine - SNIPPET_CONTEXT_LINES);
  const to = Math.min(lines.length, firstChangedLine + Math.max(changedLineCount, 1) - 1 + SNIPPET_CONTEXT_LINES);
  return numbered(lines.slice(from - 1, to), from);
}

function editedMessage(target: ResolvedPath, text: string, firstChangedLine: number, changedLineCount: number): string {
  return truncateOutput(
    `The file ${target.virtualPath} has been edited. Here's the result of running \`cat -n\` on a snippet of ${target.virtualPath}:\n` +
      `${snippet(text, firstChangedLine, changedLineCount)}\nReview the changes and make sure they are as expected.`,
    MAX_OUTPUT_CHARS,
    'view the file with view_range to see the rest',
  );
}

async function listDirectory(files: RepoFiles, target: ResolvedPath): Promise<ToolResult> {
  const entries: string[] = [];
  const walk = async (realDir: string, relativeDir: string, depth: number): Promise<void> => {
    let children: Dirent[];
    try {
      children = await readdir(realDir, { withFileTypes: true });
    } catch {
      // An unreadable subdirectory is listed without its contents rather than failing the view.
      return;
    }
    children.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const child of children) {
      if (SKIPPED_DIRECTORIES.has(child.name.toLowerCase())) continue;
      const relativePath = relativeDir === '' ? child.name : `${relativeDir}/${child.name}`;
      const shown = files.toVirtual(relativePath);
      if (child.isSymbolicLink()) {
        // Not followed: its target may be outside the repository or loop back.
        entries.push(`${shown}@ (symbolic link)`);
      } else if (child.isDirectory()) {
        entries.push(`${shown}/`);
        if (depth < LISTING_DEPTH) await walk(join(realDir, child.name), relativePath, depth + 1);
      } else {
        entries.push(shown);
      }
    }
  };
  await walk(target.realPath, target.relativePath, 1);
  const header = `Here's the files and directories up to ${LISTING_DEPTH} levels deep in ${target.virtualPath}, excluding .git and node_modules:`;
  const body = entries.length === 0 ? '(empty directory)' : entries.join('\n');
  return ok(truncateOutput(`${header}\n${body}`, MAX_OUTPUT_CHARS, 'view a subdirectory to see more'));
}

async function view(files: RepoFiles, target: ResolvedPath, input: z.infer<typeof viewInput>): Promise<ToolResult> {
  const stats = await statOrUndefined(target.realPath);
  if (stats === undefined) return failed(`Error: ${target.virtualPath} does not exist.`);
  if (stats.isDirectory()) {
    if (input.view_range != null) {
      return failed(`Error: view_range applies to files; ${target.virtualPath} is a directory. Omit view_range.`);
    }
    return listDirectory(files, target);
  }
  if (!stats.isFile()) return failed(`Error: ${target.virtualPath} is not a regular file.`);
  if (stats.size > MAX_VIEW_BYTES) {
    return failed(
      `Error: ${target.virtualPath} is ${stats.size} bytes, too large to view (limit ${MAX_VIEW_BYTES}); use search_repository to find what you need in it.`,
    );
  }
  const text = decodeText(await readFile(target.realPath));
  if (text === undefined)
    return failed(`Error: ${target.virtualPath} is a binary file; only text files can be viewed.`);
  const lines = displayLines(text);

  let from = 1;
  let to = lines.length;
  if (input.view_range != null) {
    const [start, end] = input.view_range;
    if (lines.length === 0) return failed(`Error: ${target.virtualPath} is empty; omit view_range.`);
    if (start < 1 || start > lines.length) {
      return failed(`Error: view_range start ${start} is outside the file, which has lines 1 to ${lines.length}.`);
    }
    if (end !== -1 && end < start) {
      return failed(
        `Error: view_range end ${end} is before its start ${start}; use -1 to read to the end of the file.`,
      );
    }
    from = start;
    // An end past the last line reads to the end rather than costing the model another turn.
    to = end === -1 ? lines.length : Math.min(end, lines.length);
  }
  const header = `Here's the result of running \`cat -n\` on ${target.virtualPath}:`;
  const body = lines.length === 0 ? '(empty file)' : numbered(lines.slice(from - 1, to), from);
  return ok(
    truncateOutput(
      `${header}\n${body}`,
      MAX_OUTPUT_CHARS,
      `use view_range to see the rest (the file has ${lines.length} lines)`,
    ),
  );
}

async function create(target: ResolvedPath, input: z.infer<typeof createInput>): Promise<ToolResult> {
  const existing = await statOrUndefined(target.realPath);
  if (existing?.isDirectory()) return failed(`Error: ${target.virtualPath} is a directory; choose a file path.`);
  if (existing !== undefined && !existing.isFile())
    return failed(`Error: ${target.virtualPath} is not a regular file.`);
  const refused = await writeText(target, input.file_text);
  if (refused) return refused;
  return ok(
    existing ? `File overwritten: ${target.virtualPath}` : `File created successfully at: ${target.virtualPath}`,
  );
}

/** Start offsets of `needle` in `haystack`, overlapping ones included (an overlap is ambiguous too). */
function occurrences(haystack: string, needle: string, limit = 50): number[] {
  const found: number[] = [];
  for (let at = haystack.indexOf(needle); at !== -1 && found.length < limit; at = haystack.indexOf(needle, at + 1)) {
    found.push(at);
  }
  return found;
}

function lineNumberAt(text: string, offset: number): number {
  let line = 1;
  for (let at = text.indexOf('\n'); at !== -1 && at < offset; at = text.indexOf('\n', at + 1)) line += 1;
  return line;
}

async function strReplace(target: ResolvedPath, input: z.infer<typeof strReplaceInput>): Promise<ToolResult> {
  if (input.old_str === '') return failed('Error: old_str must not be empty; use insert to add text at a line.');
  const read = await readEditable(target);
  if ('problem' in read) return failed(`Error: ${read.problem}`);
  const { text } = read;

  let oldStr = input.old_str;
  let newStr = input.new_str ?? '';
  let found = occurrences(text, oldStr);
  if (found.length === 0 && usesCrlf(text) && oldStr.includes('\n') && !oldStr.includes('\r\n')) {
    // The view strips `\r`, so the model quotes CRLF lines with `\n`; match them as the file has them.
    oldStr = withLineEndings(oldStr, true);
    newStr = withLineEndings(newStr, true);
    found = occurrences(text, oldStr);
  }
  const [at] = found;
  if (at === undefined) {
    return failed(
      `Error: no replacement was made: old_str did not appear verbatim in ${target.virtualPath}. ` +
        'View the file and copy the text exactly, including whitespace and indentation.',
    );
  }
  if (found.length > 1) {
    const lines = [...new Set(found.map((offset) => lineNumberAt(text, offset)))];
    return failed(
      `Error: no replacement was made: old_str occurs ${found.length === 50 ? '50 or more' : found.length} times in ${target.virtualPath} ` +
        `(starting at lines ${lines.join(', ')}). Include more surrounding lines so that it matches exactly once.`,
    );
  }
  // Slicing, not String.replace: `$&`, `$1`… in new_str must be written literally.
  const updated = text.slice(0, at) + newStr + text.slice(at + oldStr.length);
  const refused = await writeText(target, updated);
  if (refused) return refused;
  return ok(editedMessage(target, updated, lineNumberAt(updated, at), lineCount(newStr)));
}

async function insert(target: ResolvedPath, input: z.infer<typeof insertInput>): Promise<ToolResult> {
  const read = await readEditable(target);
  if ('problem' in read) return failed(`Error: ${read.problem}`);
  const { text } = read;
  const total = lineCount(text);
  if (input.insert_line > total) {
    return failed(
      `Error: insert_line ${input.insert_line} is past the end of ${target.virtualPath}, which has ${total} lines; use a number from 0 to ${total}.`,
    );
  }
  const crlf = usesCrlf(text);
  const eol = crlf ? '\r\n' : '\n';
  let inserted = withLineEndings(input.insert_text ?? input.new_str ?? '', crlf);
  if (!inserted.endsWith('\n')) inserted += eol;

  // Offset just after line `insert_line` (its newline included).
  let offset = 0;
  for (let line = 0; line < input.insert_line; line += 1) {
    const newline = text.indexOf('\n', offset);
    offset = newline === -1 ? text.length : newline + 1;
  }
  let before = text.slice(0, offset);
  if (before !== '' && !before.endsWith('\n')) before += eol; // the last line had no newline of its own
  const updated = before + inserted + text.slice(offset);
  const refused = await writeText(target, updated);
  if (refused) return refused;
  return ok(editedMessage(target, updated, input.insert_line + 1, lineCount(inserted)));
}

/**
 * Runs one text editor command from the model. `input` is untrusted: it is
 * validated here, every path goes through `files.resolve`, and every problem
 * comes back as an `isError` result saying why, so the run goes on.
 */
export async function runEditorCommand(files: RepoFiles, input: unknown): Promise<ToolResult> {
  const command = commandOnly.safeParse(input);
  if (!command.success) {
    return failed(`Error: the input needs a command, one of ${SUPPORTED_COMMANDS.join(', ')}.`);
  }
  if (!SUPPORTED_COMMANDS.some((name) => name === command.data.command)) {
    return failed(
      `Error: command "${shorten(command.data.command, 40)}" is not supported; use one of ${SUPPORTED_COMMANDS.join(', ')}.`,
    );
  }
  const parsed = editorInput.safeParse(input);
  if (!parsed.success)
    return failed(`Error: invalid input for ${command.data.command}: ${formatIssues(parsed.error)}.`);
  const request = parsed.data;
  const intent: PathIntent = request.command === 'view' ? 'read' : 'write';

  let target: ResolvedPath;
  try {
    target = await files.resolve(request.path, intent);
  } catch (error) {
    return failed(
      error instanceof ToolRefusal ? error.message : `Error: ${shorten(request.path)} could not be resolved.`,
    );
  }
  try {
    switch (request.command) {
      case 'view':
        return await view(files, target, request);
      case 'create':
        return await create(target, request);
      case 'str_replace':
        return await strReplace(target, request);
      case 'insert':
        return await insert(target, request);
    }
  } catch (error) {
    if (error instanceof ToolRefusal) return failed(error.message);
    // Node's own error text names the real path; describeFsError uses the code only.
    return failed(`Error: ${describeFsError(error, target.virtualPath)}`);
  }
}

/** The editor as a toolbox provider: the one text editor tool, over the run's workspace. */
export function createEditorProvider(files: RepoFiles): ToolProvider {
  return { name: 'editor', tools: [EDITOR_TOOL], call: async (_tool, input) => runEditorCommand(files, input) };
}
