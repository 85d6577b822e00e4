import type { RichText } from '../../render/view.js';

/**
 * Slack's mrkdwn, both ways: the neutral rich text of src/render/view.ts
 * rendered for Slack (every literal escaped, so user text is shown and never
 * interpreted as a mention or link), and Slack's markup in incoming messages
 * flattened back to plain text.
 */

/** Escapes Slack's control characters so user text is shown, never interpreted as mentions or links. */
export function escapeMrkdwn(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** Slack user ids; anything else is not a mention Slack can resolve. */
const SLACK_USER = /^[UW][A-Z0-9]+$/;
const SLACK_CHANNEL = /^[CGD][A-Z0-9]+$/;

/**
 * A Slack mention for a user id; anything that does not look like a Slack user
 * id (a console user, a group, a name) is shown as escaped text, so it cannot
 * become a broken or hostile `<@…>` token.
 */
export function mention(userId: string): string {
  return SLACK_USER.test(userId) ? `<@${userId}>` : `@${escapeMrkdwn(userId)}`;
}

function channelLink(channelId: string): string {
  return SLACK_CHANNEL.test(channelId) ? `<#${channelId}>` : `#${escapeMrkdwn(channelId)}`;
}

/** `<url|label>` for http(s) URLs only; characters that would end the link token early are encoded. */
function link(url: string, label: string): string {
  if (!/^https?:\/\//i.test(url)) return escapeMrkdwn(label === url ? url : `${label} (${url})`);
  const safeUrl = url.replace(/&/g, '&amp;').replace(/</g, '%3C').replace(/>/g, '%3E').replace(/\|/g, '%7C');
  return `<${safeUrl}|${escapeMrkdwn(label)}>`;
}

/** Neutral rich text → Slack mrkdwn. */
export function toMrkdwn(value: RichText): string {
  return value
    .map((span) => {
      switch (span.kind) {
        case 'text':
          return escapeMrkdwn(span.text);
        case 'bold':
          return span.text === '' ? '' : `*${escapeMrkdwn(span.text)}*`;
        case 'code':
          return span.text === '' ? '' : `\`${escapeMrkdwn(span.text)}\``;
        case 'pre':
          return `\`\`\`\n${escapeMrkdwn(span.text)}\n\`\`\``;
        case 'quote':
          // Each line quoted; a user `>` is escaped, so it cannot end the quote.
          return span.text
            .split('\n')
            .map((line) => `> ${escapeMrkdwn(line)}`)
            .join('\n');
        case 'link':
          return link(span.url, span.label);
        case 'mention':
          return mention(span.principal);
        case 'channel':
          return channelLink(span.channel);
      }
    })
    .join('');
}

// ---------------------------------------------------------------------------
// incoming: Slack markup → plain text

/** The `<…>` tokens of mrkdwn (links, mentions, specials) → what Slack displays for them. */
function flattenToken(body: string): string {
  const bar = body.indexOf('|');
  const target = bar === -1 ? body : body.slice(0, bar);
  const label = bar === -1 ? undefined : body.slice(bar + 1);
  if (target.startsWith('@')) return label === undefined ? target : `@${label.replace(/^@/, '')}`;
  if (target.startsWith('#')) return label === undefined ? target : `#${label.replace(/^#/, '')}`;
  if (target.startsWith('!')) {
    // `<!channel>`, `<!subteam^S1|@team>`, `<!date^…|fallback>`: the label is the readable form when present.
    if (label !== undefined) return label;
    const special = target.slice(1).split('^')[0] ?? '';
    return `@${special}`;
  }
  if (label === undefined || label === target) return target;
  return `${label} (${target})`;
}

/** Strips `*bold*`, `_italic_` and `~strike~` markers, but not `*` or `_` inside words like `snake_case`. */
function stripEmphasis(text: string): string {
  let out = text;
  for (const marker of ['\\*', '_', '~']) {
    const pattern = new RegExp(
      `(^|[^\\w${marker}])${marker}(?=\\S)([^${marker}\\n]*?\\S)${marker}(?![\\w${marker}])`,
      'g',
    );
    out = out.replace(pattern, '$1$2');
  }
  return out;
}

function unescapeEntities(text: string): string {
  // `&amp;` last, so that an escaped `&amp;lt;` stays the literal text `&lt;`.
  return text.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&');
}

/**
 * Slack mrkdwn → plain text: `<url|label>` → `label (url)`, `<@U123>` → `@U123`,
 * `*bold*` → `bold`, entities unescaped.
 */
export function flattenMrkdwn(text: string): string {
  return flatten(text, true);
}

function flatten(text: string, emphasis: boolean): string {
  // Tokens are parked behind placeholders first: emphasis stripping must not touch URLs (`/_next_/`),
  // and a bold link `*<url|PR>*` must still lose its stars.
  const tokens: string[] = [];
  const parked = text.replace(/<([^<>\n]*)>/g, (_match, body: string) => {
    tokens.push(unescapeEntities(flattenToken(body)));
    return `\uE000${tokens.length - 1}\uE000`;
  });
  const plain = unescapeEntities(emphasis ? stripEmphasis(parked) : parked);
  return plain.replace(/\uE000(\d+)\uE000/g, (_match, index: string) => tokens[Number(index)] ?? '');
}

/**
 * An incoming message's text as plain text (tokens resolved, entities
 * unescaped; `*` and `_` kept, since in an instruction they may be code like
 * `_private_`), and the user ids it mentions (`<@U…>` / `<@U…|name>`), in
 * order and without repeats.
 */
export function readIncoming(text: string): { text: string; mentions: string[] } {
  const mentions: string[] = [];
  for (const match of text.matchAll(/<@([A-Z0-9]+)(?:\|[^>]*)?>/g)) {
    const id = match[1];
    if (id !== undefined && !mentions.includes(id)) mentions.push(id);
  }
  return { text: flatten(text, false), mentions };
}
