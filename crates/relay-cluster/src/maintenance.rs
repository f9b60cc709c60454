//! Draining a node for maintenance, so it can be stopped, upgraded and
//! started again without a sender or a target noticing.
//!
//! `Command::Drain` marks the node in the replicated state, so the mark
//! survives the node's own restart and every node agrees on it. Once a node
//! has applied its own mark:
//! - **SMTP** (the node's side, `relay-node`): new connections get
//!   `421 4.3.2`, open sessions finish their transaction and get `421` at
//!   the next `MAIL`; `/readyz` answers 503, so a load balancer moves on.
//! - **Delivery**: it starts no transaction
//!   ([`Cluster::may_start_delivery`] is false); a transaction whose text is
//!   on its way finishes and reports, as always.
//! - **Elections**: it stands for none (`enable_elect(false)`), and if it
//!   leads it hands leadership to another voter ([`run_drain_watch`]).
//! - **Its queue**: the leader's takeover loop moves it in one `TakeOver`
//!   entry once the node itself reports (in its status, after applying the
//!   mark) that none of its deliveries is busy: started, or reported but
//!   not committed. Moving it earlier would refuse the report of a delivery
//!   the target already accepted, and the new owner would send it again.
//!   Messages that sessions still finishing enqueue afterwards are moved
//!   the same way, a probe interval later.
//!
//! **Safe to stop** ([`Cluster::drain_report`]): the node applied its mark,
//! has no SMTP session open and no busy delivery, does not lead, and the
//! replica asked owns nothing to it after catching up with what the leader
//! had applied (everything acknowledged to a sender is).
//!
//! `undrain` removes the mark: the node takes connections, delivers what it
//! is given and stands for elections again. Its old queue stays with the
//! nodes that took it.

use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use relay_types::NodeId;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cluster::Cluster;

/// What the node counts for drains: provided by the node, since this crate
/// runs neither SMTP nor delivery.
pub trait NodeActivity: Send + Sync + std::fmt::Debug {
    /// SMTP sessions open now.
    fn smtp_sessions(&self) -> u64;
    /// Deliveries started and not yet settled (running, or their report
    /// not committed).
    fn busy_deliveries(&self) -> u64;
}

/// A drained node's progress towards "safe to stop", as one node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrainReport {
    /// The node.
    pub node: NodeId,
    /// The replicated mark, as the answering node applied it.
    pub drained: bool,
    /// The node answered its status query.
    pub reachable: bool,
    /// The node applied its own mark.
    pub applied_by_node: bool,
    /// The leader (as the answering node knows it).
    pub leader: Option<NodeId>,
    /// Messages the node still owns.
    pub owned: u64,
    /// SMTP sessions open on it.
    pub smtp_sessions: u64,
    /// Its deliveries not yet settled.
    pub busy_deliveries: u64,
    /// Nothing above is left: it can be stopped without a 4xx, a
    /// duplicate or mail waiting for a takeover.
    pub safe_to_stop: bool,
    /// What it still waits for, for people.
    pub waiting_for: Vec<String>,
}

impl Cluster {
    /// Whether this node is drained (its own applied state says so).
    pub fn is_drained(&self) -> bool {
        self.store().is_drained(self.node_id())
    }

    /// Where the drain of `node` stands, asked now: its own status, then
    /// the leader's applied index, then this replica's count of the
    /// messages it owns once this replica has applied as far as the leader
    /// had (every message acknowledged to a sender is applied on the leader
    /// first, and the node's sessions were asked before the leader).
    pub async fn drain_report(&self, node: NodeId) -> DrainReport {
        let drained = self.store().is_drained(node);
        let m = self.metrics();
        let addr_of = |id: NodeId| {
            m.membership_config
                .membership()
                .get_node(&id)
                .map(|n| n.addr.clone())
        };
        let status_of = |id: NodeId| {
            let addr = addr_of(id);
            async move {
                if id == self.node_id() {
                    self.local_status(false).ok()
                } else {
                    match addr {
                        Some(addr) => self.peer_status(&addr, false).await.ok(),
                        None => None,
                    }
                }
            }
        };
        let own = status_of(node).await;
        let leader = m.current_leader;
        let leader_applied = match leader {
            Some(l) => status_of(l).await.map(|s| s.applied_index),
            None => None,
        };
        let mut waiting_for = Vec::new();
        if let Some(goal) = leader_applied {
            let mut applied = self.store().subscribe_applied();
            let caught_up =
                tokio::time::timeout(Duration::from_secs(2), applied.wait_for(|a| *a >= goal))
                    .await;
            if !matches!(caught_up, Ok(Ok(_))) {
                waiting_for.push(format!(
                    "node {} to apply up to the leader's index {goal}",
                    self.node_id()
                ));
            }
        } else {
            waiting_for.push("a leader".to_string());
        }
        let store = self.store().clone();
        let owned = tokio::task::spawn_blocking(move || store.owned_count(node))
            .await
            .ok()
            .and_then(Result::ok);
        let (reachable, applied_by_node, smtp_sessions, busy_deliveries) = match &own {
            Some(s) => (true, s.drained, s.smtp_sessions, s.busy_deliveries),
            None => (false, false, 0, 0),
        };
        if !drained {
            waiting_for.push(format!("node {node} is not drained"));
        } else if !reachable {
            waiting_for.push(format!("node {node} to answer"));
        } else if !applied_by_node {
            waiting_for.push(format!("node {node} to apply its drain"));
        }
        if leader == Some(node) {
            waiting_for.push(format!("node {node} to hand leadership on"));
        }
        if smtp_sessions > 0 {
            waiting_for.push(format!("{smtp_sessions} SMTP session(s) to end"));
        }
        if busy_deliveries > 0 {
            waiting_for.push(format!("{busy_deliveries} delivery(ies) to finish"));
        }
        match owned {
            Some(0) => {}
            Some(n) => waiting_for.push(format!("{n} message(s) to be handed on")),
            None => waiting_for.push("the owner index to be readable".to_string()),
        }
        DrainReport {
            node,
            drained,
            reachable,
            applied_by_node,
            leader,
            owned: owned.unwrap_or(0),
            smtp_sessions,
            busy_deliveries,
            safe_to_stop: waiting_for.is_empty(),
            waiting_for,
        }
    }
}

/// Keeps a drained node out of elections and out of leadership: follows
/// the drained set as applied, switches this node's elections off while it
/// is drained (on again when undrained), and while it is drained and leads,
/// hands leadership to another voter (one transfer round, again a few
/// seconds later only if it still leads). Runs until `shutdown`.
pub async fn run_drain_watch(cluster: Arc<Cluster>, shutdown: CancellationToken) {
    let mut drained_set = cluster.store().subscribe_drained();
    let mut metrics = cluster.watch_metrics();
    let mut was_drained: Option<bool> = None;
    let mut last_transfer: Option<Instant> = None;
    loop {
        let drained = drained_set.borrow_and_update().contains(&cluster.node_id());
        if was_drained != Some(drained) {
            // A leadership transfer's pause and resume read the mark
            // themselves, so a resume never re-enables a drained node.
            cluster.raft().runtime_config().elect(!drained);
            if was_drained.is_some() || drained {
                info!(drained, "maintenance mark applied to this node");
            }
            was_drained = Some(drained);
        }
        let leads = metrics.borrow_and_update().state == ServerState::Leader;
        if drained && leads && last_transfer.is_none_or(|t| t.elapsed() > Duration::from_secs(3)) {
            last_transfer = Some(Instant::now());
            info!("drained while leading: handing leadership on");
            // One transfer round at a time, then look again: if it failed
            // but another node was elected meanwhile, the job is done, and
            // further rounds (which pause every voter) would only keep the
            // tier without a leader.
            let round = cluster.election_timeout().1 * 2 + Duration::from_millis(500);
            match cluster.transfer_leadership(None, round).await {
                Ok(t) => info!(to = t.leader, "leadership handed on for maintenance"),
                Err(e) => warn!(error = %e, "cannot hand leadership on yet; trying again"),
            }
            continue;
        }
        tokio::select! {
            changed = drained_set.changed() => if changed.is_err() { return },
            changed = metrics.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
