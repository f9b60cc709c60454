//! The one RocksDB of a node: options, column families, key layouts, and
//! the read/write helpers every other module uses.
//!
//! Every integer in a key is big-endian, so RocksDB's bytewise key order is
//! log order (raft log), time order (due index) and id order (ids are
//! UUIDv7 bytes).
//!
//! | column family | key | value |
//! |---|---|---|
//! | `raft_log` | index (u64) | `Entry<TypeConfig>` |
//! | `raft_meta` | `vote` / `committed` / `last_purged` | `Vote` / `Option<LogId>` / `LogId` |
//! | `sm_meta` | `last_applied` / `last_membership` / `counts` / `drained` | `LogId` / `StoredMembership` / `QueueCounts` / `Vec<NodeId>` (nodes in maintenance) |
//! | `messages` | id (16 bytes) | `MessageRecord` |
//! | `bodies` | id | raw body bytes |
//! | `due_index` | owner (u64) \| next_attempt_at (u64) \| id | empty; only for messages not held |
//! | `owner_index` | owner (u64) \| id | empty |
//! | `routes` | normalised domain (UTF-8) | `Route` |
//! | `traces` | id \| log index (u64) \| seq (u32) | `TraceEvent` |
//! | `snapshot` | `meta` / `file` / `install` | current `SnapshotMeta` / its file name in `snapshots/` (UTF-8) / `InstallMarker` while an install runs |
//! | `pending_reports` | id | `Command` (this node's own, never replicated) |
//!
//! Values are `relay_types::encode` (postcard behind a format-version octet), the
//! openraft types included, except bodies (raw bytes). The snapshot data
//! itself lives in files beside the RocksDB files (see `snapshot.rs`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use relay_types::{MessageId, NodeId, UnixMillis};
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType,
    DBIteratorWithThreadMode, DBRecoveryMode, Direction, IteratorMode, Options, ReadOptions,
    Snapshot, WriteBatch, WriteBufferManager,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::StoreError;
use crate::failpoint::SyncGate;
use crate::metrics::SyncOp;

pub(crate) const CF_LOG: &str = "raft_log";
pub(crate) const CF_RAFT_META: &str = "raft_meta";
pub(crate) const CF_SM_META: &str = "sm_meta";
pub(crate) const CF_MESSAGES: &str = "messages";
pub(crate) const CF_BODIES: &str = "bodies";
pub(crate) const CF_DUE: &str = "due_index";
pub(crate) const CF_OWNER: &str = "owner_index";
pub(crate) const CF_ROUTES: &str = "routes";
pub(crate) const CF_TRACES: &str = "traces";
/// Ids of finished (delivered, bounced, expired, deleted) messages, value
/// empty: a late copy of a finished message is refused. Pruned with the
/// traces by `Command::Prune`.
pub(crate) const CF_FINISHED: &str = "finished";
pub(crate) const CF_SNAPSHOT: &str = "snapshot";
/// Local only: reports of deliveries the target accepted whose entry has not
/// committed yet (see `StateMachine::save_pending_report`).
pub(crate) const CF_PENDING_REPORTS: &str = "pending_reports";

const ALL_CFS: [&str; 12] = [
    CF_LOG,
    CF_RAFT_META,
    CF_SM_META,
    CF_MESSAGES,
    CF_BODIES,
    CF_DUE,
    CF_OWNER,
    CF_ROUTES,
    CF_TRACES,
    CF_SNAPSHOT,
    CF_PENDING_REPORTS,
    CF_FINISHED,
];

/// The column families that make up the replicated state: what a snapshot
/// carries and what installing one replaces.
pub(crate) const STATE_CFS: [&str; 8] = [
    CF_SM_META,
    CF_MESSAGES,
    CF_BODIES,
    CF_DUE,
    CF_OWNER,
    CF_ROUTES,
    CF_TRACES,
    CF_FINISHED,
];

/// `raft_meta` keys.
pub(crate) const KEY_VOTE: &[u8] = b"vote";
pub(crate) const KEY_COMMITTED: &[u8] = b"committed";
pub(crate) const KEY_LAST_PURGED: &[u8] = b"last_purged";
/// `raft_meta`: the store's format version, one raw octet (not encoded:
/// it says how everything else is encoded).
pub(crate) const KEY_FORMAT_VERSION: &[u8] = b"format_version";
/// `sm_meta` keys.
pub(crate) const KEY_LAST_APPLIED: &[u8] = b"last_applied";
pub(crate) const KEY_LAST_MEMBERSHIP: &[u8] = b"last_membership";
pub(crate) const KEY_COUNTS: &[u8] = b"counts";
/// The drained nodes (`Command::Drain`), ascending; absent when none.
pub(crate) const KEY_DRAINED: &[u8] = b"drained";
/// `snapshot` keys.
pub(crate) const KEY_SNAPSHOT_META: &[u8] = b"meta";
/// The current snapshot's file name.
pub(crate) const KEY_SNAPSHOT_FILE: &[u8] = b"file";
/// Present while an install runs (see `snapshot.rs`).
pub(crate) const KEY_SNAPSHOT_INSTALL: &[u8] = b"install";
/// Format 1 kept the whole snapshot here; converted to a file on open.
pub(crate) const KEY_SNAPSHOT_DATA: &[u8] = b"data";

/// `raft_log` key.
pub(crate) fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// The index in a `raft_log` key.
pub(crate) fn log_index(key: &[u8]) -> Result<u64, StoreError> {
    <[u8; 8]>::try_from(key)
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Inconsistent(format!("raft log key of {} bytes", key.len())))
}

/// `due_index` key: owner | next_attempt_at | id.
pub(crate) fn due_key(owner: NodeId, at: UnixMillis, id: &MessageId) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&owner.to_be_bytes());
    k[8..16].copy_from_slice(&at.0.to_be_bytes());
    k[16..].copy_from_slice(id.as_bytes());
    k
}

/// Splits a `due_index` key.
pub(crate) fn parse_due_key(key: &[u8]) -> Result<(NodeId, UnixMillis, MessageId), StoreError> {
    if key.len() != 32 {
        return Err(StoreError::Inconsistent(format!(
            "due index key of {} bytes",
            key.len()
        )));
    }
    let owner = u64::from_be_bytes(key[..8].try_into().expect("8 bytes"));
    let at = u64::from_be_bytes(key[8..16].try_into().expect("8 bytes"));
    let id = MessageId::from_slice(&key[16..]).expect("16 bytes");
    Ok((owner, UnixMillis(at), id))
}

/// `owner_index` key: owner | id.
pub(crate) fn owner_key(owner: NodeId, id: &MessageId) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&owner.to_be_bytes());
    k[8..].copy_from_slice(id.as_bytes());
    k
}

/// The id in an `owner_index` key.
pub(crate) fn owner_key_id(key: &[u8]) -> Result<MessageId, StoreError> {
    if key.len() != 24 {
        return Err(StoreError::Inconsistent(format!(
            "owner index key of {} bytes",
            key.len()
        )));
    }
    Ok(MessageId::from_slice(&key[8..]).expect("16 bytes"))
}

/// `traces` key: id | log index | sequence within the entry.
pub(crate) fn trace_key(id: &MessageId, index: u64, seq: u32) -> [u8; 28] {
    let mut k = [0u8; 28];
    k[..16].copy_from_slice(id.as_bytes());
    k[16..24].copy_from_slice(&index.to_be_bytes());
    k[24..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The smallest key strictly greater than every key starting with `prefix`,
/// or `None` if there is none (the prefix is all 0xFF).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// All memtables of the store together, past which the largest is flushed
/// (RocksDB's write buffer manager, without its writer stall).
const MEMTABLE_BUDGET: usize = 64 * 1024 * 1024;
/// One column family's memtable (RocksDB `write_buffer_size`). With two
/// memtables per family at most (RocksDB's `max_write_buffer_number`
/// default), a family that writes faster than the disk flushes holds at
/// most twice this unflushed before its writers wait.
const MEMTABLE_BYTES: usize = 16 * 1024 * 1024;
/// See [`MEMTABLE_BYTES`]: one memtable filling, one being flushed.
const MEMTABLES_PER_FAMILY: i32 = 2;
/// The WAL files together, past which the column families pinning the
/// oldest one are flushed (RocksDB `max_total_wal_size`).
const MAX_TOTAL_WAL_BYTES: u64 = 2 * MEMTABLE_BUDGET as u64;
/// RocksDB's info log: how many files are kept, and the size at which it
/// rolls over to a new one.
const INFO_LOG_FILES: usize = 5;
const INFO_LOG_FILE_BYTES: usize = 8 * 1024 * 1024;
/// The one block cache every column family shares.
const BLOCK_CACHE_BYTES: usize = 64 * 1024 * 1024;
/// Memtable size of the due and owner indexes (small keys, many deletes).
const INDEX_MEMTABLE_BYTES: usize = 256 * 1024;

/// Sliding window (entries) of the index column families' compact-on-
/// deletion trigger: an SST file with half of any window deleted, or half
/// of all its entries, is compacted soon.
const INDEX_DELETION_WINDOW: usize = 1024;

/// Smallest store a quiet-time compaction is worth running for (see
/// [`Store::reclaim_if_quiet`]).
const RECLAIM_MIN_BYTES: u64 = 16 * 1024 * 1024;

/// Bytes in the `*.log` files (RocksDB's WAL) directly in `dir`.
pub(crate) fn wal_bytes_in(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.path().extension().is_some_and(|e| e == "log") {
            // A file RocksDB deleted since the listing is no WAL any more.
            total += entry.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    Ok(total)
}

/// The shared store: one RocksDB, the sync gate, and where it lives.
pub(crate) struct Store {
    db: DB,
    path: PathBuf,
    pub(crate) sync: SyncGate,
    /// Group commit of local syncs: see [`Store::sync_wal`].
    sync_tickets: AtomicU64,
    /// The highest ticket a completed sync covers. Held while syncing, so
    /// one sync runs at a time and callers behind it can see whether it
    /// covered them.
    synced_ticket: Mutex<u64>,
    /// Snapshot installs running (see `snapshot::install_pending`).
    pub(crate) installs_running: AtomicUsize,
    /// Test-only: appends skip their sync (`StoreOptions::skip_append_sync`).
    pub(crate) skip_append_sync: bool,
}

impl Store {
    /// Opens or creates the RocksDB at `dir`.
    pub(crate) fn open(dir: &Path, options: crate::StoreOptions) -> Result<Store, StoreError> {
        refuse_foreign_directory(dir)?;

        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // Check every block and the manifest on read/open: corruption is an
        // error, never silently skipped data.
        opts.set_paranoid_checks(true);
        // After a crash, recover the WAL up to the first damaged record and no
        // further: a consistent prefix of what was written.
        opts.set_wal_recovery_mode(DBRecoveryMode::PointInTime);
        opts.set_compression_type(DBCompressionType::Lz4);
        // Failpoint (see `StoreOptions`): WAL writes stay in RocksDB's buffer
        // until `flush_wal`, which every durability point calls with sync.
        opts.set_manual_wal_flush(options.unsynced_writes_die_with_process);

        // Memory is bounded whatever the queue size (a million
        // queued messages in at most 512 MiB per node): every column family
        // shares one block cache, index and filter blocks included, and
        // all memtables together flush at MEMTABLE_BUDGET.
        //
        // When writes outrun the disk (a follower catching up on large
        // batches, a slow or busy disk), what waits for a flush, in memory
        // and in the WAL, is bounded per column family: MEMTABLE_BYTES
        // filling and one memtable being flushed, after which RocksDB makes
        // that family's writers wait for the flush. With RocksDB's 64 MiB
        // default per family, a catch-up left several hundred megabytes of
        // WAL files that filled a small data disk.
        //
        // The write buffer manager must not stall writers itself
        // (`allow_stall` false): its stall ends only when memtable memory
        // is freed, and a flushed memtable stays allocated while any
        // iterator still reads it. A thread that writes while its own scan
        // is open (or waits for one that is) then waits for ever; that hung
        // a large takeover. RocksDB's per-family stall waits for the flush
        // to finish, which no reader holds up.
        let write_buffers = WriteBufferManager::new_write_buffer_manager(MEMTABLE_BUDGET, false);
        opts.set_write_buffer_manager(&write_buffers);
        // A WAL file is deleted only once every column family with rows in
        // it has flushed them; a rarely written family (votes, routes)
        // would pin every file after it. Past this total RocksDB flushes
        // the families holding the oldest file. The default is four times
        // the sum of all memtable limits, gigabytes here.
        opts.set_max_total_wal_size(MAX_TOTAL_WAL_BYTES);
        // RocksDB's own info log: a few small files, not one per restart.
        opts.set_keep_log_file_num(INFO_LOG_FILES);
        opts.set_max_log_file_size(INFO_LOG_FILE_BYTES);
        if let Some(rate) = options.slow_disk_bytes_per_sec {
            // Failpoint: flushes and compactions write at `rate`.
            opts.set_ratelimiter(rate, 100_000, 10);
        }
        let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_cache_index_and_filter_blocks(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);

        let cfs = ALL_CFS.iter().map(|name| {
            let mut cf_opts = Options::default();
            cf_opts.set_compression_type(DBCompressionType::Lz4);
            cf_opts.set_block_based_table_factory(&table);
            cf_opts.set_write_buffer_size(MEMTABLE_BYTES);
            cf_opts.set_max_write_buffer_number(MEMTABLES_PER_FAMILY);
            if [CF_DUE, CF_OWNER].contains(name) {
                // Delivered messages leave tombstones in the indexes, and a
                // scan from the start of an owner's range walks every
                // tombstone still in the memtable. A small memtable flushes
                // (and compaction drops) them soon, so `due` stays
                // O(due), not O(due + delivered since the last flush).
                cf_opts.set_write_buffer_size(INDEX_MEMTABLE_BYTES);
                // Index keys are removed with plain deletes (see
                // `StateMachine::delete_index_keys`), whose tombstones stay
                // in the SST files until compaction reaches them: a file
                // that is mostly tombstones is marked for compaction at
                // once, so they do not pile up in front of the due keys.
                cf_opts.add_compact_on_deletion_collector_factory(
                    INDEX_DELETION_WINDOW,
                    INDEX_DELETION_WINDOW / 2,
                    0.5,
                );
            }
            ColumnFamilyDescriptor::new(*name, cf_opts)
        });
        let db = DB::open_cf_descriptors(&opts, dir, cfs).map_err(|source| StoreError::Open {
            path: dir.to_path_buf(),
            source,
        })?;
        let store = Store {
            db,
            path: dir.to_path_buf(),
            sync: SyncGate::default(),
            sync_tickets: AtomicU64::new(0),
            synced_ticket: Mutex::new(0),
            installs_running: AtomicUsize::new(0),
            skip_append_sync: options.skip_append_sync,
        };
        for name in ALL_CFS {
            store.cf(name)?;
        }
        Ok(store)
    }

    /// The store directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn cf(&self, name: &'static str) -> Result<&ColumnFamily, StoreError> {
        self.db
            .cf_handle(name)
            .ok_or(StoreError::MissingColumnFamily(name))
    }

    /// A reader over the live database.
    pub(crate) fn live(&self) -> Reader<'_> {
        Reader {
            store: self,
            snapshot: None,
        }
    }

    /// A point-in-time view: every read through it sees the same state.
    pub(crate) fn snapshot(&self) -> Snapshot<'_> {
        self.db.snapshot()
    }

    /// A reader over `snapshot`.
    pub(crate) fn at<'a>(&'a self, snapshot: &'a Snapshot<'a>) -> Reader<'a> {
        Reader {
            store: self,
            snapshot: Some(snapshot),
        }
    }

    /// Writes a batch atomically, without waiting for the disk.
    pub(crate) fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        self.db.write(batch).map_err(StoreError::rocks("write"))
    }

    /// Syncs the WAL: everything written before this call (by any writer,
    /// log or state machine) is on disk when it returns `Ok`. `op` says who
    /// asked, for `relay_raft_log_fsyncs_total`.
    ///
    /// Concurrent callers share fsyncs (group commit of local writes, e.g.
    /// the delivery tasks' pending reports and the log's appends): each
    /// caller takes a ticket after its write; a sync records the last
    /// ticket taken before it started, and every ticket up to that one was
    /// written before the sync began, so a caller whose ticket a finished
    /// sync covers returns without syncing again. A failed sync covers
    /// nobody (and poisons the gate, so the callers behind it fail too).
    pub(crate) fn sync_wal(&self, op: SyncOp) -> std::io::Result<()> {
        let ticket = self.sync_tickets.fetch_add(1, Ordering::SeqCst) + 1;
        let mut synced = self
            .synced_ticket
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if *synced >= ticket {
            return Ok(());
        }
        let covers = self.sync_tickets.load(Ordering::SeqCst);
        let started = std::time::Instant::now();
        self.sync.sync(|| self.db.flush_wal(true))?;
        *synced = covers;
        crate::metrics::synced(op, started.elapsed());
        Ok(())
    }

    /// Writes a batch, then syncs the WAL.
    pub(crate) fn write_synced(&self, batch: WriteBatch, op: SyncOp) -> Result<(), StoreError> {
        self.write(batch)?;
        self.sync_wal(op).map_err(StoreError::Sync)
    }

    /// Gives the disk back after a burst of mail has been delivered and its
    /// history pruned. Deleted rows (delivered messages and bodies, purged
    /// log entries, pruned history) are tombstones until RocksDB compacts
    /// the files that hold them, and RocksDB compacts only when writes
    /// arrive: under steady load its own compactions keep the garbage in
    /// proportion, but files nobody writes to any more, which is what a
    /// drained queue leaves behind, are never rewritten, so the store
    /// would stay at its high-water mark.
    ///
    /// Called after each log purge with whether that purge left the log
    /// empty, which means nothing was appended between the snapshot and the
    /// purge: the cluster was quiet, and the current snapshot file holds
    /// the whole live state. Then, if the store is at least
    /// `RECLAIM_MIN_BYTES` and more than twice that snapshot (RocksDB
    /// compresses, the snapshot does not: twice means most of the store is
    /// garbage), every column family is compacted to its last level
    /// (tombstones and what they delete are dropped). A large queue that is
    /// not moving is about its snapshot's size and is left alone. It runs on
    /// the caller's thread, as every RocksDB call here does, so a shutdown
    /// waits for it; on a quiet cluster that costs nobody a reply. A failure
    /// is logged and the store keeps serving.
    pub(crate) fn reclaim_if_quiet(&self, log_empty: bool) {
        if !log_empty {
            return;
        }
        let before = match self.stored_bytes() {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(error = %e, "store size unreadable; no quiet-time compaction");
                return;
            }
        };
        let live = crate::snapshot::current_file_len(self);
        if before < RECLAIM_MIN_BYTES || before <= live.saturating_mul(2) {
            return;
        }
        let started = Instant::now();
        let mut options = rocksdb::CompactOptions::default();
        options.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::ForceOptimized);
        options.set_exclusive_manual_compaction(false);
        for name in ALL_CFS {
            match self.cf(name) {
                Ok(cf) => self
                    .db
                    .compact_range_cf_opt(cf, None::<&[u8]>, None::<&[u8]>, &options),
                Err(e) => {
                    tracing::warn!(error = %e, "quiet-time compaction stopped");
                    return;
                }
            }
        }
        let after = self.stored_bytes().unwrap_or(before);
        tracing::info!(
            before,
            after,
            snapshot_bytes = live,
            millis = started.elapsed().as_millis() as u64,
            "quiet-time compaction gave the disk back"
        );
    }

    /// Bytes this store holds on disk and in memtables, over every column
    /// family (RocksDB's own accounting: SST files plus memtables; the WAL
    /// is not counted). For the `relay_store_bytes` gauge.
    pub(crate) fn stored_bytes(&self) -> Result<u64, StoreError> {
        let mut total = 0u64;
        for name in ALL_CFS {
            let cf = self.cf(name)?;
            for property in [
                "rocksdb.total-sst-files-size",
                "rocksdb.cur-size-all-mem-tables",
            ] {
                total += self
                    .db
                    .property_int_value_cf(cf, property)
                    .map_err(StoreError::rocks("read property"))?
                    .unwrap_or(0);
            }
        }
        Ok(total)
    }

    /// Bytes in the store's write-ahead log files (`*.log` in its
    /// directory): disk that [`Store::stored_bytes`] does not count.
    pub(crate) fn wal_bytes(&self) -> Result<u64, StoreError> {
        wal_bytes_in(&self.path).map_err(|source| StoreError::DirIo {
            path: self.path.clone(),
            op: "list",
            source,
        })
    }

    /// The first key/value of `cf` in the live database (one seek).
    pub(crate) fn first_raw(&self, cf: &'static str) -> Result<Option<Row>, StoreError> {
        self.db
            .iterator_cf(self.cf(cf)?, IteratorMode::Start)
            .next()
            .transpose()
            .map_err(StoreError::rocks("iterate"))
    }

    /// The last key/value of `cf` in the live database (one reverse seek).
    pub(crate) fn last_raw(&self, cf: &'static str) -> Result<Option<Row>, StoreError> {
        self.db
            .iterator_cf(self.cf(cf)?, IteratorMode::End)
            .next()
            .transpose()
            .map_err(StoreError::rocks("iterate"))
    }

    /// Adds deletes for every key of `cf` to `batch`: one range tombstone
    /// from the empty key to just past the current last key.
    pub(crate) fn delete_all(
        &self,
        batch: &mut WriteBatch,
        cf: &'static str,
    ) -> Result<(), StoreError> {
        if let Some((last, _)) = self.last_raw(cf)? {
            let mut end = last.to_vec();
            end.push(0);
            batch.delete_range_cf(self.cf(cf)?, [].as_slice(), end.as_slice());
        }
        Ok(())
    }

    /// Adds a put of `value` (encoded) to `batch`.
    pub(crate) fn put<T: Serialize>(
        &self,
        batch: &mut WriteBatch,
        cf: &'static str,
        key: &[u8],
        value: &T,
    ) -> Result<(), StoreError> {
        batch.put_cf(self.cf(cf)?, key, relay_types::encode(value));
        Ok(())
    }
}

/// Refuses a directory that holds files but no RocksDB store: a mistyped
/// `data_dir` must not silently become a new, empty store.
fn refuse_foreign_directory(dir: &Path) -> Result<(), StoreError> {
    let Ok(mut entries) = std::fs::read_dir(dir) else {
        return Ok(()); // missing: RocksDB creates it (and reports what it cannot)
    };
    if entries.next().is_some() && !dir.join("CURRENT").exists() {
        return Err(StoreError::NotAStore {
            path: dir.to_path_buf(),
        });
    }
    Ok(())
}

/// One key/value as RocksDB returns it.
pub(crate) type Row = (Box<[u8]>, Box<[u8]>);

/// Reads from the live database or from one RocksDB snapshot.
pub(crate) struct Reader<'a> {
    store: &'a Store,
    snapshot: Option<&'a Snapshot<'a>>,
}

impl<'a> Reader<'a> {
    fn read_opts(&self) -> ReadOptions {
        let mut opts = ReadOptions::default();
        if let Some(s) = self.snapshot {
            opts.set_snapshot(s);
        }
        opts
    }

    /// Raw value.
    pub(crate) fn get_raw(
        &self,
        cf: &'static str,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.store
            .db
            .get_cf_opt(self.store.cf(cf)?, key, &self.read_opts())
            .map_err(StoreError::rocks("get"))
    }

    /// Decoded value.
    pub(crate) fn get<T: DeserializeOwned>(
        &self,
        cf: &'static str,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        match self.get_raw(cf, key)? {
            None => Ok(None),
            Some(bytes) => relay_types::decode(&bytes)
                .map(Some)
                .map_err(StoreError::corrupt(cf)),
        }
    }

    /// Every key/value of `cf` from `from` on, in key order, stopping
    /// before `until` (exclusive) if given.
    pub(crate) fn scan(
        &self,
        cf: &'static str,
        from: &[u8],
        until: Option<Vec<u8>>,
    ) -> Result<Scan<'a>, StoreError> {
        let mut opts = self.read_opts();
        if let Some(until) = until {
            opts.set_iterate_upper_bound(until);
        }
        let iter = self.store.db.iterator_cf_opt(
            self.store.cf(cf)?,
            opts,
            IteratorMode::From(from, Direction::Forward),
        );
        Ok(Scan { iter })
    }

    /// Every key/value of `cf`, without filling the block cache (a bulk
    /// read such as a snapshot build must not evict what queries use).
    pub(crate) fn scan_uncached(&self, cf: &'static str) -> Result<Scan<'a>, StoreError> {
        let mut opts = self.read_opts();
        opts.fill_cache(false);
        let iter = self
            .store
            .db
            .iterator_cf_opt(self.store.cf(cf)?, opts, IteratorMode::Start);
        Ok(Scan { iter })
    }

    /// Every key/value whose key starts with `prefix`.
    pub(crate) fn scan_prefix(
        &self,
        cf: &'static str,
        prefix: &[u8],
    ) -> Result<Scan<'a>, StoreError> {
        self.scan(cf, prefix, prefix_end(prefix))
    }
}

/// An iterator of `(key, value)` that turns RocksDB errors into
/// `StoreError`s.
pub(crate) struct Scan<'a> {
    iter: DBIteratorWithThreadMode<'a, DB>,
}

impl Iterator for Scan<'_> {
    type Item = Result<Row, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.iter
            .next()
            .map(|r| r.map_err(StoreError::rocks("iterate")))
    }
}

#[cfg(test)]
mod power_loss_failpoint_tests {
    //! The failpoint must model a power cut: after kill -9, what was synced
    //! is there and what was not is gone. Without it, the page cache keeps
    //! the unsynced write (which is why kill -9 alone proves little).
    //!
    //! The child half runs in a separate process (this test binary started
    //! again with `QR_CHILD_DIR`), so it can be killed for real.

    use rocksdb::WriteBatch;

    use super::{CF_SM_META, Store};
    use crate::StoreOptions;

    const CHILD_DIR: &str = "QR_POWER_LOSS_CHILD_DIR";
    const CHILD_FAILPOINT: &str = "QR_POWER_LOSS_CHILD_FAILPOINT";

    fn put(store: &Store, key: &[u8]) {
        let mut batch = WriteBatch::default();
        batch.put_cf(store.cf(CF_SM_META).unwrap(), key, b"v");
        store.write(batch).unwrap();
    }

    /// The child: writes `synced` and syncs, writes `unsynced`, says so,
    /// and waits to be killed.
    #[test]
    fn child_writes_then_waits_to_be_killed() {
        let Some(dir) = std::env::var_os(CHILD_DIR) else {
            return; // Not started as the child.
        };
        let options = StoreOptions {
            unsynced_writes_die_with_process: std::env::var_os(CHILD_FAILPOINT).is_some(),
            ..StoreOptions::default()
        };
        let store = Store::open(std::path::Path::new(&dir), options).unwrap();
        put(&store, b"synced");
        store.sync_wal(crate::metrics::SyncOp::Append).unwrap();
        put(&store, b"unsynced");
        println!("READY");
        loop {
            std::thread::park();
        }
    }

    /// Runs the child, kills it once it is ready, reopens the store and
    /// tells which keys survived.
    fn survivors_after_kill(failpoint: bool) -> (bool, bool) {
        let dir = tempfile::tempdir().unwrap();
        let on = std::ffi::OsStr::new("1");
        let mut envs = vec![(CHILD_DIR, dir.path().as_os_str())];
        if failpoint {
            envs.push((CHILD_FAILPOINT, on));
        }
        crate::child_process::kill_child_when_ready(
            "db::power_loss_failpoint_tests::child_writes_then_waits_to_be_killed",
            &envs,
        );
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let reader = store.live();
        let has = |key: &[u8]| reader.get_raw(CF_SM_META, key).unwrap().is_some();
        (has(b"synced"), has(b"unsynced"))
    }

    #[test]
    fn with_the_failpoint_kill_9_loses_exactly_the_unsynced_write() {
        assert_eq!(survivors_after_kill(true), (true, false));
    }

    #[test]
    fn without_it_the_page_cache_keeps_the_unsynced_write() {
        assert_eq!(survivors_after_kill(false), (true, true));
    }
}

#[cfg(test)]
mod sync_coalescing_tests {
    //! Concurrent syncs share fsyncs, and a failed sync covers nobody.

    use std::sync::Arc;

    use rocksdb::WriteBatch;

    use super::{CF_PENDING_REPORTS, Store};
    use crate::StoreOptions;
    use crate::metrics::SyncOp;

    const THREADS: u64 = 8;
    const CALLS: u64 = 100;

    fn write_and_sync(store: &Store, t: u64, i: u64) -> std::io::Result<()> {
        let mut batch = WriteBatch::default();
        let key = [t.to_be_bytes(), i.to_be_bytes()].concat();
        batch.put_cf(store.cf(CF_PENDING_REPORTS).unwrap(), key, b"r");
        store.write(batch).unwrap();
        store.sync_wal(SyncOp::PendingReport)
    }

    #[test]
    fn concurrent_callers_share_fsyncs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), StoreOptions::default()).unwrap());
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for i in 0..CALLS {
                        write_and_sync(&store, t, i).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let fsyncs = store.sync.synced();
        assert!(fsyncs >= 1);
        assert!(
            fsyncs < THREADS * CALLS,
            "{fsyncs} fsyncs for {} concurrent syncs: none shared",
            THREADS * CALLS
        );
        println!("{fsyncs} fsyncs for {} syncs", THREADS * CALLS);
    }

    #[test]
    fn a_failed_sync_covers_nobody() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), StoreOptions::default()).unwrap());
        store.sync.set_fail(true);
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    (0..10)
                        .filter(|&i| write_and_sync(&store, t, i).is_ok())
                        .count()
                })
            })
            .collect();
        let ok: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(ok, 0, "a caller returned Ok although no sync succeeded");
        assert_eq!(store.sync.synced(), 0);
    }
}

#[cfg(test)]
mod open_scan_tests {
    //! Writes go on while a scan of the same store is open. A flushed
    //! memtable stays allocated until every iterator reading it is dropped;
    //! a memory-budget stall that waits for that memory would hold a
    //! writer for ever when the scan is its own (or waits for it). A large
    //! takeover hung that way.

    use std::sync::mpsc;
    use std::time::Duration;

    use rocksdb::WriteBatch;

    use super::{CF_LOG, MEMTABLE_BUDGET, Store};
    use crate::StoreOptions;

    /// Rows of 64 KiB, 16 to a write: one MiB per write.
    const ROW_BYTES: usize = 64 * 1024;
    const ROWS_PER_WRITE: u64 = 16;

    /// Writes `mib` MiB of log rows, keys from `first_mib`.
    fn write_mib(store: &Store, first_mib: u64, mib: u64) {
        let value = vec![0x5a; ROW_BYTES];
        for m in first_mib..first_mib + mib {
            let mut batch = WriteBatch::default();
            for r in 0..ROWS_PER_WRITE {
                let key = (m * ROWS_PER_WRITE + r).to_be_bytes();
                batch.put_cf(store.cf(CF_LOG).unwrap(), key, &value);
            }
            store.write(batch).unwrap();
        }
    }

    #[test]
    fn writes_go_on_while_the_writers_own_scan_is_open() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let budget_mib = (MEMTABLE_BUDGET >> 20) as u64;
        let (done, finished) = mpsc::channel();
        let writer = std::thread::spawn(move || {
            // Most of the budget in memtables, then a scan that reads them,
            // then as much again written while the scan is open.
            write_mib(&store, 0, budget_mib * 5 / 8);
            let reader = store.live();
            let mut scan = reader.scan(CF_LOG, &[], None).unwrap();
            assert!(scan.next().is_some());
            write_mib(&store, budget_mib, budget_mib * 2);
            drop(scan);
            done.send(()).unwrap();
        });
        // Well over what 3 × the budget takes to write (about a second).
        let outcome = finished.recv_timeout(Duration::from_secs(60));
        assert!(
            outcome.is_ok(),
            "writes waited for ever behind the writer's own open scan"
        );
        writer.join().unwrap();
    }
}
