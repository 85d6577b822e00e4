import { plainText, type BlockView, type ButtonView, type MessageView, type RichText } from '../../render/view.js';

/**
 * The neutral MessageView → plain text for the console chat adapter (a
 * terminal chat for local use). Rich text is shown without markup (a mention
 * as `@<id>`, a link as `label (url)`), and buttons become a command the
 * console adapter parses back: `click <verb> <value>`.
 */

const ACTION_PREFIX = 'shipgate.';

/** Rich text as the terminal shows it. */
export function consoleText(value: RichText): string {
  return plainText(value);
}

/** The verb the console adapter expects after `click`: `shipgate.cancel` → `cancel`. */
export function actionVerb(actionId: string): string {
  return actionId.startsWith(ACTION_PREFIX) ? actionId.slice(ACTION_PREFIX.length) : actionId;
}

function buttonLine(button: ButtonView): string {
  return `[${button.label}] type: click ${actionVerb(button.actionId)} ${button.value}`;
}

function blockText(block: BlockView): string {
  switch (block.type) {
    case 'header': {
      const title = block.text.replace(/\s+/g, ' ').trim();
      return `${title}\n${'='.repeat(Math.max(3, Array.from(title).length))}`;
    }
    case 'section':
    case 'context':
      return consoleText(block.text);
    case 'fields':
      return block.fields.map(consoleText).join('\n');
    case 'divider':
      return '-'.repeat(40);
    case 'actions':
      return block.buttons.map(buttonLine).join('\n');
  }
}

/** A readable plain-text rendering of a message for the terminal. */
export function toText(view: MessageView): string {
  if (view.blocks.length === 0) return view.text;
  return view.blocks
    .map(blockText)
    .filter((text) => text !== '')
    .join('\n');
}
