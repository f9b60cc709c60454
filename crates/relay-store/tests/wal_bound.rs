//! The WAL stays bounded when writes outrun the disk. A follower catching
//! up appends large batches as fast as the leader sends them and applies
//! them (messages, bodies, indexes: several column families at once); if
//! RocksDB's flushes cannot keep up, every write-ahead log file stays on
//! disk until all the memtables it backs are flushed. The store must then
//! hold its writers back rather than let the WAL grow: on a small data
//! disk that growth filled the disk and the node could no longer start.
//!
//! The disk is made slow with the store's slow-disk failpoint (flushes
//! write at 16 MiB/s); the WAL files are measured from outside the store,
//! by listing its directory while the catch-up runs.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{enqueue_sized, membership, normal};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use relay_store::StoreOptions;
use relay_types::Command;
use tempfile::TempDir;

/// Body octets per message.
const BODY_BYTES: usize = 8 * 1024;
/// Messages caught up on: 128 MiB of bodies, each written to the log and
/// again to the bodies column family, four times the memtable budget.
const MESSAGES: u64 = 16 * 1024;
/// Entries per append, about 2 MiB: a catch-up's batch.
const BATCH: u64 = 256;
/// The bound the test holds the WAL to. With 16 MiB memtables, two per
/// column family at most, the WAL peaked at 76 MiB here. With RocksDB's
/// 64 MiB default each column family keeps up to two memtables of that
/// size, and the WAL reached 165 MiB.
const WAL_LIMIT: u64 = 144 * 1024 * 1024;

/// Bytes in the `*.log` files directly in `dir` (RocksDB's WAL).
fn wal_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_faster_than_the_disk_keeps_the_wal_bounded() {
    let dir = TempDir::new().unwrap();
    let options = StoreOptions {
        slow_disk_bytes_per_sec: Some(16 * 1024 * 1024),
        ..StoreOptions::default()
    };
    let (mut log, mut sm) = relay_store::open_with(dir.path(), options).unwrap();

    // Sampled from outside the store, every few milliseconds.
    let peak = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop, path) = (peak.clone(), stop.clone(), dir.path().to_path_buf());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(wal_bytes(&path), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };

    // What a follower does with each AppendEntries: append, then apply.
    let first = membership(1, &[1, 2, 3]);
    log.blocking_append([first.clone()]).await.unwrap();
    sm.apply([first]).await.unwrap();
    for start in (0..MESSAGES).step_by(BATCH as usize) {
        let batch = (start..start + BATCH)
            .map(|i| {
                let enqueue = enqueue_sized(i, 1 + i % 3, BODY_BYTES);
                normal(i + 2, Command::Enqueue(Box::new(enqueue)))
            })
            .collect::<Vec<_>>();
        log.blocking_append(batch.clone()).await.unwrap();
        sm.apply(batch).await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();

    let peak = peak.load(Ordering::Relaxed);
    let written = 2 * MESSAGES * BODY_BYTES as u64;
    println!("WAL peak {peak} bytes for {written} bytes written");
    assert!(
        peak <= WAL_LIMIT,
        "the WAL reached {peak} bytes while {written} bytes were written to a slow disk \
         (limit {WAL_LIMIT})"
    );
    // The store's own reading agrees with the listing, and everything is
    // there: writers were held back, nothing was dropped.
    assert!(sm.wal_bytes().unwrap() <= WAL_LIMIT);
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id.map(|l| l.index), Some(MESSAGES + 1));
    assert_eq!(sm.counts().unwrap().queued, MESSAGES);
}
