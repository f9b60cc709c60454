//! `LogStore`: openraft's `RaftLogStorage` + `RaftLogReader` on the
//! `raft_log` and `raft_meta` column families.
//!
//! The guarantees are documented on [`LogStore`].

use std::fmt;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{Entry, LogId, LogState, OptionalSend, RaftLogReader, StorageError, Vote};
use rocksdb::WriteBatch;

use crate::TypeConfig;
use crate::db::{
    CF_LOG, CF_RAFT_META, KEY_COMMITTED, KEY_LAST_PURGED, KEY_VOTE, Store, log_index, log_key,
};
use crate::error::{StoreError, read_logs, read_vote, write_logs, write_vote};
use crate::metrics::SyncOp;
use crate::voter_guard::VoterGuard;

/// The longest `purge` waits for a snapshot install to make the purged
/// entries' state recoverable (longer than the install timeout) before it
/// fails, which stops Raft on this node.
pub const PURGE_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// How often `purge` looks whether the install got there.
const PURGE_POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// The Raft log and vote, in the node's RocksDB. Cheap to clone (one `Arc`).
///
/// # What is guaranteed
///
/// - `append` writes the entries in one batch (readable when it returns),
///   then syncs the WAL, and only then reports
///   `callback.log_io_completed(Ok(()))`. If the sync fails the callback
///   gets the error, never `Ok`, and openraft stops the node's Raft core.
/// - `save_vote` and `truncate` return only after their write is synced.
/// - `save_committed` is written but not synced (it sat on every
///   node's commit path, one fsync per commit advance). The committed
///   index is a hint openraft may lose: after a crash a node applies up to
///   what it read back and learns the rest from the leader, and a stale
///   (lower) value is always safe. It shares the WAL with everything else,
///   so the next synced append makes it durable; RocksDB recovers a prefix
///   of the WAL, so a state-machine batch that survives a crash implies the
///   committed index written before it survived too.
/// - After a failed sync the store is poisoned (see `failpoint.rs`):
///   every later `LogStore` call, `get_log_state` included, fails, so entries
///   whose sync failed are never reported as part of the log by this
///   process. After a restart RocksDB recovers what really reached the disk:
///   a failed-sync entry may be there (an unacknowledged, uncommitted entry,
///   which Raft may later truncate or commit) or not; acknowledged entries
///   are always there.
/// - `purge` first syncs the WAL, so every state-machine write made so far
///   is durable before the log entries that could rebuild it are deleted.
/// - `purge` never deletes past what the state machine would hold after a
///   crash (its durable `last_applied`, or an install whose marker is
///   written). On a follower openraft asks to purge up to a received
///   snapshot as soon as it hands the install to the state machine, not
///   when the install is done; a kill -9 in between would leave the log
///   purged past the state, and the node unable to start. So `purge` waits
///   (at most [`PURGE_WAIT`]) for the install to reach that point, and
///   fails rather than purge too far. Opening a store that is in that state
///   anyway (written by an older build) is refused with how to rejoin.
#[derive(Clone)]
pub struct LogStore {
    pub(crate) store: Arc<Store>,
    /// Records durable votes and purges (see `voter_guard.rs`); `None`
    /// for an unguarded store (tests, tools).
    guard: Option<Arc<VoterGuard>>,
}

impl fmt::Debug for LogStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogStore")
            .field("path", &self.store.path())
            .finish()
    }
}

impl LogStore {
    pub(crate) fn new(store: Arc<Store>) -> Self {
        LogStore { store, guard: None }
    }

    /// This store, recording its durable votes and purges in `guard`.
    pub(crate) fn with_guard(self, guard: VoterGuard) -> Self {
        LogStore {
            guard: Some(Arc::new(guard)),
            ..self
        }
    }

    /// Fault injection: while `fail` is true, every WAL sync step of this
    /// store (log appends, vote, truncate, pending reports, the flush before
    /// purge, snapshot install) fails with an I/O error instead of syncing.
    /// The first failure poisons the log store until it is reopened.
    pub fn set_sync_failpoint(&self, fail: bool) {
        self.store.sync.set_fail(fail);
    }

    /// Fault injection: lets `n` more WAL syncs succeed and fails the one
    /// after (once). Like any failed sync it poisons the store.
    pub fn fail_sync_after(&self, n: u64) {
        self.store.sync.fail_after(n);
    }

    /// Number of successful WAL syncs since open (for tests and metrics).
    pub fn synced_count(&self) -> u64 {
        self.store.sync.synced()
    }

    fn last_purged(&self) -> Result<Option<LogId<u64>>, StoreError> {
        self.store.live().get(CF_RAFT_META, KEY_LAST_PURGED)
    }

    fn last_log_id(&self) -> Result<Option<LogId<u64>>, StoreError> {
        Ok(self.last_entry()?.map(|e| e.log_id))
    }

    fn last_entry(&self) -> Result<Option<Entry<TypeConfig>>, StoreError> {
        match self.store.last_raw(CF_LOG)? {
            None => Ok(None),
            Some((_, value)) => relay_types::decode(&value)
                .map(Some)
                .map_err(StoreError::corrupt(CF_LOG)),
        }
    }

    /// Entries with an index in `range`, in order.
    pub(crate) fn entries<RB: RangeBounds<u64>>(
        &self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StoreError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => match i.checked_add(1) {
                Some(i) => i,
                None => return Ok(Vec::new()),
            },
            Bound::Unbounded => 0,
        };
        let mut out = Vec::new();
        for item in self.store.live().scan(CF_LOG, &log_key(start), None)? {
            let (key, value) = item?;
            let index = log_index(&key)?;
            if !range.contains(&index) {
                break;
            }
            let entry: Entry<TypeConfig> =
                relay_types::decode(&value).map_err(StoreError::corrupt(CF_LOG))?;
            if entry.log_id.index != index {
                return Err(StoreError::Inconsistent(format!(
                    "raft log key {index} holds entry {}",
                    entry.log_id
                )));
            }
            out.push(entry);
        }
        Ok(out)
    }

    /// Waits until the state machine's recoverable applied log id reaches
    /// `log_id`, the install in progress ends, or [`PURGE_WAIT`] passed,
    /// and returns it.
    async fn wait_recoverable(&self, log_id: LogId<u64>) -> Result<Option<LogId<u64>>, StoreError> {
        let deadline = tokio::time::Instant::now() + PURGE_WAIT;
        let mut logged = false;
        loop {
            let recoverable = crate::snapshot::recoverable_applied(&self.store)?;
            if recoverable.is_some_and(|a| a.index >= log_id.index)
                || tokio::time::Instant::now() >= deadline
                || !crate::snapshot::install_pending(&self.store)
            {
                return Ok(recoverable);
            }
            if !logged {
                tracing::info!(purge_upto = %log_id, applied = ?recoverable,
                    "purge waits for the snapshot install to reach the purged index");
                logged = true;
            }
            tokio::time::sleep(PURGE_POLL).await;
        }
    }

    /// The write-then-sync step of `append`: writes the entries in one batch
    /// (readable afterwards), then syncs the WAL. `Ok` means the entries are
    /// on disk. The outer `Err` is a failed write (nothing readable
    /// guaranteed); the inner one a failed sync (written, not durable).
    /// A synced batch is recorded in `relay_raft_append_batch_entries` (how
    /// batches form is described in `metrics.rs`).
    pub(crate) fn write_then_sync(
        &self,
        entries: impl IntoIterator<Item = Entry<TypeConfig>>,
    ) -> Result<std::io::Result<()>, StoreError> {
        let cf = self.store.cf(CF_LOG)?;
        let mut batch = WriteBatch::default();
        for entry in entries {
            batch.put_cf(cf, log_key(entry.log_id.index), relay_types::encode(&entry));
        }
        let count = batch.len();
        self.store.write(batch)?;
        let synced = if self.store.skip_append_sync {
            Ok(())
        } else {
            self.store.sync_wal(SyncOp::Append)
        };
        if synced.is_ok() {
            crate::metrics::appended(count);
        }
        Ok(synced)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + fmt::Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<u64>> {
        self.store.sync.check().map_err(read_logs)?;
        self.entries(range).map_err(read_logs)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        self.store.sync.check().map_err(read_logs)?;
        let last_purged_log_id = self.last_purged().map_err(read_logs)?;
        let last_log_id = self
            .last_log_id()
            .map_err(read_logs)?
            .or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        self.store.sync.check().map_err(write_vote)?;
        let mut batch = WriteBatch::default();
        self.store
            .put(&mut batch, CF_RAFT_META, KEY_VOTE, vote)
            .map_err(write_vote)?;
        self.store
            .write_synced(batch, SyncOp::Vote)
            .map_err(write_vote)?;
        // Only after the store has it: the guard never runs ahead.
        if let Some(guard) = &self.guard {
            guard.record_vote(vote).map_err(write_vote)?;
        }
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        self.store.sync.check().map_err(read_vote)?;
        self.store
            .live()
            .get(CF_RAFT_META, KEY_VOTE)
            .map_err(read_vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<u64>>,
    ) -> Result<(), StorageError<u64>> {
        self.store.sync.check().map_err(write_logs)?;
        let mut batch = WriteBatch::default();
        self.store
            .put(&mut batch, CF_RAFT_META, KEY_COMMITTED, &committed)
            .map_err(write_logs)?;
        self.store.write(batch).map_err(write_logs)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        self.store.sync.check().map_err(read_logs)?;
        let committed: Option<Option<LogId<u64>>> = self
            .store
            .live()
            .get(CF_RAFT_META, KEY_COMMITTED)
            .map_err(read_logs)?;
        Ok(committed.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.store.sync.check().map_err(write_logs)?;
        // A failed write returns here: the callback is dropped unanswered
        // and openraft sees the error. A written batch is reported flushed
        // only with the sync's own result: `Ok` strictly after the WAL sync
        // returned `Ok`.
        let synced = self.write_then_sync(entries).map_err(write_logs)?;
        callback.log_io_completed(synced);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        self.store.sync.check().map_err(write_logs)?;
        let cf = self.store.cf(CF_LOG).map_err(write_logs)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, log_key(log_id.index), log_key(u64::MAX));
        batch.delete_cf(cf, log_key(u64::MAX));
        self.store
            .write_synced(batch, SyncOp::Truncate)
            .map_err(write_logs)
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        self.store.sync.check().map_err(write_logs)?;
        // Never purge past what a crash right after this purge would keep
        // while a snapshot is on its way in (read before the sync below,
        // so the sync makes it durable). Outside an install openraft only
        // purges what a snapshot of the applied state covers.
        if crate::snapshot::install_pending(&self.store) {
            let recoverable = self.wait_recoverable(log_id).await.map_err(write_logs)?;
            if recoverable.is_none_or(|applied| applied.index < log_id.index) {
                return Err(write_logs(StoreError::Inconsistent(format!(
                    "asked to purge the log up to {log_id} during a snapshot install, but the \
                     state machine holds only {recoverable:?}; not purging past it"
                ))));
            }
        }
        // State-machine writes are not synced on their own: they share the
        // WAL with the log, and every later synced log append makes them
        // durable too (the WAL is one ordered file; recovery replays a
        // prefix). If a crash loses an applied entry's state-machine write,
        // openraft re-applies it from the log after restart. That only works
        // while the log still holds the entry, so before deleting log
        // entries, sync the WAL: everything applied up to now (and any
        // snapshot written to the snapshot CF) is on disk first.
        self.store
            .sync_wal(SyncOp::Purge)
            .map_err(|e| write_logs(StoreError::Sync(e)))?;
        // Nothing after the purge point: no entry was appended since the
        // snapshot this purge follows (see `Store::reclaim_if_quiet`).
        let log_empty = self
            .last_log_id()
            .map_err(write_logs)?
            .is_none_or(|last| last.index <= log_id.index);
        let cf = self.store.cf(CF_LOG).map_err(write_logs)?;
        let mut batch = WriteBatch::default();
        self.store
            .put(&mut batch, CF_RAFT_META, KEY_LAST_PURGED, &log_id)
            .map_err(write_logs)?;
        batch.delete_range_cf(cf, log_key(0), log_key(log_id.index));
        batch.delete_cf(cf, log_key(log_id.index));
        // Not synced: if a crash loses it, the purge simply did not happen
        // (the entries and the old `last_purged` come back together).
        self.store.write(batch).map_err(write_logs)?;
        // Either way the log reaches `log_id`: a floor for the guard.
        if let Some(guard) = &self.guard {
            guard.record_floor(log_id.index).map_err(write_logs)?;
        }
        self.store.reclaim_if_quiet(log_empty);
        Ok(())
    }
}
