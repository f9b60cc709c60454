//! When this node last heard from a leader it accepted.
//!
//! openraft 0.9's metrics tell a leader how long ago a quorum acked it
//! (`millis_since_quorum_ack`) but tell a follower nothing about how
//! recently its leader spoke. Readiness and the status page need both, so
//! the Raft gRPC service records every AppendEntries (heartbeats included)
//! that this node accepted, with the commit index the leader sent.

use std::sync::Mutex;
use std::time::Instant;

use relay_types::NodeId;

/// One accepted AppendEntries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Contact {
    /// When it was answered.
    pub at: Instant,
    /// The leader that sent it.
    pub leader: NodeId,
    /// The leader's commit index in it (0: nothing committed yet).
    pub leader_commit: u64,
}

/// The last [`Contact`], shared between the gRPC service and readers.
#[derive(Debug, Default)]
pub struct LeaderContact {
    last: Mutex<Option<Contact>>,
}

impl LeaderContact {
    /// Records an accepted AppendEntries from `leader`.
    pub fn record(&self, leader: NodeId, leader_commit: u64) {
        let contact = Contact {
            at: Instant::now(),
            leader,
            leader_commit,
        };
        // A poisoned lock only means a panic elsewhere; the value is plain data.
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(contact);
    }

    /// The last accepted AppendEntries, if any since start.
    pub fn last(&self) -> Option<Contact> {
        *self.last.lock().unwrap_or_else(|p| p.into_inner())
    }
}
