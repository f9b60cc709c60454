//! Connection reuse through a whole in-process cluster (real RocksDB, gRPC
//! on loopback, real SMTP target): a backlog to one target travels over a
//! few reused sessions, and every message arrives once, byte for byte.

use std::time::Duration;

use relay_node::testing::{InProcessCluster, InProcessOptions};
use relay_testkit::TestTarget;
use relay_tests::load::copies;

const LONG: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backlog_to_one_target_reuses_few_connections() {
    const N: usize = 60;
    let target = TestTarget::start().await.unwrap();
    let options = InProcessOptions {
        routes: vec![("dest.test".into(), target.target())],
        max_concurrent: 4,
        ..Default::default()
    };
    let tier = InProcessCluster::start(options).await.unwrap();
    let leader = tier.wait_for_leader(LONG).await.unwrap();
    let node = (1..=3).find(|&id| id != leader).unwrap();
    for i in 0..N {
        let marker = format!("reuse-{i}");
        tier.submit(node, &marker, "r@dest.test")
            .await
            .unwrap_or_else(|e| panic!("{marker} not accepted: {e}"));
    }
    tier.wait_drained(LONG).await.unwrap();

    let messages = target.messages();
    let got = copies(&messages);
    assert_eq!(got.len(), N, "every message arrived");
    assert!(got.values().all(|&n| n == 1), "a message arrived twice");
    for m in &messages {
        let marker = String::from_utf8_lossy(&m.data)
            .rsplit("\r\n\r\n")
            .next()
            .unwrap()
            .trim_end()
            .to_string();
        let want = format!(
            "From: <s@sender.test>\r\nTo: <r@dest.test>\r\nSubject: {marker}\r\n\r\n{marker}\r\n"
        );
        assert_eq!(&m.data[..], want.as_bytes(), "bytes at the target");
    }
    let connections = target.connection_count();
    println!("{N} messages from one owner over {connections} connections");
    // One owner with at most 4 deliveries at once: a handful of sessions,
    // not one per message (the limit leaves room for a session that
    // expired while the submissions paused).
    assert!(
        connections * 5 <= N,
        "{connections} connections for {N} messages"
    );
    tier.shutdown().await;
}
