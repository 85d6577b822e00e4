import type { BlockView, ButtonView, MessageView } from './view.js';

/**
 * MessageView → plain text for the console chat adapter (a terminal chat for
 * local use). mrkdwn is flattened so the terminal shows what Slack would show,
 * and buttons become a command the console adapter parses back:
 * `click <verb> <value>`.
 */

const ACTION_PREFIX = 'shipgate.';

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
 * `*bold*` → `bold`, entities unescaped. Also for ephemeral strings (help,
 * status) that the console adapter prints.
 */
export function flattenMrkdwn(text: string): string {
  // Tokens are parked behind placeholders first: emphasis stripping must not touch URLs (`/_next_/`),
  // and a bold link `*<url|PR>*` must still lose its stars.
  const tokens: string[] = [];
  const parked = text.replace(/<([^<>\n]*)>/g, (_match, body: string) => {
    tokens.push(unescapeEntities(flattenToken(body)));
    return `\uE000${tokens.length - 1}\uE000`;
  });
  const plain = unescapeEntities(stripEmphasis(parked));
  return plain.replace(/\uE000(\d+)\uE000/g, (_match, index: string) => tokens[Number(index)] ?? '');
}

/** The verb the console adapter expects after `click`: `shipgate.cancel` → `cancel`. */
export function actionVerb(actionId: string): string {
  return actionId.startsWith(ACTION_PREFIX) ? actionId.slice(ACTION_PREFIX.length) : actionId;
}

function buttonLine(button: ButtonView): string {
  return `[${flattenMrkdwn(button.label)}] type: click ${actionVerb(button.actionId)} ${button.value}`;
}

function blockText(block: BlockView): string {
  switch (block.type) {
    case 'header': {
      const title = flattenMrkdwn(block.text).trim();
      return `${title}\n${'='.repeat(Math.max(3, Array.from(title).length))}`;
    }
    case 'section':
    case 'context':
      return flattenMrkdwn(block.text);
    case 'fields':
      return block.fields.map(flattenMrkdwn).join('\n');
    case 'divider':
      return '-'.repeat(40);
    case 'actions':
      return block.buttons.map(buttonLine).join('\n');
  }
}

/** A readable plain-text rendering of a message for the terminal. */
export function toText(view: MessageView): string {
  if (view.blocks.length === 0) return flattenMrkdwn(view.text);
  return view.blocks
    .map(blockText)
    .filter((text) => text !== '')
    .join('\n');
}
