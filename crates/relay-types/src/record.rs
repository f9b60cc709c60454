//! What the state machine keeps per queued message (everything but the body).

use serde::{Deserialize, Serialize};

use crate::command::{Enqueue, MessageInfo};
use crate::envelope::Envelope;
use crate::id::{MessageId, NodeId};
use crate::time::UnixMillis;

/// Where one recipient stands.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RecipientStatus {
    /// Not finished; `last_reply` is the last deferral's reply, if any.
    Pending {
        /// The last 4xx reply or connection error.
        last_reply: Option<String>,
    },
    /// The target accepted it.
    Delivered {
        /// When.
        at: UnixMillis,
    },
    /// Permanently failed (5xx or expiry); a DSN was enqueued if wanted.
    Failed {
        /// When.
        at: UnixMillis,
        /// The reply that failed it.
        reply: String,
    },
}

impl RecipientStatus {
    /// Still to be delivered.
    pub fn is_pending(&self) -> bool {
        matches!(self, RecipientStatus::Pending { .. })
    }
}

/// An operator hold.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Hold {
    /// Who held it.
    pub by: String,
    /// Why.
    pub reason: String,
    /// When.
    pub at: UnixMillis,
}

/// The queue state a message is in, for counts and listings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MessageState {
    /// Never attempted yet.
    Queued,
    /// Attempted at least once, some recipients still pending.
    Deferred,
    /// Held by an operator.
    Held,
}

impl MessageState {
    /// Lower-case name (`queued`, `deferred`, `held`).
    pub fn as_str(&self) -> &'static str {
        match self {
            MessageState::Queued => "queued",
            MessageState::Deferred => "deferred",
            MessageState::Held => "held",
        }
    }
}

/// Counts by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct QueueCounts {
    /// Never attempted.
    pub queued: u64,
    /// Attempted, pending.
    pub deferred: u64,
    /// Held.
    pub held: u64,
}

/// A queued message's metadata as every replica stores it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MessageRecord {
    /// Id.
    pub id: MessageId,
    /// When accepted.
    pub received_at: UnixMillis,
    /// Which node ran the SMTP session.
    pub accepted_by: NodeId,
    /// Which node delivers it now.
    pub owner: NodeId,
    /// The envelope.
    pub envelope: Envelope,
    /// Header facts.
    pub info: MessageInfo,
    /// SHA-256 of the body.
    pub checksum: [u8; 32],
    /// Bounce instead of retrying after this.
    pub expires_at: UnixMillis,
    /// Per recipient, parallel to `envelope.recipients`.
    pub recipients: Vec<RecipientStatus>,
    /// Attempts so far.
    pub attempts: u32,
    /// Due time for the next attempt.
    pub next_attempt_at: UnixMillis,
    /// The target tried last, if any.
    pub last_target: Option<String>,
    /// Set while an operator holds it.
    pub held: Option<Hold>,
}

impl MessageRecord {
    /// The record an `Enqueue` creates.
    pub fn from_enqueue(e: &Enqueue) -> Self {
        MessageRecord {
            id: e.id,
            received_at: e.received_at,
            accepted_by: e.accepted_by,
            owner: e.owner,
            envelope: e.envelope.clone(),
            info: e.info.clone(),
            checksum: e.checksum,
            expires_at: e.expires_at,
            recipients: vec![
                RecipientStatus::Pending { last_reply: None };
                e.envelope.recipients.len()
            ],
            attempts: 0,
            next_attempt_at: e.received_at,
            last_target: None,
            held: None,
        }
    }

    /// The message's state for counts.
    pub fn state(&self) -> MessageState {
        if self.held.is_some() {
            MessageState::Held
        } else if self.attempts > 0 {
            MessageState::Deferred
        } else {
            MessageState::Queued
        }
    }

    /// Indexes of recipients still pending.
    pub fn pending_indexes(&self) -> Vec<u32> {
        self.recipients
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_pending())
            .map(|(i, _)| i as u32)
            .collect()
    }

    /// True when no recipient is pending: the message is finished.
    pub fn is_finished(&self) -> bool {
        !self.recipients.iter().any(RecipientStatus::is_pending)
    }

    /// The envelope (convenience).
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }
}

/// One line of a message's replicated history (`relayctl trace`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TraceEvent {
    /// The log index of the entry that caused it.
    pub index: u64,
    /// The time carried by that entry.
    pub at: UnixMillis,
    /// Who acted (`node 2`, an operator name).
    pub by: String,
    /// What happened, for people.
    pub what: String,
}

impl TraceEvent {
    /// Builds an event.
    pub fn new(index: u64, at: UnixMillis, by: impl Into<String>, what: impl Into<String>) -> Self {
        TraceEvent {
            index,
            at,
            by: by.into(),
            what: what.into(),
        }
    }
}

/// Who a node id is, in traces.
pub fn node_name(id: NodeId) -> String {
    format!("node {id}")
}
