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
    let receiving = hold_three_and_receive(&mut log, &mut sm, &snapshot).await;

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

/// Set in the child process of the kill test: the follower's store dir.
const CHILD_DIR: &str = "QR_FOLLOWER_PURGE_CHILD_DIR";

/// The leader's side of the kill test: the sample log applied in a store
/// at `dir`, and a snapshot of it.
async fn leader_snapshot(
    dir: &std::path::Path,
) -> (StateMachine, openraft::Snapshot<relay_store::TypeConfig>) {
    let (_log, mut leader) = relay_store::open(dir).unwrap();
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
    (leader, snapshot)
}

/// A follower's first steps: it holds the first three entries, applied,
/// and has received `snapshot`'s file (not yet installed).
async fn hold_three_and_receive(
    log: &mut relay_store::LogStore,
    sm: &mut StateMachine,
    snapshot: &openraft::Snapshot<relay_store::TypeConfig>,
) -> Box<relay_store::SnapshotFile> {
    log.blocking_append([membership(1, &[1, 2, 3]), blank(2), blank(3)])
        .await
        .unwrap();
    apply_one(sm, membership(1, &[1, 2, 3])).await;
    apply_one(sm, blank(2)).await;
    apply_one(sm, blank(3)).await;
    let mut receiving = sm.begin_receiving_snapshot().await.unwrap();
    let bytes = std::fs::read(snapshot.snapshot.path()).unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut *receiving, &bytes)
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::shutdown(&mut *receiving)
        .await
        .unwrap();
    receiving
}

/// The child of the kill test: a follower holding three applied entries
/// receives a snapshot and openraft asks for the purge; then it says
/// `READY` and waits to be killed (SIGKILL, with the power-loss failpoint:
/// whatever was not synced dies with it), with the install not yet run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_follower_purging_before_its_install() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return; // Only ever run as the child.
    };
    let leader_dir = TempDir::new().unwrap();
    let (_leader, snapshot) = leader_snapshot(leader_dir.path()).await;
    let snap_last = snapshot.meta.last_log_id.unwrap();
    let options = relay_store::StoreOptions {
        unsynced_writes_die_with_process: true,
        ..Default::default()
    };
    let (mut log, mut sm) = relay_store::open_with(std::path::Path::new(&dir), options).unwrap();
    // Received, never installed: the process is killed first.
    let _received = hold_three_and_receive(&mut log, &mut sm, &snapshot).await;
    let purging = {
        let mut log = log.clone();
        tokio::spawn(async move { log.purge(snap_last).await })
    };
    tokio::time::sleep(EARLY).await;
    println!("READY");
    let _ = purging.await;
    // The parent kills this process long before anything else happens.
    tokio::time::sleep(Duration::from_secs(600)).await;
}

/// A follower killed (power cut) after openraft asked for the purge of its
/// log up to a received snapshot and before the install ran: it opens
/// again (no refusal, no crash), its log still covers its state, and it
/// catches up by installing the snapshot again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_killed_between_the_purge_and_the_install_restarts_and_catches_up() {
    if std::env::var_os(CHILD_DIR).is_some() {
        return;
    }
    let dir = TempDir::new().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_follower_purging_before_its_install",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_DIR, dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        let n = std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert!(n > 0, "the child exited before it was ready");
        if line.contains("READY") {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();

    // It opens: the purge had not run past its state.
    let (mut log, mut sm) = relay_store::open(dir.path()).expect("the killed follower opens again");
    let applied = last_applied_index(&sm);
    let purged = log
        .get_log_state()
        .await
        .unwrap()
        .last_purged_log_id
        .map_or(0, |l| l.index);
    assert!(
        purged <= applied,
        "purged to {purged} with the state at {applied}: it could not apply its next entry"
    );

    // And catches up: the leader sends the snapshot again.
    let leader_dir = TempDir::new().unwrap();
    let (_leader, snapshot) = leader_snapshot(leader_dir.path()).await;
    let snap_last = snapshot.meta.last_log_id.unwrap();
    let mut receiving = sm.begin_receiving_snapshot().await.unwrap();
    let bytes = std::fs::read(snapshot.snapshot.path()).unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut *receiving, &bytes)
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::shutdown(&mut *receiving)
        .await
        .unwrap();
    sm.install_snapshot(&snapshot.meta, receiving)
        .await
        .unwrap();
    log.purge(snap_last).await.unwrap();
    drop(log);
    drop(sm);
    let (_log, sm) = relay_store::open(dir.path()).expect("reopens after catching up");
    assert_eq!(sm.last_applied(), Some(snap_last));
    println!(
        "killed between purge and install: reopened at {applied} (purged {purged}), caught up to {}",
        snap_last.index
    );
}
