import type { MessageView } from '../render/view.js';

/**
 * The chat port (SPEC §2): everything shipgate asks of a chat system. Slack,
 * the console and (later) Discord implement it; commands, workers and
 * rendering never know which one they talk to.
 */
export interface ChatPort {
  /**
   * Posts a message (a thread reply when `threadTs` is set). `key` is an
   * idempotency key stored with the message where the platform allows it, so
   * that `findMessageByKey` can tell whether an interrupted post landed.
   */
  postMessage(input: { channel: string; threadTs?: string | undefined; message: MessageView; key: string }): Promise<{ ts: string }>;
  /** Replaces a posted message in place (the live card). */
  updateMessage(input: { channel: string; ts: string; message: MessageView }): Promise<void>;
  /** A message only `user` sees (command errors, refused clicks). */
  postEphemeral(input: { channel: string; user: string; text: string; threadTs?: string | undefined }): Promise<void>;
  /** Finds a message this bot posted with `key`, in the channel or in the thread `threadTs`. */
  findMessageByKey(input: { channel: string; threadTs?: string | undefined; key: string }): Promise<{ ts: string } | undefined>;
  /** A link a person can open to reach the message (used in PR bodies to point back to the thread). */
  permalink(input: { channel: string; ts: string }): Promise<string | undefined>;
  /** Members of a user group (Slack `S…` ids); used to authorise requesters and approvers. */
  userGroupMembers(groupId: string): Promise<string[]>;
}

/** A slash command as any adapter delivers it, already verified by the adapter. */
export interface CommandEvent {
  /** The command name as typed, e.g. `/ship`. */
  command: string;
  text: string;
  userId: string;
  userName?: string | undefined;
  channelId: string;
  /** Unique per invocation and identical on redelivery (Slack's trigger_id); makes retries no-ops. */
  deliveryId: string;
}

/** A button press. */
export interface ActionEvent {
  actionId: string;
  value: string;
  userId: string;
  channelId: string;
  messageTs?: string | undefined;
  /** Identical on redelivery of the same click (Slack's action_ts + user). */
  deliveryId: string;
}

/**
 * A mention of the bot by a person (SPEC §2): inside a run's thread it is a
 * follow-up instruction for that run's agent. Adapters drop mentions written
 * by bots (shipgate included) before they get here.
 */
export interface MentionEvent {
  /** The instruction, with the leading mention of the bot removed. */
  text: string;
  userId: string;
  channelId: string;
  /** The thread's root ts (the run's card) when the mention was a thread reply. */
  threadTs: string | undefined;
  /** The mention message's own ts. */
  ts: string;
  /** Identical on redelivery (Slack's Events API event_id); makes retries no-ops. */
  deliveryId: string;
  /**
   * Set by adapters that address runs by id instead of by thread (the console);
   * when present it wins over channel + threadTs.
   */
  runId?: string | undefined;
}

/** What the adapter sends back to the person who typed or clicked, right away. */
export interface CommandReply {
  /** Only the requester sees it (errors, help, status). */
  ephemeral?: string | undefined;
}

/** Handlers the adapters call; they must answer fast (Slack acks within 3 s). */
export interface ChatHandlers {
  onCommand(event: CommandEvent): Promise<CommandReply>;
  onAction(event: ActionEvent): Promise<CommandReply>;
  /** Optional: without it adapters acknowledge mentions and do nothing. */
  onMention?(event: MentionEvent): Promise<CommandReply>;
}
