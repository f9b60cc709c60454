//! In-flight tracking and reporting: a message is never delivered twice by
//! one node while it is being delivered, while its report waits for a
//! leader, or while this node's replica lags behind the committed report;
//! and concurrency limits hold.

mod support;

use std::sync::atomic::Ordering;

use relay_delivery::{DeliveryConfig, ProposeError};
use relay_testkit::{Behaviour, TargetOptions, TestTarget, wait_until};
use relay_types::{Command, TlsPolicy};
use support::{BODY, FakeCluster, Running, WAIT, config, message, reports_for};

/// Waits until the loop has run `rounds` more scans.
async fn more_rounds(cluster: &FakeCluster, rounds: usize) {
    let seen = cluster.due_calls.load(Ordering::SeqCst);
    wait_until(WAIT, || {
        cluster.due_calls.load(Ordering::SeqCst) >= seen + rounds
    })
    .await
    .expect("the loop keeps scanning");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_report_is_proposed_again_without_delivering_again() {
    let target = TestTarget::start().await.expect("target");
    let cluster = FakeCluster::new();
    cluster.set_route("example.test", vec![target.target()], TlsPolicy::None);
    cluster.fail_next([
        ProposeError::NoLeader,
        ProposeError::Timeout,
        ProposeError::NoLeader,
    ]);
    let id = cluster.enqueue(message("s@sender.test", &["a@example.test"], BODY));

    let running = Running::start(&cluster, config());
    wait_until(WAIT, || cluster.record(&id).is_none())
        .await
        .expect("Delivered commits once a leader is back");
    running.stop().await;

    assert_eq!(
        target.accepted_count(),
        1,
        "delivered once, reported 4 times"
    );
    assert_eq!(cluster.propose_calls.load(Ordering::SeqCst), 4);
    let reports = reports_for(&cluster, id);
    assert_eq!(reports.len(), 1);
    assert!(matches!(reports[0], Command::Delivered { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_in_flight_is_not_started_again() {
    let target = TestTarget::start().await.expect("target");
    let cluster = FakeCluster::new();
    cluster.set_route("example.test", vec![target.target()], TlsPolicy::None);
    let gate = cluster.hold_proposals();
    let id = cluster.enqueue(message("s@sender.test", &["a@example.test"], BODY));

    let running = Running::start(&cluster, config());
    target.wait_for_messages(1, WAIT).await.expect("delivered");
    wait_until(WAIT, || cluster.propose_calls.load(Ordering::SeqCst) == 1)
        .await
        .expect("report proposed");
    // The report hangs; the record is still due. Many rounds later the
    // target has still seen it once.
    more_rounds(&cluster, 10).await;
    assert_eq!(target.accepted_count(), 1);
    assert_eq!(target.connection_count(), 1);

    gate.add_permits(1);
    wait_until(WAIT, || cluster.record(&id).is_none())
        .await
        .expect("removed");
    running.stop().await;
    assert_eq!(target.accepted_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_report_is_not_redelivered_while_the_replica_lags() {
    let target = TestTarget::start().await.expect("target");
    let cluster = FakeCluster::new();
    cluster.set_route("example.test", vec![target.target()], TlsPolicy::None);
    cluster.start_lagging();
    let id = cluster.enqueue(message("s@sender.test", &["a@example.test"], BODY));

    let running = Running::start(&cluster, config());
    wait_until(WAIT, || !reports_for(&cluster, id).is_empty())
        .await
        .expect("Delivered committed on the leader");
    // Our replica has not applied it: the message still looks due.
    more_rounds(&cluster, 10).await;
    assert!(cluster.record(&id).is_some(), "replica still lags");
    assert_eq!(target.accepted_count(), 1, "not delivered again");

    cluster.catch_up();
    assert!(cluster.record(&id).is_none());
    running.stop().await;
    assert_eq!(cluster.propose_calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_new_deliveries_start_while_reports_find_no_leader() {
    let target = TestTarget::start().await.expect("target");
    let cluster = FakeCluster::new();
    cluster.set_route("example.test", vec![target.target()], TlsPolicy::None);
    let gate = cluster.hold_proposals();
    cluster.fail_next([ProposeError::NoLeader, ProposeError::NoLeader]);
    let first = cluster.enqueue(message("s@sender.test", &["a@example.test"], BODY));

    let running = Running::start(&cluster, config());
    target
        .wait_for_messages(1, WAIT)
        .await
        .expect("first delivered");
    // Let the first report fail with NoLeader; its retry then hangs at the
    // gate. Meanwhile a second message arrives: it must wait until reports
    // commit again.
    gate.add_permits(1);
    wait_until(WAIT, || cluster.propose_calls.load(Ordering::SeqCst) >= 2)
        .await
        .expect("first report failed and is being proposed again");
    let second = cluster.enqueue(message("s@sender.test", &["b@example.test"], BODY));
    // Paused rounds read nothing, so absence is checked over a window of
    // many poll intervals (20 ms each).
    let second_arrived = target
        .wait_for_messages(2, std::time::Duration::from_millis(500))
        .await;
    assert!(second_arrived.is_err(), "paused while there is no leader");
    assert_eq!(target.accepted_count(), 1);

    gate.add_permits(10);
    wait_until(WAIT, || cluster.queued().is_empty())
        .await
        .expect("both delivered once the leader is back");
    running.stop().await;
    assert_eq!(target.accepted_count(), 2);
    assert_eq!(reports_for(&cluster, first).len(), 1);
    assert_eq!(reports_for(&cluster, second).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_target_limit_holds_while_other_targets_proceed() {
    let stalled = TestTarget::start_with(TargetOptions {
        behaviour: Behaviour::Stall,
        ..TargetOptions::default()
    })
    .await
    .expect("target");
    let healthy = TestTarget::start().await.expect("target");
    let cluster = FakeCluster::new();
    cluster.set_route("slow.test", vec![stalled.target()], TlsPolicy::None);
    cluster.set_route("fast.test", vec![healthy.target()], TlsPolicy::None);
    let slow1 = cluster.enqueue(message("s@sender.test", &["a@slow.test"], BODY));
    let slow2 = cluster.enqueue(message("s@sender.test", &["b@slow.test"], BODY));
    let fast = cluster.enqueue(message("s@sender.test", &["c@fast.test"], BODY));

    let running = Running::start(
        &cluster,
        DeliveryConfig {
            per_target_concurrency: 1,
            max_concurrent_deliveries: 4,
            ..config()
        },
    );
    healthy
        .wait_for_messages(1, WAIT)
        .await
        .expect("the healthy target is not blocked by the stalled one");
    wait_until(WAIT, || stalled.connection_count() == 1)
        .await
        .expect("one delivery to the stalled target");
    more_rounds(&cluster, 10).await;
    assert_eq!(stalled.connection_count(), 1, "per-target limit is 1");

    // Ending the stalled target's sessions defers both slow messages.
    stalled.shutdown().await;
    wait_until(WAIT, || {
        !reports_for(&cluster, slow1).is_empty() && !reports_for(&cluster, slow2).is_empty()
    })
    .await
    .expect("both slow messages deferred");
    running.stop().await;
    assert!(cluster.record(&fast).is_none());
    assert!(cluster.record(&slow1).is_some() && cluster.record(&slow2).is_some());
}
