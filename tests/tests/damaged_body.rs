//! A message body that went bad on its owner's disk after it was accepted
//! (one flipped bit in the owner's RocksDB; the replicated record and the
//! two other replicas are intact): the owner delivers an intact copy
//! fetched from a peer, exactly once, and counts it. Before, it deferred
//! the message on every attempt until its queue lifetime ran out and then
//! bounced it, although two good copies existed.
//!
//! In-process cluster of real nodes: RocksDB on disk, gRPC on loopback,
//! real SMTP to a real target.

use std::collections::BTreeMap;
use std::time::Duration;

use relay_node::testing::{InProcessCluster, InProcessOptions};
use relay_testkit::{Behaviour, Reply, TargetOptions, TestTarget};
use relay_tests::load::subject;

const LONG: Duration = Duration::from_secs(60);
const MESSAGES: usize = 5;

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).into()
}

/// The value of one counter series in Prometheus text (0 if absent).
fn counter(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_damaged_body_on_the_owner_is_delivered_intact_from_a_peer() {
    // This test binary is one process: one recorder, every node counts
    // into it. Only the owner reads the damaged copies.
    let prometheus = relay_node::metrics::install(0).expect("metrics recorder");
    let fetched =
        r#"relay_delivery_damaged_bodies_total{kind="checksum_mismatch",result="fetched"}"#;
    let unavailable =
        r#"relay_delivery_damaged_bodies_total{kind="checksum_mismatch",result="unavailable"}"#;

    // The target defers everything until the bodies are damaged.
    let target = TestTarget::start_with(TargetOptions {
        behaviour: Behaviour::RejectRcpt(Reply::temporary()),
        ..Default::default()
    })
    .await
    .unwrap();
    let tier = InProcessCluster::start(InProcessOptions {
        routes: vec![("dest.test".into(), target.target())],
        ..Default::default()
    })
    .await
    .unwrap();
    let leader = tier.wait_for_leader(LONG).await.unwrap();
    let owner = (1..=3).find(|&id| id != leader).unwrap();
    let peers: Vec<u64> = (1..=3).filter(|&id| id != owner).collect();

    let mut submitted = BTreeMap::new();
    for i in 0..MESSAGES {
        let marker = format!("damaged-{i}");
        let id = tier
            .submit(owner, &marker, "r@dest.test")
            .await
            .unwrap_or_else(|e| panic!("{marker} not accepted: {e}"));
        submitted.insert(marker, id);
    }
    let store = &tier.node(owner).store;
    relay_testkit::wait_until(LONG, || {
        submitted.values().all(|id| {
            store
                .message(id)
                .ok()
                .flatten()
                .is_some_and(|m| m.attempts >= 1)
        })
    })
    .await
    .expect("every message attempted once and deferred by the owner");

    // Damage the owner's copies; keep the intact bytes to compare.
    let mut intact = BTreeMap::new();
    for (marker, id) in &submitted {
        let body = store.body(id).unwrap().expect("owner holds the body");
        let record = store.message(id).unwrap().expect("owner holds the record");
        assert_eq!(sha256(&body), record.checksum, "{marker} intact before");
        assert!(store.damage_body(id).unwrap(), "{marker} damaged");
        let damaged = store.body(id).unwrap().unwrap();
        assert_ne!(sha256(&damaged), record.checksum, "{marker} damaged now");
        for &peer in &peers {
            let copy = tier.node(peer).store.body(id).unwrap();
            assert_eq!(copy.as_ref(), Some(&body), "{marker} intact on node {peer}");
        }
        intact.insert(marker.clone(), body);
    }
    let before = prometheus.render();
    let fetched_before = counter(&before, fetched);

    target.set_behaviour(Behaviour::AcceptAll);
    relay_testkit::wait_until(LONG, || target.messages().len() >= MESSAGES)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e}: the target has {} of {MESSAGES}; owner's view: {:?}",
                target.messages().len(),
                submitted
                    .values()
                    .map(|id| store.message(id).ok().flatten().map(|m| m.recipients))
                    .collect::<Vec<_>>()
            )
        });
    tier.wait_drained(LONG).await.unwrap();

    // Exactly one copy of each, byte for byte what was accepted.
    let received = target.messages();
    assert_eq!(received.len(), MESSAGES, "one copy each, nothing else");
    for message in &received {
        let marker = subject(&message.data).expect("a subject");
        let body = intact.get(&marker).expect("a submitted message");
        assert_eq!(&message.data[..], &body[..], "{marker} delivered intact");
        assert_eq!(message.helo, format!("relay{owner}.test"), "by its owner");
    }

    let after = prometheus.render();
    let fetched_now = counter(&after, fetched) - fetched_before;
    assert!(
        fetched_now >= MESSAGES as u64,
        "every damaged copy counted as fetched from a peer: {fetched_now}\n{after}"
    );
    assert_eq!(counter(&after, unavailable), 0, "a peer always had a copy");
    println!(
        "damaged bodies on node {owner}: {MESSAGES}; delivered intact once each; \
         counted fetched: {fetched_now}"
    );
    tier.shutdown().await;
}
