//! A follower receiving a snapshot: openraft asks the log store to purge up
//! to the snapshot as soon as it hands the install to the state machine,
//! before the install is done. The log must never be purged past what the
//! state machine would hold after a crash, or a kill -9 in between leaves a
//! node that cannot apply its next entry (and cannot start).

mod common;

use std::time::Duration;

use common::{apply_one, blank, membership, normal, sample_commands};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{RaftLogReader, RaftSnapshotBuilder};
use relay_store::StateMachine;
use tempfile::TempDir;

/// How long the purge gets to (wrongly) finish on its own before the
/// install runs. Not a timing assertion: a correct purge waits however
/// long the install takes; a wrong one returns at once.
const EARLY: Duration = Duration::from_millis(500);

fn last_applied_index(sm: &StateMachine) -> u64 {
    sm.last_applied().map_or(0, |l| l.index)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_log_is_not_purged_past_its_state_during_an_install() {
    // The leader's side: the sample log applied, and a snapshot of it.
    let leader_dir = TempDir::new().unwrap();
    let (_leader_log, mut leader) = relay_store::open(leader_dir.path()).unwrap();
    apply_one(&mut leader, membership(1, &[1, 2, 3])).await;
    let mut last = 1;
    for command in sample_commands() {
        last += 1;
        apply_one(&mut leader, normal(last, command)).await;
    }
    let snapshot = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let snap_last = snapshot.meta.last_log_id.unwrap();
    assert_eq!(snap_last.index, last);

    // The follower holds the first three entries, applied, and has begun
    // receiving the snapshot.
    let dir = TempDir::new().unwrap();
    let (mut log, mut sm) = relay_store::open(dir.path()).unwrap();
    log.blocking_append([membership(1, &[1, 2, 3]), blank(2), blank(3)])
        .await
        .unwrap();
    apply_one(&mut sm, membership(1, &[1, 2, 3])).await;
    apply_one(&mut sm, blank(2)).await;
    apply_one(&mut sm, blank(3)).await;
    let mut receiving = sm.begin_receiving_snapshot().await.unwrap();
    let bytes = std::fs::read(snapshot.snapshot.path()).unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut *receiving, &bytes)
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::shutdown(&mut *receiving)
        .await
        .unwrap();

    // openraft's order: the install goes to the state machine worker and
    // the purge to the log store, concurrently.
    let mut purging = {
        let mut log = log.clone();
        tokio::spawn(async move { log.purge(snap_last).await })
    };
    if let Ok(done) = tokio::time::timeout(EARLY, &mut purging).await {
        done.unwrap().unwrap();
        let purged = log
            .get_log_state()
            .await
            .unwrap()
            .last_purged_log_id
            .map_or(0, |l| l.index);
        assert!(
            purged <= last_applied_index(&sm),
            "the log was purged to {purged} while the state machine holds {}: \
             a crash now leaves an unstartable node",
            last_applied_index(&sm)
        );
    }
    sm.install_snapshot(&snapshot.meta, receiving)
        .await
        .unwrap();
    purging
        .await
        .unwrap()
        .expect("the purge completes after the install");

    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(snap_last));
    assert_eq!(sm.last_applied(), Some(snap_last));
    assert!(
        log.try_get_log_entries(0..=snap_last.index)
            .await
            .unwrap()
            .is_empty()
    );

    // And the store opens again.
    drop(log);
    drop(sm);
    let (_log, sm) = relay_store::open(dir.path()).expect("reopens after the install");
    assert_eq!(sm.last_applied(), Some(snap_last));
}

/// Outside an install the purge does what openraft asks at once (openraft
/// itself only purges what a snapshot of the applied state covers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_install_a_purge_runs_at_once() {
    let dir = TempDir::new().unwrap();
    let (mut log, mut sm) = relay_store::open(dir.path()).unwrap();
    log.blocking_append([membership(1, &[1]), blank(2), blank(3)])
        .await
        .unwrap();
    for entry in [membership(1, &[1]), blank(2), blank(3)] {
        apply_one(&mut sm, entry).await;
    }
    let upto = openraft::testing::log_id(common::TERM, common::LEADER, 2);
    tokio::time::timeout(Duration::from_secs(30), log.purge(upto))
        .await
        .expect("a purge outside an install does not wait")
        .unwrap();
    assert_eq!(
        log.get_log_state().await.unwrap().last_purged_log_id,
        Some(upto)
    );
}
