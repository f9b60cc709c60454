//! Maintenance with real `relayd` processes: `relayctl member drain` takes
//! a node out of service (SMTP `421 4.3.2`, `/readyz` 503, leadership and
//! queue handed on, "safe to stop"), the mark survives the node's restart,
//! and `undrain` puts it back; nothing is lost or delivered twice.

use std::time::Duration;

use relay_testkit::{Behaviour, TestTarget};
use relay_tests::load::{copies, message, queue_on};
use relay_tests::smtp::{SmtpClient, transaction};
use relay_tests::{ClusterOptions, ProcessCluster};
use serde_json::Value;
use tokio::time::Instant;

const WITHIN: Duration = Duration::from_secs(60);

/// Runs relayctl on node `id` with `--json`; (exit code, parsed stdout,
/// stderr).
fn ctl(cluster: &ProcessCluster, id: u64, args: &[&str]) -> (i32, Value, String) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = cluster.relayctl(id, &all);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), json, stderr)
}

/// `/readyz` of node `id`: true for 200.
fn ready(cluster: &ProcessCluster, id: u64) -> bool {
    let url = format!("http://127.0.0.1:{}/readyz", cluster.node(id).ports.http);
    relay_node::check::health_check(&url, Duration::from_secs(2)).is_ok()
}

/// The first reply node `id` gives a new SMTP connection.
async fn greeting(cluster: &ProcessCluster, id: u64) -> Option<(u16, String)> {
    let (_, reply) = SmtpClient::connect(cluster.smtp_addr(id)).await.ok()?;
    Some((reply.code, reply.text()))
}

/// Polls `probe` until it is true or `within` passes.
async fn until<F, Fut>(within: Duration, what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !probe().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drained_leader_hands_everything_on_stays_drained_over_a_restart_and_comes_back()
-> anyhow::Result<()> {
    // The target holds each reply to the final dot, so deliveries are
    // running when the drain starts: their reports must still commit
    // (a refused report would mean a second copy).
    let target = TestTarget::start().await?;
    target.set_behaviour(Behaviour::DelayDataReply(Duration::from_millis(700)));
    let mut cluster = ProcessCluster::start(ClusterOptions {
        routes: vec![("dest.test".into(), target.target())],
        min_backoff: "1s".into(),
        ..Default::default()
    })?;
    let leader = cluster.wait_for_leader(WITHIN, None).await?;
    let others: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();

    // Mail owned by the leader, part of it being delivered now.
    let before = queue_on(&cluster, leader, "before-drain", 30).await;
    // A session open on the leader before the drain: it finishes its
    // transaction, then hears 421 at the next MAIL.
    let mut open = SmtpClient::connect_ehlo(cluster.smtp_addr(leader)).await?;
    until(WITHIN, "a delivery in flight", || async {
        target.accepted_count() > 0
    })
    .await;

    let (code, json, stderr) = ctl(
        &cluster,
        others[0],
        &["member", "drain", &leader.to_string(), "--wait", "0"],
    );
    assert_eq!(code, 0, "drain: {json} {stderr}");
    assert_eq!(json["drained"], true, "{json}");

    // New connections are refused with 421 4.3.2; readiness follows.
    until(
        WITHIN,
        "the drained node to refuse new sessions",
        || async {
            matches!(greeting(&cluster, leader).await, Some((421, text)) if text.contains("4.3.2"))
        },
    )
    .await;
    assert!(!ready(&cluster, leader), "a drained node must not be ready");
    // The open session is told to go elsewhere at its next transaction.
    let reply = open.command("MAIL FROM:<s@sender.test>").await?;
    assert_eq!(reply.code, 421, "{reply}");
    assert!(reply.text().contains("4.3.2"), "{reply}");

    // Leadership moves to a node in service.
    let new_leader = cluster.wait_for_leader(WITHIN, Some(leader)).await?;
    assert_ne!(new_leader, leader);

    // relayctl waits until it is safe to stop.
    let (code, json, stderr) = ctl(
        &cluster,
        others[1],
        &["member", "drain", &leader.to_string(), "--wait", "60"],
    );
    assert_eq!(code, 0, "not safe to stop: {json} {stderr}");
    assert_eq!(json["safe_to_stop"], true, "{json}");
    assert_eq!(json["owned"], 0, "{json}");
    assert_eq!(json["smtp_sessions"], 0, "{json}");
    assert_eq!(json["busy_deliveries"], 0, "{json}");
    let (code, status, _) = ctl(&cluster, others[0], &["status"]);
    assert!(code == 0 || code == 4, "status exit {code}");
    let node = status["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["id"] == leader))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(node["drained"], true, "{status}");

    // The others take mail meanwhile.
    let during = queue_on(&cluster, others[0], "during-drain", 5).await;

    // Stop it (SIGKILL: the queue is already elsewhere) and start it
    // again: the mark is replicated, so it comes back drained.
    cluster.kill(leader);
    cluster.start_node(leader)?;
    until(
        WITHIN,
        "the restarted node to answer, still drained",
        || async { matches!(greeting(&cluster, leader).await, Some((421, _))) },
    )
    .await;
    let (code, json, _) = ctl(
        &cluster,
        others[0],
        &["member", "drain-status", &leader.to_string()],
    );
    assert_eq!(json["drained"], true, "{json} (exit {code})");

    // Back in service.
    let (code, _, stderr) = ctl(
        &cluster,
        others[0],
        &["member", "undrain", &leader.to_string()],
    );
    assert_eq!(code, 0, "undrain: {stderr}");
    until(WITHIN, "the node to take mail again", || async {
        matches!(greeting(&cluster, leader).await, Some((220, _)))
    })
    .await;
    until(WITHIN, "the node to be ready again", || async {
        ready(&cluster, leader)
    })
    .await;
    let mut client = SmtpClient::connect_ehlo(cluster.smtp_addr(leader)).await?;
    let reply = transaction(
        &mut client,
        "s@sender.test",
        &["r@dest.test"],
        &message("after-undrain"),
    )
    .await?;
    assert_eq!(reply.code, 250, "{reply}");

    // Every message arrives exactly once.
    cluster.wait_drained(Duration::from_secs(120)).await?;
    let received = copies(&target.messages());
    for marker in before
        .iter()
        .chain(&during)
        .chain(std::iter::once(&"after-undrain".to_string()))
    {
        assert_eq!(
            received.get(marker).copied(),
            Some(1),
            "{marker}: copies at the target"
        );
    }
    let duplicates: usize = received.values().map(|n| n - 1).sum();
    assert_eq!(duplicates, 0, "duplicates: {received:?}");
    eprintln!(
        "drain: {} messages queued on the drained leader, leadership {leader} -> {new_leader}, \
         0 lost, 0 duplicates",
        before.len()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn draining_the_last_node_in_service_is_refused_and_unknown_nodes_are_named()
-> anyhow::Result<()> {
    let cluster = ProcessCluster::start(ClusterOptions::default())?;
    cluster.wait_for_leader(WITHIN, None).await?;
    for id in [1, 2] {
        let (code, _, stderr) = ctl(
            &cluster,
            3,
            &["member", "drain", &id.to_string(), "--wait", "0"],
        );
        assert_eq!(code, 0, "drain {id}: {stderr}");
    }
    let (code, _, stderr) = ctl(&cluster, 3, &["member", "drain", "3", "--wait", "0"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("no voter in service"), "{stderr}");
    let (code, _, stderr) = ctl(&cluster, 3, &["member", "drain", "9", "--wait", "0"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("node 9"), "{stderr}");
    // Node 3 keeps serving.
    let mut client = SmtpClient::connect_ehlo(cluster.smtp_addr(3)).await?;
    let reply = client.command("MAIL FROM:<s@sender.test>").await?;
    assert_eq!(reply.code, 250, "{reply}");
    Ok(())
}
