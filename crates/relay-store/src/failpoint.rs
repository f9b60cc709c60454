//! The WAL sync step, with a failpoint and a poison flag.
//!
//! Every durability point of the store (log append, vote, committed,
//! truncate, the flush before purge, snapshot install, making a built
//! snapshot current) goes through
//! [`SyncGate::sync`]. Tests (and fault-injection runs of whole clusters)
//! switch the failpoint on with `LogStore::set_sync_failpoint(true)`: the
//! sync step then returns an I/O error instead of syncing.
//!
//! A second failpoint fails exactly one sync: [`SyncGate::fail_after`] arms
//! it so that the sync after the next `n` successful ones fails (the node
//! reads `n` from its environment in fault runs, so a whole `relayd` can be
//! made to meet one failed fsync).
//!
//! After any failed sync the gate is *poisoned*: the data written before it
//! may or may not be on disk, and a retried fsync can report success without
//! the lost pages ever reaching the disk (the "fsyncgate" lesson: Linux
//! marks the dirty pages clean after reporting the error once). So every
//! later sync fails without asking the disk, whoever asks (log append,
//! vote, pending report, snapshot), nothing is acknowledged as durable
//! again, and the log store refuses every further operation until the store
//! is reopened, which in practice means the node exits non-zero, its
//! supervisor restarts it, and RocksDB recovers exactly what is on disk.
//! Switching the failpoint off again does not heal a poisoned gate. The
//! node watches [`SyncGate::subscribe`] to stop as soon as the gate is
//! poisoned, whatever asked for the sync.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::watch;

use crate::error::StoreError;

/// No one-shot failure armed (see [`SyncGate::fail_after`]).
const DISARMED: u64 = u64::MAX;

/// The failpoints, the poison flag and a count of successful syncs.
#[derive(Debug)]
pub(crate) struct SyncGate {
    fail: AtomicBool,
    /// Successful syncs still to let through before the one that fails;
    /// [`DISARMED`] when no one-shot failure is armed.
    fail_after: AtomicU64,
    poisoned: AtomicBool,
    /// `true` once poisoned, for whoever must stop then (the node).
    poisoned_tx: watch::Sender<bool>,
    synced: AtomicU64,
}

impl Default for SyncGate {
    fn default() -> Self {
        SyncGate {
            fail: AtomicBool::new(false),
            fail_after: AtomicU64::new(DISARMED),
            poisoned: AtomicBool::new(false),
            poisoned_tx: watch::Sender::new(false),
            synced: AtomicU64::new(0),
        }
    }
}

impl SyncGate {
    /// Makes every following sync fail (`true`) or run (`false`).
    pub(crate) fn set_fail(&self, fail: bool) {
        self.fail.store(fail, Ordering::SeqCst);
    }

    /// Lets `n` more syncs succeed, then fails exactly one (which poisons
    /// the gate, like any failed sync).
    pub(crate) fn fail_after(&self, n: u64) {
        self.fail_after.store(n, Ordering::SeqCst);
    }

    /// Whether a sync has failed since open.
    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::SeqCst)
    }

    /// A receiver that turns `true` when the gate is poisoned.
    pub(crate) fn subscribe(&self) -> watch::Receiver<bool> {
        self.poisoned_tx.subscribe()
    }

    /// Whether the one-shot failpoint fires for this sync (counting down
    /// the successes it still lets through).
    fn one_shot_fires(&self) -> bool {
        self.fail_after
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| match left {
                DISARMED => None,
                0 => Some(DISARMED),
                n => Some(n - 1),
            })
            .is_ok_and(|left| left == 0)
    }

    /// `Err(Poisoned)` once a sync has failed.
    pub(crate) fn check(&self) -> Result<(), StoreError> {
        if self.poisoned.load(Ordering::SeqCst) {
            Err(StoreError::Poisoned)
        } else {
            Ok(())
        }
    }

    /// How many syncs succeeded since open (for tests).
    pub(crate) fn synced(&self) -> u64 {
        self.synced.load(Ordering::SeqCst)
    }

    /// Runs `do_sync` unless the gate is poisoned or a failpoint is on;
    /// any failure poisons. Once poisoned, every call fails without running
    /// `do_sync`: a sync that succeeds after a failed one proves nothing
    /// about the writes the failed one covered.
    pub(crate) fn sync(
        &self,
        do_sync: impl FnOnce() -> Result<(), rocksdb::Error>,
    ) -> io::Result<()> {
        if self.is_poisoned() {
            return Err(io::Error::other(
                "an earlier WAL sync failed: nothing is acknowledged as durable until restart",
            ));
        }
        let result = if self.fail.load(Ordering::SeqCst) {
            Err(io::Error::other("sync failpoint is on: WAL not synced"))
        } else if self.one_shot_fires() {
            Err(io::Error::other(
                "one-shot sync failpoint fired: WAL not synced",
            ))
        } else {
            do_sync().map_err(io::Error::other)
        };
        match result {
            Ok(()) => {
                self.synced.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
            Err(e) => {
                self.poisoned.store(true, Ordering::SeqCst);
                self.poisoned_tx.send_replace(true);
                tracing::error!(error = %e, "WAL sync failed: the store is poisoned; the node must restart");
                Err(e)
            }
        }
    }
}
