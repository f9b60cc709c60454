//! Disk given back after a burst: once a log purge leaves the log empty
//! (nothing appended since the snapshot it follows), a store that grew
//! past its floor is compacted, so the files holding deleted rows leave
//! the disk. While entries remain after the purge point nothing is
//! compacted by the store itself.

mod common;

use common::{LEADER, TERM, normal};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use relay_types::{Command, Route, TlsPolicy};
use tempfile::TempDir;

const ENTRIES: u64 = 12_000;

/// A route whose target name is 2 KiB of incompressible hex, so the log
/// holds ~24 MiB however RocksDB compresses it.
fn bulky(n: u64) -> Command {
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut target = String::with_capacity(2048);
    while target.len() < 2048 {
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

#[tokio::test]
async fn a_purge_that_empties_the_log_gives_the_disk_back() {
    let dir = TempDir::new().unwrap();
    let (mut log, sm) = relay_store::open(dir.path()).unwrap();
    for start in (1..=ENTRIES).step_by(500) {
        let batch = (start..start + 500)
            .map(|i| normal(i, bulky(i)))
            .collect::<Vec<_>>();
        log.blocking_append(batch).await.unwrap();
    }
    let full = sm.stored_bytes().unwrap();
    assert!(full > 20 * 1024 * 1024, "the log holds only {full} bytes");

    // Entries remain after the purge point: no compaction by the store.
    log.purge(openraft::testing::log_id(TERM, LEADER, ENTRIES - 1))
        .await
        .unwrap();
    let partly = sm.stored_bytes().unwrap();
    assert!(
        partly >= full / 2,
        "compacted although an entry remained after the purge: {full} -> {partly} bytes"
    );

    // The purge empties the log: the store compacts itself.
    log.purge(openraft::testing::log_id(TERM, LEADER, ENTRIES))
        .await
        .unwrap();
    let after = sm.stored_bytes().unwrap();
    assert!(
        after < 1024 * 1024,
        "a purge that emptied the log left {after} bytes (from {full})"
    );
    // The log is still what the purge says it is.
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(ENTRIES));
    assert_eq!(state.last_log_id.map(|l| l.index), Some(ENTRIES));
}
