import type {
  ActionsBlock,
  Button,
  ContextBlock,
  DividerBlock,
  HeaderBlock,
  KnownBlock,
  MrkdwnElement,
  SectionBlock,
} from '@slack/types';
import type { BlockView, ButtonView, MessageView, RichText } from '../../render/view.js';
import { toMrkdwn } from './mrkdwn.js';

/**
 * The neutral MessageView → Slack Block Kit, rich text as mrkdwn (escaped in ./mrkdwn.ts). Slack rejects a whole message when one field
 * is over its limit (`invalid_blocks`), and a rejected card update means the
 * thread silently stops reflecting the run, so every limit is enforced here by
 * truncating with an ellipsis rather than trusting the content to be short.
 */

/** Slack's documented limits for the blocks and elements used here. */
export const SLACK_LIMITS = {
  blocks: 50,
  headerText: 150,
  sectionText: 3000,
  fields: 10,
  fieldText: 2000,
  contextText: 3000,
  actionsElements: 25,
  buttonText: 75,
  buttonValue: 2000,
  actionId: 255,
} as const;

/** Plain truncation (plain_text and ids): cut by code points so an emoji is never split. */
function truncatePlain(text: string, max: number): string {
  if (text.length <= max) return text;
  // Slack counts characters; UTF-16 length is never smaller than the code-point count, so staying under it is safe.
  let cut = text.slice(0, max - 1);
  if (/[\uD800-\uDBFF]$/.test(cut)) cut = cut.slice(0, -1);
  return `${cut.trimEnd()}…`;
}

/**
 * mrkdwn truncation that never leaves half a token behind: a cut inside
 * `<url|label>` or `&amp;` would show garbage or, worse, an unterminated link,
 * so the cut moves back to before the token.
 */
export function truncateMrkdwn(text: string, max: number): string {
  if (text.length <= max) return text;
  let cut = text.slice(0, max - 1);
  const open = cut.lastIndexOf('<');
  if (open > cut.lastIndexOf('>')) cut = cut.slice(0, open);
  const amp = cut.lastIndexOf('&');
  if (amp >= 0 && !cut.slice(amp).includes(';') && cut.length - amp <= 8) cut = cut.slice(0, amp);
  if (/[\uD800-\uDBFF]$/.test(cut)) cut = cut.slice(0, -1);
  return `${cut.trimEnd()}…`;
}

function mrkdwn(text: RichText, max: number): MrkdwnElement {
  return { type: 'mrkdwn', text: truncateMrkdwn(toMrkdwn(text), max) };
}

function isBlank(text: RichText): boolean {
  return toMrkdwn(text).trim() === '';
}

function button(view: ButtonView): Button {
  const element: Button = {
    type: 'button',
    action_id: truncatePlain(view.actionId, SLACK_LIMITS.actionId),
    // Labels are plain_text: shown as written, no escaping.
    text: {
      type: 'plain_text',
      text: truncatePlain(view.label || ' ', SLACK_LIMITS.buttonText),
      emoji: true,
    },
    value: truncatePlain(view.value, SLACK_LIMITS.buttonValue),
  };
  if (view.style !== undefined) element.style = view.style;
  return element;
}

function chunk<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

function convert(view: BlockView): KnownBlock[] {
  switch (view.type) {
    case 'header': {
      const text = view.text.replace(/\s+/g, ' ').trim();
      if (text === '') return [];
      const block: HeaderBlock = {
        type: 'header',
        text: { type: 'plain_text', text: truncatePlain(text, SLACK_LIMITS.headerText), emoji: true },
      };
      return [block];
    }
    case 'section': {
      // Slack rejects an empty text object; an empty section carries nothing anyway.
      if (isBlank(view.text)) return [];
      const block: SectionBlock = { type: 'section', text: mrkdwn(view.text, SLACK_LIMITS.sectionText) };
      return [block];
    }
    case 'fields': {
      const fields = view.fields.filter((field) => !isBlank(field));
      // More than ten fields is split over several sections rather than dropped.
      return chunk(fields, SLACK_LIMITS.fields).map((group): SectionBlock => ({
        type: 'section',
        fields: group.map((field) => mrkdwn(field, SLACK_LIMITS.fieldText)),
      }));
    }
    case 'context': {
      if (isBlank(view.text)) return [];
      const block: ContextBlock = { type: 'context', elements: [mrkdwn(view.text, SLACK_LIMITS.contextText)] };
      return [block];
    }
    case 'divider': {
      const block: DividerBlock = { type: 'divider' };
      return [block];
    }
    case 'actions':
      return chunk(view.buttons, SLACK_LIMITS.actionsElements).map((group): ActionsBlock => ({
        type: 'actions',
        elements: group.map(button),
      }));
  }
}

/**
 * Caps the message at Slack's 50 blocks. Buttons are what a person acts on
 * (Cancel, Approve), so action blocks survive and the content before them is
 * shortened, with a note that something was left out.
 */
function capBlocks(blocks: KnownBlock[]): KnownBlock[] {
  if (blocks.length <= SLACK_LIMITS.blocks) return blocks;
  const actions = blocks.filter((block) => block.type === 'actions').slice(0, SLACK_LIMITS.blocks - 1);
  const room = SLACK_LIMITS.blocks - 1 - actions.length;
  const content = blocks.filter((block) => block.type !== 'actions');
  const kept = content.slice(0, room);
  const omitted = blocks.length - kept.length - actions.length;
  const note: ContextBlock = {
    type: 'context',
    elements: [
      {
        type: 'mrkdwn',
        text: `_… ${omitted} more block${omitted === 1 ? '' : 's'} not shown (Slack allows ${SLACK_LIMITS.blocks})._`,
      },
    ],
  };
  return [...kept, note, ...actions];
}

/** The Block Kit blocks for a chat-neutral message, always within Slack's limits. */
export function toBlockKit(view: MessageView): KnownBlock[] {
  return capBlocks(view.blocks.flatMap(convert));
}
