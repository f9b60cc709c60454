//! This crate's Prometheus instruments (through the `metrics` facade; the
//! node installs the recorder and calls [`describe`]). Without a recorder
//! every update is a no-op, so the storage tests need none.
//!
//! Together they show group commit: `sum(rate(APPEND_BATCH_ENTRIES_sum)) /
//! rate(LOG_FSYNCS_TOTAL{op="append"})` is entries made durable per log
//! fsync on a node.
//!
//! # How entries reach an append today (openraft 0.9.25)
//!
//! - **Leader**: every `client_write` (a submit on the leader, or one
//!   forwarded by a follower's `Submit` RPC) becomes its own
//!   `AppendInputEntries` command with exactly one entry, and RaftCore runs
//!   it (`append` → write + WAL fsync, awaited inline) before it takes the
//!   next queued write. Writes that arrive during an fsync wait in
//!   openraft's API channel and are then appended one by one, so the
//!   leader's batches are 1 entry per append (blank and membership entries
//!   included). Group commit on the leader therefore happens one level up:
//!   `relay_cluster::batcher` packs concurrent message commands into one
//!   `Command::Batch` entry, and [`ENTRY_COMMANDS`] shows how many each
//!   entry carried.
//! - **Followers**: the leader's replication stream sends everything the
//!   follower lacks (up to `max_payload_entries` = 256) in one
//!   AppendEntries, and the follower appends it in one call, one fsync.
//!   Entries that pile up while a follower fsyncs therefore share its next
//!   fsync: follower batches grow with load.
//! - Besides appends, `save_vote`, `truncate`,
//!   `purge`, snapshot installs and the delivery side's pending reports
//!   sync too; each is counted under its own `op`.

use metrics::{describe_counter, describe_histogram};

/// Histogram: entries written per Raft log append (one RocksDB write batch
/// followed by one WAL fsync). Recorded once per append whose fsync
/// succeeded, with the number of entries it made durable.
pub const APPEND_BATCH_ENTRIES: &str = "relay_raft_append_batch_entries";
/// Counter, label `op` = `append` | `vote` | `truncate` |
/// `purge` | `snapshot_install` | `pending_report`: successful fsyncs of the
/// node's RocksDB WAL (the Raft log lives in it), by what asked for them.
pub const LOG_FSYNCS_TOTAL: &str = "relay_raft_log_fsyncs_total";
/// Histogram, seconds: duration of each successful WAL fsync counted in
/// [`LOG_FSYNCS_TOTAL`] (every operation together). A commit waits for
/// one on the leader and one on a follower, so this is the floor of the
/// submit-to-commit latency; a slow or failing disk shows here first.
pub const LOG_FSYNC_SECONDS: &str = "relay_raft_log_fsync_seconds";
/// Buckets for [`LOG_FSYNC_SECONDS`]: from a write-cached SSD (tens of
/// microseconds) to a stalled disk (a second and more).
pub const LOG_FSYNC_BUCKETS: [f64; 14] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Counter, label `index` = `due_index` | `owner_index`: index keys a
/// query met without a matching message record (skipped, logged). Apply
/// writes records and index keys together, so anything above 0 means
/// damage or a bug: the messages concerned may not be delivered until
/// their record is fixed, while every other message still is.
pub const DANGLING_INDEX_KEYS_TOTAL: &str = "relay_store_dangling_index_keys_total";

/// Buckets for [`APPEND_BATCH_ENTRIES`]: powers of two up to openraft's
/// `max_payload_entries` (256), the largest AppendEntries a follower gets.
pub const APPEND_BATCH_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// Histogram: commands per applied normal log entry (1 for a plain entry,
/// the command count for a `Command::Batch`). With group commit on the
/// leader (`relay_cluster::batcher`) this is messages per leader append:
/// `rate(ENTRY_COMMANDS_sum) / rate(LOG_FSYNCS_TOTAL{op="append"})` on the
/// leader is commands made durable per log fsync.
pub const ENTRY_COMMANDS: &str = "relay_raft_entry_commands";

/// Buckets for [`ENTRY_COMMANDS`]: powers of two up to the batch limit.
pub const ENTRY_COMMANDS_BUCKETS: [f64; 11] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// What asked for a WAL fsync (the `op` label of [`LOG_FSYNCS_TOTAL`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SyncOp {
    /// A Raft log append.
    Append,
    /// `save_vote`.
    Vote,
    /// Truncating conflicting log entries.
    Truncate,
    /// The sync before a log purge.
    Purge,
    /// Installing a snapshot.
    SnapshotInstall,
    /// Making a built snapshot the current one.
    SnapshotBuild,
    /// A delivery report kept until its entry commits.
    PendingReport,
}

impl SyncOp {
    fn label(self) -> &'static str {
        match self {
            SyncOp::Append => "append",
            SyncOp::Vote => "vote",
            SyncOp::Truncate => "truncate",
            SyncOp::Purge => "purge",
            SyncOp::SnapshotInstall => "snapshot_install",
            SyncOp::SnapshotBuild => "snapshot_build",
            SyncOp::PendingReport => "pending_report",
        }
    }
}

/// Creates this crate's series at zero (every histogram, every `op` of
/// [`LOG_FSYNCS_TOTAL`]), so they are on `/metrics` from the first scrape.
pub fn register() {
    // Taking a handle registers the series; no sample is recorded.
    let _registered = metrics::histogram!(APPEND_BATCH_ENTRIES);
    let _registered = metrics::histogram!(LOG_FSYNC_SECONDS);
    let _registered = metrics::histogram!(ENTRY_COMMANDS);
    for op in [
        SyncOp::Append,
        SyncOp::Vote,
        SyncOp::Truncate,
        SyncOp::Purge,
        SyncOp::SnapshotInstall,
        SyncOp::SnapshotBuild,
        SyncOp::PendingReport,
    ] {
        metrics::counter!(LOG_FSYNCS_TOTAL, "op" => op.label()).increment(0);
    }
}

/// Counts one successful WAL fsync that took `took`.
pub(crate) fn synced(op: SyncOp, took: std::time::Duration) {
    metrics::counter!(LOG_FSYNCS_TOTAL, "op" => op.label()).increment(1);
    metrics::histogram!(LOG_FSYNC_SECONDS).record(took.as_secs_f64());
}

/// Records one append that made `entries` entries durable.
pub(crate) fn appended(entries: usize) {
    metrics::histogram!(APPEND_BATCH_ENTRIES).record(entries as f64);
}

/// Counts one dangling key met in `index` (a column family name).
pub(crate) fn dangling_index_key(index: &'static str) {
    metrics::counter!(DANGLING_INDEX_KEYS_TOTAL, "index" => index).increment(1);
}

/// Records one applied normal entry carrying `commands` commands.
pub(crate) fn applied_entry(commands: usize) {
    metrics::histogram!(ENTRY_COMMANDS).record(commands as f64);
}

/// Registers descriptions of every instrument with the installed recorder.
pub fn describe() {
    describe_histogram!(
        APPEND_BATCH_ENTRIES,
        "Entries per Raft log append (one RocksDB write batch and one WAL fsync)."
    );
    describe_histogram!(
        ENTRY_COMMANDS,
        "Commands per applied log entry (a group-commit batch counts each of its commands)."
    );
    describe_counter!(
        DANGLING_INDEX_KEYS_TOTAL,
        "Index keys a query met without a matching message record (skipped), by index."
    );
    describe_histogram!(
        LOG_FSYNC_SECONDS,
        metrics::Unit::Seconds,
        "Duration of successful WAL fsyncs (every operation)."
    );
    describe_counter!(
        LOG_FSYNCS_TOTAL,
        "Successful fsyncs of the node's RocksDB WAL (holds the Raft log), by operation."
    );
}
