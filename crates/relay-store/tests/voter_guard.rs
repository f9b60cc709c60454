//! A voter whose store comes back behind what it made durable (wiped,
//! restored from an older copy) refuses to start and says how to rejoin;
//! an intact store opens as before.

mod common;

use std::path::Path;

use common::{LEADER, blank};
use openraft::Vote;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use relay_store::{StoreError, StoreOptions};
use tempfile::TempDir;

fn open(dir: &Path) -> Result<(relay_store::LogStore, relay_store::StateMachine), StoreError> {
    relay_store::open_guarded(
        &dir.join("db"),
        StoreOptions::default(),
        &dir.join("voter-guard"),
    )
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

fn assert_refused(result: Result<(relay_store::LogStore, relay_store::StateMachine), StoreError>) {
    let err = result.expect_err("a store behind its guard is refused");
    assert!(matches!(err, StoreError::BehindVoterGuard { .. }), "{err}");
    assert!(err.needs_operator());
    let text = err.to_string();
    for needle in ["member remove", "member add", "member promote", "data_dir"] {
        assert!(text.contains(needle), "no {needle:?} in: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intact_store_reopens_and_a_wiped_one_is_refused() {
    let dir = TempDir::new().unwrap();
    {
        let (mut log, _sm) = open(dir.path()).unwrap();
        log.save_vote(&Vote::new(3, LEADER)).await.unwrap();
        log.blocking_append([blank(1), blank(2)]).await.unwrap();
    }
    {
        let (mut log, _sm) = open(dir.path()).expect("an intact store opens");
        assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(3, LEADER)));
    }
    std::fs::remove_dir_all(dir.path().join("db")).unwrap();
    assert_refused(open(dir.path()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_restored_from_an_older_copy_is_refused() {
    let dir = TempDir::new().unwrap();
    let backup = TempDir::new().unwrap();
    {
        let (mut log, _sm) = open(dir.path()).unwrap();
        log.save_vote(&Vote::new(1, LEADER)).await.unwrap();
    }
    copy_dir(&dir.path().join("db"), backup.path());
    {
        let (mut log, _sm) = open(dir.path()).unwrap();
        // A newer term, voted for another candidate.
        log.save_vote(&Vote::new(4, 2)).await.unwrap();
    }
    std::fs::remove_dir_all(dir.path().join("db")).unwrap();
    copy_dir(backup.path(), &dir.path().join("db"));
    assert_refused(open(dir.path()));
}
