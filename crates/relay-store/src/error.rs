//! `StoreError`, and its mapping onto openraft's `StorageError`.

use std::path::PathBuf;

use openraft::{ErrorSubject, ErrorVerb, StorageError, StorageIOError};

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// RocksDB refused to open (or create) the store. Never papered over with
    /// an empty store.
    #[error("cannot open the RocksDB store at {path}: {source}")]
    Open {
        /// The store directory.
        path: PathBuf,
        /// RocksDB's reason (corruption, lock held, permissions, ...).
        source: rocksdb::Error,
    },

    /// The directory exists, holds files, and is not a RocksDB store.
    #[error(
        "{path} is not empty and holds no RocksDB store (no CURRENT file); refusing to create a new store there"
    )]
    NotAStore {
        /// The directory.
        path: PathBuf,
    },

    /// A column family the store needs is missing after open.
    #[error("column family {0:?} is missing")]
    MissingColumnFamily(&'static str),

    /// A RocksDB read or write failed.
    #[error("RocksDB {op} failed: {source}")]
    Rocks {
        /// What was being done.
        op: &'static str,
        /// RocksDB's reason.
        source: rocksdb::Error,
    },

    /// A stored value does not decode: corruption or a format mismatch.
    #[error("corrupt value in {table}: {source}")]
    Corrupt {
        /// The column family (or snapshot part) it came from.
        table: &'static str,
        /// The decoder's message.
        source: relay_types::CodecError,
    },

    /// The derived indexes disagree with the message table.
    #[error("inconsistent store: {0}")]
    Inconsistent(String),

    /// Syncing the write-ahead log to disk failed (or the sync failpoint is
    /// on). What was written before it may or may not be on disk.
    #[error("syncing the RocksDB WAL failed: {0}")]
    Sync(#[source] std::io::Error),

    /// An earlier WAL sync failed, so what the log holds on disk is unknown.
    /// Every log operation fails until the store is reopened (normally: the
    /// node restarts and RocksDB recovers what really reached the disk).
    #[error(
        "the log store is unusable since a WAL sync failed; restart the node to recover from disk"
    )]
    Poisoned,

    /// The log is purged past the state the state machine holds: the
    /// entries between them are gone on this node, so it cannot apply
    /// its next entry. Left behind by a snapshot install cut off by a
    /// crash after the log was purged (older builds purged first). Only a
    /// rejoin with an empty store heals it; starting anyway would fail at
    /// the first apply.
    #[error(
        "the Raft log in {path} is purged up to index {purged} but the state machine holds only \
         index {applied}: the entries between are gone, so this replica cannot catch up by \
         itself (a snapshot install was cut off after the log was purged). Rejoin it with an \
         empty store: `relayctl member remove ID` (from a live node), stop this node, move its \
         data_dir away, start it again, `relayctl member add ID RAFT_ADDR`, wait until it has \
         caught up (`relayctl status`), then `relayctl member promote ID` if it was a voter"
    )]
    PurgedPastApplied {
        /// The store directory.
        path: PathBuf,
        /// Last applied index (0: nothing).
        applied: u64,
        /// Last purged index.
        purged: u64,
    },

    /// The store was written in a format version this build does not read
    /// (a newer release, or one from before format versions existed).
    #[error(
        "the store at {path} holds format {found} and this build reads formats {oldest} to \
         {newest}: it was written by {by}. Start the release that wrote it, or rejoin this node \
         with an empty store (docs/design.md, \"Formats and upgrades\")"
    )]
    UnreadableFormat {
        /// The store directory.
        path: PathBuf,
        /// What the store holds ("none" for a store from before format
        /// versions).
        found: String,
        /// Oldest format this build reads.
        oldest: u8,
        /// Newest format this build reads and writes.
        newest: u8,
        /// Who probably wrote it.
        by: &'static str,
    },

    /// The store is behind what this node last made durable (its voter
    /// guard, see `voter_guard.rs`): wiped, restored from an older copy,
    /// or it lost acknowledged writes. As a voter the node could vote twice
    /// in a term or forget entries it acknowledged; it must rejoin.
    #[error(
        "the store at {path} is behind what this node last made durable ({detail}; recorded in \
         {guard}): it was wiped, restored from an older copy, or lost acknowledged writes. \
         Starting it as a voter could lose committed mail. Rejoin it with an empty store: \
         `relayctl member remove ID` (from a live node), stop this node, move its data_dir away \
         (the guard file included), start it again, `relayctl member add ID RAFT_ADDR`, wait \
         until it has caught up (`relayctl status`), then `relayctl member promote ID`"
    )]
    BehindVoterGuard {
        /// The store directory.
        path: PathBuf,
        /// The guard file.
        guard: PathBuf,
        /// What each side holds.
        detail: String,
    },

    /// Snapshot data that cannot be installed.
    #[error("invalid snapshot: {0}")]
    Snapshot(String),

    /// A snapshot file that is corrupt, truncated or of another format. The
    /// state is left as it was.
    #[error("snapshot file {path} is unusable: {problem}")]
    SnapshotFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },

    /// Reading, writing or syncing a snapshot file (or its directory) failed.
    #[error("snapshot file {path}: {op} failed: {source}")]
    SnapshotIo {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The operating system's reason.
        source: std::io::Error,
    },

    /// Listing the store directory (to size its WAL files), or asking
    /// for its file system's free space, failed.
    #[error("store directory {path}: {op} failed: {source}")]
    DirIo {
        /// The store directory.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The operating system's reason.
        source: std::io::Error,
    },

    /// A blocking task panicked or was cancelled.
    #[error("store task failed: {0}")]
    Task(String),
}

impl StoreError {
    /// The store opened but must not be used as it is: an operator has to
    /// act (rejoin the node). A supervisor should not restart the node in
    /// a loop (`relayd` exits with its own status for these).
    pub fn needs_operator(&self) -> bool {
        matches!(
            self,
            StoreError::PurgedPastApplied { .. }
                | StoreError::BehindVoterGuard { .. }
                | StoreError::UnreadableFormat { .. }
        )
    }

    pub(crate) fn rocks(op: &'static str) -> impl FnOnce(rocksdb::Error) -> StoreError {
        move |source| StoreError::Rocks { op, source }
    }

    pub(crate) fn corrupt(
        table: &'static str,
    ) -> impl FnOnce(relay_types::CodecError) -> StoreError {
        move |source| StoreError::Corrupt { table, source }
    }

    /// As openraft's error, for `subject`/`verb`.
    pub(crate) fn into_storage(
        self,
        subject: ErrorSubject<u64>,
        verb: ErrorVerb,
    ) -> StorageError<u64> {
        StorageIOError::new(subject, verb, &self).into()
    }
}

/// Shorthands for the openraft trait impls.
pub(crate) fn read_logs(e: StoreError) -> StorageError<u64> {
    e.into_storage(ErrorSubject::Logs, ErrorVerb::Read)
}

pub(crate) fn write_logs(e: StoreError) -> StorageError<u64> {
    e.into_storage(ErrorSubject::Logs, ErrorVerb::Write)
}

pub(crate) fn read_vote(e: StoreError) -> StorageError<u64> {
    e.into_storage(ErrorSubject::Vote, ErrorVerb::Read)
}

pub(crate) fn write_vote(e: StoreError) -> StorageError<u64> {
    e.into_storage(ErrorSubject::Vote, ErrorVerb::Write)
}

pub(crate) fn read_sm(e: StoreError) -> StorageError<u64> {
    e.into_storage(ErrorSubject::StateMachine, ErrorVerb::Read)
}

pub(crate) fn read_snapshot(e: StoreError) -> StorageError<u64> {
    e.into_storage(ErrorSubject::Snapshot(None), ErrorVerb::Read)
}

pub(crate) fn write_snapshot(e: StoreError) -> StorageError<u64> {
    e.into_storage(ErrorSubject::Snapshot(None), ErrorVerb::Write)
}
