//! Readiness: can this node commit a message right now?
//!
//! "Knows a leader" is not enough: a leader cut off from its followers
//! keeps calling itself leader (openraft 0.9 leaders do not step down on
//! their own), and a follower cut off from its leader keeps naming it
//! until its election timer fires. So readiness asks for recent proof:
//!
//! - a leader is ready when a quorum acknowledged it within the window
//!   (`millis_since_quorum_ack`), or when it is the only voter;
//! - a follower or learner is ready when it accepted an AppendEntries
//!   (heartbeats included) from the leader it names within the window.
//!
//! The window is two maximum election timeouts: a healthy leader sends a
//! heartbeat every `heartbeat` (well below one election timeout), so a
//! longer silence means it is gone or unreachable.

use std::time::Duration;

use openraft::{BasicNode, RaftMetrics, ServerState};
use relay_cluster::Contact;
use relay_types::NodeId;

/// The verdict with a one-line reason, for `/readyz` and the status page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Can commit; why we think so.
    Ready(String),
    /// Cannot commit now; why.
    NotReady(String),
}

impl Readiness {
    /// Ready?
    pub fn is_ready(&self) -> bool {
        matches!(self, Readiness::Ready(_))
    }

    /// The one-line reason.
    pub fn reason(&self) -> &str {
        match self {
            Readiness::Ready(r) | Readiness::NotReady(r) => r,
        }
    }
}

/// Decides readiness from openraft's metrics, the last leader contact and
/// its age, and the window (two maximum election timeouts).
pub fn readiness(
    m: &RaftMetrics<NodeId, BasicNode>,
    contact: Option<(Contact, Duration)>,
    window: Duration,
) -> Readiness {
    use Readiness::{NotReady, Ready};
    if let Err(e) = &m.running_state {
        return NotReady(format!("raft stopped: {e}"));
    }
    let voters = m.membership_config.membership().voter_ids().count();
    if voters == 0 {
        return NotReady("not in a cluster yet".into());
    }
    let window_ms = window.as_millis() as u64;
    match m.state {
        ServerState::Leader => {
            if voters == 1 {
                return Ready("leader of a one-voter cluster".into());
            }
            match m.millis_since_quorum_ack {
                Some(ms) if ms <= window_ms => {
                    Ready(format!("leader; a quorum acknowledged {ms} ms ago"))
                }
                Some(ms) => NotReady(format!(
                    "leader without a quorum: last acknowledged {ms} ms ago (limit {window_ms} ms)"
                )),
                None => NotReady("leader not yet acknowledged by a quorum".into()),
            }
        }
        ServerState::Candidate => NotReady("election in progress; no leader".into()),
        ServerState::Shutdown => NotReady("raft is shutting down".into()),
        ServerState::Follower | ServerState::Learner => {
            let Some(leader) = m.current_leader else {
                return NotReady("no known leader".into());
            };
            match contact {
                Some((c, age)) if c.leader == leader && age <= window => Ready(format!(
                    "follower of node {leader}; heard from it {} ms ago",
                    age.as_millis()
                )),
                Some((c, age)) if c.leader == leader => NotReady(format!(
                    "no heartbeat from leader node {leader} for {} ms (limit {window_ms} ms)",
                    age.as_millis()
                )),
                _ => NotReady(format!("no heartbeat from leader node {leader} yet")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Arc;
    use std::time::Instant;

    use openraft::{Membership, StoredMembership};

    use super::*;

    const WINDOW: Duration = Duration::from_secs(2);

    fn metrics(id: NodeId, voters: &[NodeId]) -> RaftMetrics<NodeId, BasicNode> {
        let mut m = RaftMetrics::new_initial(id);
        let nodes: BTreeMap<NodeId, BasicNode> = voters
            .iter()
            .map(|v| (*v, BasicNode::new(format!("127.0.0.1:{v}"))))
            .collect();
        let set: BTreeSet<NodeId> = voters.iter().copied().collect();
        let membership = Membership::new(vec![set], nodes);
        m.membership_config = Arc::new(StoredMembership::new(None, membership));
        m
    }

    fn contact(leader: NodeId, age: Duration) -> Option<(Contact, Duration)> {
        Some((
            Contact {
                at: Instant::now(),
                leader,
                leader_commit: 0,
                leader_quorum_age: Duration::ZERO,
            },
            age,
        ))
    }

    #[test]
    fn uninitialised_node_is_not_ready() {
        let m = RaftMetrics::<NodeId, BasicNode>::new_initial(1);
        assert!(!readiness(&m, None, WINDOW).is_ready());
    }

    #[test]
    fn leader_needs_a_recent_quorum_ack() {
        let mut m = metrics(1, &[1, 2, 3]);
        m.state = ServerState::Leader;
        m.current_leader = Some(1);
        m.millis_since_quorum_ack = Some(150);
        assert!(readiness(&m, None, WINDOW).is_ready());
        m.millis_since_quorum_ack = Some(5_000);
        let r = readiness(&m, None, WINDOW);
        assert!(!r.is_ready());
        assert!(r.reason().contains("without a quorum"), "{r:?}");
        m.millis_since_quorum_ack = None;
        assert!(!readiness(&m, None, WINDOW).is_ready());
    }

    #[test]
    fn follower_needs_a_recent_heartbeat_from_the_leader_it_names() {
        let mut m = metrics(2, &[1, 2, 3]);
        m.state = ServerState::Follower;
        assert_eq!(
            readiness(&m, None, WINDOW),
            Readiness::NotReady("no known leader".into())
        );
        m.current_leader = Some(1);
        assert!(!readiness(&m, None, WINDOW).is_ready());
        assert!(readiness(&m, contact(1, Duration::from_millis(100)), WINDOW).is_ready());
        assert!(!readiness(&m, contact(1, Duration::from_secs(3)), WINDOW).is_ready());
        // Heard from an old leader only.
        assert!(!readiness(&m, contact(3, Duration::from_millis(100)), WINDOW).is_ready());
    }

    #[test]
    fn candidate_is_not_ready() {
        let mut m = metrics(2, &[1, 2, 3]);
        m.state = ServerState::Candidate;
        assert!(!readiness(&m, contact(1, Duration::from_millis(1)), WINDOW).is_ready());
    }
}
