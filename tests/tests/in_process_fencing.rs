//! Fencing and takeover in an in-process cluster of real nodes (RocksDB,
//! gRPC on loopback, real delivery to a real SMTP target) with links cut per
//! direction while the target stays reachable from every node.
//!
//! What is asserted, at the target after the heal and the drain: every
//! submitted message arrived; every extra copy is one the relay counted
//! itself (a `DuplicateDelivered` trace), and there are no more of them than
//! sessions that could have been past their last lease check at the cut.

use std::time::Duration;

use relay_node::testing::{InProcessCluster, InProcessOptions};
use relay_testkit::{Behaviour, Reply, TargetOptions, TestTarget};
use relay_tests::load::copies;
use relay_types::{MessageId, NodeId};
use tokio::time::Instant;

const LONG: Duration = Duration::from_secs(60);

fn cycles(default: usize) -> usize {
    std::env::var("QR_INPROC_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Submits `n` messages to `node`, retrying a 451 (the sender's side of
/// SMTP); (marker, id) of each.
async fn submit_n(
    tier: &InProcessCluster,
    node: NodeId,
    tag: &str,
    n: usize,
) -> Vec<(String, MessageId)> {
    let mut out = Vec::new();
    for i in 0..n {
        let marker = format!("{tag}-{i}");
        let deadline = Instant::now() + LONG;
        loop {
            match tier.submit(node, &marker, "r@dest.test").await {
                Ok(id) => {
                    out.push((marker, id));
                    break;
                }
                Err(e) => {
                    assert!(Instant::now() < deadline, "{marker} never accepted: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    out
}

/// Checks the target against what was acknowledged; returns (extra copies,
/// counted duplicates).
fn verdict(
    tier: &InProcessCluster,
    target: &TestTarget,
    acked: &[(String, MessageId)],
) -> (usize, usize) {
    let got = copies(&target.messages());
    let mut extra = 0;
    for (marker, _) in acked {
        let n = got.get(marker).copied().unwrap_or(0);
        assert!(n >= 1, "{marker} acknowledged but never delivered");
        extra += n - 1;
    }
    assert_eq!(got.len(), acked.len(), "unexpected messages at the target");
    let ids: Vec<MessageId> = acked.iter().map(|(_, id)| *id).collect();
    let counted: usize = tier.counted_duplicates(&ids).unwrap().values().sum();
    (extra, counted)
}

/// An owner cut off from its peers but not from the target, while it is
/// delivering under load: it stops starting sessions within its start
/// lease, so after the takeover the only extra copies are of sessions it
/// had already started, and the relay counts every one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_owner_cut_off_from_its_peers_duplicates_only_what_it_had_started_and_counts_it() {
    let target = TestTarget::start_with(TargetOptions {
        behaviour: Behaviour::DelayDataReply(Duration::from_millis(200)),
        ..Default::default()
    })
    .await
    .unwrap();
    let options = InProcessOptions {
        routes: vec![("dest.test".into(), target.target())],
        max_concurrent: 10,
        ..Default::default()
    };
    let max_in_flight = options.max_concurrent;
    let tier = InProcessCluster::start(options).await.unwrap();
    let mut acked = Vec::new();
    let mut extra_total = 0;
    for cycle in 0..cycles(3) {
        let leader = tier.wait_for_leader(LONG).await.unwrap();
        let owner = (1..=3).find(|&id| id != leader).unwrap();
        // A backlog the owner is busy delivering when it is cut off.
        acked.extend(submit_n(&tier, owner, &format!("cut{cycle}"), 40).await);
        let before = target.messages().len();
        relay_testkit::wait_until(LONG, || target.messages().len() > before + 3)
            .await
            .unwrap();
        tier.partition(&[owner]);
        // Past takeover_after (3 s): the others take its mail over.
        tokio::time::sleep(Duration::from_secs(5)).await;
        tier.heal();
        tier.wait_drained(LONG).await.unwrap();
        // The old owner reports the deliveries it finished while cut off
        // once it hears from the leader again (its retries back off), so
        // the queue can be drained before those reports, and with them the
        // duplicate records, are committed: wait for them.
        let deadline = Instant::now() + LONG;
        let (extra, counted) = loop {
            let (extra, counted) = verdict(&tier, &target, &acked);
            if counted >= extra || Instant::now() > deadline {
                break (extra, counted);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let this_cycle = extra - extra_total;
        extra_total = extra;
        println!("cycle {cycle}: owner {owner} cut; extra copies {this_cycle}, counted {counted}");
        // Past the final dot at the cut: the sessions running (at most
        // max_concurrent) plus deliveries whose report was on its way (a
        // session frees its slot before proposing). Bounded by that, not by
        // the delivery rate times a lease.
        assert!(
            this_cycle <= 2 * max_in_flight,
            "{this_cycle} duplicates: more than the sessions that can be past the final dot \
             ({max_in_flight} running, as many reporting)"
        );
        assert_eq!(extra, counted, "every duplicate is counted by the relay");
    }
    tier.shutdown().await;
}

/// Five voters; the leader and one follower are cut off from the other
/// three while their mail is deferred (the target refuses). The deposed
/// leader keeps heartbeating its follower, but without a quorum its lease
/// runs out and so does the follower's: when the target comes back, only
/// the majority side delivers the taken-over mail, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deposed_leader_cannot_keep_its_follower_delivering() {
    let target = TestTarget::start_with(TargetOptions {
        behaviour: Behaviour::RejectRcpt(Reply::temporary()),
        ..Default::default()
    })
    .await
    .unwrap();
    let tier = InProcessCluster::start(InProcessOptions {
        nodes: 5,
        routes: vec![("dest.test".into(), target.target())],
        ..Default::default()
    })
    .await
    .unwrap();
    let leader = tier.wait_for_leader(LONG).await.unwrap();
    let follower = (1..=5).find(|&id| id != leader).unwrap();
    let mut acked = submit_n(&tier, leader, "leader", 10).await;
    acked.extend(submit_n(&tier, follower, "follower", 10).await);
    // Every message attempted once and deferred.
    relay_testkit::wait_until(LONG, || {
        tier.node(leader)
            .store
            .counts()
            .is_ok_and(|c| c.deferred == 20)
    })
    .await
    .unwrap();
    tier.partition(&[leader, follower]);
    // Both leases run out within a second; then the target accepts again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    target.set_behaviour(Behaviour::AcceptAll);
    // The majority elects a leader and takes the mail over (3 s).
    relay_testkit::wait_until(LONG, || copies(&target.messages()).len() == 20)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    tier.heal();
    tier.wait_drained(LONG).await.unwrap();
    let (extra, counted) = verdict(&tier, &target, &acked);
    assert_eq!((extra, counted), (0, 0), "no duplicates");
    tier.shutdown().await;
}

/// Mail owned by a node that is removed from the cluster is taken over
/// and delivered once (takeover reads the owners of queued mail, not the
/// voter list).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mail_of_a_removed_node_is_taken_over_and_delivered_once() {
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
    let removed = (1..=3).find(|&id| id != leader).unwrap();
    let acked = submit_n(&tier, removed, "removed", 10).await;
    relay_testkit::wait_until(LONG, || {
        tier.node(leader)
            .store
            .counts()
            .is_ok_and(|c| c.deferred == 10)
    })
    .await
    .unwrap();
    tier.node(leader)
        .cluster
        .change_membership(relay_cluster::MemberChange::Remove(removed))
        .await
        .unwrap();
    target.set_behaviour(Behaviour::AcceptAll);
    relay_testkit::wait_until(LONG, || copies(&target.messages()).len() == 10)
        .await
        .unwrap();
    let got = copies(&target.messages());
    for (marker, id) in &acked {
        assert_eq!(got.get(marker), Some(&1), "{marker} once");
        relay_testkit::wait_until(LONG, || {
            tier.node(leader)
                .store
                .message(id)
                .is_ok_and(|m| m.is_none())
        })
        .await
        .unwrap();
    }
    tier.shutdown().await;
}

/// Messages in the large-queue takeover test (`QR_TAKEOVER_QUEUE`).
fn large_queue() -> usize {
    std::env::var("QR_TAKEOVER_QUEUE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

/// An owner holding a large undelivered queue (the target stalls, so at
/// most `max_concurrent` sessions hang at the greeting and no message text
/// is ever sent) is cut off; its mail is taken over in one committed
/// decision; the target recovers and the new owner works through the
/// backlog; in the middle of that the old owner returns. It must deliver
/// none of the mail it no longer owns: every message arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_owner_returning_in_the_middle_of_a_large_takeover_sends_nothing_twice() {
    let total = large_queue();
    let target = TestTarget::start_with(TargetOptions {
        behaviour: Behaviour::Stall,
        ..Default::default()
    })
    .await
    .unwrap();
    let tier = std::sync::Arc::new(
        InProcessCluster::start(InProcessOptions {
            routes: vec![("dest.test".into(), target.target())],
            ..Default::default()
        })
        .await
        .unwrap(),
    );
    let leader = tier.wait_for_leader(LONG).await.unwrap();
    let owner = (1..=3).find(|&id| id != leader).unwrap();

    // Fill the owner's queue from many concurrent submitters.
    let submitters = 64;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for s in 0..submitters {
        let tier = tier.clone();
        let n = total / submitters + usize::from(s < total % submitters);
        tasks.spawn(async move { submit_n(&tier, owner, &format!("big{s}"), n).await });
    }
    let mut acked = Vec::with_capacity(total);
    while let Some(part) = tasks.join_next().await {
        acked.extend(part.unwrap());
    }
    assert_eq!(acked.len(), total);
    println!(
        "{total} messages accepted by node {owner} in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Cut the owner off; the others take its queue over.
    tier.partition(&[owner]);
    let survivor = (1..=3).find(|&id| id != owner).unwrap();
    relay_testkit::wait_until(LONG, || {
        tier.node(survivor)
            .store
            .owners()
            .is_ok_and(|owners| !owners.contains(&owner))
    })
    .await
    .unwrap();
    // The target recovers; once the new owners are well into the backlog,
    // the old owner returns.
    target.set_behaviour(Behaviour::AcceptAll);
    let midway = (total / 10).max(1) as u64;
    relay_testkit::wait_until(Duration::from_secs(600), || {
        target.accepted_count() >= midway
    })
    .await
    .unwrap();
    let at_return = target.accepted_count();
    tier.heal();
    println!("old owner {owner} returned with {at_return} of {total} delivered");
    assert!(
        at_return < total as u64,
        "the backlog was gone before the owner returned: nothing was tested"
    );

    let drain_within = Duration::from_secs(60 + total as u64 / 50);
    tier.wait_drained(drain_within).await.unwrap();
    let (extra, counted) = verdict(&tier, &target, &acked);
    println!(
        "{total} delivered in {:.1} s since the start; extra copies {extra}, counted {counted}",
        started.elapsed().as_secs_f64()
    );
    assert_eq!((extra, counted), (0, 0), "no duplicates");
    let by_old_owner = relay_tests::load::received(&target.messages())
        .into_iter()
        .filter(|(_, relay)| *relay == format!("relay{owner}.test"))
        .count();
    assert_eq!(
        by_old_owner, 0,
        "the old owner delivered mail it no longer owned"
    );
    let tier = std::sync::Arc::into_inner(tier).expect("no submitter left");
    tier.shutdown().await;
}
