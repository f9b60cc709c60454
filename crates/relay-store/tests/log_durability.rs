//! The durability contract of the log store: an append is acknowledged only
//! after a WAL sync returned, a failed sync is reported as an error (never
//! `Ok`), and a store whose sync failed refuses to report its log until it
//! is reopened.

mod common;

use common::{LEADER, TERM, blank, normal};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{RaftLogReader, Vote};
use relay_types::{Command, Route, TlsPolicy};
use tempfile::TempDir;

fn route_command(n: u8) -> Command {
    Command::SetRoute {
        domain: format!("d{n}.test"),
        route: Route::new(vec!["127.0.0.1:2600".into()], TlsPolicy::None),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_is_acknowledged_only_after_a_wal_sync() {
    let dir = TempDir::new().unwrap();
    let (mut log, _sm) = relay_store::open(dir.path()).unwrap();

    let before = log.synced_count();
    // `blocking_append` waits for the LogFlushed callback and fails unless
    // it carried Ok.
    log.blocking_append([blank(1), normal(2, route_command(1))])
        .await
        .expect("a synced append is acknowledged");
    assert_eq!(
        log.synced_count(),
        before + 1,
        "exactly one WAL sync per append"
    );

    let before = log.synced_count();
    log.save_vote(&Vote::new(2, LEADER)).await.unwrap();
    assert_eq!(
        log.synced_count(),
        before + 1,
        "save_vote syncs before returning"
    );

    // The committed index is a hint (see `LogStore`): written, readable,
    // made durable by the next synced append, but not synced on its own.
    let before = log.synced_count();
    let committed = Some(openraft::testing::log_id(TERM, LEADER, 2));
    log.save_committed(committed).await.unwrap();
    assert_eq!(log.synced_count(), before, "save_committed does not sync");
    assert_eq!(log.read_committed().await.unwrap(), committed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_wal_sync_reaches_the_callback_as_an_error_and_poisons_the_log() {
    let dir = TempDir::new().unwrap();
    let (mut log, sm) = relay_store::open(dir.path()).unwrap();
    log.blocking_append([blank(1)])
        .await
        .expect("acknowledged append");
    let synced = log.synced_count();

    log.set_sync_failpoint(true);
    let err = log
        .blocking_append([normal(2, route_command(2))])
        .await
        .expect_err("an append whose sync failed must not be acknowledged");
    assert!(
        err.to_string().contains("failpoint"),
        "unexpected error: {err}"
    );
    assert_eq!(log.synced_count(), synced, "no sync succeeded");

    // Nothing more is reported or accepted by this process, even with the
    // failpoint off again: the durable state is unknown until reopen.
    log.set_sync_failpoint(false);
    let state = log.get_log_state().await;
    assert!(
        state.is_err(),
        "get_log_state after a failed sync: {state:?}"
    );
    assert!(log.try_get_log_entries(0..10).await.is_err());
    assert!(log.save_vote(&Vote::new(3, LEADER)).await.is_err());
    assert!(
        log.blocking_append([normal(3, route_command(3))])
            .await
            .is_err()
    );
    let mut reader = log.get_log_reader().await;
    assert!(reader.try_get_log_entries(0..10).await.is_err());

    // Reopening recovers from what RocksDB has: the acknowledged entry is
    // there, and the store works again.
    drop(reader);
    drop(log);
    drop(sm);
    let (mut log, _sm) = relay_store::open(dir.path()).unwrap();
    let entries = log.try_get_log_entries(0..10).await.unwrap();
    assert_eq!(
        entries.first().map(|e| e.log_id.index),
        Some(1),
        "acknowledged entry survives"
    );
    log.blocking_append([normal(2, route_command(4))])
        .await
        .expect("a reopened store accepts appends again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_vote_fails_when_its_sync_fails() {
    let dir = TempDir::new().unwrap();
    let (mut log, _sm) = relay_store::open(dir.path()).unwrap();
    log.set_sync_failpoint(true);
    assert!(log.save_vote(&Vote::new(1, LEADER)).await.is_err());
    assert!(
        log.read_vote().await.is_err(),
        "poisoned after the failed sync"
    );
}
