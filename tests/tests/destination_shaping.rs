//! Per-destination shaping through a whole in-process cluster (real
//! RocksDB, gRPC on loopback, a real SMTP target that counts its open
//! transactions and records when each arrived): a route's concurrency
//! limit holds across all three owners, a target answering 4xx drives a
//! node down to one delivery at a time and slow start brings it back up,
//! and a route's rate spaces the deliveries out. Every message arrives
//! exactly once in each case.
//!
//! Concurrency is measured at the target as open transactions (from
//! `MAIL FROM` to the reply to the final dot, or to the command after a
//! rejected `MAIL FROM`), not open connections: idle sessions kept in the
//! relays' connection caches deliver nothing.

use std::time::Duration;

use relay_node::testing::{InProcessCluster, InProcessOptions};
use relay_testkit::{Behaviour, Reply, TestTarget, wait_until};
use relay_tests::load::copies;
use relay_types::{Rate, Shaping};

const LONG: Duration = Duration::from_secs(90);

async fn submit_all(tier: &InProcessCluster, per_node: &[(u64, usize)], prefix: &str) -> usize {
    let mut n = 0;
    for &(node, count) in per_node {
        for i in 0..count {
            let marker = format!("{prefix}-{node}-{i}");
            tier.submit(node, &marker, "r@dest.test")
                .await
                .unwrap_or_else(|e| panic!("{marker} not accepted: {e}"));
            n += 1;
        }
    }
    n
}

fn assert_once(target: &TestTarget, n: usize) {
    let got = copies(&target.messages());
    assert_eq!(got.len(), n, "every message arrived");
    assert!(
        got.values().all(|&c| c == 1),
        "a message arrived twice: {got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_owners_together_stay_within_the_route_concurrency() {
    let target = TestTarget::start().await.unwrap();
    // Each transaction stays open a while, so deliveries overlap if the
    // relays let them.
    target.set_behaviour(Behaviour::DelayDataReply(Duration::from_millis(150)));
    let tier = InProcessCluster::start(InProcessOptions {
        routes: vec![("dest.test".into(), target.target())],
        shaping: Shaping {
            concurrency: Some(3),
            rate: None,
        },
        // Unshaped, three nodes would run up to 30 at once.
        max_concurrent: 10,
        ..Default::default()
    })
    .await
    .unwrap();
    tier.wait_for_leader(LONG).await.unwrap();
    let n = submit_all(&tier, &[(1, 12), (2, 12), (3, 12)], "limit").await;
    tier.wait_drained(LONG).await.unwrap();

    assert_once(&target, n);
    let max = target.max_concurrent_transactions();
    println!("{n} messages from 3 owners, route concurrency 3: at most {max} transactions at once");
    assert!(max <= 3, "{max} transactions at once, the route allows 3");
    tier.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deferring_target_drops_a_node_to_one_then_slow_start_recovers() {
    const N: usize = 12;
    let target = TestTarget::start().await.unwrap();
    target.set_behaviour(Behaviour::RejectMail(Reply::temporary()));
    let tier = InProcessCluster::start(InProcessOptions {
        routes: vec![("dest.test".into(), target.target())],
        // 12 across 3 voters: 4 per node.
        shaping: Shaping {
            concurrency: Some(12),
            rate: None,
        },
        max_concurrent: 10,
        backoff: (Duration::from_millis(200), Duration::from_millis(400)),
        ..Default::default()
    })
    .await
    .unwrap();
    let leader = tier.wait_for_leader(LONG).await.unwrap();
    // One owner, so what the target sees is that node's window alone.
    let node = (1..=3).find(|&id| id != leader).unwrap();
    let n = submit_all(&tier, &[(node, N)], "backoff").await;
    wait_until(LONG, || target.rejected_mail_count() >= 6)
        .await
        .expect("six deferred attempts");
    target.set_behaviour(Behaviour::DelayDataReply(Duration::from_millis(300)));
    tier.wait_drained(LONG).await.unwrap();
    assert_once(&target, n);

    let starts = target.transaction_starts();
    let deferred: Vec<usize> = starts
        .iter()
        .filter(|s| !s.mail_accepted)
        .map(|s| s.concurrent)
        .collect();
    let accepted: Vec<usize> = starts
        .iter()
        .filter(|s| s.mail_accepted)
        .map(|s| s.concurrent)
        .collect();
    println!("concurrency at each deferred start: {deferred:?}");
    println!("concurrency at each accepted start: {accepted:?}");
    // Slow start opens with 2; the first 4xx drops the node to 1, so every
    // later attempt ran alone.
    assert!(deferred.iter().all(|&c| c <= 2), "{deferred:?}");
    assert!(
        deferred.iter().skip(2).all(|&c| c == 1),
        "after the first deferral the node should deliver one at a time: {deferred:?}"
    );
    // Recovery: still 1 until the first acceptance, then it grows again,
    // never beyond the node's share of 4.
    assert_eq!(accepted[0], 1, "the first delivery after the 4xx ran alone");
    let max = accepted.iter().copied().max().unwrap();
    assert!(max >= 2, "concurrency never grew again: {accepted:?}");
    assert!(max <= 4, "beyond the node's share of 4: {accepted:?}");
    tier.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_route_rate_spaces_deliveries_at_the_target() {
    const PER_NODE: usize = 10;
    const VOTERS: usize = 3;
    // 10/s over 3 voters: one start every 300 ms per node. Unshaped, the
    // 30 messages arrive about as fast as they are submitted (about 1 s).
    let rate = Rate {
        messages: 10,
        per_secs: 1,
    };
    let target = TestTarget::start().await.unwrap();
    let tier = InProcessCluster::start(InProcessOptions {
        routes: vec![("dest.test".into(), target.target())],
        shaping: Shaping {
            concurrency: None,
            rate: Some(rate),
        },
        max_concurrent: 10,
        ..Default::default()
    })
    .await
    .unwrap();
    tier.wait_for_leader(LONG).await.unwrap();
    let n = submit_all(
        &tier,
        &[(1, PER_NODE), (2, PER_NODE), (3, PER_NODE)],
        "rate",
    )
    .await;
    tier.wait_drained(LONG).await.unwrap();
    assert_once(&target, n);

    let messages = target.messages();
    let first = messages.iter().map(|m| m.mail_at).min().unwrap();
    let last = messages.iter().map(|m| m.mail_at).max().unwrap();
    let span = last.duration_since(first);
    // Each node starts one delivery every V/R seconds, so the cluster
    // needs at least (N - V)/R for N messages (all nodes start their first
    // at once). One more message per node is allowed for the first
    // transaction of each node, which opens a connection (a few ms more
    // between its start and its MAIL FROM than the later ones have).
    let floor = Duration::from_secs_f64((n - 2 * VOTERS) as f64 / f64::from(rate.messages));
    println!("{n} messages at {rate}: MAIL FROM spread over {span:?} (floor {floor:?})");
    assert!(span >= floor, "{n} messages in {span:?} at {rate}");
    tier.shutdown().await;
}
