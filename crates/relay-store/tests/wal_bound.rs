//! The WAL stays bounded when writes outrun the disk. A follower catching
//! up appends large batches as fast as the leader sends them; if RocksDB's
//! flushes cannot keep up, every write-ahead log file stays on disk until
//! the memtables it backs are flushed. The store must then hold its
//! writers back rather than let the WAL grow: on a small data disk that
//! growth filled the disk and the node could no longer start.
//!
//! The disk is made slow with the store's slow-disk failpoint (flushes
//! write at 8 MiB/s); the WAL files are measured from outside the store,
//! by listing its directory while the appends run.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::normal;
use openraft::storage::RaftLogStorageExt;
use relay_store::StoreOptions;
use relay_types::{Command, Route, TlsPolicy};
use tempfile::TempDir;

/// Bytes of incompressible text per entry.
const ENTRY_BYTES: usize = 8 * 1024;
/// Entries appended: 128 MiB in all, twice the memtable budget.
const ENTRIES: u64 = 16 * 1024;
/// Entries per append, about 2 MiB: a catch-up's batch.
const BATCH: u64 = 256;
/// The bound the test holds the WAL to: the memtable budget (64 MiB) plus
/// half of it for the file being written while a flush runs. Without the
/// writer stall the WAL reaches about 120 MiB here.
const WAL_LIMIT: u64 = 96 * 1024 * 1024;

/// A route whose target name is `ENTRY_BYTES` of hex from a xorshift
/// sequence, so neither RocksDB nor the WAL can shrink it.
fn bulky(n: u64) -> Command {
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut target = String::with_capacity(ENTRY_BYTES);
    while target.len() < ENTRY_BYTES {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        target.push_str(&format!("{x:016x}"));
    }
    Command::SetRoute {
        domain: format!("d{n}.test"),
        route: Route {
            targets: vec![target],
            tls: TlsPolicy::None,
            shaping: Default::default(),
        },
    }
}

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
async fn appends_faster_than_the_disk_keep_the_wal_near_the_memtable_budget() {
    let dir = TempDir::new().unwrap();
    let options = StoreOptions {
        slow_disk_bytes_per_sec: Some(8 * 1024 * 1024),
        ..StoreOptions::default()
    };
    let (mut log, sm) = relay_store::open_with(dir.path(), options).unwrap();

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

    for start in (1..=ENTRIES).step_by(BATCH as usize) {
        let batch = (start..start + BATCH)
            .map(|i| normal(i, bulky(i)))
            .collect::<Vec<_>>();
        log.blocking_append(batch).await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();

    let peak = peak.load(Ordering::Relaxed);
    let written = ENTRIES * ENTRY_BYTES as u64;
    assert!(
        peak <= WAL_LIMIT,
        "the WAL reached {peak} bytes while {written} bytes were appended to a slow disk \
         (limit {WAL_LIMIT})"
    );
    // The store's own reading agrees with the listing, and every entry is
    // there: the stall held writers back, it dropped nothing.
    assert!(sm.wal_bytes().unwrap() <= WAL_LIMIT);
    let state = openraft::storage::RaftLogStorage::get_log_state(&mut log)
        .await
        .unwrap();
    assert_eq!(state.last_log_id.map(|l| l.index), Some(ENTRIES));
}
