//! MX resolution inside one delivery: recipients of a routed domain, of a
//! domain found through MX and of a null-MX domain in one message each get
//! their own outcome, and DNS answers are cached. The real delivery loop
//! and state machine (`FakeCluster`), a real `TestDns` and real SMTP
//! targets on loopback.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use relay_delivery::config::DnsSettings;
use relay_testkit::{TargetOptions, TestDns, TestTarget, wait_until};
use relay_types::{AttemptOutcome, Command, TlsPolicy};
use support::*;

fn dns_config(dns: &TestDns, port: u16) -> relay_delivery::DeliveryConfig {
    relay_delivery::DeliveryConfig {
        dns: Some(DnsSettings {
            nameservers: vec![dns.addr()],
            timeout: Duration::from_secs(1),
            port,
            cache_entries: 100,
        }),
        ..config()
    }
}

/// A free port on 127.0.0.1, reused on other loopback addresses.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn target_at(last: u8, port: u16) -> TestTarget {
    TestTarget::start_with(TargetOptions {
        listen: SocketAddr::from(([127, 0, 0, last], port)),
        ..TargetOptions::default()
    })
    .await
    .expect("target")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routed_mx_and_null_mx_recipients_get_their_own_outcomes() {
    let port = free_port();
    let routed = TestTarget::start().await.expect("routed target");
    let mx = target_at(7, port).await;
    let dns = TestDns::start().await.expect("dns");
    dns.set_mx("mx.test", &[(5, "in.mx.test")]);
    dns.set_addresses("in.mx.test", &[IpAddr::from([127, 0, 0, 7])]);
    dns.set_null_mx("null.test");
    // The sender's domain does not exist: the DSN bounces there (5.1.2)
    // and, having the null sender, is dropped.
    let cluster = FakeCluster::new();
    cluster.set_route("routed.test", vec![routed.target()], TlsPolicy::None);
    let id = cluster.enqueue(message(
        "s@sender.test",
        &["a@routed.test", "b@mx.test", "c@null.test", "d@mx.test"],
        BODY,
    ));

    let running = Running::start(&cluster, dns_config(&dns, port));
    wait_until(WAIT, || !reports_for(&cluster, id).is_empty())
        .await
        .expect("reported");
    wait_until(WAIT, || cluster.record(&id).is_none())
        .await
        .expect("finished: delivered or bounced");
    running.stop().await;

    let routed_got = routed.messages();
    assert_eq!(routed_got.len(), 1);
    assert_eq!(routed_got[0].rcpt_to, vec!["a@routed.test"]);
    let mx_got = mx.messages();
    assert_eq!(
        mx_got.len(),
        1,
        "one transaction for both mx.test recipients"
    );
    assert_eq!(mx_got[0].rcpt_to, vec!["b@mx.test", "d@mx.test"]);

    let reports = reports_for(&cluster, id);
    let Command::Attempt { outcomes, dsn, .. } = &reports[0] else {
        panic!("expected one Attempt, got {reports:?}");
    };
    let null = outcomes.iter().find(|o| o.index == 2).expect("c@null.test");
    assert_eq!(null.outcome, AttemptOutcome::Failed);
    assert_eq!(null.reply, "5.1.10 recipient address has null MX");
    for i in [0, 1, 3] {
        let o = outcomes.iter().find(|o| o.index == i).expect("outcome");
        assert_eq!(o.outcome, AttemptOutcome::Delivered, "recipient {i}");
    }
    let dsn = dsn.as_ref().expect("a DSN for the null MX recipient");
    let text = String::from_utf8_lossy(&dsn.body);
    assert!(text.contains("Status: 5.1.10\r\n"), "{text}");
    // One MX query per domain, however many recipients; no address query
    // for the null MX.
    assert_eq!(dns.queries("mx.test"), 1);
    assert_eq!(dns.queries("null.test"), 1);
    assert_eq!(dns.queries("routed.test"), 0, "a route needs no DNS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_domain_bounces_and_a_failing_one_defers() {
    let port = free_port();
    let dns = TestDns::start().await.expect("dns");
    dns.set_mx("broken.test", &[(10, "mx.broken.test")]);
    dns.set_servfail("broken.test", true);
    let cluster = FakeCluster::new();
    let id = cluster.enqueue(message(
        "s@sender.test",
        &["a@nowhere.test", "b@broken.test"],
        BODY,
    ));

    let running = Running::start(&cluster, dns_config(&dns, port));
    wait_until(WAIT, || !reports_for(&cluster, id).is_empty())
        .await
        .expect("reported");
    running.stop().await;

    let reports = reports_for(&cluster, id);
    let Command::Attempt { outcomes, dsn, .. } = &reports[0] else {
        panic!("expected an Attempt, got {reports:?}");
    };
    let gone = outcomes.iter().find(|o| o.index == 0).expect("a@");
    assert_eq!(gone.outcome, AttemptOutcome::Failed);
    assert!(gone.reply.starts_with("5.1.2 "), "{}", gone.reply);
    let broken = outcomes.iter().find(|o| o.index == 1).expect("b@");
    assert_eq!(broken.outcome, AttemptOutcome::Deferred);
    assert!(broken.reply.starts_with("4.4.3 "), "{}", broken.reply);
    assert!(dsn.is_some(), "the unknown domain's recipient bounced");
    let record = cluster.record(&id).expect("b@ still pending");
    assert_eq!(record.pending_indexes(), vec![1]);
}
