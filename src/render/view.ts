/**
 * A chat-neutral message: what the card, a reply or an ephemeral answer says,
 * before a chat adapter turns it into its platform's form (Block Kit and
 * mrkdwn for Slack, plain text for the console, markdown for Discord).
 *
 * Text is `RichText`, a list of inline spans. Every string in a span is
 * literal: what a person typed or an outside system produced goes in as it
 * is, and each adapter escapes it for its platform, so a task can never ping
 * a channel or smuggle a link. Nothing here knows a platform's markup or id
 * formats; a mention names a principal id, which the adapter resolves.
 */

export type Inline =
  | { kind: 'text'; text: string }
  | { kind: 'bold'; text: string }
  | { kind: 'code'; text: string }
  /** A preformatted block (several lines, shown monospaced); put it on lines of its own. */
  | { kind: 'pre'; text: string }
  /** Quoted text, every line of it; put it on lines of its own. */
  | { kind: 'quote'; text: string }
  /** A link; adapters show only http(s) URLs as links. */
  | { kind: 'link'; url: string; label: string }
  /** A user or group, by the principal id its chat adapter gave shipgate. */
  | { kind: 'mention'; principal: string }
  /** A channel, by the id its chat adapter gave shipgate. */
  | { kind: 'channel'; channel: string };

export type RichText = readonly Inline[];

export interface ButtonView {
  /** Stable action id routed back to the action handlers, e.g. `shipgate.cancel`. */
  actionId: string;
  /** Plain text. */
  label: string;
  /** Carried back with the click; for run buttons, the run id. */
  value: string;
  style?: 'primary' | 'danger' | undefined;
}

export type BlockView =
  /** A title, plain text. */
  | { type: 'header'; text: string }
  | { type: 'section'; text: RichText }
  | { type: 'fields'; fields: RichText[] }
  /** Secondary, smaller text. */
  | { type: 'context'; text: RichText }
  | { type: 'divider' }
  | { type: 'actions'; buttons: ButtonView[] };

export interface MessageView {
  /** Plain fallback text (no markup): notifications, screen readers, logs. */
  text: string;
  blocks: BlockView[];
}

// ---------------------------------------------------------------------------
// building rich text

export const text = (value: string): Inline => ({ kind: 'text', text: value });
export const bold = (value: string): Inline => ({ kind: 'bold', text: value });
export const code = (value: string): Inline => ({ kind: 'code', text: value });
export const pre = (value: string): Inline => ({ kind: 'pre', text: value });
export const quote = (value: string): Inline => ({ kind: 'quote', text: value });
export const link = (url: string, label: string): Inline => ({ kind: 'link', url, label });
export const principal = (id: string): Inline => ({ kind: 'mention', principal: id });
export const channel = (id: string): Inline => ({ kind: 'channel', channel: id });

export type RichPart = string | number | Inline | RichText | undefined;

function isRichText(part: Inline | RichText): part is RichText {
  return Array.isArray(part);
}

function pushPart(out: Inline[], part: RichPart): void {
  if (part === undefined || part === '') return;
  if (typeof part === 'string' || typeof part === 'number') out.push(text(String(part)));
  else if (isRichText(part)) out.push(...part);
  else out.push(part);
}

/**
 * Rich text from a template: literal parts and interpolated strings are plain
 * text, interpolated spans (`bold(x)`, `code(x)`, …) and rich texts are kept.
 * `` rich`Run ${code(id)} on ${bold(repo)}` ``.
 */
export function rich(literals: TemplateStringsArray, ...parts: RichPart[]): RichText {
  const out: Inline[] = [];
  literals.forEach((literal, index) => {
    pushPart(out, literal);
    if (index < parts.length) pushPart(out, parts[index]);
  });
  return merge(out);
}

/** Concatenates parts into one rich text. */
export function concat(...parts: RichPart[]): RichText {
  const out: Inline[] = [];
  for (const part of parts) pushPart(out, part);
  return merge(out);
}

/** Joins rich texts with a plain separator (`' · '`, `'\n'`). */
export function joinRich(items: readonly RichText[], separator: string): RichText {
  const out: Inline[] = [];
  items.forEach((item, index) => {
    if (index > 0) pushPart(out, separator);
    out.push(...item);
  });
  return merge(out);
}

/** Adjacent plain text spans become one, so renderers and tests see whole phrases. */
function merge(spans: readonly Inline[]): RichText {
  const out: Inline[] = [];
  for (const span of spans) {
    const last = out.at(-1);
    if (span.kind === 'text' && last?.kind === 'text') out[out.length - 1] = text(last.text + span.text);
    else out.push(span);
  }
  return out;
}

// ---------------------------------------------------------------------------
// reading rich text

/**
 * The text without any markup: what the audit log and logs record, and the
 * base of fallback texts. Code keeps its backticks so a command stays
 * recognisable; a mention is `@<id>`, a link `label (url)`.
 */
export function plainText(value: RichText): string {
  return value
    .map((span) => {
      switch (span.kind) {
        case 'text':
        case 'bold':
          return span.text;
        case 'code':
          return `\`${span.text}\``;
        case 'pre':
          return `\`\`\`\n${span.text}\n\`\`\``;
        case 'quote':
          return span.text
            .split('\n')
            .map((line) => `> ${line}`)
            .join('\n');
        case 'link':
          return span.label === span.url ? span.url : `${span.label} (${span.url})`;
        case 'mention':
          return `@${span.principal}`;
        case 'channel':
          return `#${span.channel}`;
      }
    })
    .join('');
}

/** Applies `change` to every string a person reads or a click carries back (secret scrubbing). */
export function mapRichText(value: RichText, change: (text: string) => string): RichText {
  return value.map((span): Inline => {
    switch (span.kind) {
      case 'text':
      case 'bold':
      case 'code':
      case 'pre':
      case 'quote':
        return { ...span, text: change(span.text) };
      case 'link':
        return { ...span, url: change(span.url), label: change(span.label) };
      case 'mention':
        return { ...span, principal: change(span.principal) };
      case 'channel':
        return { ...span, channel: change(span.channel) };
    }
  });
}

function mapBlock(block: BlockView, change: (text: string) => string): BlockView {
  switch (block.type) {
    case 'header':
      return { ...block, text: change(block.text) };
    case 'section':
    case 'context':
      return { ...block, text: mapRichText(block.text, change) };
    case 'fields':
      return { ...block, fields: block.fields.map((field) => mapRichText(field, change)) };
    case 'actions':
      return {
        ...block,
        buttons: block.buttons.map((button) => ({
          ...button,
          label: change(button.label),
          value: change(button.value),
        })),
      };
    case 'divider':
      return block;
  }
}

/** `mapRichText` for a whole message. */
export function mapMessageView(view: MessageView, change: (text: string) => string): MessageView {
  return { text: change(view.text), blocks: view.blocks.map((block) => mapBlock(block, change)) };
}
