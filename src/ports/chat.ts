import type { PrincipalDirectory } from '../domain/principals.js';
import type { MessageView, RichText } from '../render/view.js';

/**
 * The chat port (SPEC §2): everything shipgate asks of a chat system. Slack,
 * the console and Discord implement it; commands, workers and
 * rendering never know which one they talk to.
 *
 * Channels, messages and principals are opaque references: the adapter
 * produces them (in events and as results of posts) and consumes them again;
 * the rest of shipgate stores and compares them but never reads them.
 */

/** Where messages go: a channel as the adapter names it (Slack: `C…`). */
export type ChannelRef = string;
/** One posted message within its channel (Slack: the message ts); a thread is named by its root message. */
export type MessageRef = string;
/** A user or group as the adapter names it (Slack: `U…`, `S…`; Discord: `discord:<snowflake>`). */
export type PrincipalId = string;

export interface ChatPort {
  /**
   * Posts a message (a reply in the thread of `thread` when set). `key` is an
   * idempotency key stored with the message where the platform allows it, so
   * that `findMessageByKey` can tell whether an interrupted post landed.
   */
  postMessage(input: { channel: ChannelRef; thread?: MessageRef | undefined; view: MessageView; key: string }): Promise<{ ref: MessageRef }>;
  /** Replaces a posted message in place (the live card). */
  updateMessage(input: { channel: ChannelRef; ref: MessageRef; view: MessageView }): Promise<void>;
  /** A message only `user` sees (command errors, refused clicks). */
  postEphemeral(input: { channel: ChannelRef; user: PrincipalId; text: RichText; thread?: MessageRef | undefined }): Promise<void>;
  /** Finds a message this bot posted with `key`, in the channel or in the thread of `thread`. */
  findMessageByKey(input: { channel: ChannelRef; thread?: MessageRef | undefined; key: string }): Promise<{ ref: MessageRef } | undefined>;
  /**
   * Attaches a file to the thread of `thread` (the run's evidence export). `key` names the upload
   * for logs and for adapters that can store it; whether an upload already happened is the
   * outbox's record, since chats cannot be asked for a file by key.
   */
  uploadFile(input: { channel: ChannelRef; thread: MessageRef; filename: string; title: string; content: string; key: string }): Promise<{ ref: string }>;
  /** A link a person can open to reach the message (used in PR bodies to point back to the thread). */
  permalink(input: { channel: ChannelRef; ref: MessageRef }): Promise<string | undefined>;
  /** The ids this chat owns, which of them are groups and who is in a group (policy checks, authorisation). */
  principals: PrincipalDirectory;
}

/** A slash command as any adapter delivers it, already verified by the adapter. */
export interface CommandEvent {
  /** The command name as typed, e.g. `/ship`. */
  command: string;
  /** The arguments as plain text (platform markup already resolved by the adapter). */
  text: string;
  userId: PrincipalId;
  userName?: string | undefined;
  /**
   * Groups the chat vouches the user is in at this very event (Discord: the roles on the
   * interaction's member, as `discord:role:<id>`), for chats whose directory cannot list a group's
   * members. Authorisation counts them like listed membership (src/domain/principals.ts).
   */
  groups?: readonly PrincipalId[] | undefined;
  channelId: ChannelRef;
  /** Unique per invocation and identical on redelivery (Slack's trigger_id); makes retries no-ops. */
  deliveryId: string;
}

/** A button press. */
export interface ActionEvent {
  actionId: string;
  value: string;
  userId: PrincipalId;
  /** The clicker's name as the chat gave it (evidence for people; the id is what authorises). */
  userName?: string | undefined;
  /**
   * Set when the click comes back from the dialog a `CommandReply.askReason` opened: what the person
   * typed ('' when they gave none). Undefined on the button press itself.
   */
  reason?: string | undefined;
  /**
   * Groups the chat vouches the user is in at this very event (Discord: the roles on the
   * interaction's member, as `discord:role:<id>`), for chats whose directory cannot list a group's
   * members. Authorisation counts them like listed membership (src/domain/principals.ts).
   */
  groups?: readonly PrincipalId[] | undefined;
  channelId: ChannelRef;
  message?: MessageRef | undefined;
  /** Identical on redelivery of the same click (Slack's action_ts + user). */
  deliveryId: string;
}

/**
 * A mention of the bot by a person (SPEC §2): inside a run's thread it is a
 * follow-up instruction for that run's agent. Adapters drop mentions written
 * by bots (shipgate included) before they get here.
 */
export interface MentionEvent {
  /** The instruction as plain text: the leading mention of the bot removed, other markup resolved. */
  text: string;
  /** The principals the text mentions besides the bot, in order. */
  mentions: PrincipalId[];
  userId: PrincipalId;
  channelId: ChannelRef;
  /** The thread's root message (the run's card) when the mention was a thread reply. */
  thread: MessageRef | undefined;
  /** The mention message itself. */
  message: MessageRef;
  /** Identical on redelivery (Slack's Events API event_id); makes retries no-ops. */
  deliveryId: string;
  /**
   * Set by adapters that address runs by id instead of by thread (the console);
   * when present it wins over channel + thread.
   */
  runId?: string | undefined;
}

/** What the adapter sends back to the person who typed or clicked, right away. */
export interface CommandReply {
  /** Only the requester sees it (errors, help, status). */
  ephemeral?: RichText | undefined;
  /**
   * Asks the clicker for a reason before the click is decided (a Reject): the adapter opens its
   * dialog (Slack: a modal) and delivers the same action again with `reason` set. An adapter that
   * cannot ask delivers it again at once with `reason: ''`.
   */
  askReason?: { title: string; label: string; submit: string } | undefined;
}

/** Handlers the adapters call; they must answer fast (Slack acks within 3 s). */
export interface ChatHandlers {
  onCommand(event: CommandEvent): Promise<CommandReply>;
  onAction(event: ActionEvent): Promise<CommandReply>;
  /** Optional: without it adapters acknowledge mentions and do nothing. */
  onMention?(event: MentionEvent): Promise<CommandReply>;
  /** The chat says a group's members changed (Slack's `subteam_members_changed`): cached membership must be read again. */
  onGroupChanged?(groupId: PrincipalId): Promise<void>;
}
