//! Readiness: can this node commit a message right now?
//!
//! "Knows a leader" is not enough: a leader cut off from its followers
//! keeps calling itself leader (openraft 0.9 leaders do not step down on
//! their own), and a follower cut off from its leader keeps naming it
//! until its election timer fires. So readiness asks for recent proof:
//!
//! - a leader is ready when a quorum acknowledged it within the window
//!   (the cluster crate's own proof: send times of AppendEntries a quorum
//!   accepted), or when it is the only voter;
//! - a follower or learner is ready when it accepted an AppendEntries
//!   (heartbeats included) from the leader it names within the window.
//!
//! The window is two maximum election timeouts: a healthy leader sends a
//! heartbeat every `heartbeat` (well below one election timeout), so a
//! longer silence means it is gone or unreachable.

use std::time::Duration;

use relay_cluster::{Contact, RaftView, Role};

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

/// Decides readiness from this node's Raft view, the last leader contact
/// and its age, and the window (two maximum election timeouts).
pub fn readiness(
    m: &RaftView,
    contact: Option<(Contact, Duration)>,
    window: Duration,
) -> Readiness {
    use Readiness::{NotReady, Ready};
    if let Some(e) = &m.stopped {
        return NotReady(format!("raft stopped: {e}"));
    }
    let voters = m.voters.len();
    if voters == 0 {
        return NotReady("not in a cluster yet".into());
    }
    let window_ms = window.as_millis() as u64;
    match m.role {
        Role::Leader => {
            if voters == 1 {
                return Ready("leader of a one-voter cluster".into());
            }
            match m.quorum_ack_age.map(|age| age.as_millis() as u64) {
                Some(ms) if ms <= window_ms => {
                    Ready(format!("leader; a quorum acknowledged {ms} ms ago"))
                }
                Some(ms) => NotReady(format!(
                    "leader without a quorum: last acknowledged {ms} ms ago (limit {window_ms} ms)"
                )),
                None => NotReady("leader not yet acknowledged by a quorum".into()),
            }
        }
        Role::Candidate => NotReady("election in progress; no leader".into()),
        Role::Shutdown => NotReady("raft is shutting down".into()),
        Role::Follower | Role::Learner => {
            let Some(leader) = m.leader else {
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
    use std::time::Instant;

    use relay_types::NodeId;

    use super::*;

    const WINDOW: Duration = Duration::from_secs(2);

    fn metrics(id: NodeId, voters: &[NodeId]) -> RaftView {
        RaftView {
            voters: voters.to_vec(),
            members: voters.to_vec(),
            ..RaftView::initial(id)
        }
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
        let m = RaftView::initial(1);
        assert!(!readiness(&m, None, WINDOW).is_ready());
    }

    #[test]
    fn leader_needs_a_recent_quorum_ack() {
        let mut m = metrics(1, &[1, 2, 3]);
        m.role = Role::Leader;
        m.leader = Some(1);
        m.quorum_ack_age = Some(Duration::from_millis(150));
        assert!(readiness(&m, None, WINDOW).is_ready());
        m.quorum_ack_age = Some(Duration::from_secs(5));
        let r = readiness(&m, None, WINDOW);
        assert!(!r.is_ready());
        assert!(r.reason().contains("without a quorum"), "{r:?}");
        m.quorum_ack_age = None;
        assert!(!readiness(&m, None, WINDOW).is_ready());
    }

    #[test]
    fn follower_needs_a_recent_heartbeat_from_the_leader_it_names() {
        let mut m = metrics(2, &[1, 2, 3]);
        m.role = Role::Follower;
        assert_eq!(
            readiness(&m, None, WINDOW),
            Readiness::NotReady("no known leader".into())
        );
        m.leader = Some(1);
        assert!(!readiness(&m, None, WINDOW).is_ready());
        assert!(readiness(&m, contact(1, Duration::from_millis(100)), WINDOW).is_ready());
        assert!(!readiness(&m, contact(1, Duration::from_secs(3)), WINDOW).is_ready());
        // Heard from an old leader only.
        assert!(!readiness(&m, contact(3, Duration::from_millis(100)), WINDOW).is_ready());
    }

    #[test]
    fn candidate_is_not_ready() {
        let mut m = metrics(2, &[1, 2, 3]);
        m.role = Role::Candidate;
        assert!(!readiness(&m, contact(1, Duration::from_millis(1)), WINDOW).is_ready());
    }
}
