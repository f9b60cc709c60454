//! What the delivery loop proposes for each kind of target answer, with a
//! real SMTP target (`relay_testkit::TestTarget`) and the real state
//! machine behind fake store/proposer traits.

mod support;

use relay_testkit::{Behaviour, Reply, TargetOptions, TestTarget, wait_until};
use relay_types::{AttemptOutcome, Command, Route, TlsPolicy, UnixMillis};
use support::{BODY, FakeCluster, NODE, Running, WAIT, config, message, reports_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_message_arrives_unchanged_and_is_reported_delivered() {
    let target = TestTarget::start().await.expect("target");
    let cluster = FakeCluster::new();
    cluster.set_route("example.test", vec![target.target()], TlsPolicy::None);
    let id = cluster.enqueue(message(
        "sender@sender.test",
        &["a@example.test", "b@Example.TEST"],
        BODY,
    ));

    let running = Running::start(&cluster, config());
    let received = target.wait_for_messages(1, WAIT).await.expect("delivered");
    wait_until(WAIT, || cluster.record(&id).is_none())
        .await
        .expect("message removed after Delivered");
    running.stop().await;

    assert_eq!(received.len(), 1);
    let m = &received[0];
    assert_eq!(&m.data[..], BODY.as_bytes(), "bytes at the target == body");
    assert_eq!(m.mail_from, "sender@sender.test");
    assert_eq!(m.rcpt_to, vec!["a@example.test", "b@Example.TEST"]);
    assert_eq!(m.helo, "relay1.test");
    assert!(!m.tls);

    let reports = reports_for(&cluster, id);
    assert_eq!(reports.len(), 1, "{reports:?}");
    let Command::Delivered {
        by,
        target: t,
        reply,
        ..
    } = &reports[0]
    else {
        panic!("expected Delivered, got {:?}", reports[0]);
    };
    assert_eq!(*by, NODE);
    assert_eq!(t, &target.target());
    assert!(reply.starts_with("250 2.0.0 Ok: queued as 1"), "{reply}");
    assert_eq!(target.accepted_count(), 1, "delivered exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_sender_and_8bit_body_are_sent_as_is() {
    let target = TestTarget::start().await.expect("target");
    let cluster = FakeCluster::new();
    cluster.set_route("example.test", vec![target.target()], TlsPolicy::None);
    let body = "Subject: Grüße\r\n\r\nçà\r\n";
    let id = cluster.enqueue(message("", &["a@example.test"], body));

    let running = Running::start(&cluster, config());
    let received = target.wait_for_messages(1, WAIT).await.expect("delivered");
    wait_until(WAIT, || cluster.record(&id).is_none())
        .await
        .expect("removed");
    running.stop().await;

    assert_eq!(received[0].mail_from, "", "MAIL FROM:<>");
    assert_eq!(received[0].mail_params, "BODY=8BITMIME");
    assert_eq!(&received[0].data[..], body.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_rcpt_failure_is_deferred_with_a_later_next_attempt() {
    let target = TestTarget::start_with(TargetOptions {
        behaviour: Behaviour::RejectRcpt(Reply::new(451, "4.3.0 greylisted")),
        ..TargetOptions::default()
    })
    .await
    .expect("target");
    let cluster = FakeCluster::new();
    cluster.set_route("example.test", vec![target.target()], TlsPolicy::None);
    let id = cluster.enqueue(message("s@sender.test", &["a@example.test"], BODY));
    let before = UnixMillis::now();

    let running = Running::start(&cluster, config());
    wait_until(WAIT, || !reports_for(&cluster, id).is_empty())
        .await
        .expect("attempt reported");
    running.stop().await;

    let reports = reports_for(&cluster, id);
    assert_eq!(reports.len(), 1, "not retried before its time: {reports:?}");
    let Command::Attempt {
        at,
        outcomes,
        next_attempt_at,
        dsn,
        target: t,
        ..
    } = &reports[0]
    else {
        panic!("expected Attempt, got {:?}", reports[0]);
    };
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].outcome, AttemptOutcome::Deferred);
    assert_eq!(outcomes[0].reply, "451 4.3.0 greylisted");
    assert_eq!(t, &target.target());
    assert!(dsn.is_none());
    assert!(*at >= before);
    // First deferral: the configured minimal backoff.
    assert_eq!(*next_attempt_at, at.plus_millis(600_000));

    let record = cluster.record(&id).expect("still queued");
    assert_eq!(record.attempts, 1);
    assert_eq!(record.next_attempt_at, *next_attempt_at);
    assert!(target.messages().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failure_bounces_and_the_dsn_is_delivered_too() {
    let target = TestTarget::start_with(TargetOptions {
        behaviour: Behaviour::RejectRcptMatching {
            matching: "@example.test".into(),
            reply: Reply::new(550, "5.1.1 no such user"),
        },
        ..TargetOptions::default()
    })
    .await
    .expect("target");
    let cluster = FakeCluster::new();
    cluster.set_route("example.test", vec![target.target()], TlsPolicy::None);
    // The bounce goes back to the sender's domain: route it to the target.
    cluster.set_route("sender.test", vec![target.target()], TlsPolicy::None);
    let id = cluster.enqueue(message("s@sender.test", &["nobody@example.test"], BODY));

    let running = Running::start(&cluster, config());
    let received = target.wait_for_messages(1, WAIT).await.expect("bounce");
    wait_until(WAIT, || cluster.queued().is_empty())
        .await
        .expect("message and bounce finished");
    running.stop().await;

    let reports = reports_for(&cluster, id);
    assert_eq!(reports.len(), 1);
    let Command::Attempt { outcomes, dsn, .. } = &reports[0] else {
        panic!("expected Attempt, got {:?}", reports[0]);
    };
    assert_eq!(outcomes[0].outcome, AttemptOutcome::Failed);
    assert_eq!(outcomes[0].reply, "550 5.1.1 no such user");
    let dsn = dsn.as_ref().expect("a DSN rides with the failure");

    let bounce = &received[0];
    assert_eq!(bounce.mail_from, "", "bounces use the null sender");
    assert_eq!(bounce.rcpt_to, vec!["s@sender.test"]);
    assert_eq!(&bounce.data[..], &dsn.body[..]);
    let text = String::from_utf8_lossy(&bounce.data);
    assert!(text.contains("Final-Recipient: rfc822; nobody@example.test"));
    assert!(text.contains("Status: 5.1.1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_recipients_get_their_own_outcomes() {
    let target = TestTarget::start_with(TargetOptions {
        behaviour: Behaviour::RejectRcptMatching {
            matching: "bad@".into(),
            reply: Reply::new(550, "5.1.1 unknown"),
        },
        ..TargetOptions::default()
    })
    .await
    .expect("target");
    let cluster = FakeCluster::new();
    cluster.set_route("example.test", vec![target.target()], TlsPolicy::None);
    let id = cluster.enqueue(message(
        "s@sender.test",
        &[
            "good@example.test",
            "bad@example.test",
            "other@nowhere.test",
        ],
        BODY,
    ));

    let running = Running::start(&cluster, config());
    let received = target.wait_for_messages(1, WAIT).await.expect("delivered");
    wait_until(WAIT, || !reports_for(&cluster, id).is_empty())
        .await
        .expect("reported");
    running.stop().await;

    assert_eq!(received[0].rcpt_to, vec!["good@example.test"]);
    let reports = reports_for(&cluster, id);
    let Command::Attempt { outcomes, dsn, .. } = &reports[0] else {
        panic!("expected Attempt, got {:?}", reports[0]);
    };
    let by_index: Vec<(u32, AttemptOutcome)> =
        outcomes.iter().map(|o| (o.index, o.outcome)).collect();
    assert!(by_index.contains(&(0, AttemptOutcome::Delivered)));
    assert!(by_index.contains(&(1, AttemptOutcome::Failed)));
    assert!(by_index.contains(&(2, AttemptOutcome::Deferred)));
    let no_route = outcomes.iter().find(|o| o.index == 2).expect("index 2");
    assert_eq!(no_route.reply, "no route for domain \"nowhere.test\"");
    assert!(dsn.is_some(), "bad@ failed for good");
    let record = cluster.record(&id).expect("one recipient still pending");
    assert_eq!(record.pending_indexes(), vec![2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_rejection_and_dropped_connections_are_classified() {
    let target = TestTarget::start_with(TargetOptions {
        behaviour: Behaviour::RejectData(Reply::new(554, "5.6.0 content rejected")),
        ..TargetOptions::default()
    })
    .await
    .expect("target");
    let cluster = FakeCluster::new();
    cluster.set_route("example.test", vec![target.target()], TlsPolicy::None);
    let rejected = cluster.enqueue(message("", &["a@example.test"], BODY));

    let running = Running::start(&cluster, config());
    wait_until(WAIT, || !reports_for(&cluster, rejected).is_empty())
        .await
        .expect("reported");
    let reports = reports_for(&cluster, rejected);
    let Command::Attempt { outcomes, .. } = &reports[0] else {
        panic!("expected Attempt, got {:?}", reports[0]);
    };
    assert_eq!(outcomes[0].outcome, AttemptOutcome::Failed);
    assert_eq!(outcomes[0].reply, "554 5.6.0 content rejected");

    target.set_behaviour(Behaviour::DropConnection);
    let dropped = cluster.enqueue(message("", &["b@example.test"], BODY));
    wait_until(WAIT, || !reports_for(&cluster, dropped).is_empty())
        .await
        .expect("reported");
    running.stop().await;
    let reports = reports_for(&cluster, dropped);
    let Command::Attempt { outcomes, .. } = &reports[0] else {
        panic!("expected Attempt, got {:?}", reports[0]);
    };
    assert_eq!(outcomes[0].outcome, AttemptOutcome::Deferred);
    assert!(
        outcomes[0].reply.starts_with(&target.target()),
        "{}",
        outcomes[0].reply
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_first_target_falls_through_to_the_next() {
    // A port that was free a moment ago: connections are refused.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").to_string()
    };
    let greeting_refused = TestTarget::start_with(TargetOptions {
        behaviour: Behaviour::RejectGreeting(Reply::new(554, "5.3.2 not now")),
        ..TargetOptions::default()
    })
    .await
    .expect("target");
    let target = TestTarget::start().await.expect("target");
    let cluster = FakeCluster::new();
    cluster.set_route(
        "example.test",
        vec![closed, greeting_refused.target(), target.target()],
        TlsPolicy::None,
    );
    let id = cluster.enqueue(message("s@sender.test", &["a@example.test"], BODY));

    let running = Running::start(&cluster, config());
    target.wait_for_messages(1, WAIT).await.expect("delivered");
    wait_until(WAIT, || cluster.record(&id).is_none())
        .await
        .expect("removed");
    running.stop().await;
    let reports = reports_for(&cluster, id);
    assert!(
        matches!(&reports[0], Command::Delivered { target: t, .. } if *t == target.target()),
        "{reports:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domains_without_a_route_use_the_default_route() {
    let target = TestTarget::start().await.expect("target");
    let cluster = FakeCluster::new();
    let id = cluster.enqueue(message("s@sender.test", &["a@unrouted.test"], BODY));
    let running = Running::start(
        &cluster,
        relay_delivery::DeliveryConfig {
            default_route: Some(Route::new(vec![target.target()], TlsPolicy::None)),
            ..config()
        },
    );
    target.wait_for_messages(1, WAIT).await.expect("delivered");
    wait_until(WAIT, || cluster.record(&id).is_none())
        .await
        .expect("removed");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_message_bounces_instead_of_deferring() {
    let target = TestTarget::start_with(TargetOptions {
        behaviour: Behaviour::RejectRcpt(Reply::temporary()),
        ..TargetOptions::default()
    })
    .await
    .expect("target");
    let cluster = FakeCluster::new();
    cluster.set_route("example.test", vec![target.target()], TlsPolicy::None);
    let mut old = message("s@sender.test", &["a@example.test"], BODY);
    old.expires_at = UnixMillis::now();
    let id = cluster.enqueue(old);

    let running = Running::start(&cluster, config());
    wait_until(WAIT, || !reports_for(&cluster, id).is_empty())
        .await
        .expect("reported");
    running.stop().await;
    let reports = reports_for(&cluster, id);
    let Command::Attempt { outcomes, dsn, .. } = &reports[0] else {
        panic!("expected Attempt, got {:?}", reports[0]);
    };
    assert_eq!(outcomes[0].outcome, AttemptOutcome::Failed);
    assert!(outcomes[0].reply.contains("queue lifetime expired"));
    assert!(dsn.is_some());
    assert!(cluster.record(&id).is_none(), "finished");
}
