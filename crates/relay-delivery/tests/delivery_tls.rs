//! Route TLS policies against a target that offers STARTTLS with a
//! self-signed certificate.

mod support;

use relay_delivery::DeliveryConfig;
use relay_testkit::{TargetOptions, TestTarget, wait_until};
use relay_types::{AttemptOutcome, Command, TlsPolicy};
use support::{BODY, FakeCluster, Running, WAIT, config, message, reports_for};

async fn tls_target() -> TestTarget {
    TestTarget::start_with(TargetOptions {
        starttls: true,
        ..TargetOptions::default()
    })
    .await
    .expect("target")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opportunistic_tls_encrypts_without_verifying() {
    let target = tls_target().await;
    let cluster = FakeCluster::new();
    cluster.set_route(
        "example.test",
        vec![target.target()],
        TlsPolicy::Opportunistic,
    );
    let id = cluster.enqueue(message("s@sender.test", &["a@example.test"], BODY));
    let running = Running::start(&cluster, config());
    let received = target.wait_for_messages(1, WAIT).await.expect("delivered");
    wait_until(WAIT, || cluster.record(&id).is_none())
        .await
        .expect("removed");
    running.stop().await;
    assert!(received[0].tls, "STARTTLS was used");
    assert_eq!(&received[0].data[..], BODY.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opportunistic_tls_falls_back_to_plain_without_starttls() {
    let target = TestTarget::start().await.expect("target");
    let cluster = FakeCluster::new();
    cluster.set_route(
        "example.test",
        vec![target.target()],
        TlsPolicy::Opportunistic,
    );
    cluster.enqueue(message("s@sender.test", &["a@example.test"], BODY));
    let running = Running::start(&cluster, config());
    let received = target.wait_for_messages(1, WAIT).await.expect("delivered");
    running.stop().await;
    assert!(!received[0].tls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_tls_defers_on_an_untrusted_certificate() {
    let target = tls_target().await;
    let cluster = FakeCluster::new();
    cluster.set_route("example.test", vec![target.target()], TlsPolicy::Required);
    let id = cluster.enqueue(message("s@sender.test", &["a@example.test"], BODY));
    let running = Running::start(&cluster, config());
    wait_until(WAIT, || !reports_for(&cluster, id).is_empty())
        .await
        .expect("reported");
    running.stop().await;
    let reports = reports_for(&cluster, id);
    let Command::Attempt { outcomes, .. } = &reports[0] else {
        panic!("expected Attempt, got {:?}", reports[0]);
    };
    assert_eq!(outcomes[0].outcome, AttemptOutcome::Deferred);
    assert!(
        outcomes[0].reply.contains("TLS required"),
        "{}",
        outcomes[0].reply
    );
    assert!(target.messages().is_empty(), "nothing sent in plain text");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_tls_defers_when_starttls_is_not_offered() {
    let target = TestTarget::start().await.expect("target");
    let cluster = FakeCluster::new();
    cluster.set_route("example.test", vec![target.target()], TlsPolicy::Required);
    let id = cluster.enqueue(message("s@sender.test", &["a@example.test"], BODY));
    let running = Running::start(&cluster, config());
    wait_until(WAIT, || !reports_for(&cluster, id).is_empty())
        .await
        .expect("reported");
    running.stop().await;
    let reports = reports_for(&cluster, id);
    let Command::Attempt { outcomes, .. } = &reports[0] else {
        panic!("expected Attempt, got {:?}", reports[0]);
    };
    assert_eq!(outcomes[0].outcome, AttemptOutcome::Deferred);
    assert!(outcomes[0].reply.contains("does not offer STARTTLS"));
    assert!(target.messages().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_tls_delivers_with_a_configured_trust_anchor() {
    let target = tls_target().await;
    let cluster = FakeCluster::new();
    cluster.set_route("example.test", vec![target.target()], TlsPolicy::Required);
    let id = cluster.enqueue(message("s@sender.test", &["a@example.test"], BODY));
    let pem = target.certificate_pem().expect("pem").to_string();
    let running = Running::start(
        &cluster,
        DeliveryConfig {
            extra_root_certificates_pem: vec![pem],
            ..config()
        },
    );
    let received = target.wait_for_messages(1, WAIT).await.expect("delivered");
    wait_until(WAIT, || cluster.record(&id).is_none())
        .await
        .expect("removed");
    running.stop().await;
    assert!(received[0].tls);
}
