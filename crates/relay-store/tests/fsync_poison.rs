//! After one failed fsync nothing is acknowledged as durable again by this
//! process: not the append whose sync failed, not a later append, vote or
//! pending report, even once the disk "works" again (a retried fsync can
//! report success for pages the kernel already dropped).

mod common;

use common::{LEADER, blank, normal};
use openraft::Vote;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use relay_types::{Command, MessageId, Route, TlsPolicy};
use tempfile::TempDir;

fn route_command(n: u8) -> Command {
    Command::SetRoute {
        domain: format!("d{n}.test"),
        route: Route::new(vec!["127.0.0.1:2600".into()], TlsPolicy::None),
    }
}

fn delivered(n: u8) -> Command {
    Command::Delivered {
        id: MessageId([n; 16]),
        by: LEADER,
        target: "127.0.0.1:2600".into(),
        at: relay_types::UnixMillis(1),
        reply: "250 ok".into(),
    }
}

/// The failpoint is switched off again right after the failed sync: the
/// disk would sync fine now, and still nothing may report success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failed_sync_no_later_sync_reports_success() {
    let dir = TempDir::new().unwrap();
    let (mut log, sm) = relay_store::open(dir.path()).unwrap();
    log.blocking_append([blank(1)]).await.expect("acknowledged");

    log.set_sync_failpoint(true);
    log.blocking_append([normal(2, route_command(1))])
        .await
        .expect_err("the append whose sync failed is not acknowledged");
    log.set_sync_failpoint(false);

    // The delivery side's durable report goes through the same WAL sync.
    let saved = sm.save_pending_report(&MessageId([7; 16]), &delivered(7));
    assert!(
        saved.is_err(),
        "a sync after a failed one reported success: {saved:?}"
    );
    assert!(log.save_vote(&Vote::new(2, LEADER)).await.is_err());
    assert!(
        log.blocking_append([normal(2, route_command(2))])
            .await
            .is_err()
    );
    assert!(
        *sm.subscribe_poisoned().borrow(),
        "the node is told to stop"
    );
}

/// The one-shot failpoint (what a fault run of a whole node uses): exactly
/// one sync fails, and the gate stays shut after it although the failpoint
/// does not fire again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failed_fsync_poisons_every_later_sync() {
    let dir = TempDir::new().unwrap();
    let (mut log, sm) = relay_store::open(dir.path()).unwrap();
    let poisoned = sm.subscribe_poisoned();
    log.fail_sync_after(1);
    log.blocking_append([blank(1)])
        .await
        .expect("the first sync is let through");
    assert!(!*poisoned.borrow());
    let synced = log.synced_count();

    let err = log
        .blocking_append([normal(2, route_command(1))])
        .await
        .expect_err("the append whose fsync failed is not acknowledged");
    assert!(err.to_string().contains("failpoint"), "{err}");
    assert!(*poisoned.borrow());

    for n in 3..6u64 {
        assert!(
            log.blocking_append([normal(n, route_command(n as u8))])
                .await
                .is_err(),
            "append {n} acknowledged after a failed fsync"
        );
    }
    assert!(
        sm.save_pending_report(&MessageId([9; 16]), &delivered(9))
            .is_err()
    );
    assert_eq!(log.synced_count(), synced, "no sync ran after the failure");

    // A restart recovers from the disk; the acknowledged entry is there.
    drop(log);
    drop(sm);
    let (mut log, sm) = relay_store::open(dir.path()).unwrap();
    assert!(!*sm.subscribe_poisoned().borrow());
    let state = log.get_log_state().await.unwrap();
    assert!(state.last_log_id.is_some_and(|l| l.index >= 1));
}
