//! The node's disk: one RocksDB holding the Raft log and the replicated
//! queue state.
//!
//! Owns: RocksDB (this is the only crate that links it): its options,
//! column families and key layouts; openraft's v2 storage for
//! [`TypeConfig`] ([`LogStore`]: `RaftLogStorage` + `RaftLogReader`;
//! [`StateMachine`]: `RaftStateMachine`, with [`SnapshotBuilder`]);
//! snapshots; and the queries the rest of the node reads the state with
//! ([`StateMachine::due`], [`StateMachine::list`], [`StateMachine::digest`],
//! ...). Committed entries are applied with the pure
//! [`relay_queue::apply()`]; this crate only stores what it decides.
//!
//! Must never: speak SMTP, touch the network, read a clock or config inside
//! apply, or decide queue policy.
//!
//! Durability in one paragraph: a log append is reported flushed only after
//! the RocksDB WAL sync returned; vote and truncate are synced before they
//! return; the committed index is written unsynced (a hint, see
//! [`LogStore`]). State-machine batches are not synced on their own:
//! they share the one WAL with the log, so a later synced append makes them
//! durable, and `purge` syncs before deleting any log entry, so anything a
//! crash loses is re-applied from the log. Details on [`LogStore`].
//!
//! On disk: the store directory is RocksDB's own; snapshot files live in its
//! `snapshots/` subdirectory, which RocksDB ignores (see `snapshot.rs` for
//! what an operator finds there).
//!
//! # Layout
//! - `db.rs`: RocksDB options, column families and key layouts (a table of
//!   them heads the file), readers over the live DB or one snapshot.
//! - `log_store.rs`: [`LogStore`] (Raft log, vote, committed, truncate, purge).
//! - `state_machine.rs`: [`StateMachine`]: apply = `relay_queue::apply` + one batch.
//! - `queries.rs`: `message`, `body`, `due`, `list`, `counts`, `oldest`,
//!   `stored_bytes`, `routes`,
//!   `route`, `trace`, `digest` ([`StateDigest`]).
//! - `snapshot.rs`: [`SnapshotBuilder`], install, the current snapshot, and
//!   where snapshot files live (`snapshots/` in the store directory) and why
//!   a crash during an install cannot leave a mix of two states.
//! - `snapshot_file.rs`: the snapshot file format (rows, SHA-256 trailer),
//!   its streaming writer and verifying reader, and [`SnapshotFile`]
//!   (openraft's snapshot data).
//! - `failpoint.rs`: the WAL sync step, its failpoint and poison flag.
//! - `voter_guard.rs`: the file beside the store that remembers the newest
//!   durable vote and purge, so a wiped or rolled-back store is refused.
//! - [`metrics`]: append batch sizes and WAL fsyncs (group-commit
//!   visibility), and how batches form today.
//! - [`recover`]: after a quorum is lost for good, one store becomes a new
//!   one-voter cluster (evidence kept first).
//! - `error.rs`: [`StoreError`].
//! - `damage.rs` (feature `testing`): damages a stored body on purpose,
//!   for tests of what the node does with a copy that went bad.

use std::path::Path;
use std::sync::Arc;

#[cfg(test)]
mod child_process;
#[cfg(feature = "testing")]
mod damage;
mod db;
mod error;
mod failpoint;
mod log_store;
pub mod metrics;
mod queries;
pub mod recover;
mod snapshot;
mod snapshot_file;
mod state_machine;
mod voter_guard;

pub use error::StoreError;
pub use log_store::LogStore;
pub use queries::StateDigest;
pub use snapshot::SnapshotBuilder;
pub use snapshot_file::SnapshotFile;
pub use state_machine::StateMachine;

openraft::declare_raft_types!(
    /// quorum-relay's openraft type configuration: entries carry
    /// [`relay_types::Command`], applying one answers a
    /// [`relay_types::CommandResult`]; node ids are `u64`, nodes are
    /// `openraft::BasicNode`, snapshot data is a [`SnapshotFile`].
    pub TypeConfig:
        D = relay_types::Command,
        R = relay_types::CommandResult,
        SnapshotData = SnapshotFile,
);

/// Opens (or creates) the store at `dir`: one RocksDB, so the log and the
/// state machine share one WAL. Fails with the path and the cause if the
/// directory holds something else or RocksDB cannot open it (corruption,
/// lock held by another process, permissions); never returns an empty store
/// in place of an unreadable one.
pub fn open(dir: &Path) -> Result<(LogStore, StateMachine), StoreError> {
    open_with(dir, StoreOptions::default())
}

/// How to open the store; the default is what production runs.
#[derive(Clone, Copy, Debug, Default)]
pub struct StoreOptions {
    /// Power-loss failpoint for fault-injection runs: RocksDB keeps every
    /// WAL write in process memory until the next sync (`manual_wal_flush`),
    /// so a kill -9 loses exactly what a power cut would lose from the page
    /// cache: everything written since the last fsync. A plain kill -9
    /// cannot test that, because the kernel still writes the page cache out.
    /// Synced data is unaffected, so the node is as durable as ever where it
    /// claims to be.
    pub unsynced_writes_die_with_process: bool,
    /// Failed-fsync failpoint for fault-injection runs: `Some(n)` lets `n`
    /// WAL syncs succeed after open and fails the next one, which poisons
    /// the store (see `failpoint.rs`). `None` in production.
    pub fail_sync_after: Option<u64>,
    /// TEST ONLY, breaks durability on purpose: log appends are reported
    /// durable without syncing the WAL. Exists so the nemesis can prove
    /// its checker notices lost acknowledged mail; never set in production.
    pub skip_append_sync: bool,
    /// Slow-disk failpoint for tests and fault runs: `Some(rate)` lets
    /// RocksDB's flushes and compactions write at most `rate` bytes per
    /// second, like a disk that cannot keep up with the writes. `None` in
    /// production.
    pub slow_disk_bytes_per_sec: Option<i64>,
}

/// [`open_with`], guarded by the voter guard file at `guard` (outside
/// `dir`, so wiping or replacing the store leaves it): the store is
/// refused if it is behind the newest vote or purge this node made
/// durable ([`StoreError::BehindVoterGuard`]), and every later durable
/// vote and purge is recorded in the file. What a node runs with.
pub fn open_guarded(
    dir: &Path,
    options: StoreOptions,
    guard: &Path,
) -> Result<(LogStore, StateMachine), StoreError> {
    let voter_guard = voter_guard::VoterGuard::load(guard)?;
    let (log_store, state_machine) = open_with(dir, options)?;
    let store = &log_store.store;
    let vote = store.live().get(db::CF_RAFT_META, db::KEY_VOTE)?;
    let purged: Option<openraft::LogId<u64>> =
        store.live().get(db::CF_RAFT_META, db::KEY_LAST_PURGED)?;
    let last = store
        .last_raw(db::CF_LOG)?
        .map(|(key, _)| db::log_index(&key))
        .transpose()?;
    let log_end = last
        .unwrap_or(0)
        .max(purged.map_or(0, |p| p.index))
        .max(state_machine.last_applied().map_or(0, |a| a.index));
    voter_guard::check(&voter_guard.durable(), vote, log_end, dir, guard)?;
    Ok((log_store.with_guard(voter_guard), state_machine))
}

/// [`open`] with options.
pub fn open_with(
    dir: &Path,
    options: StoreOptions,
) -> Result<(LogStore, StateMachine), StoreError> {
    if options.unsynced_writes_die_with_process {
        tracing::warn!(
            "power-loss failpoint on: unsynced writes live in memory until the next sync"
        );
    }
    let store = Arc::new(db::Store::open(dir, options)?);
    if let Some(n) = options.fail_sync_after {
        tracing::warn!(
            successes = n,
            "failed-fsync failpoint on: one WAL sync will fail"
        );
        store.sync.fail_after(n);
    }
    check_format(&store)?;
    if options.skip_append_sync {
        tracing::error!(
            "TEST-ONLY switch on: log appends are NOT synced; acknowledged mail can be lost"
        );
    }
    let state_machine = StateMachine::new(store.clone())?;
    refuse_purged_past_applied(&store, &state_machine)?;
    tracing::info!(path = %dir.display(), last_applied = ?state_machine.last_applied(), "store opened");
    Ok((LogStore::new(store), state_machine))
}

/// Reads the store's format version, or marks a new store with the current
/// one; refuses a store this build cannot read ([`StoreError::UnreadableFormat`])
/// before anything in it is decoded. A store with data but no marker was
/// written before format versions existed (another encoding): reading it
/// could misread, so it is refused too.
fn check_format(store: &db::Store) -> Result<(), StoreError> {
    use relay_types::codec::{FORMAT_VERSION, OLDEST_READABLE};
    let refuse = |found: String, by: &'static str| StoreError::UnreadableFormat {
        path: store.path().to_path_buf(),
        found,
        oldest: OLDEST_READABLE,
        newest: FORMAT_VERSION,
        by,
    };
    match store
        .live()
        .get_raw(db::CF_RAFT_META, db::KEY_FORMAT_VERSION)?
    {
        Some(v) if v.len() == 1 && (OLDEST_READABLE..=FORMAT_VERSION).contains(&v[0]) => Ok(()),
        Some(v) if v.len() == 1 && v[0] > FORMAT_VERSION => {
            Err(refuse(v[0].to_string(), "a newer release"))
        }
        Some(v) => Err(refuse(
            format!("{v:?}"),
            "an older release or another program",
        )),
        None => {
            let holds_data = store
                .live()
                .get_raw(db::CF_RAFT_META, db::KEY_VOTE)?
                .is_some()
                || store.first_raw(db::CF_LOG)?.is_some()
                || store
                    .live()
                    .get_raw(db::CF_SM_META, db::KEY_LAST_APPLIED)?
                    .is_some();
            if holds_data {
                return Err(refuse(
                    "none".into(),
                    "a release from before format versions",
                ));
            }
            let mut batch = rocksdb::WriteBatch::default();
            batch.put_cf(
                store.cf(db::CF_RAFT_META)?,
                db::KEY_FORMAT_VERSION,
                [FORMAT_VERSION],
            );
            // Unsynced: WAL order makes any later synced write carry it.
            store.write(batch)
        }
    }
}

/// Refuses a store whose log is purged past its applied state (see
/// [`StoreError::PurgedPastApplied`]). Runs after an interrupted snapshot
/// install was finished, so only a state no restart can heal is refused.
fn refuse_purged_past_applied(
    store: &db::Store,
    state_machine: &StateMachine,
) -> Result<(), StoreError> {
    let purged: Option<openraft::LogId<u64>> =
        store.live().get(db::CF_RAFT_META, db::KEY_LAST_PURGED)?;
    let applied = state_machine.last_applied();
    match purged {
        Some(purged) if applied.is_none_or(|a| a.index < purged.index) => {
            Err(StoreError::PurgedPastApplied {
                path: store.path().to_path_buf(),
                applied: applied.map_or(0, |a| a.index),
                purged: purged.index,
            })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod purged_past_applied_tests {
    use rocksdb::WriteBatch;

    use crate::db::{CF_RAFT_META, CF_SM_META, KEY_LAST_APPLIED, KEY_LAST_PURGED, Store};
    use crate::{StoreError, StoreOptions};

    /// What a follower killed between the log purge and the end of a
    /// snapshot install left behind with older builds.
    #[test]
    fn a_log_purged_past_the_applied_state_is_refused_with_how_to_rejoin() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            let mut batch = WriteBatch::default();
            store
                .put(
                    &mut batch,
                    CF_RAFT_META,
                    KEY_LAST_PURGED,
                    &openraft::testing::log_id(2, 1, 40),
                )
                .unwrap();
            store
                .put(
                    &mut batch,
                    CF_SM_META,
                    KEY_LAST_APPLIED,
                    &openraft::testing::log_id(1, 1, 12),
                )
                .unwrap();
            batch.put_cf(
                store.cf(crate::db::CF_RAFT_META).unwrap(),
                crate::db::KEY_FORMAT_VERSION,
                [relay_types::FORMAT_VERSION],
            );
            store.write(batch).unwrap();
            store.sync_wal(crate::metrics::SyncOp::Purge).unwrap();
        }
        let err = crate::open(dir.path()).expect_err("opened a store it cannot apply from");
        assert!(
            matches!(
                err,
                StoreError::PurgedPastApplied {
                    applied: 12,
                    purged: 40,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.needs_operator());
        let text = err.to_string();
        for needle in ["member remove", "member add", "member promote", "data_dir"] {
            assert!(text.contains(needle), "no {needle:?} in: {text}");
        }
    }
}

#[cfg(test)]
mod format_tests {
    use relay_types::FORMAT_VERSION;
    use rocksdb::WriteBatch;

    use crate::db::{CF_RAFT_META, KEY_FORMAT_VERSION, KEY_VOTE, Store};
    use crate::{StoreError, StoreOptions};

    fn raw_put(dir: &std::path::Path, key: &[u8], value: &[u8]) {
        let store = Store::open(dir, StoreOptions::default()).unwrap();
        let mut batch = WriteBatch::default();
        batch.put_cf(store.cf(CF_RAFT_META).unwrap(), key, value);
        store.write(batch).unwrap();
        store.sync_wal(crate::metrics::SyncOp::Vote).unwrap();
    }

    #[test]
    fn a_new_store_is_marked_and_opens_again() {
        let dir = tempfile::tempdir().unwrap();
        drop(crate::open(dir.path()).unwrap());
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let marker = store
            .live()
            .get_raw(CF_RAFT_META, KEY_FORMAT_VERSION)
            .unwrap();
        assert_eq!(marker, Some(vec![FORMAT_VERSION]));
        drop(store);
        drop(crate::open(dir.path()).unwrap());
    }

    #[test]
    fn a_store_in_a_newer_format_is_refused_naming_the_version() {
        let dir = tempfile::tempdir().unwrap();
        drop(crate::open(dir.path()).unwrap());
        raw_put(dir.path(), KEY_FORMAT_VERSION, &[FORMAT_VERSION + 1]);
        let err = crate::open(dir.path()).expect_err("opened a newer format");
        assert!(matches!(err, StoreError::UnreadableFormat { .. }), "{err}");
        assert!(err.needs_operator());
        let text = err.to_string();
        assert!(
            text.contains(&format!("holds format {}", FORMAT_VERSION + 1))
                && text.contains("a newer release"),
            "{text}"
        );
    }

    #[test]
    fn a_format_1_store_opens_and_its_routes_read_without_shaping() {
        // What a release before route shaping left: marker 1 and a route
        // record in format 1 (version, one target "a:25", opportunistic).
        let dir = tempfile::tempdir().unwrap();
        drop(crate::open(dir.path()).unwrap());
        raw_put(dir.path(), KEY_FORMAT_VERSION, &[1]);
        {
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            let mut batch = WriteBatch::default();
            batch.put_cf(
                store.cf(crate::db::CF_ROUTES).unwrap(),
                b"old.test",
                [1, 1, 4, b'a', b':', b'2', b'5', 1],
            );
            store.write(batch).unwrap();
            store.sync_wal(crate::metrics::SyncOp::Vote).unwrap();
        }
        let (_log, state) = crate::open(dir.path()).expect("a format-1 store opens");
        let routes = state.routes().unwrap();
        assert_eq!(
            routes,
            vec![(
                "old.test".to_string(),
                relay_types::Route::new(vec!["a:25".into()], relay_types::TlsPolicy::Opportunistic)
            )]
        );
        assert!(routes[0].1.shaping.is_default());
    }

    #[test]
    fn a_store_with_data_but_no_format_marker_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        raw_put(dir.path(), KEY_VOTE, b"written by an older encoding");
        let err = crate::open(dir.path()).expect_err("opened an unversioned store");
        let text = err.to_string();
        assert!(
            text.contains("holds format none") && text.contains("before format versions"),
            "{text}"
        );
    }
}
