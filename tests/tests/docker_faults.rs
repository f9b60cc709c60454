//! The fault suite on the real Docker deployment: the repository's
//! docker-compose.yml (three relay containers from the FROM-scratch image
//! and the demo target), continuous SMTP load on all three published ports,
//! and cycles of `docker kill` of the leader and of a follower, network
//! partitions (`docker network disconnect`) of the leader and of a follower,
//! and the target killed during a node kill. At the end everything is
//! healed, the queue drains, and the target's mail folder is compared with
//! what the senders were told.
//!
//! Skipped (with a message) where no Docker engine answers. Cycles:
//! `QR_DOCKER_FAULT_CYCLES` (default 20, the CI tier; the long tier uses 250
//! or more).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use relay_tests::compose::{ComposeCluster, build_image, docker_available};
use relay_tests::load::{FaultVerdict, Ledger, median_max, spawn_senders};
use tokio_util::sync::CancellationToken;

const LONG: Duration = Duration::from_secs(120);
/// The compose configs' takeover_after is 10 s: hold node faults longer.
const HOLD: Duration = Duration::from_secs(12);

#[derive(Clone, Copy, Debug)]
enum Fault {
    KillLeader,
    KillFollower,
    PartitionLeader,
    PartitionFollower,
    KillFollowerAndTarget,
}

fn service(id: u64) -> String {
    format!("relay{id}")
}

async fn wait_until_instant(until: Instant) {
    relay_testkit::wait_until(LONG, || Instant::now() >= until)
        .await
        .expect("held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_fault_cycles_lose_nothing() {
    if !docker_available() {
        eprintln!("SKIPPED docker_fault_cycles_lose_nothing: no Docker engine here");
        return;
    }
    let cycles: usize = std::env::var("QR_DOCKER_FAULT_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    build_image().expect("image built from the target dir's binaries");
    let cluster = ComposeCluster::up().expect("docker-compose up");
    let all = [1u64, 2, 3];
    cluster
        .wait_for_leader(LONG, &all, None)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = CancellationToken::new();
    let nodes: Vec<(u64, SocketAddr)> = all
        .into_iter()
        .map(|id| (id, cluster.smtp_addr(id)))
        .collect();
    let senders = spawn_senders(&nodes, 2, &ledger, &stop);

    let classes = [
        Fault::KillLeader,
        Fault::PartitionFollower,
        Fault::KillFollower,
        Fault::PartitionLeader,
        Fault::KillFollowerAndTarget,
    ];
    let mut leader_recovery = Vec::new();
    for cycle in 0..cycles {
        let fault = classes[cycle % classes.len()];
        let leader = cluster
            .wait_for_leader(LONG, &all, None)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
        let follower = all.into_iter().find(|&id| id != leader).unwrap();
        let before = ledger.lock().unwrap().acked.len();
        relay_testkit::wait_until(LONG, || ledger.lock().unwrap().acked.len() >= before + 50)
            .await
            .unwrap_or_else(|e| panic!("load does not flow: {e}\n{}", cluster.logs()));
        let victim = match fault {
            Fault::KillLeader | Fault::PartitionLeader => leader,
            _ => follower,
        };
        let victim_service = service(victim);
        let injected = Instant::now();
        match fault {
            Fault::KillLeader | Fault::KillFollower => cluster.kill(&victim_service),
            Fault::PartitionLeader | Fault::PartitionFollower => {
                cluster.disconnect(&victim_service)
            }
            Fault::KillFollowerAndTarget => cluster
                .kill("demo-target")
                .and_then(|()| cluster.kill(&victim_service)),
        }
        .expect("inject");
        let survivors: Vec<u64> = all.into_iter().filter(|&id| id != victim).collect();
        if matches!(fault, Fault::KillLeader | Fault::PartitionLeader) {
            cluster
                .wait_for_leader(LONG, &survivors, Some(victim))
                .await
                .expect("a new leader among the survivors");
            let acked = relay_testkit::wait_for(LONG, || {
                std::future::ready(ledger.lock().unwrap().first_ack_after(injected, victim))
            })
            .await
            .expect("survivors accept mail after the leader fault");
            leader_recovery.push(acked.duration_since(injected));
        }
        // Hold every fault past takeover_after, so the victim's queue is
        // taken over while it is gone.
        wait_until_instant(injected + HOLD).await;
        match fault {
            Fault::KillLeader | Fault::KillFollower => cluster.start(&victim_service),
            Fault::PartitionLeader | Fault::PartitionFollower => cluster.connect(&victim_service),
            Fault::KillFollowerAndTarget => cluster
                .start("demo-target")
                .and_then(|()| cluster.start(&victim_service)),
        }
        .expect("heal");
        println!("cycle {cycle}: {fault:?} of relay{victim} healed");
    }

    let before = ledger.lock().unwrap().acked.len();
    relay_testkit::wait_until(LONG, || ledger.lock().unwrap().acked.len() >= before + 50)
        .await
        .expect("load flows after the last fault");
    stop.cancel();
    for s in senders {
        s.await.expect("sender task");
    }
    cluster
        .wait_drained(Duration::from_secs(240))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));

    let received = cluster.received().expect("read the target's mail folder");
    let verdict = FaultVerdict::new(&ledger.lock().unwrap(), &received);
    let (median, max) = median_max(&mut leader_recovery);
    println!(
        "fault suite (docker): cycles {cycles}, {verdict}, leader fault -> first 250 on a \
         survivor: median {median:?}, max {max:?}"
    );
    assert!(
        verdict.lost.is_empty(),
        "acknowledged but lost: {:?}",
        verdict.lost
    );
    assert_eq!(verdict.never_sent, 0, "delivered messages nobody sent");
}
