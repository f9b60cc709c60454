//! Nodes that come back behind the others, with three real `relayd`
//! processes under continuous SMTP load:
//!
//! - a leader frozen mid-load while the others snapshot and purge past
//!   its log rejoins through a snapshot; made leader again with
//!   `relayctl failover --to`, it accepts and delivers the next 100
//!   messages (openraft 0.9 never answers a write such a node loses, so
//!   without the batcher's bound it would hang every later write);
//! - a voter whose store was lost refuses to start as a voter (exit 3,
//!   saying how to rejoin); the replacement sequence that message and
//!   `relayctl member --help` give brings it back with the whole queue,
//!   and nothing acknowledged is lost.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use relay_testkit::{Behaviour, Reply, TargetOptions, TestTarget};
use relay_tests::load::{FaultVerdict, Ledger, message, received, spawn_senders};
use relay_tests::smtp::send_mail;
use relay_tests::{ClusterOptions, ProcessCluster};
use relay_types::NodeId;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const LONG: Duration = Duration::from_secs(60);

/// Polls `probe` every 100 ms until it yields a value; panics naming
/// `what` after `within`.
async fn poll<T, F, Fut>(within: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs relayctl against node `id` and returns (exit code, stdout JSON or
/// Null, stderr).
fn ctl(cluster: &ProcessCluster, id: NodeId, args: &[&str]) -> (i32, serde_json::Value, String) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = cluster.relayctl(id, &all);
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// The value of `series` on node `port`'s `/metrics` (0 if absent or
/// unreachable): for the printed figures only.
async fn metric(port: u16, series: &str) -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let page = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await?;
        let mut raw = String::new();
        stream.read_to_string(&mut raw).await?;
        std::io::Result::Ok(raw)
    };
    let Ok(Ok(raw)) = tokio::time::timeout(Duration::from_secs(10), page).await else {
        return 0.0;
    };
    raw.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Waits until the acknowledged count has grown by `more`.
async fn wait_acked(ledger: &Arc<Mutex<Ledger>>, more: usize) {
    let start = ledger.lock().unwrap().acked.len();
    poll(LONG, "load acknowledged", || {
        let now = ledger.lock().unwrap().acked.len();
        std::future::ready((now >= start + more).then_some(()))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_former_leader_back_through_a_snapshot_leads_again_and_accepts_the_next_100() {
    let target = TestTarget::start_with(TargetOptions::default())
        .await
        .expect("target");
    let mut cluster = ProcessCluster::start(ClusterOptions {
        routes: vec![("dest.test".into(), target.target())],
        // Snapshots and purges all the time: a node that misses a few
        // seconds can only catch up through a snapshot.
        snapshot_every: 20,
        keep_logs: 0,
        min_backoff: "1s".into(),
        submit_timeout: "3s".into(),
        cluster_extra: "purge_interval = \"1s\"\ntakeover_after = \"3s\"".into(),
        delivery_extra: "max_backoff = \"2s\"".into(),
        ..Default::default()
    })
    .expect("cluster");
    let first = cluster.wait_for_leader(LONG, None).await.expect("leader");
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = CancellationToken::new();
    let nodes: Vec<(u64, std::net::SocketAddr)> =
        (1..=3).map(|id| (id, cluster.smtp_addr(id))).collect();
    let senders = spawn_senders(&nodes, 2, &ledger, &stop);
    wait_acked(&ledger, 50).await;

    // Freeze the leader mid-load: writes it appended but had not
    // replicated are lost when it catches up.
    let frozen_at = cluster.status(first, false).await.expect("status");
    cluster.pause(first);
    let second = cluster
        .wait_for_leader(LONG, Some(first))
        .await
        .expect("a new leader");
    let purged = poll(LONG, "the others purge past the frozen log", || {
        let cluster = &cluster;
        async move {
            let s = cluster.status(second, false).await.ok()?;
            (s.purged_index > frozen_at.last_log_index + 20).then_some(s.purged_index)
        }
    })
    .await;
    cluster.resume(first);
    let back = poll(LONG, "the former leader installs a snapshot", || {
        let cluster = &cluster;
        async move {
            let s = cluster.status(first, false).await.ok()?;
            (s.snapshot_index >= purged && s.role == "follower").then_some(s)
        }
    })
    .await;
    println!(
        "node {first} froze at log index {}, the others purged to {purged}; \
         it came back through the snapshot at {}",
        frozen_at.last_log_index, back.snapshot_index
    );

    // Leadership back to it, as an operator would move it; a transfer
    // that does not complete under load is tried again.
    let mut attempts = 0;
    loop {
        attempts += 1;
        let asked = cluster.wait_for_leader(LONG, None).await.expect("a leader");
        let (code, reply, stderr) = ctl(&cluster, asked, &["failover", "--to", &first.to_string()]);
        if code == 0 && reply["leader"] == first {
            break;
        }
        println!("failover --to {first}, attempt {attempts}: {code} {reply} {stderr}");
        assert!(attempts < 5, "node {first} never became leader again");
    }
    assert_eq!(
        cluster.wait_for_leader(LONG, None).await.unwrap(),
        first,
        "node {first} leads again"
    );

    // The next 100 messages, to the former leader: every one gets 250.
    let mut next = Vec::new();
    for i in 0..100 {
        let marker = format!("after-{i}");
        let reply = send_mail(
            cluster.smtp_addr(first),
            "s@sender.test",
            &["r@dest.test"],
            &message(&marker),
        )
        .await
        .unwrap_or_else(|e| panic!("{marker}: {e}\n{}", cluster.log(first)));
        assert_eq!(
            reply.code,
            250,
            "{marker} refused by the re-elected leader: {reply}\n{}",
            cluster.log(first)
        );
        next.push(marker);
    }

    stop.cancel();
    for s in senders {
        let _ = s.await;
    }
    cluster.wait_drained(LONG * 2).await.expect("drained");
    let got = received(&target.messages());
    for marker in &next {
        assert_eq!(
            got.iter().filter(|(s, _)| s == marker).count(),
            1,
            "{marker} delivered once"
        );
    }
    ledger.lock().unwrap().acked.extend(next);
    let verdict = FaultVerdict::new(&ledger.lock().unwrap(), &got);
    let stranded = metric(
        cluster.node(first).ports.http,
        "relay_cluster_stranded_writes_total ",
    )
    .await;
    println!(
        "former leader {first}: next 100 messages 100 × 250, all delivered; \
         load: {verdict}; failover attempts {attempts}; writes it gave up as \
         stranded: {stranded}"
    );
    assert!(verdict.lost.is_empty(), "lost: {:?}", verdict.lost);
    assert_eq!(verdict.never_sent, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_voter_on_a_lost_store_refuses_and_the_replacement_sequence_loses_nothing() {
    // The target refuses for now: the queue grows, so "the whole queue"
    // is a real one.
    let target = TestTarget::start_with(TargetOptions {
        behaviour: Behaviour::RejectRcpt(Reply::temporary()),
        ..Default::default()
    })
    .await
    .expect("target");
    // Each message is tried once when it arrives, then not for 300 s (the
    // default backoff): once the load stops, the replicas go quiet and
    // can be compared. `relayctl queue flush` sends the queue at the end.
    let mut cluster = ProcessCluster::start(ClusterOptions {
        routes: vec![("dest.test".into(), target.target())],
        submit_timeout: "3s".into(),
        cluster_extra: "takeover_after = \"3s\"".into(),
        ..Default::default()
    })
    .expect("cluster");
    let leader = cluster.wait_for_leader(LONG, None).await.expect("leader");
    // A follower that is not the bootstrap node.
    let victim = if leader == 3 { 2 } else { 3 };
    let live = (1..=3).find(|&id| id != leader && id != victim).unwrap();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = CancellationToken::new();
    let nodes: Vec<(u64, std::net::SocketAddr)> = [leader, live]
        .iter()
        .map(|&id| (id, cluster.smtp_addr(id)))
        .collect();
    let senders = spawn_senders(&nodes, 2, &ledger, &stop);
    // Some mail accepted (and owned) by the victim too, once its SMTP
    // listener is open.
    poll(LONG, "the victim serves SMTP", || async {
        relay_tests::smtp::SmtpClient::connect_ehlo(cluster.smtp_addr(victim))
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    let own = relay_tests::load::queue_on(&cluster, victim, "victim", 10).await;
    ledger.lock().unwrap().acked.extend(own);
    wait_acked(&ledger, 30).await;

    // The victim's store is lost; its voter guard, beside it, is not.
    cluster.kill(victim);
    let data_dir = cluster.node(victim).data_dir.clone();
    std::fs::remove_dir_all(data_dir.join("db")).expect("wipe the store");
    cluster
        .start_node(victim)
        .expect("start on the empty store");
    let status = cluster
        .wait_exit(victim, LONG)
        .await
        .expect("a voter on a lost store stops by itself");
    let log = cluster.log(victim);
    assert_eq!(status.code(), Some(3), "exit 3: needs an operator\n{log}");
    assert!(
        log.contains("relayctl member remove") && log.contains("relayctl member promote"),
        "the refusal says how to rejoin:\n{log}"
    );

    // The sequence, as the message gives it, while the load goes on.
    let started = Instant::now();
    let (code, reply, stderr) = ctl(&cluster, live, &["member", "remove", &victim.to_string()]);
    assert_eq!(code, 0, "member remove: {reply} {stderr}");
    std::fs::remove_dir_all(&data_dir).expect("move the data_dir away");
    cluster
        .start_node(victim)
        .expect("start on an empty data_dir");
    let raft_addr = format!("127.0.0.1:{}", cluster.node(victim).ports.raft);
    let (code, reply, stderr) = ctl(
        &cluster,
        live,
        &["member", "add", &victim.to_string(), &raft_addr],
    );
    assert_eq!(code, 0, "member add: {reply} {stderr}");
    poll(LONG, "the learner catches up", || {
        let cluster = &cluster;
        async move {
            let leader = cluster.wait_for_leader(LONG, None).await.ok()?;
            let want = cluster.status(leader, false).await.ok()?.applied_index;
            let got = cluster.status(victim, false).await.ok()?.applied_index;
            (got + 10 >= want).then_some(())
        }
    })
    .await;
    poll(LONG, "member promote", || {
        let (code, _, _) = ctl(&cluster, live, &["member", "promote", &victim.to_string()]);
        std::future::ready((code == 0).then_some(()))
    })
    .await;
    let rejoined_after = started.elapsed();
    wait_acked(&ledger, 30).await;
    stop.cancel();
    for s in senders {
        let _ = s.await;
    }

    // The rejoined voter holds the whole queue: the same state as the
    // others, nothing delivered yet.
    let (index, _) = cluster
        .wait_converged(LONG, 0)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.log(victim)));
    let queue = cluster
        .status(victim, false)
        .await
        .unwrap()
        .queue
        .unwrap_or_default();
    let acked = ledger.lock().unwrap().acked.len() as u64;
    assert!(
        queue.queued + queue.deferred >= acked,
        "the rejoined voter holds every acknowledged message: {queue:?}, {acked} acked"
    );
    let (_, members, _) = ctl(&cluster, live, &["member", "list"]);
    assert!(
        members["members"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["id"] == victim && m["voter"] == true)),
        "node {victim} is a voter again: {members}"
    );

    target.set_behaviour(Behaviour::AcceptAll);
    let (code, reply, stderr) = ctl(&cluster, live, &["queue", "flush", "--all", "--yes"]);
    assert_eq!(code, 0, "queue flush: {reply} {stderr}");
    cluster.wait_drained(LONG * 2).await.expect("drained");
    let verdict = FaultVerdict::new(&ledger.lock().unwrap(), &received(&target.messages()));
    println!(
        "replacement of node {victim} under load: refused with exit 3, rejoined as a voter \
         {rejoined_after:?} after `member remove`, held {} queued at index {index}; {verdict}",
        queue.queued + queue.deferred
    );
    assert!(verdict.lost.is_empty(), "lost: {:?}", verdict.lost);
    assert_eq!(verdict.never_sent, 0);
}
