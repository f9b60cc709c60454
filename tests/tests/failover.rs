//! Takeover and failover with three real `relayd` processes on loopback:
//! kill -9 and SIGSTOP (a hung or cut-off node) of owners and leaders, with
//! the replicated log driving the takeover of the victim's queue. The same
//! checks as the Docker fault suite, so they run where there is no engine.
//!
//! What is asserted, always at the target after the queue drained on every
//! serving node: every message that got `250` arrived (acked-but-lost = 0),
//! and duplicates only where the documented window allows them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use relay_testkit::{Behaviour, ReceivedMessage, TargetOptions, TestTarget};
use relay_tests::load::{
    FaultVerdict, Ledger, copies, median_max, queue_on, spawn_senders, subject,
};
use relay_tests::{ClusterOptions, ProcessCluster};
use tokio_util::sync::CancellationToken;

const LONG: Duration = Duration::from_secs(90);

fn options(target: SocketAddr) -> ClusterOptions {
    ClusterOptions {
        routes: vec![("dest.test".into(), target.to_string())],
        min_backoff: "1s".into(),
        submit_timeout: "3s".into(),
        cluster_extra: "takeover_after = \"3s\"".into(),
        delivery_extra: "max_backoff = \"2s\"\nconnect_timeout = \"2s\"".into(),
        ..Default::default()
    }
}

/// A port for the target that nothing listens on until the test starts it.
async fn reserved_target_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], relay_tests::free_ports(1)[0]))
}

async fn start_target(listen: SocketAddr) -> TestTarget {
    TestTarget::start_with(TargetOptions {
        listen,
        ..Default::default()
    })
    .await
    .expect("target on its address")
}

/// Waits until the replicated queue (as node `id` sees it) has `n`
/// deferred messages: each was attempted at least once and failed.
async fn wait_all_deferred(cluster: &ProcessCluster, id: u64, n: u64) {
    relay_testkit::wait_for(LONG, || async {
        let s = cluster.status(id, false).await.ok()?;
        (s.queue.unwrap_or_default().deferred >= n).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{n} messages deferred: {e}"));
}

/// kill -9 of the node that owns a queue (accepted while the target was
/// down): after `takeover_after` the leader reassigns it, and the
/// survivors deliver every message exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_owners_queue_is_taken_over_and_delivered_once() {
    let listen = reserved_target_addr().await;
    let mut cluster = ProcessCluster::start(options(listen)).expect("cluster");
    let leader = cluster.wait_for_leader(LONG, None).await.expect("leader");
    let owner = (1..=3).find(|&id| id != leader).unwrap();
    let markers = queue_on(&cluster, owner, "orphan", 20).await;
    wait_all_deferred(&cluster, leader, 20).await;

    cluster.kill(owner);
    let killed_at = Instant::now();
    let target = start_target(listen).await;
    target
        .wait_for_messages(20, LONG)
        .await
        .expect("taken over and delivered");
    let drained_after = killed_at.elapsed();
    cluster
        .wait_drained(LONG)
        .await
        .expect("drained on the survivors");
    println!("owner kill -> its queue drained: {drained_after:.2?} (takeover_after 3s)");

    let got = copies(&target.messages());
    for marker in &markers {
        assert_eq!(got.get(marker), Some(&1), "{marker} once");
    }
    assert_eq!(got.len(), 20);

    // The node comes back and agrees with the others.
    cluster.start_node(owner).expect("restart");
    cluster.wait_drained(LONG).await.expect("all three agree");
}

/// SIGSTOP of an owner (hung, or cut off from the others): its queue is
/// taken over and delivered; when it wakes up with its stale view it must
/// not deliver those messages again (the delivery lease fences it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_owner_is_fenced_after_takeover() {
    let listen = reserved_target_addr().await;
    let mut cluster = ProcessCluster::start(options(listen)).expect("cluster");
    let leader = cluster.wait_for_leader(LONG, None).await.expect("leader");
    let owner = (1..=3).find(|&id| id != leader).unwrap();
    let markers = queue_on(&cluster, owner, "fenced", 20).await;
    wait_all_deferred(&cluster, leader, 20).await;

    cluster.pause(owner);
    let target = start_target(listen).await;
    target
        .wait_for_messages(20, LONG)
        .await
        .expect("taken over and delivered");
    cluster
        .wait_drained(LONG)
        .await
        .expect("drained on the two others");

    // Wake the owner: its replica still says it owns 20 due messages until
    // it applies the Reassign entries.
    cluster.resume(owner);
    cluster
        .wait_drained(LONG)
        .await
        .expect("the woken node converges");
    // A sentinel owned by the woken node: once it is delivered, any stale
    // attempt the node might have started before converging would have
    // reached the target first.
    let sentinel = queue_on(&cluster, owner, "sentinel", 1).await;
    target
        .wait_for_messages(21, LONG)
        .await
        .expect("sentinel delivered");
    cluster.wait_drained(LONG).await.expect("drained");

    let got = copies(&target.messages());
    for marker in markers.iter().chain(&sentinel) {
        assert_eq!(got.get(marker), Some(&1), "{marker} exactly once");
    }
    assert_eq!(target.messages().len(), 21, "no duplicates");
}

/// The target accepted, then the owner lost its quorum before its
/// `Delivered` committed, then lost power: after the restart it proposes the
/// report it saved instead of delivering the message a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_the_target_confirmed_before_a_crash_is_not_repeated() {
    let target = TestTarget::start_with(TargetOptions {
        behaviour: Behaviour::DelayDataReply(Duration::from_millis(800)),
        ..Default::default()
    })
    .await
    .expect("target");
    let mut cluster = ProcessCluster::start(ClusterOptions {
        power_loss: true,
        ..options(target.addr())
    })
    .expect("cluster");
    let leader = cluster.wait_for_leader(LONG, None).await.expect("leader");
    let owner = (1..=3).find(|&id| id != leader).unwrap();
    queue_on(&cluster, owner, "confirmed", 1).await;
    // The target has the message and holds its 250 for 800 ms: cut the
    // owner's quorum now, so the report cannot commit (its lease, 1.5 s,
    // still covers reading the 250).
    target.wait_for_messages(1, LONG).await.expect("stored");
    for id in (1..=3).filter(|&id| id != owner) {
        cluster.kill(id);
    }
    relay_testkit::wait_for(LONG, || {
        std::future::ready(
            cluster
                .log(owner)
                .contains("report did not commit")
                .then_some(()),
        )
    })
    .await
    .expect("the owner got the 250 and could not commit its report");
    cluster.kill(owner);
    target.set_behaviour(Behaviour::AcceptAll);
    for id in 1..=3 {
        cluster.start_node(id).expect("restart");
    }
    cluster.wait_for_leader(LONG, None).await.expect("leader");
    cluster.wait_drained(LONG).await.expect("drained");
    assert_eq!(
        copies(&target.messages()).get("confirmed-0"),
        Some(&1),
        "delivered once, not again after the crash"
    );
}

/// The fault classes of one cycle.
#[derive(Clone, Copy, Debug)]
enum Fault {
    KillLeader,
    KillFollower,
    PauseLeader,
    PauseFollower,
    KillFollowerWithTargetDown,
    /// All three at once (with the power-loss failpoint: a power cut of the
    /// whole cluster).
    KillAll,
}

/// Continuous load on all three nodes through cycles of power cuts (kill -9
/// with the power-loss failpoint: unsynced writes are lost) of the leader, of
/// a follower and of all three at once, and SIGSTOP of leaders and followers
/// (with the target down in some): nothing acknowledged is lost. Prints the
/// figures the fault suite reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuous_load_through_fault_cycles_loses_nothing() {
    let cycles: usize = std::env::var("QR_FAULT_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let listen = reserved_target_addr().await;
    let mut target = Some(start_target(listen).await);
    // Messages received by earlier target instances (it is restarted).
    let mut received: Vec<ReceivedMessage> = Vec::new();
    // Every kill is a power cut of that node: unsynced writes are lost.
    let mut cluster = ProcessCluster::start(ClusterOptions {
        power_loss: true,
        ..options(listen)
    })
    .expect("cluster");
    cluster.wait_for_leader(LONG, None).await.expect("leader");

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = CancellationToken::new();
    let nodes: Vec<(u64, SocketAddr)> = (1..=3u64).map(|id| (id, cluster.smtp_addr(id))).collect();
    let senders = spawn_senders(&nodes, 2, &ledger, &stop);

    let classes = [
        Fault::KillLeader,
        Fault::KillFollower,
        Fault::PauseLeader,
        Fault::PauseFollower,
        Fault::KillFollowerWithTargetDown,
        Fault::KillAll,
    ];
    let mut leader_recovery = Vec::new();
    for cycle in 0..cycles {
        let fault = classes[cycle % classes.len()];
        let leader = cluster.wait_for_leader(LONG, None).await.expect("leader");
        let follower = (1..=3).find(|&id| id != leader).unwrap();
        // Let some load through between faults.
        let before = ledger.lock().unwrap().acked.len();
        relay_testkit::wait_until(LONG, || ledger.lock().unwrap().acked.len() >= before + 50)
            .await
            .expect("load flows between faults");
        let victim = match fault {
            Fault::KillLeader | Fault::PauseLeader => leader,
            _ => follower,
        };
        if matches!(fault, Fault::KillFollowerWithTargetDown)
            && let Some(t) = target.take()
        {
            // Keep what this target instance received, up to its end.
            received.extend(t.shutdown().await);
        }
        let injected = Instant::now();
        match fault {
            Fault::PauseLeader | Fault::PauseFollower => cluster.pause(victim),
            Fault::KillAll => {
                for id in 1..=3 {
                    cluster.kill(id);
                }
            }
            _ => cluster.kill(victim),
        }
        if matches!(fault, Fault::KillLeader | Fault::PauseLeader) {
            cluster
                .wait_for_leader(LONG, Some(victim))
                .await
                .expect("a new leader among the survivors");
            // The first 250 on a survivor for a transaction begun after
            // the fault (earlier ones may have committed before it).
            let acked = relay_testkit::wait_for(LONG, || {
                std::future::ready(ledger.lock().unwrap().first_ack_after(injected, victim))
            })
            .await
            .expect("survivors accept mail after the leader fault");
            leader_recovery.push(acked.duration_since(injected));
        } else {
            // Hold the fault long enough for takeover_after to pass.
            let until = injected + Duration::from_secs(4);
            relay_testkit::wait_until(LONG, || Instant::now() >= until)
                .await
                .expect("fault held");
        }
        match fault {
            Fault::PauseLeader | Fault::PauseFollower => cluster.resume(victim),
            Fault::KillAll => {
                for id in 1..=3 {
                    cluster.start_node(id).expect("restart");
                }
            }
            _ => cluster.start_node(victim).expect("restart"),
        }
        if target.is_none() {
            target = Some(start_target(listen).await);
        }
        // Duplicates so far (they show once the fault's messages settle; a
        // cycle's count mostly belongs to the fault before it).
        let mut so_far = received.clone();
        so_far.extend(target.as_ref().map(|t| t.messages()).unwrap_or_default());
        let duplicates: usize = copies(&so_far).values().map(|c| c - 1).sum();
        println!(
            "cycle {cycle}: {fault:?} of node {victim} healed; duplicates so far {duplicates}"
        );
    }

    // Keep the load on until enough messages were acknowledged, then stop
    // it and drain.
    let wanted: usize = std::env::var("QR_FAULT_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    relay_testkit::wait_until(Duration::from_secs(600), || {
        ledger.lock().unwrap().acked.len() >= wanted
    })
    .await
    .expect("load reaches the wanted message count");
    stop.cancel();
    for s in senders {
        s.await.expect("sender task");
    }
    cluster
        .wait_drained(Duration::from_secs(180))
        .await
        .expect("queue drained on every node");

    let target = target.expect("target up");
    received.extend(target.messages());
    let received_messages = received;
    let received: Vec<(String, String)> = received_messages
        .iter()
        .filter_map(|m| Some((subject(&m.data)?, m.helo.clone())))
        .collect();
    // Name the relay's queue id of each duplicated message (from the
    // Received header), to find it in the node logs.
    let mut by_subject: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in &received_messages {
        if let Some(subject) = subject(&m.data) {
            let text = String::from_utf8_lossy(&m.data);
            let id = text
                .split(" id ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .unwrap_or("?")
                .trim_end_matches(';')
                .to_string();
            by_subject
                .entry(subject)
                .or_default()
                .push(format!("{id} by {}", m.helo));
        }
    }
    for (subject, copies) in by_subject.iter().filter(|(_, c)| c.len() > 1).take(5) {
        println!("duplicate {subject}: {copies:?}");
    }
    let verdict = FaultVerdict::new(&ledger.lock().unwrap(), &received);
    let (median, max) = median_max(&mut leader_recovery);
    println!(
        "fault suite (processes): cycles {cycles}, {verdict}, leader fault -> first 250 on a \
         survivor: median {median:?}, max {max:?}"
    );
    assert!(
        verdict.lost.is_empty(),
        "acknowledged but lost: {:?}",
        verdict.lost
    );
    assert_eq!(verdict.never_sent, 0, "delivered messages nobody sent");
    assert!(verdict.acked >= wanted);
}
