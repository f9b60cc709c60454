//! Snapshots: built on one store, installed on another, the states are
//! identical (digest and every query); installing replaces existing state
//! entirely; bad snapshot data is refused without changing anything.

mod common;

use std::io::Cursor;

use common::{apply_one, enqueue, membership, normal, sample_commands};
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

async fn install(
    target: &mut StateMachine,
    snapshot: &Snapshot<TypeConfig>,
) -> Result<(), openraft::StorageError<u64>> {
    let mut receiving = target.begin_receiving_snapshot().await?;
    *receiving = Cursor::new(snapshot.snapshot.get_ref().clone());
    target.install_snapshot(&snapshot.meta, receiving).await
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
    let snapshot = a
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
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
    assert_eq!(current.snapshot.get_ref(), snapshot.snapshot.get_ref());

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
    let snapshot = a
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();

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
                route: Route {
                    targets: vec!["10.0.0.1:25".into()],
                    tls: TlsPolicy::Required,
                },
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
    let snapshot = a
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();

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

    let mut truncated = snapshot.clone();
    let bytes = snapshot.snapshot.get_ref();
    *truncated.snapshot = Cursor::new(bytes[..bytes.len() / 2].to_vec());
    assert!(
        install(&mut b, &truncated).await.is_err(),
        "truncated snapshot data"
    );

    let mut mismatched = snapshot.clone();
    mismatched.meta.last_log_id = Some(openraft::testing::log_id(9, 9, 999));
    assert!(
        install(&mut b, &mismatched).await.is_err(),
        "meta that does not match the data"
    );

    assert_eq!(b.digest().unwrap(), before);
    assert_eq!(b.last_applied().map(|l| l.index), Some(100));
}
