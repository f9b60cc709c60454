//! Moving leadership to a chosen voter (`relayctl failover`).
//!
//! openraft 0.9 has no leadership-transfer API (it arrived in 0.10 as
//! `trigger().transfer_leader()`), and a plain `trigger().elect()` on a
//! follower usually loses: every other voter refuses to vote while it still
//! hears the leader (the leader lease, `election_timeout_max` long). So a
//! transfer is three steps, each an ordinary openraft call:
//!
//! 1. **pause** every voter: `enable_elect(false)` (nobody competes, and
//!    the trailing target does not start an election of its own) and
//!    `enable_heartbeat(false)`, and the leader holds new writes (either
//!    would renew the followers' leader lease, and a follower that still
//!    hears its leader refuses to vote); an explicit election request
//!    still works;
//! 2. **catch up**: wait (half a round at most) until the target's log
//!    reaches the leader's last log index, on two polls in a row (under
//!    write load the target can trail the leader and the other follower,
//!    which would then refuse their votes; the leader's batcher holds its
//!    queue while paused, so its log stops growing);
//! 3. **elect** on the target until it reports itself leader: it wins as
//!    soon as one other voter's lease has run out and the target's log is
//!    at least as long as that voter's (the old leader steps down when it
//!    sees the higher term);
//! 4. **resume** everyone.
//!
//! A round that fails (the target did not catch up or win within two
//! election timeouts) resumes every voter at once, so the old leader
//! heartbeats again and the cluster is never left leaderless for the whole
//! transfer; the next round pauses again. The reply carries the leaderless
//! time: from the successful round's first election request until the
//! target leads.
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
    /// How long the cluster had no leader (zero when nothing moved).
    pub leaderless: Duration,
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
                self.writes_paused.send_replace(true);
                info!(
                    millis = for_.as_millis() as u64,
                    "elections and heartbeats paused for a leadership transfer"
                );
                let this = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(for_).await;
                    // Only the latest pause's timer resumes.
                    if this.election_pause.load(Ordering::SeqCst) == generation {
                        this.raft().runtime_config().elect(!this.is_drained());
                        this.raft().runtime_config().heartbeat(true);
                        this.writes_paused.send_replace(false);
                        info!("leadership pause expired; elections and heartbeats resumed");
                    }
                });
            }
            LeadershipStep::Resume => {
                self.election_pause.fetch_add(1, Ordering::SeqCst);
                // A drained node keeps out of elections (see `maintenance`).
                raft.runtime_config().elect(!self.is_drained());
                raft.runtime_config().heartbeat(true);
                self.writes_paused.send_replace(false);
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
                .filter(|m| m.id != leader && m.reachable && !self.store().is_drained(m.id))
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
                leaderless: Duration::ZERO,
            });
        }
        let target = target.clone();
        // The target is paused too: left alone, it would start an election
        // of its own while it still trails (the leader's heartbeats stop),
        // lose it, and bump the term with every other voter paused. Its
        // explicit election request is not affected by the pause.
        let everyone: Vec<MemberStatus> = voters.iter().map(|m| (*m).clone()).collect();

        let leader_member = status
            .members
            .iter()
            .find(|m| m.id == leader)
            .cloned()
            .ok_or_else(|| AdminError::Unavailable(format!("leader {leader} is not listed")))?;
        let round = self.config.election_timeout.1 * 2 + Duration::from_millis(500);
        let (term, leaderless) = loop {
            let round_deadline = (Instant::now() + round).min(deadline);
            // Pauses outlive the round a little, so they cannot end while the
            // target is still trying; resume below ends them early.
            let pause = (round + Duration::from_secs(2)).min(MAX_PAUSE);
            for m in &everyone {
                if let Err(e) = self.step_on(m, LeadershipStep::Pause(pause)).await {
                    warn!(node = m.id, error = %e, "cannot pause elections on a voter; continuing");
                }
            }
            // Catching up gets half the round; the election is tried
            // either way (the target wins if its log is at least as long
            // as one other voter's, which under load it often is).
            let catch_up_deadline = Instant::now() + (round_deadline - Instant::now()) / 2;
            if !self
                .caught_up(&leader_member, &target, catch_up_deadline)
                .await
            {
                warn!(
                    node = target.id,
                    "target has not caught up with the leader's log; electing it anyway"
                );
            }
            let result = self.elect_until(&target, round_deadline).await;
            // Resume everyone together, whatever the round's outcome.
            futures::future::join_all(
                everyone
                    .iter()
                    .map(|m| async move { (m.id, self.step_on(m, LeadershipStep::Resume).await) }),
            )
            .await
            .into_iter()
            .filter_map(|(id, r)| r.err().map(|e| (id, e)))
            .for_each(|(id, e)| {
                warn!(node = id, error = %e, "cannot resume elections on a voter (its pause expires by itself)")
            });
            match result {
                Ok(won) => break won,
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(e) => {
                    warn!(error = %e, "leadership transfer round failed; trying again");
                    // Let the old leader (or an elected one) settle.
                    tokio::time::sleep(self.config.election_timeout.0).await;
                }
            }
        };
        info!(
            from = leader,
            to = target.id,
            term,
            leaderless_ms = leaderless.as_millis() as u64,
            "leadership transferred"
        );
        Ok(Transfer {
            previous,
            leader: target.id,
            term,
            took: started.elapsed(),
            leaderless,
        })
    }

    /// Waits until `target`'s log reaches the leader's last log index, or
    /// `deadline`. The leader's index is read again on every poll: writes
    /// that were already on their way when the pause began still reach the
    /// leader's log after it, and a target that matches only the index read
    /// at the start would trail the leader (which then refuses its vote by
    /// log length) and, as often, the other follower too.
    async fn caught_up(
        self: &Arc<Self>,
        leader: &MemberStatus,
        target: &MemberStatus,
        deadline: Instant,
    ) -> bool {
        let status_of = |m: &MemberStatus| {
            let m = m.clone();
            let this = self.clone();
            async move {
                if m.id == this.node_id() {
                    this.local_status(false).ok()
                } else {
                    this.peer_status(&m.addr, false).await.ok()
                }
            }
        };
        // Caught up on two polls in a row: the one write that may have been
        // on its way into the leader's log at the first has landed by the
        // second (new batches are held while paused, see `batcher`).
        let mut in_a_row = 0;
        while Instant::now() < deadline {
            // The target first: the leader's log only grows, so a target
            // at or past the index read after it has caught up for sure.
            let reached = status_of(target).await.map(|s| s.last_log_index);
            let goal = status_of(leader).await.map(|s| s.last_log_index);
            if let (Some(goal), Some(reached)) = (goal, reached)
                && reached >= goal
            {
                in_a_row += 1;
                if in_a_row == 2 {
                    return true;
                }
            } else {
                in_a_row = 0;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Triggers elections on `target` until it says it leads; its term and
    /// the time from the first election request until then.
    async fn elect_until(
        self: &Arc<Self>,
        target: &MemberStatus,
        deadline: Instant,
    ) -> Result<(u64, Duration), AdminError> {
        let first_elect = Instant::now();
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
                    return Ok((own.term, first_elect.elapsed()));
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
