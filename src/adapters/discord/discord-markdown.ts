import type { RichText } from '../../render/view.js';

/**
 * The neutral rich text of src/render/view.ts as Discord markdown. Every literal is escaped, so what
 * a person typed or a CI log said is shown and never read as formatting, a masked link, a mention
 * or a timestamp token; mentions are written only for ids this adapter owns (`discord:<id>`,
 * `discord:role:<id>`, channels `discord:<id>`). Every message also goes out with
 * `allowed_mentions: { parse: [] }` (discord-message.ts), so even a mention that is shown pings
 * nobody.
 */

const SNOWFLAKE = /^\d{15,21}$/;
const USER_REF = /^discord:(\d{15,21})$/;
const ROLE_REF = /^discord:role:(\d{15,21})$/;

/** Characters Discord's markdown gives a meaning to anywhere in a line. */
const INLINE_SPECIALS = /[\\*_~`|<>[\]()]/g;

/**
 * Escapes Discord markdown: inline markers everywhere, block markers (`#` headers, `-#` subtext,
 * `>` quotes, `-`/`*`/`1.` lists) at the start of a line, and `@everyone`/`@here` broken with a
 * zero-width joiner so they do not even look like a ping.
 */
export function escapeMarkdown(text: string): string {
  return (
    text
      .replace(INLINE_SPECIALS, (c) => `\\${c}`)
      .replace(/^(\s*)([#\-+])/gm, (_m, space: string, marker: string) => `${space}\\${marker}`)
      // A backslash before a digit is shown as it is, so an ordered-list marker is broken at its dot.
      .replace(/^(\s*\d+)\./gm, (_m, number: string) => `${number}\\.`)
      .replace(/@(everyone|here)/gi, (_m, word: string) => `@\u200d${word}`)
  );
}

/** A Discord mention for an id this adapter owns; anything else is shown as escaped text. */
export function mentionOf(principal: string): string {
  const user = USER_REF.exec(principal);
  if (user !== null) return `<@${user[1] ?? ''}>`;
  const role = ROLE_REF.exec(principal);
  if (role !== null) return `<@&${role[1] ?? ''}>`;
  return `@${escapeMarkdown(principal)}`;
}

function channelOf(channel: string): string {
  const id = channel.startsWith('discord:') ? channel.slice('discord:'.length) : undefined;
  return id !== undefined && SNOWFLAKE.test(id) ? `<#${id}>` : `#${escapeMarkdown(channel)}`;
}

/** Inline code cannot escape a backtick: it becomes a look-alike, so the span cannot end early. */
function inlineCode(text: string): string {
  const body = text.replace(/`/g, 'ˋ').replace(/\n/g, ' ');
  return body.trim() === '' ? '' : `\`${body}\``;
}

/** A fence inside the text would close the block: a zero-width space breaks every run of three backticks. */
function fenced(text: string): string {
  return `\`\`\`\n${text.replace(/```/g, '``\u200b`')}\n\`\`\``;
}

/** `[label](url)` for http(s) URLs only; characters that would end the URL early are encoded. */
function link(url: string, label: string): string {
  if (!/^https?:\/\//i.test(url)) return escapeMarkdown(label === url ? url : `${label} (${url})`);
  const safeUrl = url.replace(/[()\s<>]/g, (c) => encodeURIComponent(c));
  // `<url>` suppresses the preview embed Discord would add for every link.
  return `[${escapeMarkdown(label)}](<${safeUrl}>)`;
}

/** Neutral rich text → Discord markdown. */
export function toDiscordMarkdown(value: RichText): string {
  return value
    .map((span) => {
      switch (span.kind) {
        case 'text':
          return escapeMarkdown(span.text);
        case 'bold':
          return span.text === '' ? '' : `**${escapeMarkdown(span.text)}**`;
        case 'code':
          return inlineCode(span.text);
        case 'pre':
          return fenced(span.text);
        case 'quote':
          return span.text
            .split('\n')
            .map((line) => `> ${escapeMarkdown(line)}`)
            .join('\n');
        case 'link':
          return link(span.url, span.label);
        case 'mention':
          return mentionOf(span.principal);
        case 'channel':
          return channelOf(span.channel);
      }
    })
    .join('');
}

/**
 * Cuts markdown to `max` characters without leaving a code fence open or a token half-written:
 * the cut goes back to a line end where there is one nearby, an open fence is closed, and an
 * ellipsis says something was left out.
 */
export function truncateMarkdown(text: string, max: number): string {
  if (text.length <= max) return text;
  const room = max - 6;
  let cut = text.slice(0, room);
  const lineEnd = cut.lastIndexOf('\n');
  if (lineEnd > room * 0.6) cut = cut.slice(0, lineEnd);
  else {
    const space = cut.lastIndexOf(' ');
    if (space > room * 0.6) cut = cut.slice(0, space);
  }
  // A trailing backslash would escape the ellipsis; a half surrogate would show as garbage.
  cut = cut.replace(/\\+$/, '').replace(/[\uD800-\uDBFF]$/, '');
  const fences = cut.match(/```/g)?.length ?? 0;
  return fences % 2 === 1 ? `${cut}\n\`\`\`\n…` : `${cut}…`;
}
