/**
 * A chat-neutral message: what the card or a reply says, before any adapter
 * turns it into Block Kit (Slack) or plain text (console). Text fields use
 * Slack-style mrkdwn (`*bold*`, `<url|label>`), which the text renderer
 * flattens.
 */

export interface ButtonView {
  /** Stable action id routed back to the action handlers, e.g. `shipgate.cancel`. */
  actionId: string;
  label: string;
  /** Carried back with the click; for run buttons, the run id. */
  value: string;
  style?: 'primary' | 'danger' | undefined;
}

export type BlockView =
  | { type: 'header'; text: string }
  | { type: 'section'; text: string }
  | { type: 'fields'; fields: string[] }
  | { type: 'context'; text: string }
  | { type: 'divider' }
  | { type: 'actions'; buttons: ButtonView[] };

export interface MessageView {
  /** Plain fallback: notifications, screen readers, logs. */
  text: string;
  blocks: BlockView[];
}
