//! Fencing of deliveries across leadership changes, with three real
//! `relayd` processes and a target that holds its reply to the final dot
//! (as a slow content filter or a busy mailbox server does).
//!
//! What is asserted, at the target after the queue drained on every node:
//! every acknowledged message arrived, and no message arrived twice unless
//! the relay itself counted that duplicate
//! (`relay_duplicate_deliveries_total`).

use std::collections::BTreeMap;
use std::time::Duration;

use relay_testkit::{Behaviour, ReceivedMessage, TargetOptions, TestTarget};
use relay_tests::load::{message, subject};
use relay_tests::smtp::{SmtpClient, transaction};
use relay_tests::{ClusterOptions, ProcessCluster};

const LONG: Duration = Duration::from_secs(90);

/// Marker → copies at the target.
fn copies(messages: &[ReceivedMessage]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for m in messages {
        if let Some(subject) = subject(&m.data) {
            *out.entry(subject).or_insert(0) += 1;
        }
    }
    out
}

/// Sends `n` messages to node `id` in one session, all acknowledged.
async fn queue_on(cluster: &ProcessCluster, id: u64, tag: &str, n: usize) -> Vec<String> {
    let mut client = SmtpClient::connect_ehlo(cluster.smtp_addr(id))
        .await
        .expect("session");
    let mut markers = Vec::new();
    for i in 0..n {
        let marker = format!("{tag}-{i}");
        let reply = transaction(
            &mut client,
            "s@sender.test",
            &["r@dest.test"],
            &message(&marker),
        )
        .await
        .expect("transaction");
        assert_eq!(reply.code, 250, "{reply}");
        markers.push(marker);
    }
    markers
}

/// A leader delivering messages whose final dot the target has already
/// stored, and whose `250` it holds for 3 s, is moved away by `relayctl
/// failover`. The old leader steps down mid-session; it must read the
/// reply and report it, not abandon the session (which made the target
/// receive every one of those messages twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_during_held_replies_delivers_each_message_once() {
    let target = TestTarget::start_with(TargetOptions {
        behaviour: Behaviour::DelayDataReply(Duration::from_secs(3)),
        ..Default::default()
    })
    .await
    .expect("target");
    let cluster = ProcessCluster::start(ClusterOptions {
        routes: vec![("dest.test".into(), target.target())],
        min_backoff: "1s".into(),
        cluster_extra: "takeover_after = \"10s\"".into(),
        delivery_extra: "max_backoff = \"2s\"".into(),
        ..Default::default()
    })
    .expect("cluster");
    let mut markers = Vec::new();
    for round in 0..2 {
        let leader = cluster.wait_for_leader(LONG, None).await.expect("leader");
        let before = target.messages().len();
        markers.extend(queue_on(&cluster, leader, &format!("held{round}"), 5).await);
        // The target has every final dot and is holding its replies.
        target
            .wait_for_messages(before + 5, LONG)
            .await
            .expect("stored by the target");
        let out = cluster.relayctl(leader, &["--json", "failover"]);
        assert!(
            out.status.success(),
            "failover: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        cluster
            .wait_for_leader(LONG, Some(leader))
            .await
            .expect("a new leader");
        cluster.wait_drained(LONG).await.expect("drained");
    }
    let got = copies(&target.messages());
    for marker in &markers {
        assert_eq!(got.get(marker), Some(&1), "{marker} exactly once: {got:?}");
    }
    assert_eq!(target.messages().len(), markers.len(), "no duplicates");
}
