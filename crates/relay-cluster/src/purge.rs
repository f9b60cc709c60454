//! The periodic snapshot-and-purge that bounds how long a delivered message's
//! body stays in the Raft log (docs/design.md, invariant 3).
//!
//! Bodies travel inside `Enqueue` entries (ADR 001). Deleting a message from
//! the state does not remove its entry from the log; only a snapshot that
//! covers the entry followed by a log purge does. openraft's own policy
//! (`snapshot_every` entries, `keep_logs` behind) is count-based, so on a
//! quiet cluster a delivered body could stay in the log indefinitely. Every
//! `purge_interval` this task builds a snapshot if entries were applied since
//! the last one, then purges the log up to it, ignoring `keep_logs` (a
//! follower that falls behind the purge catches up from the snapshot).
//!
//! The same interval drives the history pruner ([`run_history_pruner`]):
//! trace events and finished-message ids are kept for the configured
//! retention only, so the replicated state (and every snapshot) is bounded
//! by the queue plus that window, not by all-time traffic.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::Raft;

/// Longest wait for a triggered snapshot to be built.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(60);

/// Runs until `shutdown`: every `interval`, snapshot what was applied since
/// the last snapshot and purge the log up to the snapshot.
pub async fn run_log_purger(raft: Raft, interval: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.cancelled() => return,
        }
        if let Err(e) = snapshot_and_purge(&raft).await {
            warn!(error = %e, "periodic snapshot and log purge failed; retrying next interval");
        }
    }
}

async fn snapshot_and_purge(raft: &Raft) -> Result<(), String> {
    let metrics = raft.metrics().borrow().clone();
    let applied = metrics.last_applied.map_or(0, |l| l.index);
    let mut snapshot = metrics.snapshot.map_or(0, |l| l.index);
    if applied > snapshot {
        raft.trigger().snapshot().await.map_err(|e| e.to_string())?;
        let built = raft
            .wait(Some(SNAPSHOT_WAIT))
            .metrics(
                |m| m.snapshot.map_or(0, |l| l.index) >= applied,
                "periodic snapshot",
            )
            .await
            .map_err(|e| e.to_string())?;
        snapshot = built.snapshot.map_or(0, |l| l.index);
        debug!(snapshot, "periodic snapshot built");
    }
    let purged = metrics.purged.map_or(0, |l| l.index);
    if snapshot > purged {
        raft.trigger()
            .purge_log(snapshot)
            .await
            .map_err(|e| e.to_string())?;
        debug!(upto = snapshot, "log purge requested");
    }
    Ok(())
}

/// Runs until `shutdown`: on the leader, every `interval`, commits a
/// `Command::Prune` that forgets the history (trace events, finished ids)
/// of messages accepted more than `retention` ago. The cutoff travels in
/// the entry, so every replica prunes exactly the same rows; the replicated
/// state stays proportional to the queue plus the retention window.
pub async fn run_history_pruner(
    cluster: std::sync::Arc<crate::Cluster>,
    retention: Duration,
    interval: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.cancelled() => return,
        }
        if cluster.current_leader() != Some(cluster.node_id()) {
            continue;
        }
        let now = relay_types::UnixMillis::now();
        let before = relay_types::UnixMillis(now.0.saturating_sub(retention.as_millis() as u64));
        match cluster
            .propose(relay_types::Command::Prune { before })
            .await
        {
            Ok(_) => debug!(?before, "history pruned"),
            Err(e) => warn!(error = %e, "history prune did not commit; retrying next interval"),
        }
    }
}
