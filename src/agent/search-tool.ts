import type Anthropic from '@anthropic-ai/sdk';
import type { Dirent } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Script, createContext } from 'node:vm';
import picomatch from 'picomatch';
import { z } from 'zod';
import {
  MAX_FILE_BYTES,
  MAX_OUTPUT_CHARS,
  ToolRefusal,
  decodeText,
  truncateOutput,
  type RepoFiles,
} from './repo-files.js';
import type { ToolProvider, ToolResult } from './toolbox.js';

const MAX_PATTERN_LENGTH = 200;
const DEFAULT_RESULTS = 100;
const MAX_RESULTS = 200;
/** A regex only sees this much of a line: long minified lines are where backtracking hurts most. */
const MAX_SCANNED_LINE = 2_000;
const MAX_SHOWN_LINE = 300;
/** Per-file budget for a regex; V8 interrupts even a backtracking regex when a vm timeout fires. */
const REGEX_FILE_TIMEOUT_MS = 1_000;
/** Whole-search budget, so a huge tree cannot stall a turn. */
const SEARCH_BUDGET_MS = 20_000;
const SKIPPED_NAMES = new Set(['.git', 'node_modules']);

export const SEARCH_TOOL: Anthropic.Tool = {
  name: 'search_repository',
  description:
    'Search the text files of the repository at /repo, line by line, for a literal string or a JavaScript regular ' +
    'expression. Returns matching lines as `/repo/path:line: text`. Skips .git, node_modules, binary files and files ' +
    'over 1 MiB. Use path_glob to narrow the search. Use this to find where something is defined or used before ' +
    'viewing files with str_replace_based_edit_tool.',
  input_schema: {
    type: 'object',
    properties: {
      pattern: {
        type: 'string',
        description: `Text to find (at most ${MAX_PATTERN_LENGTH} characters). A literal string unless regex is true.`,
      },
      regex: {
        type: 'boolean',
        description: 'Treat pattern as a JavaScript regular expression (without slashes or flags). Default false.',
      },
      ignore_case: { type: 'boolean', description: 'Match case-insensitively. Default false.' },
      path_glob: {
        type: 'string',
        description:
          'Only search files whose repository path matches this glob, e.g. "src/**/*.ts", "*.md" (a glob without a ' +
          'slash matches file names at any depth) or "docs" (a directory).',
      },
      max_results: {
        type: 'integer',
        minimum: 1,
        maximum: MAX_RESULTS,
        description: `Maximum number of matching lines to return (default ${DEFAULT_RESULTS}, at most ${MAX_RESULTS}).`,
      },
    },
    required: ['pattern'],
  },
};

const searchInput = z.object({
  pattern: z
    .string({ error: 'pattern is required (the text to find)' })
    .min(1, 'pattern must not be empty')
    .max(MAX_PATTERN_LENGTH, `pattern must be at most ${MAX_PATTERN_LENGTH} characters`),
  regex: z.boolean().nullish(),
  ignore_case: z.boolean().nullish(),
  path_glob: z.string().max(500).nullish(),
  max_results: z.number().int().min(1).nullish(),
});

/**
 * Scans one file's lines with the model's regex inside a vm context, so that a
 * catastrophic pattern is cut off by the vm timeout instead of hanging the worker.
 */
const REGEX_SCAN = new Script(`(() => {
  'use strict';
  const found = [];
  const lines = text.split('\\n');
  for (let i = 0; i < lines.length && found.length < limit; i++) {
    let line = lines[i];
    if (line.endsWith('\\r')) line = line.slice(0, -1);
    if (re.test(line.length > maxLength ? line.slice(0, maxLength) : line)) found.push(i);
  }
  return found;
})()`);

type LineMatcher = (text: string, limit: number) => number[];

function literalMatcher(pattern: string, ignoreCase: boolean): LineMatcher {
  const needle = ignoreCase ? pattern.toLowerCase() : pattern;
  return (text, limit) => {
    const found: number[] = [];
    const lines = text.split('\n');
    for (let index = 0; index < lines.length && found.length < limit; index += 1) {
      const line = lines[index] ?? '';
      if ((ignoreCase ? line.toLowerCase() : line).includes(needle)) found.push(index);
    }
    return found;
  };
}

class RegexTimeout extends Error {
  override name = 'RegexTimeout';
}

function regexMatcher(re: RegExp): LineMatcher {
  const context = createContext({ re, text: '', limit: 0, maxLength: MAX_SCANNED_LINE });
  return (text, limit) => {
    context.text = text;
    context.limit = limit;
    let raw: unknown;
    try {
      raw = REGEX_SCAN.runInContext(context, { timeout: REGEX_FILE_TIMEOUT_MS });
    } catch (error) {
      if (
        typeof error === 'object' &&
        error !== null &&
        'code' in error &&
        error.code === 'ERR_SCRIPT_EXECUTION_TIMEOUT'
      ) {
        throw new RegexTimeout();
      }
      throw error;
    }
    // The array comes from another realm: check its shape rather than trust it.
    return Array.isArray(raw) ? raw.filter((value): value is number => typeof value === 'number') : [];
  };
}

function globMatcher(glob: string): (relativePath: string) => boolean {
  const pattern = glob
    .replace(/^\/repo(\/|$)/, '')
    .replace(/^\.?\/+/, '')
    .replace(/\/+$/, '');
  if (pattern === '') return () => true;
  // `docs` means the directory too, like `docs/**`; a glob without a slash (`*.md`) also matches file
  // names at any depth. Done by hand: picomatch's `basename` option applies to globs with slashes too.
  const matchers = [pattern, `${pattern}/**`].map((variant) => picomatch(variant, { dot: true }));
  const matchesName = pattern.includes('/') ? undefined : picomatch(pattern, { dot: true });
  return (relativePath) =>
    matchers.some((match) => match(relativePath)) ||
    (matchesName !== undefined && matchesName(relativePath.slice(relativePath.lastIndexOf('/') + 1)));
}

function showLine(line: string): string {
  const text = line.endsWith('\r') ? line.slice(0, -1) : line;
  return text.length > MAX_SHOWN_LINE ? `${text.slice(0, MAX_SHOWN_LINE)}…` : text;
}

/**
 * Searches the repository for the model. Pure Node (no grep binary); walks the
 * tree in a stable order, never follows a symlinked directory, and follows a
 * symlinked file only when it stays inside the repository (and out of .git).
 */
export async function runSearch(files: RepoFiles, input: unknown): Promise<ToolResult> {
  const parsed = searchInput.safeParse(input);
  if (!parsed.success) {
    const why = parsed.error.issues
      .map((issue) => (issue.path.length > 0 ? `${issue.path.map(String).join('.')}: ${issue.message}` : issue.message))
      .join('; ');
    return { content: `Error: invalid input for search_repository: ${why}.`, isError: true };
  }
  const request = parsed.data;
  const ignoreCase = request.ignore_case === true;
  const limit = Math.min(request.max_results ?? DEFAULT_RESULTS, MAX_RESULTS);

  let match: LineMatcher;
  if (request.regex === true) {
    let re: RegExp;
    try {
      re = new RegExp(request.pattern, ignoreCase ? 'i' : '');
    } catch (error) {
      const why = error instanceof SyntaxError ? error.message : 'invalid pattern';
      return { content: `Error: pattern is not a valid JavaScript regular expression: ${why}.`, isError: true };
    }
    match = regexMatcher(re);
  } else {
    match = literalMatcher(request.pattern, ignoreCase);
  }
  let inScope: (relativePath: string) => boolean;
  try {
    inScope = request.path_glob == null ? () => true : globMatcher(request.path_glob);
  } catch {
    return { content: 'Error: path_glob is not a valid glob.', isError: true };
  }

  const deadline = Date.now() + SEARCH_BUDGET_MS;
  const results: string[] = [];
  let filesSearched = 0;
  let filesSkipped = 0;
  let hitLimit = false;
  let outOfTime = false;

  const searchFile = async (realPath: string, relativePath: string, size: number): Promise<void> => {
    if (size > MAX_FILE_BYTES) {
      filesSkipped += 1;
      return;
    }
    const text = decodeText(await readFile(realPath));
    if (text === undefined) {
      filesSkipped += 1;
      return;
    }
    filesSearched += 1;
    const remaining = limit - results.length;
    const found = match(text, remaining + 1);
    if (found.length === 0) return;
    const lines = text.split('\n');
    for (const index of found.slice(0, remaining)) {
      results.push(`${files.toVirtual(relativePath)}:${index + 1}: ${showLine(lines[index] ?? '')}`);
    }
    if (found.length > remaining) hitLimit = true;
  };

  const walk = async (realDir: string, relativeDir: string): Promise<void> => {
    let children: Dirent[];
    try {
      children = await readdir(realDir, { withFileTypes: true });
    } catch {
      return; // unreadable directory: nothing to search there
    }
    children.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const child of children) {
      if (hitLimit || outOfTime) return;
      if (Date.now() > deadline) {
        outOfTime = true;
        return;
      }
      if (SKIPPED_NAMES.has(child.name.toLowerCase())) continue;
      const relativePath = relativeDir === '' ? child.name : `${relativeDir}/${child.name}`;
      const realPath = join(realDir, child.name);
      try {
        if (child.isDirectory()) {
          await walk(realPath, relativePath);
        } else if (child.isFile()) {
          if (!inScope(relativePath)) continue;
          await searchFile(realPath, relativePath, (await stat(realPath)).size);
        } else if (child.isSymbolicLink()) {
          if (!inScope(relativePath)) continue;
          // resolve() refuses links that leave the repository or lead into .git.
          const target = await files.resolve(relativePath, 'read');
          const stats = await stat(target.realPath);
          if (stats.isFile()) await searchFile(target.realPath, relativePath, stats.size);
        }
      } catch (error) {
        if (error instanceof RegexTimeout) throw error;
        if (error instanceof ToolRefusal) continue;
        filesSkipped += 1; // vanished or unreadable entry: skip it, the search goes on
      }
    }
  };

  try {
    await walk(files.realRoot, '');
  } catch (error) {
    if (error instanceof RegexTimeout) {
      return {
        content:
          `Error: the regular expression took longer than ${REGEX_FILE_TIMEOUT_MS} ms on one file and was stopped ` +
          '(probably catastrophic backtracking, e.g. nested quantifiers like (a+)+). Simplify the pattern.',
        isError: true,
      };
    }
    throw error;
  }

  const notes: string[] = [];
  if (hitLimit) notes.push(`[results truncated at ${limit} matches; narrow the pattern or path_glob]`);
  if (outOfTime) notes.push(`[search stopped after ${SEARCH_BUDGET_MS / 1000} s; narrow it with path_glob]`);
  if (filesSkipped > 0) notes.push(`(${filesSkipped} binary, unreadable or over-1-MiB files skipped)`);
  const scope = request.path_glob == null ? '/repo' : `/repo (path_glob ${request.path_glob})`;
  const body =
    results.length === 0
      ? `No matches in ${scope}; ${filesSearched} files searched.`
      : `${results.length} matching line${results.length === 1 ? '' : 's'} in ${scope}:\n${results.join('\n')}`;
  const content = truncateOutput(body, MAX_OUTPUT_CHARS, 'narrow the pattern or path_glob');
  return { content: notes.length === 0 ? content : `${content}\n${notes.join('\n')}`, isError: false };
}

/** Repository search as a toolbox provider. */
export function createSearchProvider(files: RepoFiles): ToolProvider {
  return { name: 'search', tools: [SEARCH_TOOL], call: async (_tool, input) => runSearch(files, input) };
}
