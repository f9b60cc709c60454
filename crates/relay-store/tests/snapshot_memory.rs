//! Measures (does not assert) the memory and time of building and
//! installing a large snapshot: 200,000 messages of 1 KiB. Ignored by
//! default; run with
//! `cargo test --release -p relay-store --test snapshot_memory -- --ignored --nocapture`
//! (`QR_SNAPSHOT_MESSAGES` overrides the count). Peak RSS is the kernel's
//! `VmHWM`, reset before each phase through `/proc/self/clear_refs`.

mod common;

use std::time::Instant;

use common::{apply_one, membership};
use openraft::RaftSnapshotBuilder;
use openraft::storage::RaftStateMachine;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `VmRSS` and `VmHWM` of this process, in MiB.
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb / 1024)
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Starts a new peak: `VmHWM` becomes the current `VmRSS`.
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
}

#[test]
#[ignore = "a measurement: slow, prints figures"]
fn measure_build_and_install_of_a_large_snapshot() {
    let messages: u64 = std::env::var("QR_SNAPSHOT_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let a_dir = TempDir::new().unwrap();
        let (_a_log, mut a) = relay_store::open(a_dir.path()).unwrap();
        apply_one(&mut a, membership(1, &[1, 2, 3])).await;
        let started = Instant::now();
        common::enqueue_many(&mut a, 2, 0, messages, 1024).await;
        println!(
            "populate: {messages} messages of 1 KiB in {:.1?}, RSS {:?} MiB (now, peak)",
            started.elapsed(),
            rss()
        );

        reset_peak();
        let before = rss();
        let started = Instant::now();
        let snapshot = a
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        let size = std::fs::metadata(snapshot.snapshot.path()).unwrap().len();
        println!(
            "build: {:.1} MiB file in {:.1?}; RSS before {} MiB, peak during {} MiB",
            size as f64 / (1 << 20) as f64,
            started.elapsed(),
            before.0,
            rss().1
        );

        // A node holds one store: close A (its memtables are RocksDB's, not
        // the install's) and keep only its snapshot file and digest.
        let want = a.digest().unwrap();
        let kept = a_dir.path().join("kept.snap");
        std::fs::copy(snapshot.snapshot.path(), &kept).unwrap();
        let meta = snapshot.meta.clone();
        drop((snapshot, a, _a_log));
        println!("A closed: RSS {} MiB", rss().0);

        let b_dir = TempDir::new().unwrap();
        let (_b_log, mut b) = relay_store::open(b_dir.path()).unwrap();
        let mut source = tokio::fs::File::open(&kept).await.unwrap();
        reset_peak();
        let before = rss();
        let started = Instant::now();
        let mut receiving = b.begin_receiving_snapshot().await.unwrap();
        // As openraft receives: chunks of 3 MiB (its default chunk size).
        let mut chunk = vec![0u8; 3 << 20];
        loop {
            let n = source.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            receiving.write_all(&chunk[..n]).await.unwrap();
        }
        receiving.shutdown().await.unwrap();
        drop(chunk);
        b.install_snapshot(&meta, receiving).await.unwrap();
        println!(
            "receive + install: {:.1?}; RSS before {} MiB, peak during {} MiB",
            started.elapsed(),
            before.0,
            rss().1
        );
        let started = Instant::now();
        assert_eq!(b.digest().unwrap(), want);
        println!("digest equal (scanned in {:.1?})", started.elapsed());
    });
}
