//! Fencing in the delivery loop: the start lease decides only whether a
//! transaction may start; one whose message text is on its way always runs
//! to its final reply and is reported; a delivery whose report is refused
//! because ownership moved is counted as a known duplicate and traced.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use relay_delivery::{DeliveryStore, ProposeError};
use relay_testkit::{Behaviour, TargetOptions, TestTarget, wait_until};
use relay_types::{Command, TlsPolicy, UnixMillis};
use support::{BODY, FakeCluster, Running, WAIT, config, message, reports_for};

async fn held_reply_target(hold: Duration) -> TestTarget {
    TestTarget::start_with(TargetOptions {
        behaviour: Behaviour::DelayDataReply(hold),
        ..Default::default()
    })
    .await
    .expect("target")
}

/// The lease runs out while the target holds its reply to the final dot
/// (a leader stepping down, a `relayctl failover`): the transaction is
/// finished and its `Delivered` reported, and the target gets one copy.
/// (Abandoning the session here made every such message arrive twice.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_lease_after_the_final_dot_still_reports_the_delivery() {
    let target = held_reply_target(Duration::from_millis(1500)).await;
    let cluster = FakeCluster::new();
    cluster.set_route("example.test", vec![target.target()], TlsPolicy::None);
    let id = cluster.enqueue(message("s@sender.test", &["a@example.test"], BODY));

    let running = Running::start(&cluster, config());
    target
        .wait_for_messages(1, WAIT)
        .await
        .expect("the target stored the message");
    cluster.set_lease(false);
    wait_until(WAIT, || cluster.record(&id).is_none())
        .await
        .expect("the delivery is reported although the lease ran out");
    // The lease comes back; nothing is left to deliver.
    cluster.set_lease(true);
    let scans = cluster.due_calls.load(Ordering::SeqCst);
    wait_until(WAIT, || {
        cluster.due_calls.load(Ordering::SeqCst) > scans + 5
    })
    .await
    .expect("the loop keeps scanning");
    running.stop().await;

    assert_eq!(target.messages().len(), 1, "delivered exactly once");
    let reports = reports_for(&cluster, id);
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(matches!(reports[0], Command::Delivered { .. }));
}

/// Without the start lease nothing reaches the target: no connection is
/// even opened, and the message waits, undelivered, until the lease is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_start_lease_no_session_starts() {
    let target = TestTarget::start().await.expect("target");
    let cluster = FakeCluster::new();
    cluster.set_route("example.test", vec![target.target()], TlsPolicy::None);
    cluster.set_lease(false);
    let id = cluster.enqueue(message("s@sender.test", &["a@example.test"], BODY));

    let running = Running::start(&cluster, config());
    let scans = cluster.due_calls.load(Ordering::SeqCst);
    // The loop skips its scan without a lease: wait on the clock instead,
    // bounded, for a few poll intervals.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(target.connection_count(), 0, "no session without the lease");
    assert_eq!(cluster.due_calls.load(Ordering::SeqCst), scans);
    assert!(cluster.record(&id).is_some());

    cluster.set_lease(true);
    wait_until(WAIT, || cluster.record(&id).is_none())
        .await
        .expect("delivered once the lease is back");
    running.stop().await;
    assert_eq!(target.messages().len(), 1);
}

/// The owner delivered while its report could not commit, and meanwhile the
/// leader gave the message to another node: the report is refused, and the
/// relay counts that delivery as a known duplicate and records it in the
/// message's trace (`DuplicateDelivered`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_refused_because_ownership_moved_is_counted_and_traced() {
    let target = held_reply_target(Duration::from_millis(300)).await;
    let cluster = FakeCluster::new();
    cluster.set_route("example.test", vec![target.target()], TlsPolicy::None);
    let id = cluster.enqueue(message("s@sender.test", &["a@example.test"], BODY));
    // The first report finds no leader; by the second the message is owned
    // by node 2.
    cluster.fail_next([ProposeError::NoLeader]);

    let running = Running::start(&cluster, config());
    target
        .wait_for_messages(1, WAIT)
        .await
        .expect("the target stored the message");
    cluster.commit_from_elsewhere(Command::TakeOver {
        from: support::NODE,
        to: vec![2],
        at: UnixMillis::now(),
    });
    wait_until(WAIT, || {
        cluster
            .committed_commands()
            .iter()
            .any(|c| matches!(c, Command::DuplicateDelivered { id: d, .. } if *d == id))
    })
    .await
    .expect("the known duplicate is traced");
    running.stop().await;

    assert_eq!(cluster.record(&id).map(|r| r.owner), Some(2));
    let trace = cluster.trace(&id);
    assert!(
        trace
            .iter()
            .any(|e| e.what.starts_with("duplicate delivery") && e.what.contains("ownership")),
        "{trace:?}"
    );
}

/// The target stored the message but the connection broke before its reply
/// to the final dot: the outcome is unknown, the message is retried, and
/// the delivery that then succeeds is counted and traced as a possible
/// duplicate (the target holds two copies).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_after_a_lost_final_reply_is_counted_as_a_possible_duplicate() {
    let target = TestTarget::start_with(TargetOptions {
        behaviour: Behaviour::DropAfterData,
        ..Default::default()
    })
    .await
    .expect("target");
    let cluster = FakeCluster::new();
    cluster.set_route("example.test", vec![target.target()], TlsPolicy::None);
    let id = cluster.enqueue(message("s@sender.test", &["a@example.test"], BODY));
    let mut config = config();
    config.retry.min_backoff_ms = 100;
    config.retry.max_backoff_ms = 100;

    let running = Running::start(&cluster, config);
    wait_until(WAIT, || {
        cluster.record(&id).is_some_and(|r| r.attempts == 1)
    })
    .await
    .expect("the first attempt is recorded as deferred");
    target.set_behaviour(Behaviour::AcceptAll);
    wait_until(WAIT, || {
        cluster
            .committed_commands()
            .iter()
            .any(|c| matches!(c, Command::DuplicateDelivered { id: d, .. } if *d == id))
    })
    .await
    .expect("the possible duplicate is traced");
    running.stop().await;

    assert_eq!(target.messages().len(), 2, "the target holds two copies");
    assert!(cluster.record(&id).is_none(), "delivered");
    let trace = cluster.trace(&id);
    assert!(
        trace
            .iter()
            .any(|e| e.what.starts_with("duplicate delivery") && e.what.contains("possible")),
        "{trace:?}"
    );
}

/// The process dies after the target stored the message and before the
/// reply was recorded (the "text sent" window): when the node starts
/// again, the next copy is counted as a possible duplicate and traced.
/// Before the durable "text sent" mark nothing counted it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_message_text_counts_the_next_copy() {
    let target = held_reply_target(Duration::from_secs(30)).await;
    let cluster = FakeCluster::new();
    cluster.set_route("example.test", vec![target.target()], TlsPolicy::None);
    let id = cluster.enqueue(message("s@sender.test", &["a@example.test"], BODY));

    // First run: the target stores the message and holds its reply; the
    // process dies (the loop's task is aborted: nothing more is written).
    let first = Running::start(&cluster, config());
    wait_until(WAIT, || target.accepted_count() == 1)
        .await
        .expect("the target stored the first copy");
    first.crash().await;
    assert!(
        reports_for(&cluster, id).is_empty(),
        "nothing was reported before the crash"
    );

    // Second run: it delivers again, and says so.
    target.set_behaviour(Behaviour::AcceptAll);
    let second = Running::start(&cluster, config());
    wait_until(WAIT, || cluster.record(&id).is_none())
        .await
        .expect("delivered and reported after the restart");
    second.stop().await;
    assert_eq!(
        target.accepted_count(),
        2,
        "the second copy reached the target"
    );
    let notes: Vec<Command> = cluster
        .committed_commands()
        .into_iter()
        .filter(|c| matches!(c, Command::DuplicateDelivered { id: d, .. } if *d == id))
        .collect();
    assert_eq!(
        notes.len(),
        1,
        "the possible duplicate is traced once: {notes:?}"
    );
    let Command::DuplicateDelivered { why, by, .. } = &notes[0] else {
        unreachable!()
    };
    assert_eq!(*by, support::NODE);
    assert!(why.contains("after sending the message text"), "{why}");
}

/// Two crashes in a row after the message text. The restart counts the
/// first run's mark, and the next attempt writes its own mark under the
/// same key; tracing the first one must never remove the second (it once
/// did, once the trace note committed), or the third copy goes uncounted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_crash_after_the_text_is_counted_too() {
    let target = held_reply_target(Duration::from_secs(60)).await;
    let cluster = FakeCluster::new();
    cluster.set_route("example.test", vec![target.target()], TlsPolicy::None);
    let id = cluster.enqueue(message("s@sender.test", &["a@example.test"], BODY));
    let marked = |cluster: &FakeCluster| {
        cluster
            .pending_reports()
            .unwrap()
            .iter()
            .any(|(m, c)| *m == id && matches!(c, Command::DuplicateDelivered { .. }))
    };

    // First run: the target stores copy 1 and holds its reply; crash.
    let first = Running::start(&cluster, config());
    wait_until(WAIT, || target.accepted_count() == 1)
        .await
        .expect("the target stored the first copy");
    first.crash().await;
    assert!(marked(&cluster), "the first run left its text-sent mark");

    // Second run, its trace note held back: it counts the first copy and
    // sends copy 2, whose reply is held too.
    let gate = cluster.hold_proposals();
    let second = Running::start(&cluster, config());
    wait_until(WAIT, || target.accepted_count() == 2)
        .await
        .expect("the target stored the second copy");
    assert!(marked(&cluster), "the second attempt wrote its own mark");
    // The note about the first copy commits while copy 2 waits for its reply.
    gate.add_permits(1);
    let note_committed = |cluster: &FakeCluster| {
        cluster
            .committed_commands()
            .iter()
            .filter(|c| matches!(c, Command::DuplicateDelivered { id: d, .. } if *d == id))
            .count()
    };
    wait_until(WAIT, || note_committed(&cluster) == 1)
        .await
        .expect("the first copy is traced");
    // Whatever the note's task does after its commit, the second attempt's
    // mark must stay (polled for a while: the old code removed it at once).
    let removed = wait_until(Duration::from_secs(2), || !marked(&cluster)).await;
    assert!(
        removed.is_err(),
        "tracing the first copy removed the second attempt's mark"
    );
    second.crash().await;

    // Third run: copy 3, counted as well.
    gate.add_permits(1_000);
    target.set_behaviour(Behaviour::AcceptAll);
    let third = Running::start(&cluster, config());
    wait_until(WAIT, || cluster.record(&id).is_none())
        .await
        .expect("delivered and reported after the second restart");
    third.stop().await;
    assert_eq!(
        target.accepted_count(),
        3,
        "three copies reached the target"
    );
    wait_until(WAIT, || note_committed(&cluster) == 2)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "each extra copy is traced: {} notes",
                note_committed(&cluster)
            )
        });
}
