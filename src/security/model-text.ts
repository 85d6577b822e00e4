/**
 * Text written by the model, made safe to place in a pull request body or a
 * commit message (SPEC §4: "fenced, with mentions, closing keywords and
 * trailer-like lines neutralised"). The model read untrusted repository
 * content, CI logs and chat text, so what it writes is untrusted too: it must
 * not notify people, close issues on merge, forge attribution trailers or
 * smuggle invisible characters. Pure functions; scrubbing secrets is a
 * separate step (src/security/scrubber.ts).
 *
 * How things are broken, and why:
 * - Mentions (`@user`, `@org/team`, Slack's `<@U…>`, `<!here>`) and closing
 *   keywords (`Fixes #12`) are broken with a ZERO WIDTH JOINER (U+200D) after
 *   the first character (`@\u200Duser`, `F\u200Dixes #12`). GitHub and Slack
 *   only recognise the name or keyword when its characters are contiguous, and
 *   this works the same in every place the text lands: plain-text commit
 *   messages (where GitHub links mentions and honours closing keywords, and
 *   where backticks mean nothing), markdown, inside or outside code, and chat.
 *   The text still reads the same to a person. The reference itself (`#12`, an
 *   issue URL) is left intact, so it still links; only the "close on merge"
 *   meaning is gone. Zero-width and bidi characters the model wrote are
 *   removed first, so the only invisible characters left are ours.
 * - Trailer-like lines: attribution and identity trailers (`Signed-off-by:`,
 *   `Co-authored-by:`, `Requested-by:`, any `*-by:`, `Shipgate-*:`,
 *   `Change-Id:`, `Cc:`) are deleted: the bot adds the real ones and the model
 *   has no business naming people or runs. Other `Token: value` lines
 *   ("Note: …", "Follow-up: …") are ordinary prose and are kept: git treats
 *   any of them in the last paragraph as a trailer, but `quotedForCommit`
 *   puts `> ` in front of every line, so no line of model text starts with a
 *   token (nor with `#`, which git's cleanup would take for a comment, nor
 *   forms a scissors line), and in the PR body the text is inside a fence.
 * - Control characters other than newline and tab are removed; CR, CRLF and
 *   Unicode line separators become newlines.
 */

const ZWJ = '\u200D';

/** C0/C1 controls except tab and newline. */
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const CONTROL = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]/g;
/** Zero-width characters, bidi embeddings/overrides/isolates, BOM: invisible, and a way to hide or reorder text. */
const INVISIBLE = /[\u200B-\u200F\u202A-\u202E\u2060-\u2064\u2066-\u2069\uFEFF]/g;

/**
 * `@name` or `@org/team` not preceded by a word character, a dot or a slash (so `user@example.com`
 * and `https://host/@scope/pkg` stay); after a backtick too, since backticks mean nothing in a commit.
 */
const MENTION = /(^|[^A-Za-z0-9_.@/-])@([A-Za-z0-9](?:[A-Za-z0-9-]*)(?:\/[A-Za-z0-9][A-Za-z0-9_.-]*)?)/g;
/** Slack's special mentions `<!here>`, `<!channel>`, `<!everyone>`, `<!subteam^S123>` (`<@U123>` is broken as an `@` mention). */
const SLACK_MENTION = /<!/g;
/**
 * A GitHub closing keyword followed by an issue reference: `#12`, `GH-12`, `owner/repo#12`, or an
 * issue/pull URL; optional colon, any case (GitHub's own grammar).
 */
const CLOSING_KEYWORD =
  /\b(close[sd]?|fix(?:e[sd])?|resolve[sd]?)(?=\s*(?::\s*)?(?:(?:[A-Za-z0-9_.-]+\/[A-Za-z0-9_.-]+)?(?:#|GH-)\d+\b|https?:\/\/\S+\/(?:issues|pull)\/\d+))/gi;
/** Attribution and identity trailers, with or without leading spaces, any case. */
const ATTRIBUTION_TRAILER =
  /^[ \t]*(?:[A-Za-z0-9][A-Za-z0-9-]*-by|Shipgate-[A-Za-z0-9-]+|Change-Id|Cc|Bcc)[ \t]*:.*(?:\n|$)/gim;

/** Model text with control and invisible characters removed, mentions and closing keywords broken, attribution trailers gone. */
export function neutraliseModelText(text: string): string {
  return text
    .replace(/\r\n?|[\u2028\u2029\u0085]/g, '\n')
    .replace(CONTROL, '')
    .replace(INVISIBLE, '')
    .replace(ATTRIBUTION_TRAILER, '')
    .replace(MENTION, `$1@${ZWJ}$2`)
    .replace(SLACK_MENTION, `<${ZWJ}!`)
    .replace(CLOSING_KEYWORD, (keyword) => `${keyword.slice(0, 1)}${ZWJ}${keyword.slice(1)}`)
    .trim();
}

/**
 * The neutralised text in a fenced code block for a markdown PR body: nothing in it renders
 * (no links, images, headings that imitate ours). The fence is one backtick longer than the longest
 * backtick run inside (at least three), so no line of the text can close it (CommonMark §4.5).
 */
export function fencedForMarkdown(text: string): string {
  const body = neutraliseModelText(text);
  let longest = 0;
  for (const run of body.matchAll(/`+/g)) longest = Math.max(longest, run[0].length);
  const fence = '`'.repeat(Math.max(3, longest + 1));
  return `${fence}text\n${body}\n${fence}`;
}

/**
 * The neutralised text for a commit message body: every line quoted with `> ` (an empty line with
 * `>`), so that none can be read as a trailer, a `#` comment or a scissors line by git, whatever
 * paragraph it ends up in.
 */
export function quotedForCommit(text: string): string {
  const body = neutraliseModelText(text);
  if (body === '') return '';
  return body
    .split('\n')
    .map((line) => (line.trim() === '' ? '>' : `> ${line.trimEnd()}`))
    .join('\n');
}

/**
 * Untrusted text (CI output, cluster messages) that goes to the model inside a `<tag>…</tag>` frame
 * the model is told to read as data: the text must not close or forge that frame (any spacing or
 * case of the tag), nor open a code block.
 */
export function neutraliseFramed(text: string, tag: string): string {
  const frame = new RegExp(`<\\s*(\\/?)\\s*${tag}\\s*>`, 'gi');
  return text.replace(/`{3,}/g, "'''").replace(frame, `[$1${tag}]`);
}
