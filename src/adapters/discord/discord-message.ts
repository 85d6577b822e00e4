import { createHash } from 'node:crypto';
import {
  ButtonStyle,
  ComponentType,
  type APIActionRowComponent,
  type APIAllowedMentions,
  type APIButtonComponentWithCustomId,
  type APIEmbed,
} from 'discord-api-types/v10';
import type { BlockView, ButtonView, MessageView, RichText } from '../../render/view.js';
import { escapeMarkdown, toDiscordMarkdown, truncateMarkdown } from './discord-markdown.js';

/**
 * The neutral MessageView → a Discord message: one embed (the header as its title, sections and
 * fields in the description, context as `-#` subtext) and the buttons in action rows. An embed
 * rather than plain content because it holds twice the text (4096 characters), reads as one card
 * in a busy channel and keeps its mentions silent. Discord refuses a whole message with one field
 * over a limit (HTTP 400), and a refused card update means the thread silently stops following
 * the run, so every limit is enforced here.
 */

export const DISCORD_LIMITS = {
  content: 2000,
  embedTitle: 256,
  embedDescription: 4096,
  /** Buttons per action row, and action rows per message. */
  rowButtons: 5,
  rows: 5,
  buttonLabel: 80,
  customId: 100,
  nonce: 25,
} as const;

/** Not a ping for anybody, ever: mentions are shown but notify no one (SPEC §2: text can never ping). */
export const NO_PINGS: APIAllowedMentions = { parse: [] };

/** shipgate's colour on every card and reply (Discord's blurple would blend with other bots). */
const EMBED_COLOUR = 0x2f855a;

/** Action ids of shipgate's buttons all start with this; the custom_id drops it to make room for the value. */
const ACTION_PREFIX = 'shipgate.';

/**
 * A button's custom_id: the action id without its common prefix, `|`, then the value. The value
 * goes into the id because Discord hands back nothing else with a click, and the 100 characters
 * fit an approval's `<run>|<freight>|<nonce>` (93). Undefined when it would not fit.
 */
export function encodeCustomId(actionId: string, value: string): string | undefined {
  if (!actionId.startsWith(ACTION_PREFIX) || actionId.includes('|')) return undefined;
  const id = `${actionId.slice(ACTION_PREFIX.length)}|${value}`;
  return id.length <= DISCORD_LIMITS.customId ? id : undefined;
}

export function decodeCustomId(customId: string): { actionId: string; value: string } | undefined {
  const bar = customId.indexOf('|');
  if (bar <= 0) return undefined;
  return { actionId: `${ACTION_PREFIX}${customId.slice(0, bar)}`, value: customId.slice(bar + 1) };
}

/** The idempotency key of a post as a message nonce: Discord takes at most 25 characters, so a digest of the key. */
export function nonceOf(key: string): string {
  return createHash('sha256').update(key).digest('base64url').slice(0, DISCORD_LIMITS.nonce);
}

/** The footer every shipgate embed carries; a post adds its key's marker (see `keyFooter`). */
export const FOOTER = 'shipgate';

/**
 * The footer that names a post's idempotency key. Discord returns a message's `nonce` only in the
 * answer to the create (and the Gateway's MESSAGE_CREATE), never when the message is read later,
 * so an interrupted post cannot be found by its nonce. The embed footer is returned on every read:
 * it carries 12 characters (72 bits) of the key's digest, enough to tell the posts of one channel
 * apart, short enough to read as a small reference.
 */
export function keyFooter(key: string): string {
  return `${FOOTER} · ${nonceOf(key).slice(0, 12)}`;
}

/** `body` with its (first) embed's footer set; a body without embeds is returned as it is. */
export function withFooter(body: DiscordMessageBody, text: string): DiscordMessageBody {
  const [first, ...rest] = body.embeds;
  return first === undefined ? body : { ...body, embeds: [{ ...first, footer: { text } }, ...rest] };
}

function plain(text: string, max: number): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length <= max ? flat : `${flat.slice(0, max - 1).trimEnd()}…`;
}

function isBlank(text: RichText): boolean {
  return toDiscordMarkdown(text).trim() === '';
}

/** One block as description lines; buttons are not text and go to the action rows. */
function describe(block: BlockView): string | undefined {
  switch (block.type) {
    case 'header':
      // Only the first header is the title; a later one is a bold line of its own.
      return block.text.trim() === ''
        ? undefined
        : `**${escapeMarkdown(plain(block.text, DISCORD_LIMITS.embedTitle))}**`;
    case 'section':
      return isBlank(block.text) ? undefined : toDiscordMarkdown(block.text);
    case 'fields': {
      const fields = block.fields.filter((field) => !isBlank(field)).map(toDiscordMarkdown);
      return fields.length === 0 ? undefined : fields.join('\n');
    }
    case 'context':
      // Subtext: small grey lines, one marker per line.
      return isBlank(block.text)
        ? undefined
        : toDiscordMarkdown(block.text)
            .split('\n')
            .map((line) => (line.trim() === '' ? line : `-# ${line}`))
            .join('\n');
    case 'divider':
      return '';
    case 'actions':
      return undefined;
  }
}

function buttonOf(view: ButtonView): APIButtonComponentWithCustomId {
  const customId = encodeCustomId(view.actionId, view.value);
  const style =
    view.style === 'primary'
      ? ButtonStyle.Primary
      : view.style === 'danger'
        ? ButtonStyle.Danger
        : ButtonStyle.Secondary;
  return {
    type: ComponentType.Button,
    style,
    label: plain(view.label, DISCORD_LIMITS.buttonLabel) || ' ',
    // A value too long for a custom_id cannot come back: the button is shown, disabled, rather than lost.
    custom_id: customId ?? `unusable|${nonceOf(view.actionId + view.value)}`,
    disabled: customId === undefined,
  };
}

export interface DiscordMessageBody {
  content: string;
  embeds: APIEmbed[];
  components: APIActionRowComponent<APIButtonComponentWithCustomId>[];
  allowed_mentions: APIAllowedMentions;
}

/** The message body for a view: always with `components` (an empty list removes a decided message's buttons). */
export function toDiscordMessage(view: MessageView): DiscordMessageBody {
  const headerIndex = view.blocks.findIndex((block) => block.type === 'header' && block.text.trim() !== '');
  const header = headerIndex >= 0 ? view.blocks[headerIndex] : undefined;
  const lines = view.blocks
    .filter((_, index) => index !== headerIndex)
    .map(describe)
    .filter((line): line is string => line !== undefined);
  // Dividers become blank lines; never more than one in a row, never at the ends.
  const description = lines
    .join('\n')
    .replace(/\n{3,}/g, '\n\n')
    .trim();
  const embed: APIEmbed = { color: EMBED_COLOUR };
  // Titles render some markdown too; 200 leaves room for the escapes within Discord's 256.
  if (header?.type === 'header') embed.title = escapeMarkdown(plain(header.text, 200));
  if (description !== '') embed.description = truncateMarkdown(description, DISCORD_LIMITS.embedDescription);
  if (embed.title === undefined && embed.description === undefined)
    embed.description = escapeMarkdown(plain(view.text || ' ', DISCORD_LIMITS.embedDescription));

  const buttons = view.blocks.flatMap((block) => (block.type === 'actions' ? block.buttons : []));
  const rows: APIActionRowComponent<APIButtonComponentWithCustomId>[] = [];
  for (let i = 0; i < buttons.length && rows.length < DISCORD_LIMITS.rows; i += DISCORD_LIMITS.rowButtons) {
    rows.push({
      type: ComponentType.ActionRow,
      components: buttons.slice(i, i + DISCORD_LIMITS.rowButtons).map(buttonOf),
    });
  }
  return { content: '', embeds: [embed], components: rows, allowed_mentions: NO_PINGS };
}

/** Plain markdown content for an ephemeral answer (an interaction reply). */
export function toDiscordContent(text: RichText): string {
  const markdown = toDiscordMarkdown(text);
  return truncateMarkdown(markdown.trim() === '' ? ' ' : markdown, DISCORD_LIMITS.content);
}
