//! When this node last heard from a leader it accepted.
//!
//! openraft 0.9's metrics tell a leader how long ago a quorum acked it
//! (`millis_since_quorum_ack`) but tell a follower nothing about how
//! recently its leader spoke. Readiness and the status page need both, so
//! the Raft gRPC service records every AppendEntries (heartbeats included)
//! that this node accepted, with the commit index the leader sent.
//!
//! The delivery lease (`Cluster::holds_lease`) reads it too: after a gap in
//! contact longer than the lease, the node must first apply what the leader
//! had committed when contact resumed ([`LeaderContact::catch_up_to`]).

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
    state: Mutex<ContactState>,
}

#[derive(Debug, Default, Clone, Copy)]
struct ContactState {
    last: Option<Contact>,
    catch_up_to: u64,
}

impl LeaderContact {
    /// Records an accepted AppendEntries from `leader`. If the previous one
    /// is older than `gap` (or there was none), `leader_commit` becomes the
    /// index this node must apply before it delivers again.
    pub fn record(&self, leader: NodeId, leader_commit: u64, gap: std::time::Duration) {
        let now = Instant::now();
        // A poisoned lock only means a panic elsewhere; the value is plain data.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.last.is_none_or(|c| now.duration_since(c.at) >= gap) {
            state.catch_up_to = leader_commit;
        }
        state.last = Some(Contact {
            at: now,
            leader,
            leader_commit,
        });
    }

    /// The last accepted AppendEntries, if any since start.
    pub fn last(&self) -> Option<Contact> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).last
    }

    /// The leader's commit index at the first contact after the last gap.
    pub fn catch_up_to(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .catch_up_to
    }
}
