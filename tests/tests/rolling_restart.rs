//! A rolling restart of all three real `relayd` processes under load, run
//! by `scripts/rolling-restart.sh` (drain, restart, catch up, undrain, next)
//! while senders offer mail to every node (one whose node is drained or
//! down moves to the next, as a client tries the next MX, so the offered
//! rate holds) and the target holds each reply to the final dot: nothing acknowledged is lost, nothing arrives twice,
//! and the only refusals any sender sees are a drained node's own
//! `421 4.3.2` and the connection refused while that node is down.
//!
//! The script restarts a node through a command it is given; here that
//! command asks the test (a request file) to restart the node through the
//! harness, which owns the processes (SIGKILL: the node was safe to stop).
//! Knobs: `QR_ROLLING_RATE` (messages/s offered, default 300),
//! `QR_ROLLING_LANES` (senders per node, default 16).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use relay_testkit::{Behaviour, TestTarget};
use relay_tests::load::{FaultVerdict, Ledger, message, received};
use relay_tests::smtp::{SmtpClient, transaction};
use relay_tests::{ClusterOptions, ProcessCluster, bin_path};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Every reply that was not `250`, by kind.
#[derive(Debug, Default)]
struct Refusals {
    /// `421 4.3.2` from a node out of service (drained): expected.
    drained: u64,
    /// Connection refused or broken, by node and when: expected only while
    /// that node is down for its restart.
    unreachable: Vec<(u64, Instant)>,
    /// Anything else: (node, code, text). Must stay empty.
    other: Vec<(u64, u16, String)>,
}

/// One paced sender: at most one transaction per `every`, to its home node
/// `nodes[home]` when that node takes mail, else to the next one that does
/// (as a client tries the next MX or a balancer the next backend), so the
/// offered rate stays the same while a node is drained or down. A session
/// on another node is closed after its transaction, so the next one starts
/// at home again.
async fn sender(
    nodes: Vec<(u64, SocketAddr)>,
    home: usize,
    lane: usize,
    every: Duration,
    ledger: Arc<Mutex<Ledger>>,
    refusals: Arc<Mutex<Refusals>>,
    stop: CancellationToken,
) {
    let mut n = 0u64;
    let mut client: Option<(u64, SmtpClient)> = None;
    let mut next = Instant::now();
    let home_id = nodes[home].0;
    while !stop.is_cancelled() {
        tokio::time::sleep_until(next).await;
        next = (next + every).max(Instant::now());
        if client.is_none() {
            for k in 0..nodes.len() {
                let (node, addr) = nodes[(home + k) % nodes.len()];
                if let Some(c) = connect(node, addr, &refusals).await {
                    client = Some((node, c));
                    break;
                }
            }
            if client.is_none() {
                continue;
            }
        }
        let marker = format!("roll-{home_id}-{lane}-{n}");
        n += 1;
        let (node, session) = client.as_mut().expect("connected");
        let node = *node;
        let started = std::time::Instant::now();
        let outcome = tokio::time::timeout(
            Duration::from_secs(15),
            transaction(
                session,
                "s@sender.test",
                &["r@dest.test"],
                &message(&marker),
            ),
        )
        .await;
        match outcome {
            Ok(Ok(reply)) if reply.code == 250 => {
                {
                    let mut ledger = ledger.lock().unwrap();
                    if let Some(id) = reply.queued_id() {
                        ledger.queue_ids.insert(marker.clone(), id);
                    }
                    ledger.acked.insert(marker);
                    ledger
                        .ack_times
                        .push((started, std::time::Instant::now(), node));
                }
                if node != home_id
                    && let Some((_, mut c)) = client.take()
                {
                    let _ = c.command("QUIT").await;
                }
            }
            Ok(Ok(reply)) => {
                ledger.lock().unwrap().unacked.insert(marker);
                classify(&refusals, node, reply.code, reply.text());
                if reply.code == 421 {
                    client = None;
                }
            }
            _ => {
                ledger.lock().unwrap().unacked.insert(marker);
                refusals
                    .lock()
                    .unwrap()
                    .unreachable
                    .push((node, Instant::now()));
                client = None;
            }
        }
    }
    if let Some((_, mut c)) = client {
        let _ = c.command("QUIT").await;
    }
}

/// A session with `node` that has said EHLO, or `None` with the refusal
/// recorded.
async fn connect(node: u64, addr: SocketAddr, refusals: &Mutex<Refusals>) -> Option<SmtpClient> {
    match tokio::time::timeout(Duration::from_secs(5), SmtpClient::connect(addr)).await {
        Ok(Ok((mut c, greeting))) if greeting.code == 220 => {
            match c.command("EHLO client.test").await {
                Ok(r) if r.code == 250 => return Some(c),
                Ok(r) => classify(refusals, node, r.code, r.text()),
                Err(_) => refusals
                    .lock()
                    .unwrap()
                    .unreachable
                    .push((node, Instant::now())),
            }
        }
        Ok(Ok((_, greeting))) => classify(refusals, node, greeting.code, greeting.text()),
        _ => refusals
            .lock()
            .unwrap()
            .unreachable
            .push((node, Instant::now())),
    }
    None
}

fn classify(refusals: &Mutex<Refusals>, node: u64, code: u16, text: String) {
    let mut r = refusals.lock().unwrap();
    if code == 421 && text.contains("4.3.2") && text.contains("not available on this node") {
        r.drained += 1;
    } else {
        r.other.push((node, code, text));
    }
}

/// The restart command the script runs: asks the test to restart node `$1`
/// and waits until it did.
fn write_restart_command(dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let path = dir.join("restart-node.sh");
    std::fs::write(
        &path,
        format!(
            "#!/usr/bin/env bash\nset -eu\nd='{}'\nrm -f \"$d/restart-$1.done\"\ntouch \"$d/restart-$1.req\"\n\
             while [ ! -f \"$d/restart-$1.done\" ]; do sleep 0.05; done\n",
            dir.display()
        ),
    )?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_under_load_loses_nothing_duplicates_nothing_and_refuses_only_drained_nodes()
-> anyhow::Result<()> {
    let rate: f64 = std::env::var("QR_ROLLING_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300.0);
    let lanes: usize = std::env::var("QR_ROLLING_LANES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let target = TestTarget::start().await?;
    target.set_behaviour(Behaviour::DelayDataReply(Duration::from_millis(100)));
    let mut cluster = ProcessCluster::start(ClusterOptions {
        routes: vec![("dest.test".into(), target.target())],
        min_backoff: "1s".into(),
        submit_timeout: "10s".into(),
        ..Default::default()
    })?;
    cluster
        .wait_for_leader(Duration::from_secs(30), None)
        .await?;

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let refusals = Arc::new(Mutex::new(Refusals::default()));
    let stop = CancellationToken::new();
    let every = Duration::from_secs_f64(3.0 * lanes as f64 / rate);
    let mut senders = Vec::new();
    let nodes: Vec<(u64, SocketAddr)> = (1..=3).map(|id| (id, cluster.smtp_addr(id))).collect();
    for home in 0..nodes.len() {
        for lane in 0..lanes {
            senders.push(tokio::spawn(sender(
                nodes.clone(),
                home,
                lane,
                every,
                ledger.clone(),
                refusals.clone(),
                stop.clone(),
            )));
        }
    }
    let load_started = Instant::now();
    // Load before the first drain, so deliveries are running throughout.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let control = cluster.dir.path().join("control");
    std::fs::create_dir_all(&control)?;
    let restart = write_restart_command(&control)?;
    let addrs: Vec<String> = (1..=3)
        .map(|id| format!("127.0.0.1:{}", cluster.node(id).ports.admin))
        .collect();
    let script = relay_tests::compose::repo_root().join("scripts/rolling-restart.sh");
    let mut run = tokio::process::Command::new("bash")
        .arg(&script)
        .arg("--nodes")
        .arg("1,2,3")
        .arg("--restart")
        .arg(&restart)
        .arg("--drain-wait")
        .arg("90")
        .env("RELAYCTL", bin_path("relayctl"))
        .env("RELAYCTL_ADDR", addrs.join(","))
        .env("RELAYCTL_TOKEN", &cluster.token)
        .env_remove("RELAYCTL_CA")
        .env_remove("RELAYCTL_CERT")
        .env_remove("RELAYCTL_KEY")
        .env_remove("RELAYCTL_TOKEN_FILE")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let mut stdout = run.stdout.take().expect("piped");
    let mut stderr = run.stderr.take().expect("piped");
    let output = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let (mut out, mut err) = (String::new(), String::new());
        let _ = tokio::join!(
            stdout.read_to_string(&mut out),
            stderr.read_to_string(&mut err)
        );
        (out, err)
    });

    // Serve the script's restart requests until it exits.
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut restarts = BTreeMap::new();
    let mut down_at: BTreeMap<u64, Instant> = BTreeMap::new();
    let status = loop {
        for id in 1..=3u64 {
            let request = control.join(format!("restart-{id}.req"));
            if request.exists() {
                std::fs::remove_file(&request)?;
                let at = Instant::now();
                down_at.insert(id, at);
                cluster.kill(id);
                cluster.start_node(id)?;
                restarts.insert(id, at.duration_since(load_started));
                std::fs::write(control.join(format!("restart-{id}.done")), b"")?;
            }
        }
        if let Some(status) = run.try_wait()? {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the rolling restart did not finish"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (out, err) = output.await?;
    eprintln!("{out}{err}");
    assert!(
        status.success(),
        "rolling-restart.sh failed: {status}\n{out}\n{err}"
    );
    assert_eq!(restarts.len(), 3, "every node restarted: {restarts:?}");

    // A little more load with every node back, then stop.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    for s in senders {
        s.await?;
    }
    let load_time = load_started.elapsed();

    cluster.wait_drained(Duration::from_secs(300)).await?;
    let ledger = ledger.lock().unwrap();
    let verdict = FaultVerdict::new(&ledger, &received(&target.messages()));
    let refusals = refusals.lock().unwrap();
    let offered = ledger.acked.len() + ledger.unacked.len();
    eprintln!(
        "rolling restart: {verdict}; offered {offered} in {:.1}s ({:.0} msgs/s offered, {:.0} acked/s, \
         target rate {rate}/s over {} senders); refusals: {} drained-node 421, {} unreachable, {} other; \
         restarts at {restarts:?}",
        load_time.as_secs_f64(),
        offered as f64 / load_time.as_secs_f64(),
        verdict.acked as f64 / load_time.as_secs_f64(),
        3 * lanes,
        refusals.drained,
        refusals.unreachable.len(),
        refusals.other.len()
    );
    assert!(
        verdict.lost.is_empty(),
        "acked but lost: {:?}",
        verdict.lost
    );
    assert_eq!(verdict.duplicates, 0, "duplicates: {verdict}");
    assert_eq!(verdict.never_sent, 0, "{verdict}");
    assert!(
        refusals.other.is_empty(),
        "refusals other than a drained node's 421: {:?}",
        refusals.other
    );
    assert!(refusals.drained > 0, "the senders never met a drained node");
    // A node was unreachable only around its own restart (killed, then
    // listening again within seconds; sessions cut by the kill report a
    // moment later).
    for (node, at) in &refusals.unreachable {
        let down = down_at.get(node).copied();
        assert!(
            down.is_some_and(|d| *at >= d && at.duration_since(d) < Duration::from_secs(15)),
            "node {node} was unreachable at {:?} after the load started, outside its restart \
             (down at {:?})",
            at.duration_since(load_started),
            down.map(|d| d.duration_since(load_started))
        );
    }
    assert!(
        verdict.acked > 1000,
        "too little load to mean anything: {verdict}"
    );
    Ok(())
}
