//! When this node last heard from a leader it accepted.
//!
//! openraft 0.9's metrics tell a leader how long ago a quorum acked it
//! (`millis_since_quorum_ack`) but tell a follower nothing about how
//! recently its leader spoke. Readiness and the status page need both, so
//! the Raft gRPC service records every AppendEntries (heartbeats included)
//! that this node accepted, with the commit index the leader sent.
//!
//! The start lease (`Cluster::may_start_delivery`) reads it too: a
//! follower's contact counts only as long as the leader's own quorum lease
//! it carried, and after a gap in contact the node must first apply what
//! the leader had committed when contact resumed
//! ([`LeaderContact::caught_up`]).

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
    /// How long before sending it a quorum had last acknowledged the
    /// leader (zero from a leader that does not say). A follower's proof
    /// of a working cluster is never fresher than its leader's.
    pub leader_quorum_age: std::time::Duration,
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
    /// The first contact after the last gap.
    resumed_at: Option<Instant>,
}

impl LeaderContact {
    /// Records an accepted AppendEntries from `leader`. If the previous one
    /// is older than `gap` (or there was none), contact *resumes*: for the
    /// next `settle`, the highest `leader_commit` seen becomes the index
    /// this node must apply before it delivers again. (Right after an
    /// election the leader's commit index can trail what was committed
    /// before; it catches up once the leader commits in its own term, within
    /// a round trip, so one election timeout of watching covers it.)
    pub fn record(
        &self,
        received: Instant,
        leader: NodeId,
        leader_commit: u64,
        leader_quorum_age: std::time::Duration,
        gap: std::time::Duration,
        settle: std::time::Duration,
    ) {
        let now = received;
        // A poisoned lock only means a panic elsewhere; the value is plain data.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.last.is_none_or(|c| now.duration_since(c.at) >= gap) {
            state.catch_up_to = leader_commit;
            state.resumed_at = Some(now);
        } else if state
            .resumed_at
            .is_some_and(|t| now.duration_since(t) < settle)
        {
            state.catch_up_to = state.catch_up_to.max(leader_commit);
        }
        // Requests can finish out of order: keep the newest.
        if state.last.is_some_and(|c| c.at > now) {
            return;
        }
        state.last = Some(Contact {
            at: now,
            leader,
            leader_commit,
            leader_quorum_age,
        });
    }

    /// The last accepted AppendEntries, if any since start.
    pub fn last(&self) -> Option<Contact> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).last
    }

    /// Whether contact has resumed for at least `settle` and `applied`
    /// reached what the leader had committed meanwhile (the delivery lease's
    /// catch-up condition; freshness is checked separately).
    pub fn caught_up(&self, applied: u64, settle: std::time::Duration) -> bool {
        let state = *self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.resumed_at.is_some_and(|t| t.elapsed() >= settle) && applied >= state.catch_up_to
    }
}
