//! Losing a whole site, with real `relayd` processes: three voters (the
//! primary site) and a recovery replica (a learner that takes no SMTP).
//! Under load the replica's lag shows in entries and seconds; the replica
//! falls behind (paused), then the three voters die together. `relayd
//! --recover` turns the replica into a new one-voter cluster: it answers
//! `250`, delivers every message it held, and what it reports as possibly
//! missing (mail acknowledged after the newest message it holds) is exactly
//! where the checker finds missing mail. Then fail back: the old nodes
//! rejoin empty, as learners, from a snapshot; they are promoted,
//! leadership moves back, the replica steps back to learner, and nothing
//! acknowledged since the recovery is lost.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use relay_testkit::{Behaviour, Reply, TestTarget};
use relay_tests::load::{Ledger, message, queue_on, spawn_senders, subject};
use relay_tests::smtp::{SmtpClient, transaction};
use relay_tests::{ClusterOptions, ProcessCluster, bin_path};
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const WITHIN: Duration = Duration::from_secs(60);
const REPLICA: u64 = 4;

fn ctl(cluster: &ProcessCluster, id: u64, args: &[&str]) -> (i32, Value, String) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = cluster.relayctl(id, &all);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), json, stderr)
}

fn node_in(status: &Value, id: u64) -> &Value {
    status["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["id"] == id))
        .unwrap_or(&Value::Null)
}

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

fn recover(cluster: &ProcessCluster, id: u64, confirm: bool) -> (i32, Value, String) {
    let mut command = std::process::Command::new(bin_path("relayd"));
    command
        .arg("--config")
        .arg(&cluster.node(id).config)
        .arg("--recover");
    if confirm {
        command.arg("--confirm");
    }
    let out = command.output().expect("run relayd --recover");
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_site_loss_is_recovered_on_the_replica_with_the_missing_mail_named_then_failed_back()
-> anyhow::Result<()> {
    // The target defers everything until the recovery: acknowledged mail
    // stays queued, so the recovered node has to deliver what it held.
    let target = TestTarget::start().await?;
    target.set_behaviour(Behaviour::RejectData(Reply::temporary()));
    let mut cluster = ProcessCluster::start(ClusterOptions {
        nodes: 3,
        learners: 1,
        routes: vec![("dest.test".into(), target.target())],
        min_backoff: "1s".into(),
        // Snapshots and purges often and keeps little log, so the old
        // nodes rejoin from a snapshot.
        cluster_extra: "purge_interval = \"2s\"".into(),
        keep_logs: 10,
        ..Default::default()
    })?;
    let leader = cluster.wait_for_leader(WITHIN, None).await?;
    let replica_raft = format!("127.0.0.1:{}", cluster.node(REPLICA).ports.raft);
    let (code, _, stderr) = ctl(&cluster, leader, &["member", "add", "4", &replica_raft]);
    assert_eq!(code, 0, "member add: {stderr}");

    // The replica takes no mail while it is a learner.
    until(WITHIN, "the replica to answer 421", || async {
        matches!(SmtpClient::connect(cluster.smtp_addr(REPLICA)).await,
                 Ok((_, r)) if r.code == 421 && r.text().contains("4.3.2"))
    })
    .await;

    // Load on the primary site; the replica follows.
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = CancellationToken::new();
    let nodes: Vec<(u64, std::net::SocketAddr)> =
        (1..=3).map(|id| (id, cluster.smtp_addr(id))).collect();
    let senders = spawn_senders(&nodes, 2, &ledger, &stop);
    until(WITHIN, "load and the replica's lag shown", || async {
        let (_, status, _) = ctl(&cluster, 1, &["status"]);
        let replica = node_in(&status, REPLICA);
        ledger.lock().unwrap().acked.len() > 200
            && replica["reachable"] == true
            && replica["lag_seconds"].is_number()
    })
    .await;

    // The replica falls behind: paused while the primary site acknowledges
    // more; its lag in seconds grows.
    cluster.pause(REPLICA);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, status, _) = ctl(&cluster, 1, &["status"]);
    let replica = node_in(&status, REPLICA);
    let lag_seconds = replica["lag_seconds"].as_f64().unwrap_or(0.0);
    eprintln!("replica before the loss: {replica}");
    assert!(
        lag_seconds >= 1.0,
        "a paused replica must show its lag in seconds: {replica}"
    );

    // The primary site is lost: the three voters die together.
    for id in 1..=3 {
        cluster.kill(id);
    }
    stop.cancel();
    for s in senders {
        s.await?;
    }
    cluster.resume(REPLICA);
    let acked: BTreeSet<String> = ledger.lock().unwrap().acked.clone();

    // A dry run changes nothing and says so.
    cluster.kill(REPLICA);
    let (code, dry, stderr) = recover(&cluster, REPLICA, false);
    assert_eq!(code, 1, "a dry run must exit 1: {stderr}");
    assert!(stderr.contains("--confirm"), "{stderr}");
    let (code, report, stderr) = recover(&cluster, REPLICA, true);
    assert_eq!(code, 0, "recover: {stderr}");
    eprintln!("recover said:\n{stderr}\n{report}");
    assert_eq!(
        dry["last_log_index"], report["last_log_index"],
        "the dry run changed the store"
    );
    assert_eq!(report["old_voters"], serde_json::json!([1, 2, 3]));
    let evidence = std::path::PathBuf::from(report["evidence"].as_str().unwrap_or_default());
    assert!(
        evidence.join("report.json").exists(),
        "no evidence at {}",
        evidence.display()
    );
    let newest_ms = report["newest_message_ms"]
        .as_u64()
        .expect("the replica held messages");

    // The replica alone is the tier now: it leads, takes mail, delivers.
    cluster.start_node(REPLICA)?;
    until(WITHIN, "the recovered node to lead", || async {
        cluster
            .status(REPLICA, false)
            .await
            .is_ok_and(|s| s.role == "leader")
    })
    .await;
    let mut client = SmtpClient::connect_ehlo(cluster.smtp_addr(REPLICA)).await?;
    let reply = transaction(
        &mut client,
        "s@sender.test",
        &["r@dest.test"],
        &message("after-recovery"),
    )
    .await?;
    assert_eq!(reply.code, 250, "{reply}");
    target.set_behaviour(Behaviour::AcceptAll);
    cluster.wait_drained(Duration::from_secs(180)).await?;

    // The checker: what was acknowledged and never arrived.
    let received: BTreeSet<String> = target
        .messages()
        .iter()
        .filter_map(|m| subject(&m.data))
        .collect();
    assert!(received.contains("after-recovery"));
    let acked_at = ledger.lock().unwrap().acked_at.clone();
    let ms = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    };
    let missing: Vec<&String> = acked.iter().filter(|m| !received.contains(*m)).collect();
    let after: Vec<&String> = acked
        .iter()
        .filter(|m| acked_at.get(*m).is_some_and(|t| ms(*t) > newest_ms))
        .collect();
    eprintln!(
        "site loss: {} acked before the loss, {} missing after recovery; the report names mail \
         acked after {newest_ms} (Unix ms): {} acks after it; replica lag before the loss \
         {lag_seconds:.1}s; entries held beyond its known commit: {}",
        acked.len(),
        missing.len(),
        after.len(),
        report["held_beyond_known_commit"],
    );
    // What the report names as possibly missing is where the missing mail
    // is: every missing message was acknowledged after the reported time,
    // and everything acknowledged before it arrived.
    for m in &missing {
        let at = acked_at.get(*m).map(|t| ms(*t)).unwrap_or(0);
        assert!(
            at >= newest_ms,
            "{m} is missing but was acknowledged at {at}, before the reported {newest_ms}"
        );
    }
    let before_missing = acked
        .iter()
        .filter(|m| !after.contains(m) && !received.contains(*m))
        .count();
    assert_eq!(before_missing, 0);
    // The replica was paused for 3 s under load: the loss cost something,
    // and the report said where.
    assert!(
        !after.is_empty(),
        "the paused replica should have missed the last acks"
    );

    // Fail back. The old nodes come back empty (their stores belong to the
    // old cluster) and never bootstrap: they join as learners.
    for id in 1..=3 {
        cluster.wipe(id)?;
        let config = cluster.node(id).config.clone();
        let text =
            std::fs::read_to_string(&config)?.replace("bootstrap = true", "bootstrap = false");
        std::fs::write(&config, text)?;
        cluster.start_node(id)?;
    }
    // The recovery site's log is purged up to a fresh snapshot, so the
    // returning nodes must start from it.
    let (code, _, stderr) = ctl(&cluster, REPLICA, &["snapshot"]);
    assert!(code == 0 || code == 1, "snapshot: {stderr}");
    until(
        WITHIN,
        "the recovery site's log purged to its snapshot",
        || async {
            cluster
                .status(REPLICA, false)
                .await
                .is_ok_and(|s| s.snapshot_index > 0 && s.purged_index >= s.snapshot_index)
        },
    )
    .await;
    for id in 1..=3u64 {
        let raft = format!("127.0.0.1:{}", cluster.node(id).ports.raft);
        let (code, _, stderr) = ctl(
            &cluster,
            REPLICA,
            &["member", "add", &id.to_string(), &raft],
        );
        assert_eq!(code, 0, "member add {id}: {stderr}");
    }
    // Mail keeps flowing into the recovery site meanwhile.
    let during = queue_on(&cluster, REPLICA, "fail-back", 20).await;
    until(WITHIN, "the old nodes to catch up", || async {
        let (_, status, _) = ctl(&cluster, REPLICA, &["status"]);
        (1..=3).all(|id| {
            let n = node_in(&status, id);
            n["reachable"] == true && n["lag"].as_u64().is_some_and(|l| l < 5)
        })
    })
    .await;
    for id in 1..=3u64 {
        let snapshot = cluster.status(id, false).await?.snapshot_index;
        eprintln!("node {id} rejoined; its snapshot index {snapshot}");
        assert!(
            cluster.log(id).contains("installed snapshot"),
            "node {id} should have rejoined from a snapshot"
        );
        let (code, _, stderr) = ctl(&cluster, REPLICA, &["member", "promote", &id.to_string()]);
        assert_eq!(code, 0, "promote {id}: {stderr}");
    }
    let (code, json, stderr) = ctl(&cluster, REPLICA, &["failover", "--to", "1"]);
    assert_eq!(code, 0, "failover: {json} {stderr}");
    let (code, json, stderr) = ctl(&cluster, 1, &["member", "demote", "4"]);
    assert_eq!(code, 0, "demote: {json} {stderr}");
    assert_eq!(json["voters"], serde_json::json!([1, 2, 3]), "{json}");
    assert_eq!(json["learners"], serde_json::json!([4]), "{json}");
    // The replica takes no mail again; the primary site does.
    until(WITHIN, "the replica to refuse mail again", || async {
        matches!(SmtpClient::connect(cluster.smtp_addr(REPLICA)).await,
                 Ok((_, r)) if r.code == 421)
    })
    .await;
    let after_fail_back = queue_on(&cluster, 2, "after-fail-back", 10).await;
    cluster.wait_drained(Duration::from_secs(120)).await?;
    let received: BTreeSet<String> = target
        .messages()
        .iter()
        .filter_map(|m| subject(&m.data))
        .collect();
    for m in during.iter().chain(&after_fail_back) {
        assert!(
            received.contains(m),
            "{m} acknowledged during or after the fail back, not delivered"
        );
    }
    let leader = cluster.wait_for_leader(WITHIN, None).await?;
    assert_eq!(leader, 1, "leadership back on the primary site");
    Ok(())
}
