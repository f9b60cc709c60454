//! The writes an entry causes. A store applies one entry's changes and the
//! new applied index in one atomic batch.

use bytes::Bytes;
use relay_types::{MessageId, MessageRecord, Route, TraceEvent};

/// One write to the replicated state.
#[derive(Clone, Debug, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "changes live only while one entry is applied; boxing buys nothing"
)]
pub enum Change {
    /// A new message: record, body, and its index entries.
    Insert {
        /// The metadata.
        record: MessageRecord,
        /// The body bytes.
        body: Bytes,
    },
    /// A message's metadata changed. `before` lets the store drop stale
    /// index keys (owner, due time) without reading again.
    Update {
        /// The record as stored before.
        before: MessageRecord,
        /// The record to store.
        after: MessageRecord,
    },
    /// The message is finished or deleted: record, body and index keys go,
    /// and its id is remembered as finished (see [`Change::PruneHistory`]),
    /// so a late copy of the same message is refused as a duplicate.
    Remove {
        /// The record as stored before.
        record: MessageRecord,
    },
    /// Set a route.
    PutRoute {
        /// Normalised domain.
        domain: String,
        /// Targets and TLS policy.
        route: Route,
    },
    /// Remove a route.
    RemoveRoute {
        /// Normalised domain.
        domain: String,
    },
    /// Forget trace events and finished-id records of messages whose ids
    /// sort below `before`, except for messages still queued: trace pruning
    /// stops at the oldest queued message id.
    PruneHistory {
        /// The first id kept ([`MessageId::first_at`] of the entry's time).
        before: MessageId,
    },
    /// Mark a node drained (in maintenance) or in service again; the set
    /// of drained nodes is part of the replicated state.
    SetDrained {
        /// The node.
        node: relay_types::NodeId,
        /// Drained (`true`) or in service.
        drained: bool,
    },
    /// Append to a message's trace.
    Trace {
        /// The message.
        id: MessageId,
        /// The event.
        event: TraceEvent,
    },
}
