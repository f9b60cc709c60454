//! Closing and reopening a store keeps everything: log, vote, committed,
//! purge point, applied state, queries, digest and the current snapshot.

mod common;

use common::{LEADER, TERM, membership, normal, sample_commands, snapshot_bytes};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::log_id;
use openraft::{Entry, RaftLogReader, RaftSnapshotBuilder, Vote};
use relay_store::TypeConfig;
use relay_types::{MessageFilter, UnixMillis};
use tempfile::TempDir;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopened_store_has_the_same_log_vote_state_and_snapshot() {
    let dir = TempDir::new().unwrap();
    let mut entries: Vec<Entry<TypeConfig>> = vec![membership(1, &[1, 2, 3])];
    for (i, command) in sample_commands().into_iter().enumerate() {
        entries.push(normal(i as u64 + 2, command));
    }
    let last = entries.last().unwrap().log_id;

    let (mut log, mut sm) = relay_store::open(dir.path()).unwrap();
    log.save_vote(&Vote::new(3, LEADER)).await.unwrap();
    log.blocking_append(entries.clone()).await.unwrap();
    log.save_committed(Some(last)).await.unwrap();
    sm.apply(entries.clone()).await.unwrap();
    let snapshot = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    log.purge(log_id(TERM, LEADER, 3)).await.unwrap();

    let all = MessageFilter::default();
    let before = (
        sm.last_applied(),
        sm.applied_state().await.unwrap(),
        sm.list(&all, usize::MAX).unwrap(),
        sm.digest().unwrap(),
        sm.counts().unwrap(),
        sm.routes().unwrap(),
        sm.due(1, UnixMillis(u64::MAX), usize::MAX).unwrap(),
    );
    let log_before = (
        log.get_log_state().await.unwrap(),
        log.read_vote().await.unwrap(),
        log.read_committed().await.unwrap(),
        log.try_get_log_entries(0..).await.unwrap(),
    );
    assert_eq!(before.0, Some(last));
    assert_eq!(
        log_before.3.first().map(|e| e.log_id.index),
        Some(4),
        "purged up to 3"
    );
    drop(log);
    drop(sm);

    let (mut log, mut sm) = relay_store::open(dir.path()).unwrap();
    let after = (
        sm.last_applied(),
        sm.applied_state().await.unwrap(),
        sm.list(&all, usize::MAX).unwrap(),
        sm.digest().unwrap(),
        sm.counts().unwrap(),
        sm.routes().unwrap(),
        sm.due(1, UnixMillis(u64::MAX), usize::MAX).unwrap(),
    );
    assert_eq!(after, before);
    let log_after = (
        log.get_log_state().await.unwrap(),
        log.read_vote().await.unwrap(),
        log.read_committed().await.unwrap(),
        log.try_get_log_entries(0..).await.unwrap(),
    );
    assert_eq!(log_after, log_before);
    assert_eq!(*sm.subscribe_applied().borrow(), last.index);
    let current = sm
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("snapshot survives reopen");
    assert_eq!(current.meta, snapshot.meta);
    assert_eq!(current.snapshot.path(), snapshot.snapshot.path());
    assert_eq!(snapshot_bytes(&current), snapshot_bytes(&snapshot));
}
