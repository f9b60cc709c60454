//! The replicated log entries (openraft's application data) and their results.
//!
//! Every decision a replica needs (ids, timestamps, next attempt, owner, the
//! DSN to enqueue) is made by the proposer and carried here, so `apply` is a
//! pure function of the state and the entry.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::envelope::Envelope;
use crate::id::{MessageId, NodeId};
use crate::route::Route;
use crate::time::UnixMillis;

/// What the accepting node learnt from the message's headers, for listings
/// and traces.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MessageInfo {
    /// The `Message-ID:` header, if present.
    pub message_id_header: Option<String>,
    /// The `Subject:` header, if present (may be cut to 200 characters).
    pub subject: Option<String>,
    /// Body size in octets as stored (with the Received header).
    pub size: u64,
}

/// A message accepted by a node, to be stored on every replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enqueue {
    /// Time-ordered id, chosen by the accepting node.
    pub id: MessageId,
    /// When the accepting node received the final `.`/BDAT LAST.
    pub received_at: UnixMillis,
    /// The node that ran the SMTP session.
    pub accepted_by: NodeId,
    /// The node that delivers it (initially the accepting node).
    pub owner: NodeId,
    /// The envelope.
    pub envelope: Envelope,
    /// Header facts for listings.
    pub info: MessageInfo,
    /// SHA-256 of `body`, checked at apply time and before delivery.
    pub checksum: [u8; 32],
    /// Queue lifetime end: past this, the owner bounces instead of retrying.
    pub expires_at: UnixMillis,
    /// The message as stored: `Received:` header + the bytes the client sent,
    /// dot-unstuffed, CRLF line ends.
    pub body: Bytes,
}

/// Result of one delivery attempt for one recipient.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AttemptOutcome {
    /// The target answered 2xx: this recipient is finished.
    Delivered,
    /// 4xx or connection failure: retry at `next_attempt_at`.
    Deferred,
    /// 5xx or expiry: finished, bounced (a DSN rides in the same entry).
    Failed,
}

/// The outcome for one recipient (by index into `Envelope::recipients`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RecipientOutcome {
    /// Index into the envelope's recipients.
    pub index: u32,
    /// What happened.
    pub outcome: AttemptOutcome,
    /// The target's reply text (or a local description such as
    /// `connection refused`).
    pub reply: String,
}

/// Operator queue actions (postsuper-like).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AdminAction {
    /// Stop delivering until released.
    Hold,
    /// Undo a hold; due now.
    Release,
    /// Remove the message everywhere (audited).
    Delete,
    /// Make it due now (`relayctl queue flush`).
    RetryNow,
}

/// Which queued messages a command acts on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MessageFilter {
    /// Only messages owned by this node.
    pub owner: Option<NodeId>,
    /// Only messages with a recipient in this domain.
    pub to_domain: Option<String>,
    /// Only messages with this reverse path (case-insensitive).
    pub from: Option<String>,
    /// Only messages received before this time.
    pub received_before: Option<UnixMillis>,
    /// Only held (`Some(true)`) or only not held (`Some(false)`) messages.
    pub held: Option<bool>,
}

/// Ids, or a filter evaluated against the replicated state at apply time
/// (deterministic: every replica sees the same state at that index).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Selector {
    /// Exactly these messages (unknown ids are skipped).
    Ids(Vec<MessageId>),
    /// Every message matching the filter (an empty filter is "all").
    Filter(MessageFilter),
}

/// A replicated log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Store a new message.
    Enqueue(Box<Enqueue>),
    /// Record one delivery attempt by the owner.
    Attempt {
        /// The message.
        id: MessageId,
        /// The node that attempted (must be the owner at apply time).
        by: NodeId,
        /// When the attempt finished.
        at: UnixMillis,
        /// The target that answered (or was tried last).
        target: String,
        /// Per-recipient outcomes; recipients not listed are unchanged.
        outcomes: Vec<RecipientOutcome>,
        /// When to try the still-pending recipients again.
        next_attempt_at: UnixMillis,
        /// A delivery status notification to enqueue atomically with the
        /// failure, so a bounce can never be lost between two entries.
        dsn: Option<Box<Enqueue>>,
    },
    /// The target accepted every pending recipient: finished.
    Delivered {
        /// The message.
        id: MessageId,
        /// The delivering node (must be the owner at apply time).
        by: NodeId,
        /// When the target's final 250 arrived.
        at: UnixMillis,
        /// The target that accepted it.
        target: String,
        /// The target's reply text.
        reply: String,
    },
    /// Change the owner of the selected messages.
    Reassign {
        /// Which messages (usually `Filter { owner: Some(dead) }`).
        selector: Selector,
        /// The new owner.
        to: NodeId,
        /// When the leader decided.
        at: UnixMillis,
    },
    /// An audited operator action.
    Admin {
        /// What to do.
        action: AdminAction,
        /// Which messages.
        selector: Selector,
        /// Who asked (operator identity as given to relayctl).
        by: String,
        /// Why (free text, kept in the trace).
        reason: String,
        /// When.
        at: UnixMillis,
    },
    /// Set a domain's route cluster-wide.
    SetRoute {
        /// The domain (normalised by the proposer).
        domain: String,
        /// Where it goes.
        route: Route,
    },
    /// Remove a domain's route.
    RemoveRoute {
        /// The domain.
        domain: String,
    },
    /// Several message commands committed as one log entry (group commit:
    /// the leader's submit batcher packs concurrent proposals into one
    /// Raft append and one fsync per node). Applied in order, each seeing
    /// the changes of those before it, all in one atomic write. Only
    /// [`Command::batchable`] commands may ride in a batch; anything else
    /// is rejected on its own, deterministically, without affecting the
    /// others.
    Batch(Vec<Command>),
    /// A delivery that is, or may be, a second copy at the target, recorded
    /// in the message's trace: the target accepted but the report was
    /// refused (ownership had moved, or the message was already finished),
    /// or an earlier attempt's reply to the final dot was lost (the target
    /// may have accepted that one too). Changes nothing else.
    DuplicateDelivered {
        /// The message.
        id: MessageId,
        /// The node that delivered it.
        by: NodeId,
        /// When it noticed.
        at: UnixMillis,
        /// The target that accepted it.
        target: String,
        /// The target's reply text.
        reply: String,
        /// Why it is a duplicate, for people.
        why: String,
    },
    /// One takeover decision: every message owned by `from` goes to the
    /// nodes in `to`, spread in turn in message-id order (deterministic, so
    /// every replica computes the same new owners). One entry, so a node
    /// that comes back while it is decided either sees all of it or none.
    TakeOver {
        /// The owner that is dead, removed or no longer a voter.
        from: NodeId,
        /// The live voters that get its messages, in order.
        to: Vec<NodeId>,
        /// When the leader decided.
        at: UnixMillis,
    },
    /// Forget history of messages accepted before `before` (a time the
    /// leader put in the entry, never a clock in apply): their trace events
    /// and the records of their ids having finished. Messages still queued
    /// keep their traces (pruning stops at the oldest queued message).
    Prune {
        /// Messages accepted before this time lose their history.
        before: UnixMillis,
    },
    /// Take a node out of service for maintenance (`drained = true`), or
    /// put it back (`false`). Replicated, so it survives the node's
    /// restart: a drained node answers new SMTP connections with `421`,
    /// reports itself not ready, starts no delivery and stands for no
    /// election; the leader hands its queue on once its deliveries have
    /// finished (one `TakeOver`). Changes no message itself.
    Drain {
        /// The node.
        node: NodeId,
        /// In maintenance (`true`) or back in service.
        drained: bool,
        /// Who asked (operator identity as given to relayctl).
        by: String,
        /// When.
        at: UnixMillis,
    },
}

impl Command {
    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::Enqueue(_) => "enqueue",
            Command::Attempt { .. } => "attempt",
            Command::Delivered { .. } => "delivered",
            Command::Reassign { .. } => "reassign",
            Command::Admin { .. } => "admin",
            Command::SetRoute { .. } => "set_route",
            Command::RemoveRoute { .. } => "remove_route",
            Command::Batch(_) => "batch",
            Command::DuplicateDelivered { .. } => "duplicate_delivered",
            Command::TakeOver { .. } => "take_over",
            Command::Prune { .. } => "prune",
            Command::Drain { .. } => "drain",
        }
    }

    /// Whether this command may ride in a [`Command::Batch`]: the
    /// per-message commands that read and write single messages by id
    /// (never routes, never a filter over the whole queue, never a batch).
    pub fn batchable(&self) -> bool {
        matches!(
            self,
            Command::Enqueue(_)
                | Command::Attempt { .. }
                | Command::Delivered { .. }
                | Command::DuplicateDelivered { .. }
        )
    }
}

/// Most commands one [`Command::Batch`] may carry; a longer batch is
/// rejected whole.
pub const MAX_BATCH_COMMANDS: usize = 1024;

/// Why an entry changed nothing. Rejections are deterministic: every replica
/// rejects the same entry the same way.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    /// No such message (already finished, deleted, or never enqueued).
    #[error("no queued message {0}")]
    UnknownMessage(MessageId),
    /// The proposer does not own the message at this log index (fencing).
    #[error("node {by} does not own message {id} (owner is {owner})")]
    NotOwner {
        /// The message.
        id: MessageId,
        /// Who proposed.
        by: NodeId,
        /// The owner at apply time.
        owner: NodeId,
    },
    /// An `Enqueue` for an id that is already queued or already finished
    /// within the history window (a retried or re-forwarded proposal).
    #[error("message {0} is already queued or was already finished")]
    Duplicate(MessageId),
    /// The body does not match its checksum.
    #[error("message {0} body does not match its checksum")]
    ChecksumMismatch(MessageId),
    /// The entry is malformed (e.g. a recipient index out of range).
    #[error("invalid entry: {0}")]
    Invalid(String),
}

/// What applying an entry did: openraft's response type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    /// The message is stored.
    Enqueued(MessageId),
    /// The entry applied to `affected` messages (or routes).
    Applied {
        /// How many messages or routes changed.
        affected: u32,
    },
    /// The entry changed nothing, and why.
    Rejected(Rejection),
    /// One result per command of a [`Command::Batch`], in order.
    Batch(Vec<CommandResult>),
}
