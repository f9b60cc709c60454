//! Snapshots: built on one store, installed on another, the states are
//! identical (digest and every query); installing replaces existing state
//! entirely; bad snapshot data is refused without changing anything; a
//! snapshot far larger than one install write batch round-trips; the files
//! on disk are the ones the module doc describes.

mod common;

use std::path::Path;

use common::{
    apply_one, enqueue, install_bytes, membership, normal, sample_commands, snapshot_bytes,
    transfer,
};
use openraft::storage::RaftStateMachine;
use openraft::{RaftSnapshotBuilder, Snapshot};
use relay_store::{StateMachine, TypeConfig};
use relay_types::{Command, MessageFilter, Route, TlsPolicy, UnixMillis};
use tempfile::TempDir;

/// A store holding membership {1,2,3} and the sample log; returns the last
/// index applied.
async fn populated(dir: &TempDir) -> (relay_store::LogStore, StateMachine, u64) {
    let (log, mut sm) = relay_store::open(dir.path()).unwrap();
    apply_one(&mut sm, membership(1, &[1, 2, 3])).await;
    let mut index = 1;
    for command in sample_commands() {
        index += 1;
        apply_one(&mut sm, normal(index, command)).await;
    }
    (log, sm, index)
}

/// Builds a snapshot of `sm` now.
async fn build(sm: &mut StateMachine) -> openraft::Snapshot<relay_store::TypeConfig> {
    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap()
}

async fn install(
    target: &mut StateMachine,
    snapshot: &Snapshot<TypeConfig>,
) -> Result<(), openraft::StorageError<u64>> {
    transfer(target, snapshot).await
}

/// The names of the files in a store's `snapshots/` directory, sorted.
fn snapshot_files(store_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(store_dir.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn assert_same_state(a: &StateMachine, b: &StateMachine) {
    assert_eq!(a.digest().unwrap(), b.digest().unwrap());
    assert_eq!(a.counts().unwrap(), b.counts().unwrap());
    assert_eq!(a.routes().unwrap(), b.routes().unwrap());
    let all = a.list(&MessageFilter::default(), usize::MAX).unwrap();
    assert_eq!(all, b.list(&MessageFilter::default(), usize::MAX).unwrap());
    for record in &all {
        assert_eq!(a.body(&record.id).unwrap(), b.body(&record.id).unwrap());
        assert_eq!(a.trace(&record.id).unwrap(), b.trace(&record.id).unwrap());
    }
    for owner in 1..5 {
        let filter = MessageFilter {
            owner: Some(owner),
            ..Default::default()
        };
        assert_eq!(
            a.list(&filter, usize::MAX).unwrap(),
            b.list(&filter, usize::MAX).unwrap()
        );
        for now in [0, 1_003, 2_300, u64::MAX] {
            assert_eq!(
                a.due(owner, UnixMillis(now), usize::MAX).unwrap(),
                b.due(owner, UnixMillis(now), usize::MAX).unwrap(),
                "due for owner {owner} at {now}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_built_on_one_store_installs_as_identical_state_on_a_fresh_one() {
    let a_dir = TempDir::new().unwrap();
    let (_a_log, mut a, last) = populated(&a_dir).await;
    let snapshot = build(&mut a).await;
    assert_eq!(snapshot.meta.last_log_id.map(|l| l.index), Some(last));
    assert_eq!(
        a.get_current_snapshot().await.unwrap().map(|s| s.meta),
        Some(snapshot.meta.clone()),
        "the built snapshot is the current one"
    );

    let b_dir = TempDir::new().unwrap();
    let (_b_log, mut b) = relay_store::open(b_dir.path()).unwrap();
    let applied = b.subscribe_applied();
    install(&mut b, &snapshot).await.unwrap();

    assert_same_state(&a, &b);
    assert!(a.digest().unwrap().applied_index == last);
    assert_eq!(
        a.applied_state().await.unwrap(),
        b.applied_state().await.unwrap()
    );
    assert_eq!(b.last_applied(), snapshot.meta.last_log_id);
    assert_eq!(*applied.borrow(), last, "waiters see the installed index");
    let current = b
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("installed snapshot is current");
    assert_eq!(current.meta, snapshot.meta);
    assert_eq!(snapshot_bytes(&current), snapshot_bytes(&snapshot));
    assert_eq!(
        snapshot_files(b_dir.path()),
        vec![
            current
                .snapshot
                .path()
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .to_string()
        ],
        "only the installed snapshot file is left (no receiving file)"
    );

    // Both continue from the snapshot with the same next entry.
    let next = Command::Enqueue(Box::new(enqueue(9, 2, 1, false)));
    let ra = apply_one(&mut a, normal(last + 1, next.clone())).await;
    let rb = apply_one(&mut b, normal(last + 1, next)).await;
    assert_eq!(ra, rb);
    assert_same_state(&a, &b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installing_a_snapshot_replaces_all_existing_state() {
    let a_dir = TempDir::new().unwrap();
    let (_a_log, mut a, _) = populated(&a_dir).await;
    let snapshot = build(&mut a).await;

    // C has other messages, owners, routes and traces, and a later
    // membership; after the install none of it may remain (no stale index
    // keys, counts or routes).
    let c_dir = TempDir::new().unwrap();
    let (_c_log, mut c) = relay_store::open(c_dir.path()).unwrap();
    apply_one(&mut c, membership(1, &[7, 8])).await;
    for (i, n) in (40u8..46).enumerate() {
        let command = Command::Enqueue(Box::new(enqueue(n, 4 + (n as u64 % 2), 2, false)));
        apply_one(&mut c, normal(i as u64 + 2, command)).await;
    }
    apply_one(
        &mut c,
        normal(
            8,
            Command::SetRoute {
                domain: "zzz.test".into(),
                route: Route::new(vec!["10.0.0.1:25".into()], TlsPolicy::Required),
            },
        ),
    )
    .await;
    assert_ne!(c.digest().unwrap(), a.digest().unwrap());

    install(&mut c, &snapshot).await.unwrap();
    assert_same_state(&a, &c);
    assert_eq!(
        a.applied_state().await.unwrap(),
        c.applied_state().await.unwrap()
    );
    assert!(
        c.due(4, UnixMillis(u64::MAX), usize::MAX)
            .unwrap()
            .is_empty()
    );
    assert!(
        c.due(5, UnixMillis(u64::MAX), usize::MAX)
            .unwrap()
            .is_empty()
    );
    assert_eq!(c.route("zzz.test").unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_snapshot_data_is_refused_and_changes_nothing() {
    let a_dir = TempDir::new().unwrap();
    let (_a_log, mut a, _) = populated(&a_dir).await;
    let snapshot = build(&mut a).await;

    let b_dir = TempDir::new().unwrap();
    let (_b_log, mut b, _) = populated(&b_dir).await;
    apply_one(
        &mut b,
        normal(
            100,
            Command::RemoveRoute {
                domain: "example.test".into(),
            },
        ),
    )
    .await;
    let before = b.digest().unwrap();

    let bytes = snapshot_bytes(&snapshot);
    assert!(
        install_bytes(&mut b, &snapshot.meta, &bytes[..bytes.len() / 2])
            .await
            .is_err(),
        "truncated snapshot data"
    );

    let mut mismatched = snapshot.meta.clone();
    mismatched.last_log_id = Some(openraft::testing::log_id(9, 9, 999));
    assert!(
        install_bytes(&mut b, &mismatched, &bytes).await.is_err(),
        "meta that does not match the data"
    );

    assert_eq!(b.digest().unwrap(), before);
    assert_eq!(b.last_applied().map(|l| l.index), Some(100));
    assert!(
        snapshot_files(b_dir.path()).is_empty(),
        "refused files are deleted"
    );
}

/// A store with a current snapshot of its own, for the refusal tests: what
/// must survive a refused install.
async fn store_with_own_snapshot(dir: &TempDir) -> (relay_store::LogStore, StateMachine) {
    let (log, mut sm) = relay_store::open(dir.path()).unwrap();
    apply_one(&mut sm, membership(1, &[1, 2, 3])).await;
    common::enqueue_many(&mut sm, 2, 5_000, 50, 300).await;
    build(&mut sm).await;
    (log, sm)
}

/// Installs `bytes` (with `snapshot`'s meta) on `b`, expects a refusal
/// naming the received file and `problem`, and checks nothing changed.
async fn assert_refused(
    b: &mut StateMachine,
    b_dir: &TempDir,
    snapshot: &Snapshot<TypeConfig>,
    bytes: &[u8],
    problem: &str,
) {
    let digest = b.digest().unwrap();
    let counts = b.counts().unwrap();
    let applied = b.applied_state().await.unwrap();
    let current = b.get_current_snapshot().await.unwrap().unwrap();
    let files = snapshot_files(b_dir.path());

    let err = install_bytes(b, &snapshot.meta, bytes)
        .await
        .expect_err("install must be refused")
        .to_string();
    let received = b_dir.path().join("snapshots").join("receiving-");
    assert!(
        err.contains(received.to_str().unwrap()) && err.contains(problem),
        "the error names the file and says {problem:?}: {err}"
    );

    assert_eq!(b.digest().unwrap(), digest);
    assert_eq!(b.counts().unwrap(), counts);
    assert_eq!(b.applied_state().await.unwrap(), applied);
    let still = b.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(still.meta, current.meta);
    assert_eq!(snapshot_bytes(&still), snapshot_bytes(&current));
    assert_eq!(
        snapshot_files(b_dir.path()),
        files,
        "the refused file is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_with_one_corrupt_byte_is_refused_and_changes_nothing() {
    let a_dir = TempDir::new().unwrap();
    let (_a_log, mut a, _) = populated(&a_dir).await;
    let snapshot = build(&mut a).await;
    let b_dir = TempDir::new().unwrap();
    let (_b_log, mut b) = store_with_own_snapshot(&b_dir).await;

    let good = snapshot_bytes(&snapshot);
    // A byte inside a body (found by its text: where the tables fall
    // depends on which tables the state has), one in the checksum trailer.
    let body_at = good
        .windows(10)
        .position(|w| w == b"Subject: m")
        .expect("a message body in the snapshot");
    for at in [body_at + 3, good.len() - 1] {
        let mut bad = good.clone();
        bad[at] ^= 0x01;
        assert_refused(&mut b, &b_dir, &snapshot, &bad, "checksum mismatch").await;
    }
    // The good bytes still install: the refusals left nothing behind.
    install_bytes(&mut b, &snapshot.meta, &good).await.unwrap();
    assert_same_state(&a, &b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_snapshot_is_refused_and_changes_nothing() {
    let a_dir = TempDir::new().unwrap();
    let (_a_log, mut a, _) = populated(&a_dir).await;
    let snapshot = build(&mut a).await;
    let b_dir = TempDir::new().unwrap();
    let (_b_log, mut b) = store_with_own_snapshot(&b_dir).await;

    let good = snapshot_bytes(&snapshot);
    assert_refused(&mut b, &b_dir, &snapshot, &good[..10], "truncated").await;
    // Cut inside the rows: a row runs into where the checksum would be.
    assert_refused(
        &mut b,
        &b_dir,
        &snapshot,
        &good[..good.len() / 2],
        "truncated",
    )
    .await;
    // Only the checksum missing: the end record is not where it should be.
    assert_refused(&mut b, &b_dir, &snapshot, &good[..good.len() - 32], "").await;
    assert_refused(&mut b, &b_dir, &snapshot, b"", "truncated").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_far_larger_than_one_write_batch_round_trips() {
    // 20,000 messages of 4 KiB: about 80 MiB of rows, twenty times the
    // install batch bound (4 MiB).
    let a_dir = TempDir::new().unwrap();
    let (_a_log, mut a) = relay_store::open(a_dir.path()).unwrap();
    apply_one(&mut a, membership(1, &[1, 2, 3])).await;
    let last = common::enqueue_many(&mut a, 2, 0, 20_000, 4096).await;
    let snapshot = build(&mut a).await;
    let size = std::fs::metadata(snapshot.snapshot.path()).unwrap().len();
    assert!(size > 20 * 4 * 1024 * 1024, "snapshot of {size} bytes");

    // B holds other messages, some with the same owners.
    let b_dir = TempDir::new().unwrap();
    let (_b_log, mut b) = relay_store::open(b_dir.path()).unwrap();
    apply_one(&mut b, membership(1, &[1, 2])).await;
    common::enqueue_many(&mut b, 2, 100_000, 500, 1000).await;

    install(&mut b, &snapshot).await.unwrap();
    let digest = b.digest().unwrap();
    assert_eq!(digest, a.digest().unwrap());
    assert_eq!((digest.applied_index, digest.bodies), (last, 20_000));
    assert_eq!(b.counts().unwrap(), a.counts().unwrap());
    for owner in 1..=3 {
        let due = |sm: &StateMachine| sm.due(owner, UnixMillis(u64::MAX), usize::MAX).unwrap();
        assert_eq!(due(&b), due(&a));
    }
    assert_eq!(
        b.list(&MessageFilter::default(), usize::MAX).unwrap().len(),
        20_000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_build_replaces_and_deletes_the_older_snapshot_file() {
    let dir = TempDir::new().unwrap();
    let (_log, mut sm, last) = populated(&dir).await;
    let first = build(&mut sm).await;
    let next = Command::Enqueue(Box::new(enqueue(9, 2, 1, false)));
    apply_one(&mut sm, normal(last + 1, next)).await;
    let second = build(&mut sm).await;
    assert_ne!(first.snapshot.path(), second.snapshot.path());
    assert!(!first.snapshot.path().exists(), "superseded file deleted");
    let name = second
        .snapshot
        .path()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    assert_eq!(snapshot_files(dir.path()), vec![name.to_string()]);
    assert!(
        name.starts_with(&format!("{:020}-", last + 1)) && name.ends_with(".snap"),
        "{name}"
    );
    let current = sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, second.meta);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_receiving_file_is_deleted() {
    let dir = TempDir::new().unwrap();
    let (_log, mut sm) = relay_store::open(dir.path()).unwrap();
    let receiving = sm.begin_receiving_snapshot().await.unwrap();
    let name = receiving.path().file_name().unwrap().to_str().unwrap();
    assert!(
        name.starts_with("receiving-") && name.ends_with(".tmp"),
        "{name}"
    );
    assert_eq!(snapshot_files(dir.path()).len(), 1);
    // openraft drops it when the leader moves on to another snapshot.
    drop(receiving);
    assert!(snapshot_files(dir.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_keeps_the_current_snapshot_file_and_deletes_the_rest() {
    let dir = TempDir::new().unwrap();
    let current_name = {
        let (_log, mut sm, _) = populated(&dir).await;
        let snapshot = build(&mut sm).await;
        snapshot.snapshot.path().file_name().unwrap().to_owned()
    };
    // What a crash can leave: a half-received and a half-built file.
    let snapshots = dir.path().join("snapshots");
    std::fs::write(snapshots.join("receiving-1-1.tmp"), b"half").unwrap();
    std::fs::write(snapshots.join("00000000000000000099-1-1.tmp"), b"half").unwrap();

    let (_log, mut sm) = relay_store::open(dir.path()).unwrap();
    assert_eq!(
        snapshot_files(dir.path()),
        vec![current_name.to_str().unwrap().to_string()]
    );
    assert!(sm.get_current_snapshot().await.unwrap().is_some());
    drop((_log, sm));

    // The current file itself gone (an operator deleted it): the state is
    // intact, the snapshot is forgotten and openraft builds a new one.
    std::fs::remove_file(snapshots.join(&current_name)).unwrap();
    let (_log, mut sm) = relay_store::open(dir.path()).unwrap();
    assert!(sm.get_current_snapshot().await.unwrap().is_none());
    let rebuilt = build(&mut sm).await;
    assert_eq!(
        sm.get_current_snapshot().await.unwrap().unwrap().meta,
        rebuilt.meta
    );
}

/// A snapshot file that cannot be written (the disk is full) keeps the
/// current snapshot: the build returns it instead of an error, which
/// openraft would treat as fatal, stopping the node (and every restart
/// after). No partial file is left behind. The next build is tried after a
/// pause, and it succeeds once the disk has room again.
#[tokio::test]
async fn a_snapshot_that_cannot_be_written_keeps_the_current_one() {
    let dir = TempDir::new().unwrap();
    let (_log, mut sm, index) = populated(&dir).await;
    let first = build(&mut sm).await;
    assert_eq!(first.meta.last_log_id.map(|l| l.index), Some(index));
    let files_before = snapshot_files(dir.path());

    let id = common::id(200);
    let message = enqueue(200, 1, 1, false);
    apply_one(
        &mut sm,
        normal(index + 1, Command::Enqueue(Box::new(message))),
    )
    .await;
    sm.set_snapshot_write_failpoint(true);
    let kept = build(&mut sm).await;
    assert_eq!(kept.meta, first.meta, "the current snapshot is kept");
    assert_eq!(
        snapshot_files(dir.path()),
        files_before,
        "no partial file is left"
    );
    let stored = sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(stored.meta, first.meta);
    assert_eq!(snapshot_bytes(&stored), snapshot_bytes(&first));

    // The disk has room again: within the retry pause the current snapshot
    // still comes back at once; after it, a build succeeds.
    sm.set_snapshot_write_failpoint(false);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let next = loop {
        let built = build(&mut sm).await;
        if built.meta.last_log_id.map(|l| l.index) == Some(index + 1) {
            break built;
        }
        assert_eq!(built.meta, first.meta);
        assert!(
            std::time::Instant::now() < deadline,
            "no build succeeded after the disk had room again"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    let restored = TempDir::new().unwrap();
    let (_log2, mut copy) = relay_store::open(restored.path()).unwrap();
    install(&mut copy, &next).await.unwrap();
    assert!(
        copy.body(&id).unwrap().is_some(),
        "the new snapshot has the new message"
    );
}
