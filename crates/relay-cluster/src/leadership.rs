//! Moving leadership to a chosen voter (`relayctl failover`).
//!
//! openraft 0.9 has no leadership-transfer API (it arrived in 0.10 as
//! `trigger().transfer_leader()`), and a plain `trigger().elect()` on a
//! follower usually loses: every other voter refuses to vote while it still
//! hears the leader (the leader lease, `election_timeout_max` long). So a
//! transfer is three steps, each an ordinary openraft call:
//!
//! 1. **pause** every voter except the target: `enable_elect(false)` (they
//!    will not compete) and `enable_heartbeat(false)` (the leader stops
//!    renewing the followers' lease);
//! 2. **elect** on the target, repeatedly, until it reports itself leader:
//!    it wins as soon as one other voter's lease has run out and the
//!    target's log is at least as long as that voter's (the old leader
//!    steps down when it sees the higher term);
//! 3. **resume** everyone.
//!
//! A pause ends by itself after its `millis` even if the coordinator dies
//! halfway, so a lost `relayctl` can never leave a cluster unable to elect.
//! A pause is at most [`MAX_PAUSE`], and a node takes steps over the wire
//! only from a member of its cluster: a step stops a node from electing, so
//! neither a stray caller nor a huge duration may switch elections off.
//! Safety is Raft's own: a transfer can fail or pick a new term, never
//! break a commit; while it runs, writes may wait up to one election.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use relay_proto::raft::LeadershipRequest;
use relay_types::NodeId;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::cluster::{Cluster, MemberStatus};
use crate::error::AdminError;

/// The longest pause a step may ask for (a transfer's own pauses are
/// capped to it).
pub const MAX_PAUSE: Duration = Duration::from_secs(60);

/// What a transfer did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// The leader before.
    pub previous: Option<NodeId>,
    /// The leader after.
    pub leader: NodeId,
    /// Its term.
    pub term: u64,
    /// How long it took.
    pub took: Duration,
}

/// A leadership step on one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeadershipStep {
    /// Stop electing and heartbeating for this long.
    Pause(Duration),
    /// Undo a pause now.
    Resume,
    /// Start an election now.
    Elect,
}

impl LeadershipStep {
    /// Parses the wire form (`pause` + millis, `resume`, `elect`); says
    /// what is wrong with an unknown action or a pause over [`MAX_PAUSE`].
    pub fn from_wire(action: &str, millis: u64) -> Result<Self, String> {
        match action {
            "pause" if Duration::from_millis(millis) > MAX_PAUSE => Err(format!(
                "a pause of {millis} ms is longer than the {} ms allowed",
                MAX_PAUSE.as_millis()
            )),
            "pause" => Ok(LeadershipStep::Pause(Duration::from_millis(millis))),
            "resume" => Ok(LeadershipStep::Resume),
            "elect" => Ok(LeadershipStep::Elect),
            other => Err(format!("unknown leadership action {other:?}")),
        }
    }

    /// The wire form, sent by node `from`.
    pub(crate) fn to_wire(self, from: NodeId) -> LeadershipRequest {
        let (action, millis) = match self {
            LeadershipStep::Pause(d) => ("pause", d.as_millis() as u64),
            LeadershipStep::Resume => ("resume", 0),
            LeadershipStep::Elect => ("elect", 0),
        };
        LeadershipRequest {
            action: action.into(),
            millis,
            from,
        }
    }
}

impl Cluster {
    /// Applies one leadership step to this node.
    pub async fn leadership_step(self: &Arc<Self>, step: LeadershipStep) -> Result<(), String> {
        let raft = self.raft();
        match step {
            LeadershipStep::Pause(for_) => {
                let generation = self.election_pause.fetch_add(1, Ordering::SeqCst) + 1;
                raft.runtime_config().elect(false);
                raft.runtime_config().heartbeat(false);
                info!(
                    millis = for_.as_millis() as u64,
                    "elections and heartbeats paused for a leadership transfer"
                );
                let this = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(for_).await;
                    // Only the latest pause's timer resumes.
                    if this.election_pause.load(Ordering::SeqCst) == generation {
                        this.raft().runtime_config().elect(true);
                        this.raft().runtime_config().heartbeat(true);
                        info!("leadership pause expired; elections and heartbeats resumed");
                    }
                });
            }
            LeadershipStep::Resume => {
                self.election_pause.fetch_add(1, Ordering::SeqCst);
                raft.runtime_config().elect(true);
                raft.runtime_config().heartbeat(true);
            }
            LeadershipStep::Elect => {
                raft.trigger().elect().await.map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    /// Runs `step` on member `id` (locally or over the Raft service).
    async fn step_on(
        self: &Arc<Self>,
        member: &MemberStatus,
        step: LeadershipStep,
    ) -> Result<(), String> {
        if member.id == self.node_id() {
            return self.leadership_step(step).await;
        }
        let mut client = self
            .peer_client(&member.addr)
            .map_err(|e| e.message().to_string())?;
        let mut request = tonic::Request::new(step.to_wire(self.node_id()));
        request.set_timeout(Duration::from_secs(2));
        client
            .leadership(request)
            .await
            .map(|_| ())
            .map_err(|e| e.message().to_string())
    }

    /// Moves leadership to `to` (or, if `None`, to the reachable voter with
    /// the least lag, lowest id first) within `within`. Returns at once if
    /// `to` already leads.
    pub async fn transfer_leadership(
        self: &Arc<Self>,
        to: Option<NodeId>,
        within: Duration,
    ) -> Result<Transfer, AdminError> {
        let started = Instant::now();
        let deadline = started + within;
        // Right after start or an election this node may not know the
        // leader yet: give it one election's time to hear from one.
        let mut metrics = self.watch_metrics();
        let wait = self.config.election_timeout.1 * 2;
        let _ = tokio::time::timeout(wait, metrics.wait_for(|m| m.current_leader.is_some())).await;
        let status = self.status(false).await;
        let previous = status.leader;
        let Some(leader) = previous else {
            return Err(AdminError::Unavailable(
                "no leader is known; nothing to transfer".into(),
            ));
        };
        let voters: Vec<&MemberStatus> = status.members.iter().filter(|m| m.voter).collect();
        let target = match to {
            Some(id) => {
                let Some(m) = status.members.iter().find(|m| m.id == id) else {
                    return Err(AdminError::NotFound(format!("node {id} is not a member")));
                };
                if !m.voter {
                    return Err(AdminError::Invalid(format!(
                        "node {id} is a learner; promote it before making it leader"
                    )));
                }
                if !m.reachable {
                    return Err(AdminError::Unavailable(format!("node {id} is unreachable")));
                }
                m
            }
            None => voters
                .iter()
                .filter(|m| m.id != leader && m.reachable)
                .min_by_key(|m| (m.lag, m.id))
                .copied()
                .ok_or_else(|| {
                    AdminError::Unavailable("no other reachable voter to fail over to".into())
                })?,
        };
        if target.id == leader {
            return Ok(Transfer {
                previous,
                leader,
                term: status.term,
                took: started.elapsed(),
            });
        }
        let target = target.clone();
        let others: Vec<MemberStatus> = voters
            .iter()
            .filter(|m| m.id != target.id)
            .map(|m| (*m).clone())
            .collect();

        // Pauses outlive the deadline a little, so they cannot end while the
        // target is still trying; resume below ends them early.
        let pause = (within + Duration::from_secs(2)).min(MAX_PAUSE);
        for m in &others {
            if let Err(e) = self.step_on(m, LeadershipStep::Pause(pause)).await {
                warn!(node = m.id, error = %e, "cannot pause elections on a voter; continuing");
            }
        }
        let result = self.elect_until(&target, deadline).await;
        for m in &others {
            if let Err(e) = self.step_on(m, LeadershipStep::Resume).await {
                warn!(node = m.id, error = %e, "cannot resume elections on a voter (its pause expires by itself)");
            }
        }
        let term = result?;
        info!(
            from = leader,
            to = target.id,
            term,
            "leadership transferred"
        );
        Ok(Transfer {
            previous,
            leader: target.id,
            term,
            took: started.elapsed(),
        })
    }

    /// Triggers elections on `target` until it says it leads; its term.
    async fn elect_until(
        self: &Arc<Self>,
        target: &MemberStatus,
        deadline: Instant,
    ) -> Result<u64, AdminError> {
        let retry_every = self
            .config
            .election_timeout
            .1
            .max(Duration::from_millis(100));
        loop {
            if let Err(e) = self.step_on(target, LeadershipStep::Elect).await {
                warn!(node = target.id, error = %e, "cannot trigger an election on the target");
            }
            let round_end = (Instant::now() + retry_every).min(deadline);
            while Instant::now() < round_end {
                let own = if target.id == self.node_id() {
                    self.local_status(false).ok()
                } else {
                    self.peer_status(&target.addr, false).await.ok()
                };
                if let Some(own) = own
                    && own.role == "leader"
                {
                    return Ok(own.term);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if Instant::now() >= deadline {
                return Err(AdminError::Failed(format!(
                    "node {} did not become leader in time; the cluster keeps or re-elects a leader by itself",
                    target.id
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_round_trip_through_the_wire_form() {
        for step in [
            LeadershipStep::Pause(Duration::from_millis(1500)),
            LeadershipStep::Resume,
            LeadershipStep::Elect,
        ] {
            let wire = step.to_wire(2);
            assert_eq!(wire.from, 2);
            assert_eq!(
                LeadershipStep::from_wire(&wire.action, wire.millis),
                Ok(step)
            );
        }
        assert!(LeadershipStep::from_wire("abdicate", 0).is_err());
    }

    #[test]
    fn a_pause_longer_than_the_bound_is_refused() {
        let max = MAX_PAUSE.as_millis() as u64;
        assert_eq!(
            LeadershipStep::from_wire("pause", max),
            Ok(LeadershipStep::Pause(MAX_PAUSE))
        );
        for millis in [max + 1, u64::MAX] {
            let err = LeadershipStep::from_wire("pause", millis).unwrap_err();
            assert!(err.contains("longer than"), "{err}");
        }
    }
}
