//! What the rest of the node may know about Raft: a plain snapshot of this
//! node's role, log positions and membership, taken from openraft's
//! metrics.
//!
//! The node crate (readiness, gauges, the admin service, the test fixture)
//! reads these instead of openraft's own types, so openraft stays behind
//! this crate's API: the consensus library can change line (0.9 → 0.10)
//! without touching anything above the cluster. The one value openraft
//! reports that nothing may rely on, its leader's `millis_since_quorum_ack`
//! (not refreshed while the leader is cut off), is replaced here by this
//! crate's own quorum proof (see [`crate::ownership`]).

use std::collections::BTreeMap;
use std::time::Duration;

use openraft::{BasicNode, RaftMetrics, ServerState};
use relay_types::NodeId;
use tokio::sync::watch;

/// This node's Raft role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Leads the cluster.
    Leader,
    /// A voter following a leader (or waiting for one).
    Follower,
    /// A voter asking for votes.
    Candidate,
    /// A non-voting member receiving the log.
    Learner,
    /// Raft stopped in this process.
    Shutdown,
}

impl Role {
    /// Lower-case name, as shown by `relayctl status` and the status page.
    pub fn name(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Learner => "learner",
            Role::Shutdown => "shutdown",
        }
    }

    pub(crate) fn from_state(state: ServerState) -> Self {
        match state {
            ServerState::Leader => Role::Leader,
            ServerState::Follower => Role::Follower,
            ServerState::Candidate => Role::Candidate,
            ServerState::Learner => Role::Learner,
            ServerState::Shutdown => Role::Shutdown,
        }
    }
}

/// One reading of this node's Raft state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaftView {
    /// This node.
    pub id: NodeId,
    /// Its role now.
    pub role: Role,
    /// Why Raft stopped in this process (a storage or network fatal
    /// error); `None` while it runs.
    pub stopped: Option<String>,
    /// The current term.
    pub term: u64,
    /// The leader this node knows of.
    pub leader: Option<NodeId>,
    /// Index of the last entry in this node's log (0: empty).
    pub last_log_index: u64,
    /// Index of the last entry applied to the state machine (0: none).
    pub last_applied: u64,
    /// Index covered by the newest snapshot.
    pub snapshot_index: Option<u64>,
    /// Index up to which the log was purged.
    pub purged_index: Option<u64>,
    /// Voting members.
    pub voters: Vec<NodeId>,
    /// Every member, voters and learners.
    pub members: Vec<NodeId>,
    /// On the leader only: the highest index each member (the leader
    /// included) is known to hold.
    pub matched: Option<BTreeMap<NodeId, u64>>,
    /// On the leader only: how long ago a quorum last acknowledged an
    /// AppendEntries this leader sent (`None`: not yet).
    pub quorum_ack_age: Option<Duration>,
}

impl RaftView {
    /// Reads openraft's metrics; `quorum_ack_age` comes from the caller
    /// (this crate's own quorum proof).
    pub(crate) fn from_metrics(
        m: &RaftMetrics<NodeId, BasicNode>,
        quorum_ack_age: Option<Duration>,
    ) -> Self {
        let role = Role::from_state(m.state);
        let matched = m.replication.as_ref().map(|r| {
            r.iter()
                .map(|(id, log)| (*id, log.map_or(0, |l| l.index)))
                .collect()
        });
        RaftView {
            id: m.id,
            role,
            stopped: m.running_state.as_ref().err().map(|e| e.to_string()),
            term: m.current_term,
            leader: m.current_leader,
            last_log_index: m.last_log_index.unwrap_or(0),
            last_applied: m.last_applied.map_or(0, |l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            voters: m.membership_config.membership().voter_ids().collect(),
            members: m.membership_config.nodes().map(|(id, _)| *id).collect(),
            matched,
            quorum_ack_age: if role == Role::Leader {
                quorum_ack_age
            } else {
                None
            },
        }
    }

    /// A view of a node that has not joined a cluster yet (tests start
    /// from it).
    pub fn initial(id: NodeId) -> Self {
        RaftView {
            id,
            role: Role::Follower,
            stopped: None,
            term: 0,
            leader: None,
            last_log_index: 0,
            last_applied: 0,
            snapshot_index: None,
            purged_index: None,
            voters: Vec::new(),
            members: Vec::new(),
            matched: None,
            quorum_ack_age: None,
        }
    }

    /// Leader now?
    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }
}

/// Follows this node's [`RaftView`] as openraft publishes changes.
///
/// The quorum-ack age in each reading is computed when it is read, so it
/// moves with time even when openraft publishes nothing.
pub struct ViewWatch {
    pub(crate) metrics: watch::Receiver<RaftMetrics<NodeId, BasicNode>>,
    pub(crate) cluster: std::sync::Arc<crate::Cluster>,
}

impl std::fmt::Debug for ViewWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewWatch").finish_non_exhaustive()
    }
}

/// Raft stopped publishing (the node is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("raft stopped publishing its state")]
pub struct ViewClosed;

impl ViewWatch {
    /// The current reading, marking it seen.
    pub fn current(&mut self) -> RaftView {
        let m = self.metrics.borrow_and_update();
        RaftView::from_metrics(&m, self.cluster.quorum_ack_age(&m))
    }

    /// Waits for openraft to publish a change.
    pub async fn changed(&mut self) -> Result<(), ViewClosed> {
        self.metrics.changed().await.map_err(|_| ViewClosed)
    }

    /// Waits until a reading satisfies `pred`, and returns it.
    pub async fn wait_for(
        &mut self,
        mut pred: impl FnMut(&RaftView) -> bool,
    ) -> Result<RaftView, ViewClosed> {
        loop {
            let view = self.current();
            if pred(&view) {
                return Ok(view);
            }
            self.changed().await?;
        }
    }
}
