//! Log-driven takeover: the leader moves the queue of every owner that is
//! not a live voter to the live voters, one committed decision per owner.
//!
//! Liveness is the leader's own probe (the NodeStatus RPC every
//! [`PROBE_INTERVAL`]), not a guess from replication progress: a node that
//! answers is alive even when it has nothing to replicate. A new leader
//! starts every peer's clock at its election, so a dead former leader's mail
//! is taken over `takeover_after` after the election.
//!
//! Which owners: read from the owner index (every node that owns queued
//! mail), not from the membership, so mail owned by a removed node or by a
//! learner that accepted SMTP is moved as well:
//! - a voter silent for `takeover_after`;
//! - an owner that is not a voter at all (removed, or a learner): at once,
//!   since it can never hold a start lease again as it is;
//! - a drained owner (in maintenance) as soon as it reports, after applying
//!   its mark, that none of its deliveries is busy (see
//!   [`crate::maintenance`]). Drained nodes never receive mail in a
//!   takeover.
//!
//! Right before it proposes, the leader probes the owner once more: an
//! owner that answers again keeps its mail. The decision is one
//! `Command::TakeOver` entry, so there is no "part-way" state that a
//! returning owner could act on.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use relay_types::{Command, CommandResult, NodeId, UnixMillis};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::Cluster;

/// How often the leader probes the other members.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// The hold lease for a given `takeover_after`: how long an owner may go
/// without contact before it must consider its mail gone. The start lease
/// is far shorter (see the module docs of [`crate::ownership`]).
pub fn delivery_lease(takeover_after: Duration) -> Duration {
    takeover_after / 2
}

/// Runs until `shutdown`; acts only while this node is the leader.
pub async fn run(cluster: Arc<Cluster>, takeover_after: Duration, shutdown: CancellationToken) {
    // Last successful probe per voter, during the current leadership term.
    let mut last_seen: BTreeMap<NodeId, Instant> = BTreeMap::new();
    let mut leading_term: Option<u64> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(PROBE_INTERVAL) => {}
            _ = shutdown.cancelled() => return,
        }
        let metrics = cluster.metrics();
        if metrics.state != ServerState::Leader {
            leading_term = None;
            last_seen.clear();
            continue;
        }
        if leading_term != Some(metrics.current_term) {
            // A new leadership: nobody has been silent for long yet.
            leading_term = Some(metrics.current_term);
            last_seen.clear();
        }
        let me = cluster.node_id();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let addr_of = |id: NodeId| membership.get_node(&id).map(|n| n.addr.clone());
        let now = Instant::now();
        let probes = voters.iter().filter(|id| **id != me).map(|id| {
            let cluster = cluster.clone();
            let addr = addr_of(*id);
            async move { (*id, probe(&cluster, addr.as_deref()).await) }
        });
        let drained = cluster.store().drained();
        let mut live = vec![me];
        let mut silent = BTreeSet::new();
        for (id, ok) in futures::future::join_all(probes).await {
            let seen = last_seen.entry(id).or_insert(now);
            if ok {
                *seen = now;
                live.push(id);
            } else if now.duration_since(*seen) >= takeover_after {
                silent.insert(id);
            }
        }
        // Nodes in maintenance take no mail.
        live.retain(|id| !drained.contains(id));
        live.sort_unstable();
        let store = cluster.store().clone();
        let owners = match tokio::task::spawn_blocking(move || store.owners()).await {
            Ok(Ok(owners)) => owners,
            Ok(Err(e)) => {
                warn!(error = %e, "cannot read the owners of queued mail");
                continue;
            }
            Err(e) => {
                warn!(error = %e, "owner scan task failed");
                continue;
            }
        };
        for owner in owners {
            let reason = if silent.contains(&owner) {
                "unreachable past takeover_after"
            } else if !voters.contains(&owner) {
                "not a voter (removed, or a learner)"
            } else if drained.contains(&owner) {
                if !drained_and_idle(&cluster, owner, addr_of(owner).as_deref()).await {
                    continue;
                }
                // Decided: the drained owner is idle (the probe below would
                // only see it answer).
                if let Err(e) = take_over(&cluster, owner, &live, "drained for maintenance").await {
                    warn!(node = owner, error = %e, "handing on a drained node's mail failed; retrying at the next probe");
                }
                continue;
            } else {
                continue;
            };
            // Re-check liveness right before deciding: a voter that answers
            // again keeps its mail (a non-voter never does).
            if voters.contains(&owner) && probe(&cluster, addr_of(owner).as_deref()).await {
                info!(
                    node = owner,
                    "owner answers again; not taking its mail over"
                );
                last_seen.insert(owner, Instant::now());
                continue;
            }
            if let Err(e) = take_over(&cluster, owner, &live, reason).await {
                warn!(node = owner, error = %e, "takeover failed; retrying at the next probe");
            }
        }
    }
}

/// Whether the drained `owner` has applied its own mark and has no
/// delivery busy (so no report of it can be refused after its mail moves).
async fn drained_and_idle(cluster: &Arc<Cluster>, owner: NodeId, addr: Option<&str>) -> bool {
    let status = if owner == cluster.node_id() {
        cluster.local_status(false).ok()
    } else {
        match addr {
            Some(addr) => cluster.peer_status(addr, false).await.ok(),
            None => None,
        }
    };
    status.is_some_and(|s| s.drained && s.busy_deliveries == 0)
}

async fn probe(cluster: &Arc<Cluster>, addr: Option<&str>) -> bool {
    match addr {
        Some(addr) => cluster.peer_status(addr, false).await.is_ok(),
        None => false,
    }
}

/// Commits one `TakeOver` entry moving every message of `from` to `live`.
async fn take_over(
    cluster: &Arc<Cluster>,
    from: NodeId,
    live: &[NodeId],
    reason: &str,
) -> Result<(), String> {
    let to: Vec<NodeId> = live.iter().copied().filter(|id| *id != from).collect();
    if to.is_empty() {
        debug!(node = from, "no live voter to take its mail");
        return Ok(());
    }
    info!(node = from, to = ?to, reason, "taking over a node's queued mail");
    let command = Command::TakeOver {
        from,
        to,
        at: UnixMillis::now(),
    };
    match cluster.propose(command).await.map_err(|e| e.to_string())? {
        CommandResult::Applied { affected } => {
            metrics::counter!(super::TAKEOVERS_TOTAL).increment(1);
            metrics::counter!(super::MESSAGES_REASSIGNED_TOTAL).increment(u64::from(affected));
            info!(node = from, messages = affected, "takeover committed");
            Ok(())
        }
        other => Err(format!("takeover not applied: {other:?}")),
    }
}
