//! Log-driven takeover (docs/design.md, invariant 4): the leader watches every other
//! member and, when one has been unreachable for `takeover_after`, commits
//! `Reassign` entries that give its queued messages to the live nodes.
//!
//! Liveness is the leader's own probe (the NodeStatus RPC every
//! [`PROBE_INTERVAL`]), not a guess from replication progress: a node that
//! answers is alive even when it has nothing to replicate. A new leader
//! starts every peer's clock at its election, so a dead former leader's mail
//! is taken over `takeover_after` after the election.
//!
//! Fencing is the other half: an owner delivers only while it holds its
//! lease ([`delivery_lease`], half of `takeover_after`, renewed by contact
//! with the leader), so by the time a `Reassign` commits, a cut-off owner
//! has already stopped opening sessions. The remaining duplicate window is
//! "the target accepted, the owner died before its `Delivered` committed".

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use relay_cluster::Cluster;
use relay_types::{Command, MessageFilter, MessageId, NodeId, Selector, UnixMillis};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How often the leader probes the other members.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Most message ids in one `Reassign` entry (bounded entry size).
const REASSIGN_BATCH: usize = 2_000;

/// The delivery lease for a given `takeover_after`: an owner stops opening
/// sessions after this long without contact, well before the leader (which
/// waits the full `takeover_after`) can give its messages away.
pub fn delivery_lease(takeover_after: Duration) -> Duration {
    takeover_after / 2
}

/// Runs until `shutdown`; acts only while this node is the leader.
pub async fn run(cluster: Arc<Cluster>, takeover_after: Duration, shutdown: CancellationToken) {
    // Last successful probe per peer, during the current leadership term.
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
        let members: Vec<(NodeId, String)> = metrics
            .membership_config
            .membership()
            .voter_ids()
            .filter(|id| *id != me)
            .filter_map(|id| {
                metrics
                    .membership_config
                    .membership()
                    .get_node(&id)
                    .map(|n| (id, n.addr.clone()))
            })
            .collect();
        let now = Instant::now();
        let probes = members.iter().map(|(id, addr)| {
            let cluster = cluster.clone();
            async move { (*id, cluster.peer_status(addr, false).await.is_ok()) }
        });
        let mut live = vec![me];
        let mut silent = Vec::new();
        for (id, ok) in futures::future::join_all(probes).await {
            let seen = last_seen.entry(id).or_insert(now);
            if ok {
                *seen = now;
                live.push(id);
            } else if now.duration_since(*seen) >= takeover_after {
                silent.push(id);
            }
        }
        for dead in silent {
            if let Err(e) = take_over(&cluster, dead, &live).await {
                warn!(node = dead, error = %e, "takeover failed; retrying at the next probe");
            }
        }
    }
}

/// Gives every message owned by `dead` to the `live` nodes in equal shares,
/// each share committed as `Reassign` entries of bounded size.
async fn take_over(cluster: &Arc<Cluster>, dead: NodeId, live: &[NodeId]) -> Result<(), String> {
    let store = cluster.store().clone();
    let owned: Vec<MessageId> = tokio::task::spawn_blocking(move || {
        let filter = MessageFilter {
            owner: Some(dead),
            ..Default::default()
        };
        store.list(&filter, usize::MAX)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?
    .into_iter()
    .map(|record| record.id)
    .collect();
    if owned.is_empty() {
        debug!(node = dead, "unreachable node owns nothing");
        return Ok(());
    }
    info!(
        node = dead,
        messages = owned.len(),
        to = ?live,
        "node unreachable past takeover_after: reassigning its messages"
    );
    metrics::counter!(crate::metrics::TAKEOVERS_TOTAL).increment(1);
    // Spread the queue evenly over the live nodes.
    let mut shares: Vec<Vec<MessageId>> = vec![Vec::new(); live.len()];
    for (n, id) in owned.into_iter().enumerate() {
        shares[n % live.len()].push(id);
    }
    for (to, share) in live.iter().zip(shares) {
        for batch in share.chunks(REASSIGN_BATCH) {
            let command = Command::Reassign {
                selector: Selector::Ids(batch.to_vec()),
                to: *to,
                at: UnixMillis::now(),
            };
            cluster.propose(command).await.map_err(|e| e.to_string())?;
            metrics::counter!("relay_messages_reassigned_total").increment(batch.len() as u64);
        }
    }
    Ok(())
}
