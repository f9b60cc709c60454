//! The node's Prometheus side: installing the recorder, the node-level
//! instruments (submit latency, queue, store, Raft), and keeping their
//! gauges current.
//!
//! The library crates record through the `metrics` facade and declare
//! their own names (`relay_smtp::metrics`, `relay_delivery::metrics`,
//! `relay_store::metrics`, `relay_cluster::metrics`); this
//! module installs the one recorder, registers every crate's descriptions,
//! and renders the text format for `/metrics`. No HTTP listener of the
//! exporter is used: the node's own HTTP server serves the page.
//!
//! Gauges come from two places: Raft gauges are set by [`watch_raft`] on
//! every change of openraft's metrics (and the counters of leader changes,
//! snapshots and purges are derived from those changes); queue and store
//! gauges are read from the state machine at each scrape ([`refresh_state`]),
//! which costs a few RocksDB point reads.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use relay_cluster::{Cluster, Contact, RaftView};
use relay_types::{NodeId, UnixMillis};
use tokio_util::sync::CancellationToken;

/// Histogram, seconds: from handing an accepted message to Raft until its
/// `Enqueue` committed (what the SMTP client waits for before `250`).
pub const SUBMIT_COMMIT_SECONDS: &str = "relay_submit_commit_seconds";
/// Counter, label `reason` = `no_quorum` | `timeout` | `shutting_down` |
/// `internal`: submits that did not commit (the client got a 4xx).
pub const SUBMIT_FAILURES_TOTAL: &str = "relay_submit_failures_total";
/// Gauge, label `state` = `queued` | `deferred` | `held`: messages in this
/// replica's queue (every replica holds the whole queue).
pub const QUEUE_MESSAGES: &str = "relay_queue_messages";
/// Gauge, seconds: age of the oldest queued message (0 when empty).
pub const QUEUE_OLDEST_AGE_SECONDS: &str = "relay_queue_oldest_message_age_seconds";
/// Gauge, bytes: RocksDB's SST files plus memtables, Raft log included.
pub const STORE_BYTES: &str = "relay_store_bytes";
/// Bytes in the store's write-ahead log files.
pub const STORE_WAL_BYTES: &str = "relay_store_wal_bytes";
/// Bytes still free on the store's file system.
pub const STORE_FREE_BYTES: &str = "relay_store_free_bytes";
/// Gauge: this node's current Raft term.
pub const RAFT_TERM: &str = "relay_raft_term";
/// Gauge: 1 on the leader, 0 elsewhere.
pub const RAFT_IS_LEADER: &str = "relay_raft_is_leader";
/// Gauge: 1 while this node knows a leader.
pub const RAFT_HAS_LEADER: &str = "relay_raft_has_leader";
/// Gauge: index of the last entry applied to the state machine.
pub const RAFT_APPLIED_INDEX: &str = "relay_raft_applied_index";
/// Gauge: the commit index as this node knows it (leader: the index a
/// quorum holds; follower: the leader's last reported commit, capped at
/// its own log).
pub const RAFT_COMMITTED_INDEX: &str = "relay_raft_committed_index";
/// Gauge: index of the last entry in this node's log.
pub const RAFT_LAST_LOG_INDEX: &str = "relay_raft_last_log_index";
/// Gauge, label `peer`: on the leader, its last log index minus the index
/// the peer is known to hold (the whole log while nothing is known). 0 on
/// other nodes, so `max by (peer)` over the tier is the leader's view.
pub const RAFT_REPLICATION_LAG: &str = "relay_raft_replication_lag";
/// Gauge, label `peer`, seconds: on the leader, the age of the oldest log
/// entry the peer lacks (0 when it holds the whole log, and on other
/// nodes): what a recovery-site replica would miss if the rest were lost
/// now.
pub const RAFT_REPLICATION_LAG_SECONDS: &str = "relay_raft_replication_lag_seconds";
/// Gauge, seconds: on the leader, time since a quorum last acknowledged it
/// (absent from openraft until the first ack: then 0 is not reported).
pub const RAFT_QUORUM_ACK_AGE_SECONDS: &str = "relay_raft_quorum_ack_age_seconds";
/// Gauge, seconds: time since this node last accepted an AppendEntries
/// from a leader (followers; -1 before the first).
pub const RAFT_LEADER_CONTACT_AGE_SECONDS: &str = "relay_raft_leader_contact_age_seconds";
/// Gauge: voters in the current membership.
pub const RAFT_VOTERS: &str = "relay_raft_voters";
/// Counter: times this node saw the leader change to a new known node.
pub const RAFT_LEADER_CHANGES_TOTAL: &str = "relay_raft_leader_changes_total";
/// Counter: snapshots this node built or installed since start.
pub const RAFT_SNAPSHOTS_TOTAL: &str = "relay_raft_snapshots_total";
/// Counter: log purges (entries deleted behind a snapshot) since start.
pub const RAFT_PURGES_TOTAL: &str = "relay_raft_purges_total";
/// Gauge: index of the last snapshot (0: none).
pub const RAFT_SNAPSHOT_INDEX: &str = "relay_raft_snapshot_index";
/// Gauge: log entries up to this index are purged (0: none).
pub const RAFT_PURGED_INDEX: &str = "relay_raft_purged_index";
/// Counter: takeovers this node ran as leader (one per unreachable owner
/// whose messages it reassigned, however many messages). Declared and
/// described here so dashboards and alerts can rely on the name from the
/// first scrape; the takeover task increments it.
pub const TAKEOVERS_TOTAL: &str = relay_cluster::ownership::TAKEOVERS_TOTAL;
/// Counter: messages reassigned by takeovers this node ran as leader (the
/// takeover task increments it under this name).
pub const MESSAGES_REASSIGNED_TOTAL: &str = relay_cluster::ownership::MESSAGES_REASSIGNED_TOTAL;
/// Counter, labels `link` (`smtp`: STARTTLS; `cluster`: the Raft and admin
/// ports' mTLS) and `result` (`ok`/`error`): certificate reloads on SIGHUP.
pub const TLS_RELOADS: &str = "relay_tls_reloads_total";
/// Gauge, labels `version`, `node`: always 1.
pub const BUILD_INFO: &str = "relay_build_info";

/// Buckets for the submit-to-commit histogram: a commit is two fsyncs and a
/// network round trip, normally milliseconds; the top buckets catch
/// elections and slow disks up to the submit timeout.
const SUBMIT_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Buckets for delivery attempts (SMTP to the target: connect, TLS, DATA).
const DELIVERY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Buckets for accept-to-delivered: sub-second when the target is up,
/// minutes to days when mail waited in the queue (queue lifetime).
const END_TO_END_BUCKETS: [f64; 14] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0, 1800.0, 3600.0, 21600.0, 86400.0,
];

/// Errors installing the recorder.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The exporter rejected its configuration.
    #[error("cannot configure the Prometheus exporter: {0}")]
    Build(String),
    /// Another recorder is already installed in this process.
    #[error("a metrics recorder is already installed")]
    AlreadyInstalled,
}

/// The recorder installed in this process, if any.
static INSTALLED: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder and registers every
/// crate's instrument descriptions. Returns the handle `/metrics` renders.
/// A second call in the same process returns the first handle (the
/// `metrics` facade has one global recorder).
pub fn install(node: NodeId) -> Result<PrometheusHandle, MetricsError> {
    if let Some(handle) = INSTALLED.get() {
        return Ok(handle.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(SUBMIT_COMMIT_SECONDS.into()), &SUBMIT_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(relay_delivery::metrics::ATTEMPT_SECONDS.into()),
                &DELIVERY_BUCKETS,
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(relay_delivery::metrics::MESSAGE_DELIVERY_SECONDS.into()),
                &END_TO_END_BUCKETS,
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(relay_store::metrics::APPEND_BATCH_ENTRIES.into()),
                &relay_store::metrics::APPEND_BATCH_BUCKETS,
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(relay_store::metrics::LOG_FSYNC_SECONDS.into()),
                &relay_store::metrics::LOG_FSYNC_BUCKETS,
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(relay_store::metrics::ENTRY_COMMANDS.into()),
                &relay_store::metrics::ENTRY_COMMANDS_BUCKETS,
            )
        })
        .map_err(|e| MetricsError::Build(e.to_string()))?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|_| MetricsError::AlreadyInstalled)?;
    describe();
    relay_smtp::metrics::describe();
    relay_delivery::metrics::describe();
    relay_store::metrics::describe();
    relay_cluster::metrics::describe();
    register();
    relay_smtp::metrics::register();
    relay_delivery::metrics::register();
    relay_store::metrics::register();
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "node" => node.to_string())
        .set(1.0);
    // Counters exist from the start, so `rate()` and `increase()` see the
    // first increment and the tests can diff two scrapes.
    metrics::counter!(relay_smtp::metrics::MESSAGES_ACCEPTED_TOTAL).absolute(0);
    metrics::counter!(relay_delivery::metrics::MESSAGES_DELIVERED_TOTAL).absolute(0);
    metrics::counter!(RAFT_LEADER_CHANGES_TOTAL).absolute(0);
    metrics::counter!(RAFT_SNAPSHOTS_TOTAL).absolute(0);
    metrics::counter!(RAFT_PURGES_TOTAL).absolute(0);
    metrics::counter!(TAKEOVERS_TOTAL).absolute(0);
    metrics::counter!(relay_store::metrics::LOG_FSYNCS_TOTAL, "op" => "append").absolute(0);
    metrics::counter!(relay_cluster::metrics::STRANDED_WRITES_TOTAL).absolute(0);
    Ok(INSTALLED.get_or_init(|| handle).clone())
}

/// Creates this module's series at zero before anything happens, so every
/// instrument (histograms included) is on `/metrics` from the first scrape:
/// `rate()` sees the first event, and an alert over a series never finds it
/// missing on a healthy node. Series with open-ended labels (peers, targets,
/// reply codes) appear with their first value.
fn register() {
    // Taking a handle registers the series; no sample is recorded.
    let _registered = metrics::histogram!(SUBMIT_COMMIT_SECONDS);
    for reason in ["no_quorum", "timeout", "shutting_down", "internal"] {
        metrics::counter!(SUBMIT_FAILURES_TOTAL, "reason" => reason).increment(0);
    }
    for state in ["queued", "deferred", "held"] {
        metrics::gauge!(QUEUE_MESSAGES, "state" => state).increment(0.0);
    }
    for gauge in [
        QUEUE_OLDEST_AGE_SECONDS,
        STORE_BYTES,
        STORE_WAL_BYTES,
        STORE_FREE_BYTES,
        RAFT_TERM,
        RAFT_IS_LEADER,
        RAFT_HAS_LEADER,
        RAFT_APPLIED_INDEX,
        RAFT_COMMITTED_INDEX,
        RAFT_LAST_LOG_INDEX,
        RAFT_QUORUM_ACK_AGE_SECONDS,
        RAFT_VOTERS,
        RAFT_SNAPSHOT_INDEX,
        RAFT_PURGED_INDEX,
    ] {
        metrics::gauge!(gauge).increment(0.0);
    }
    metrics::gauge!(RAFT_LEADER_CONTACT_AGE_SECONDS).set(-1.0);
    metrics::counter!(MESSAGES_REASSIGNED_TOTAL).increment(0);
    for result in ["ok", "error"] {
        metrics::counter!(TLS_RELOADS, "result" => result).increment(0);
    }
}

fn describe() {
    describe_histogram!(
        SUBMIT_COMMIT_SECONDS,
        Unit::Seconds,
        "Time from submitting an accepted message to Raft until its commit."
    );
    describe_counter!(
        SUBMIT_FAILURES_TOTAL,
        "Submits that did not commit (the SMTP client got a 4xx), by reason."
    );
    describe_gauge!(
        QUEUE_MESSAGES,
        "Messages in the replicated queue, by state."
    );
    describe_gauge!(
        QUEUE_OLDEST_AGE_SECONDS,
        Unit::Seconds,
        "Age of the oldest queued message (0 when the queue is empty)."
    );
    describe_gauge!(
        STORE_BYTES,
        Unit::Bytes,
        "Bytes held by the node's RocksDB (SST files and memtables)."
    );
    describe_gauge!(
        STORE_WAL_BYTES,
        Unit::Bytes,
        "Bytes in the node's RocksDB write-ahead log files (disk beyond relay_store_bytes)."
    );
    describe_gauge!(
        STORE_FREE_BYTES,
        Unit::Bytes,
        "Bytes still free on the file system holding the node's store; MAIL gets 452 4.3.1 below smtp.queue_minfree plus 1.5 x the message size."
    );
    describe_gauge!(RAFT_TERM, "Current Raft term.");
    describe_gauge!(RAFT_IS_LEADER, "1 if this node is the Raft leader.");
    describe_gauge!(RAFT_HAS_LEADER, "1 if this node knows a Raft leader.");
    describe_gauge!(
        RAFT_APPLIED_INDEX,
        "Last log index applied to the state machine."
    );
    describe_gauge!(RAFT_COMMITTED_INDEX, "Commit index as this node knows it.");
    describe_gauge!(RAFT_LAST_LOG_INDEX, "Last index in this node's Raft log.");
    describe_gauge!(
        RAFT_REPLICATION_LAG,
        "Leader only: log entries a peer is behind the leader's log (0 elsewhere)."
    );
    describe_gauge!(
        RAFT_REPLICATION_LAG_SECONDS,
        Unit::Seconds,
        "Leader only: age of the oldest log entry a peer lacks (0 elsewhere)."
    );
    describe_gauge!(
        RAFT_QUORUM_ACK_AGE_SECONDS,
        Unit::Seconds,
        "Leader only: time since a quorum last acknowledged the leader."
    );
    describe_gauge!(
        RAFT_LEADER_CONTACT_AGE_SECONDS,
        Unit::Seconds,
        "Time since this node last accepted an AppendEntries from a leader (-1: never)."
    );
    describe_gauge!(RAFT_VOTERS, "Voters in the current membership.");
    describe_counter!(
        RAFT_LEADER_CHANGES_TOTAL,
        "Times this node saw a new leader."
    );
    describe_counter!(
        RAFT_SNAPSHOTS_TOTAL,
        "Snapshots built or installed since start."
    );
    describe_counter!(RAFT_PURGES_TOTAL, "Raft log purges since start.");
    describe_gauge!(RAFT_SNAPSHOT_INDEX, "Index of the last snapshot.");
    describe_gauge!(
        RAFT_PURGED_INDEX,
        "Log entries up to this index are purged."
    );
    describe_counter!(
        TLS_RELOADS,
        "Certificate reloads on SIGHUP, by link (smtp, cluster) and result (an error keeps the old certificate)."
    );
    describe_counter!(
        TAKEOVERS_TOTAL,
        "Takeovers this node ran as leader: unreachable owners whose messages it reassigned."
    );
    describe_counter!(
        MESSAGES_REASSIGNED_TOTAL,
        "Messages reassigned by takeovers this node ran as leader."
    );
    describe_gauge!(BUILD_INFO, "Build version of this relayd; always 1.");
}

/// Records one submit that committed after `elapsed`.
pub fn submit_committed(elapsed: Duration) {
    metrics::histogram!(SUBMIT_COMMIT_SECONDS).record(elapsed.as_secs_f64());
}

/// Counts one submit that did not commit.
pub fn submit_failed(reason: &'static str) {
    metrics::counter!(SUBMIT_FAILURES_TOTAL, "reason" => reason).increment(1);
}

/// Reads queue counts, the oldest message and store size from the state
/// machine into their gauges. Called before each render.
pub fn refresh_state(cluster: &Cluster, now: UnixMillis) {
    let store = cluster.store();
    match store.counts() {
        Ok(c) => {
            metrics::gauge!(QUEUE_MESSAGES, "state" => "queued").set(c.queued as f64);
            metrics::gauge!(QUEUE_MESSAGES, "state" => "deferred").set(c.deferred as f64);
            metrics::gauge!(QUEUE_MESSAGES, "state" => "held").set(c.held as f64);
        }
        Err(e) => tracing::warn!(error = %e, "cannot read queue counts for metrics"),
    }
    match store.oldest() {
        Ok(oldest) => {
            let age_ms = oldest.map_or(0, |m| now.0.saturating_sub(m.received_at.0));
            metrics::gauge!(QUEUE_OLDEST_AGE_SECONDS).set(age_ms as f64 / 1000.0);
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the oldest message for metrics"),
    }
    match store.stored_bytes() {
        Ok(bytes) => metrics::gauge!(STORE_BYTES).set(bytes as f64),
        Err(e) => tracing::warn!(error = %e, "cannot read the store size for metrics"),
    }
    match store.wal_bytes() {
        Ok(bytes) => metrics::gauge!(STORE_WAL_BYTES).set(bytes as f64),
        Err(e) => tracing::warn!(error = %e, "cannot read the WAL size for metrics"),
    }
    match store.free_bytes() {
        Ok(bytes) => metrics::gauge!(STORE_FREE_BYTES).set(bytes as f64),
        Err(e) => tracing::warn!(error = %e, "cannot read the free space for metrics"),
    }
    if let Some(contact) = cluster.contact().last() {
        metrics::gauge!(RAFT_LEADER_CONTACT_AGE_SECONDS).set(contact.at.elapsed().as_secs_f64());
    } else {
        metrics::gauge!(RAFT_LEADER_CONTACT_AGE_SECONDS).set(-1.0);
    }
    // Quorum-ack age moves with time, not only when openraft publishes.
    let m = cluster.view();
    set_raft_gauges(&m, cluster.contact().last());
    set_lag_seconds(cluster, &m);
}

/// Lag in seconds moves with time: set from the leader's log clock.
fn set_lag_seconds(cluster: &Cluster, m: &RaftView) {
    let lag = cluster.replication_lag();
    for peer in &m.members {
        if *peer == m.id {
            continue;
        }
        let seconds = lag.get(peer).map_or(0.0, |l| l.age.as_secs_f64());
        metrics::gauge!(RAFT_REPLICATION_LAG_SECONDS, "peer" => peer.to_string()).set(seconds);
    }
}

/// The commit index as this node knows it: on the leader, the highest
/// index held by a quorum of voters; elsewhere, the leader's last reported
/// commit index capped at this node's own log.
pub fn committed_index(m: &RaftView, contact: Option<Contact>) -> u64 {
    let last_log = m.last_log_index;
    if m.is_leader() {
        let voters = &m.voters;
        let mut matched: Vec<u64> = voters
            .iter()
            .map(|id| {
                if *id == m.id {
                    last_log
                } else {
                    m.matched
                        .as_ref()
                        .and_then(|r| r.get(id).copied())
                        .unwrap_or(0)
                }
            })
            .collect();
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let quorum = voters.len() / 2 + 1;
        matched.get(quorum - 1).copied().unwrap_or(0)
    } else {
        contact.map_or(0, |c| c.leader_commit.min(last_log))
    }
}

/// Per-peer lag as the leader sees it: its last log index minus what the
/// peer is known to hold. Empty on other nodes.
pub fn replication_lag(m: &RaftView) -> BTreeMap<NodeId, u64> {
    let last_log = m.last_log_index;
    m.matched
        .as_ref()
        .map(|r| {
            r.iter()
                .filter(|(id, _)| **id != m.id)
                .map(|(id, matched)| (*id, last_log.saturating_sub(*matched)))
                .collect()
        })
        .unwrap_or_default()
}

fn set_raft_gauges(m: &RaftView, contact: Option<Contact>) {
    let is_leader = m.is_leader();
    metrics::gauge!(RAFT_TERM).set(m.term as f64);
    metrics::gauge!(RAFT_IS_LEADER).set(if is_leader { 1.0 } else { 0.0 });
    metrics::gauge!(RAFT_HAS_LEADER).set(if m.leader.is_some() { 1.0 } else { 0.0 });
    metrics::gauge!(RAFT_APPLIED_INDEX).set(m.last_applied as f64);
    metrics::gauge!(RAFT_LAST_LOG_INDEX).set(m.last_log_index as f64);
    metrics::gauge!(RAFT_COMMITTED_INDEX).set(committed_index(m, contact) as f64);
    metrics::gauge!(RAFT_SNAPSHOT_INDEX).set(m.snapshot_index.unwrap_or(0) as f64);
    metrics::gauge!(RAFT_PURGED_INDEX).set(m.purged_index.unwrap_or(0) as f64);
    metrics::gauge!(RAFT_VOTERS).set(m.voters.len() as f64);
    let lag = replication_lag(m);
    for peer in &m.members {
        if *peer == m.id {
            continue;
        }
        let value = lag.get(peer).copied().unwrap_or(0);
        metrics::gauge!(RAFT_REPLICATION_LAG, "peer" => peer.to_string()).set(value as f64);
    }
    if let Some(age) = m.quorum_ack_age {
        metrics::gauge!(RAFT_QUORUM_ACK_AGE_SECONDS).set(age.as_secs_f64());
    } else {
        metrics::gauge!(RAFT_QUORUM_ACK_AGE_SECONDS).set(0.0);
    }
}

/// Runs the exporter's upkeep (it drains histogram samples into their
/// buckets) every few seconds until `stop`.
pub async fn upkeep(handle: PrometheusHandle, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => handle.run_upkeep(),
            _ = stop.cancelled() => return,
        }
    }
}

/// What [`watch_raft`] remembers between two openraft metric updates.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RaftEvents {
    leader: Option<NodeId>,
    snapshot: Option<u64>,
    purged: Option<u64>,
}

/// Counts the events between two observations: (leader changed to a new
/// known leader, a new snapshot, a new purge).
pub fn raft_events(before: RaftEvents, m: &RaftView) -> (RaftEvents, bool, bool, bool) {
    let now = RaftEvents {
        leader: m.leader,
        snapshot: m.snapshot_index,
        purged: m.purged_index,
    };
    let leader_changed = now.leader.is_some() && now.leader != before.leader;
    let snapshot = now.snapshot.is_some() && now.snapshot != before.snapshot;
    let purged = now.purged.is_some() && now.purged != before.purged;
    // A leader that is merely forgotten (election in progress) and then
    // comes back is the same leader: remember the last known one.
    let now = RaftEvents {
        leader: now.leader.or(before.leader),
        ..now
    };
    (now, leader_changed, snapshot, purged)
}

/// Keeps the Raft gauges current and derives the event counters from
/// openraft's metrics stream until `stop`.
///
/// The snapshot and purge present at start (from an earlier run) are not
/// counted: the counters cover this process only.
pub async fn watch_raft(cluster: Arc<Cluster>, stop: CancellationToken) {
    let mut rx = cluster.watch_view();
    let mut seen = {
        let m = rx.current();
        set_raft_gauges(&m, cluster.contact().last());
        raft_events(RaftEvents::default(), &m).0
    };
    loop {
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            _ = stop.cancelled() => return,
        }
        let m = rx.current();
        set_raft_gauges(&m, cluster.contact().last());
        let (now, leader_changed, snapshot, purged) = raft_events(seen, &m);
        if leader_changed {
            tracing::info!(leader = ?m.leader, term = m.term, "leader changed");
            metrics::counter!(RAFT_LEADER_CHANGES_TOTAL).increment(1);
        }
        if snapshot {
            metrics::counter!(RAFT_SNAPSHOTS_TOTAL).increment(1);
        }
        if purged {
            metrics::counter!(RAFT_PURGES_TOTAL).increment(1);
        }
        seen = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_leader_is_a_change_but_a_forgotten_one_coming_back_is_not() {
        let mut m = RaftView::initial(1);
        let start = raft_events(RaftEvents::default(), &m).0;
        m.leader = Some(2);
        let (seen, changed, _, _) = raft_events(start, &m);
        assert!(changed);
        m.leader = None;
        let (seen, changed, _, _) = raft_events(seen, &m);
        assert!(!changed);
        m.leader = Some(2);
        let (seen, changed, _, _) = raft_events(seen, &m);
        assert!(!changed);
        m.leader = Some(3);
        assert!(raft_events(seen, &m).1);
    }

    #[test]
    fn follower_commit_is_capped_at_its_own_log() {
        let mut m = RaftView::initial(2);
        m.role = relay_cluster::Role::Follower;
        m.last_log_index = 10;
        let contact = Contact {
            at: std::time::Instant::now(),
            leader: 1,
            leader_commit: 15,
            leader_quorum_age: std::time::Duration::ZERO,
        };
        assert_eq!(committed_index(&m, Some(contact)), 10);
        assert_eq!(committed_index(&m, None), 0);
    }
}
