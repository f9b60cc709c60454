//! The WAL sync step, with a failpoint and a poison flag.
//!
//! Every durability point of the store (log append, vote, committed,
//! truncate, the flush before purge, snapshot install, making a built
//! snapshot current) goes through
//! [`SyncGate::sync`]. Tests (and fault-injection runs of whole clusters)
//! switch the failpoint on with `LogStore::set_sync_failpoint(true)`: the
//! sync step then returns an I/O error instead of syncing.
//!
//! After any failed sync the gate is *poisoned*: the data written before it
//! may or may not be on disk, and a retried fsync can report success without
//! the lost pages ever reaching the disk (the "fsyncgate" lesson). So the log
//! store refuses every further operation until the store is reopened, which
//! in practice means the node restarts and RocksDB recovers exactly what is
//! on disk. Switching the failpoint off again does not heal a poisoned gate.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::error::StoreError;

/// The failpoint, the poison flag and a count of successful syncs.
#[derive(Debug, Default)]
pub(crate) struct SyncGate {
    fail: AtomicBool,
    poisoned: AtomicBool,
    synced: AtomicU64,
}

impl SyncGate {
    /// Makes every following sync fail (`true`) or run (`false`).
    pub(crate) fn set_fail(&self, fail: bool) {
        self.fail.store(fail, Ordering::SeqCst);
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

    /// Runs `do_sync` unless the failpoint is on; any failure poisons.
    pub(crate) fn sync(
        &self,
        do_sync: impl FnOnce() -> Result<(), rocksdb::Error>,
    ) -> io::Result<()> {
        let result = if self.fail.load(Ordering::SeqCst) {
            Err(io::Error::other("sync failpoint is on: WAL not synced"))
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
                Err(e)
            }
        }
    }
}
