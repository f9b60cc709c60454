//! Observability of a real three-process tier: `/metrics` counts every
//! message exactly once, `/readyz` follows the quorum, and the status page
//! lights a killed node red (also as rendered by headless Chromium).
//!
//! Everything is observed through the nodes' HTTP ports and real SMTP; the
//! mail goes to a real [`TestTarget`]. Waits poll with deadlines.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use relay_testkit::TestTarget;
use relay_tests::{ClusterOptions, ProcessCluster};
use relay_types::NodeId;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The clusters of these tests share two cores with everything else: run
/// one at a time so election timeouts are not starved.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const DOMAIN: &str = "obs.test";
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// One HTTP GET on loopback: (status code, body).
async fn http_get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    let io = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        anyhow::Ok(String::from_utf8(raw)?)
    };
    let raw = tokio::time::timeout(IO_TIMEOUT, io)
        .await
        .context("HTTP request timed out")??;
    let (head, body) = raw.split_once("\r\n\r\n").context("no HTTP head")?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status")?;
    Ok((code, body.to_string()))
}

/// A Prometheus text page as `series → value` (`name` or `name{labels}`).
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

async fn scrape(port: u16) -> anyhow::Result<BTreeMap<String, f64>> {
    let (code, body) = http_get(port, "/metrics").await?;
    ensure!(code == 200, "/metrics answered {code}: {body}");
    Ok(parse_metrics(&body))
}

async fn scrape_all(cluster: &ProcessCluster) -> anyhow::Result<Vec<BTreeMap<String, f64>>> {
    let mut out = Vec::new();
    for node in &cluster.nodes {
        out.push(scrape(node.ports.http).await?);
    }
    Ok(out)
}

fn value(metrics: &BTreeMap<String, f64>, series: &str) -> f64 {
    metrics.get(series).copied().unwrap_or(0.0)
}

fn sum_delta(before: &[BTreeMap<String, f64>], after: &[BTreeMap<String, f64>], s: &str) -> f64 {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| value(a, s) - value(b, s))
        .sum()
}

/// Reads one SMTP reply (all its lines); returns (code, text).
async fn smtp_reply(reader: &mut BufReader<TcpStream>) -> anyhow::Result<(u16, String)> {
    let mut text = String::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(IO_TIMEOUT, reader.read_line(&mut line))
            .await
            .context("SMTP reply timed out")??;
        ensure!(n > 0, "SMTP server closed the connection; so far: {text}");
        text.push_str(&line);
        if line.len() >= 4 && line.as_bytes()[3] == b' ' {
            return Ok((line[..3].parse()?, text));
        }
    }
}

async fn smtp_command(
    reader: &mut BufReader<TcpStream>,
    command: &str,
    expect: u16,
) -> anyhow::Result<String> {
    reader.get_mut().write_all(command.as_bytes()).await?;
    let (code, text) = smtp_reply(reader).await?;
    ensure!(
        code == expect,
        "{} answered {text}",
        command.trim_end().chars().take(40).collect::<String>()
    );
    Ok(text)
}

/// Sends one message over real SMTP to `port`; returns the `250` text.
async fn send_message(port: u16, n: u32) -> anyhow::Result<String> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let mut reader = BufReader::new(stream);
    let (code, greeting) = smtp_reply(&mut reader).await?;
    ensure!(code == 220, "greeting: {greeting}");
    smtp_command(&mut reader, "EHLO client.test\r\n", 250).await?;
    smtp_command(&mut reader, "MAIL FROM:<sender@client.test>\r\n", 250).await?;
    smtp_command(&mut reader, &format!("RCPT TO:<user{n}@{DOMAIN}>\r\n"), 250).await?;
    smtp_command(&mut reader, "DATA\r\n", 354).await?;
    let body = format!(
        "From: sender@client.test\r\nTo: user{n}@{DOMAIN}\r\nSubject: observability {n}\r\n\
         Message-ID: <obs-{n}@client.test>\r\n\r\nmessage {n}\r\n.\r\n"
    );
    let queued = smtp_command(&mut reader, &body, 250).await?;
    let _ = smtp_command(&mut reader, "QUIT\r\n", 221).await;
    Ok(queued)
}

/// Polls `probe` until it yields `Some`, at most `within`.
async fn poll<T, F, Fut>(within: Duration, what: &str, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_all_ready(cluster: &ProcessCluster, ids: &[NodeId]) -> anyhow::Result<()> {
    for id in ids {
        let port = cluster.node(*id).ports.http;
        poll(
            Duration::from_secs(20),
            &format!("node {id} ready"),
            || async move { matches!(http_get(port, "/readyz").await, Ok((200, _))).then_some(()) },
        )
        .await?;
    }
    Ok(())
}

fn logs(cluster: &ProcessCluster) -> String {
    (1..=cluster.nodes.len() as NodeId)
        .map(|id| format!("--- node {id} ---\n{}", cluster.log(id)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_each_message_once_across_the_tier() -> anyhow::Result<()> {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let target = TestTarget::start().await?;
    let cluster = ProcessCluster::start(ClusterOptions {
        routes: vec![(DOMAIN.to_string(), target.target())],
        ..Default::default()
    })?;
    cluster
        .wait_for_leader(Duration::from_secs(20), None)
        .await?;
    wait_all_ready(&cluster, &[1, 2, 3]).await?;
    // The bootstrap node seeds the route after the cluster forms; every
    // node must have applied it before it relays for the domain.
    for node in &cluster.nodes {
        let port = node.ports.http;
        poll(Duration::from_secs(20), "route applied", || async move {
            let (_, page) = http_get(port, "/").await.ok()?;
            page.contains(DOMAIN).then_some(())
        })
        .await?;
    }

    let before = scrape_all(&cluster).await?;
    for m in &before {
        for name in [
            "relay_raft_term",
            "relay_raft_is_leader",
            "relay_raft_applied_index",
            "relay_raft_committed_index",
            "relay_takeovers_total",
            "relay_messages_accepted_total",
            "relay_messages_delivered_total",
            "relay_queue_messages{state=\"queued\"}",
            "relay_queue_oldest_message_age_seconds",
            "relay_store_bytes",
        ] {
            ensure!(m.contains_key(name), "{name} missing from a scrape: {m:?}");
        }
    }
    let leaders: f64 = before
        .iter()
        .map(|m| value(m, "relay_raft_is_leader"))
        .sum();
    ensure!(
        leaders == 1.0,
        "exactly one node reports leadership, got {leaders}"
    );

    // N messages, spread over the three nodes' SMTP ports.
    const PER_NODE: u32 = 3;
    let n = PER_NODE * cluster.nodes.len() as u32;
    let mut i = 0;
    for node in &cluster.nodes {
        for _ in 0..PER_NODE {
            let reply = send_message(node.ports.smtp, i)
                .await
                .with_context(|| format!("message {i} via node {}\n{}", node.id, logs(&cluster)))?;
            ensure!(reply.contains("queued as"), "{reply}");
            i += 1;
        }
    }
    target
        .wait_for_messages(n as usize, Duration::from_secs(60))
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", logs(&cluster)))?;

    // Delivered counters and queue gauges settle once every Delivered entry
    // committed and applied on every replica.
    let after = poll(Duration::from_secs(30), "metrics settle", || {
        let cluster = &cluster;
        let before = &before;
        async move {
            let after = scrape_all(cluster).await.ok()?;
            let delivered = sum_delta(before, &after, "relay_messages_delivered_total");
            let queue_empty = after.iter().all(|m| {
                ["queued", "deferred", "held"]
                    .iter()
                    .all(|s| value(m, &format!("relay_queue_messages{{state=\"{s}\"}}")) == 0.0)
            });
            (delivered >= f64::from(n) && queue_empty).then_some(after)
        }
    })
    .await
    .with_context(|| logs(&cluster))?;

    let accepted = sum_delta(&before, &after, "relay_messages_accepted_total");
    let delivered = sum_delta(&before, &after, "relay_messages_delivered_total");
    let commits = sum_delta(&before, &after, "relay_submit_commit_seconds_count");
    ensure!(
        accepted == f64::from(n),
        "accepted sum {accepted}, sent {n}"
    );
    ensure!(
        delivered == f64::from(n),
        "delivered sum {delivered}, sent {n}"
    );
    ensure!(
        commits == f64::from(n),
        "submit-commit samples {commits}, sent {n}"
    );
    for (id, (b, a)) in before.iter().zip(&after).enumerate() {
        let own =
            value(a, "relay_messages_accepted_total") - value(b, "relay_messages_accepted_total");
        ensure!(
            own == f64::from(PER_NODE),
            "node {} accepted {own}, expected {PER_NODE}",
            id + 1
        );
        ensure!(
            value(a, "relay_queue_oldest_message_age_seconds") == 0.0,
            "node {}: oldest age not 0 with an empty queue",
            id + 1
        );
    }
    let attempts = sum_delta(
        &before,
        &after,
        "relay_delivery_attempts_total{result=\"delivered\"}",
    );
    ensure!(attempts == f64::from(n), "delivered attempts {attempts}");
    let per_target = sum_delta(
        &before,
        &after,
        &format!(
            "relay_delivery_target_attempts_total{{target=\"{}\",result=\"delivered\"}}",
            target.target()
        ),
    );
    ensure!(
        per_target == f64::from(n),
        "attempts at the target {per_target}"
    );
    let end_to_end = sum_delta(&before, &after, "relay_message_delivery_seconds_count");
    ensure!(
        end_to_end == f64::from(n),
        "accept-to-delivered samples {end_to_end}"
    );
    let rejected: f64 = after
        .iter()
        .flat_map(|m| m.iter())
        .filter(|(k, _)| k.starts_with("relay_messages_rejected_total"))
        .map(|(_, v)| v)
        .sum();
    ensure!(rejected == 0.0, "no refusals expected, got {rejected}");
    ensure!(
        target.accepted_count() == u64::from(n),
        "target got extra copies"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_quorum_and_the_page_lights_a_killed_node_red() -> anyhow::Result<()> {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut cluster = ProcessCluster::start(ClusterOptions::default())?;
    let leader = cluster
        .wait_for_leader(Duration::from_secs(20), None)
        .await?;
    let followers: Vec<NodeId> = (1..=3).filter(|id| *id != leader).collect();
    let (f1, f2) = (followers[0], followers[1]);
    wait_all_ready(&cluster, &[1, 2, 3]).await?;
    let port = cluster.node(leader).ports.http;
    let (_, page) = http_get(port, "/").await?;
    ensure!(page.contains("ALL GREEN"), "{page}");
    ensure!(page.contains("http-equiv=\"refresh\""));

    // One follower down: the survivors keep a quorum and stay ready; the
    // page shows the dead node red and the tier degraded.
    cluster.kill(f1);
    let red1 = format!("id=\"node-{f1}\" data-light=\"red\"");
    let page = poll(Duration::from_secs(20), "killed node red", || {
        let red1 = &red1;
        async move {
            let (_, page) = http_get(port, "/").await.ok()?;
            page.contains(red1.as_str()).then_some(page)
        }
    })
    .await?;
    ensure!(page.contains("DEGRADED"), "{page}");
    wait_all_ready(&cluster, &[leader, f2]).await?;

    // The leader alone still calls itself leader (openraft 0.9 leaders do
    // not step down by themselves), but nobody acknowledges it any more:
    // it must turn unready, saying why in one line.
    cluster.kill(f2);
    let body = poll(
        Duration::from_secs(20),
        "cut-off leader unready",
        || async move {
            match http_get(port, "/readyz").await {
                Ok((503, body)) => Some(body),
                _ => None,
            }
        },
    )
    .await
    .with_context(|| logs(&cluster))?;
    ensure!(
        body.starts_with("not ready: leader without a quorum"),
        "{body}"
    );
    ensure!(body.lines().count() == 1, "one-line reason: {body}");
    let (code, page) = http_get(port, "/").await?;
    ensure!(code == 200);
    ensure!(
        page.contains(red1.as_str())
            && page.contains(&format!("id=\"node-{f2}\" data-light=\"red\"")),
        "{page}"
    );
    ensure!(
        page.contains("id=\"verdict\" data-light=\"red\""),
        "red verdict: {page}"
    );

    // Back to a quorum: ready again.
    cluster.start_node(f2)?;
    wait_all_ready(&cluster, &[leader, f2]).await?;
    let (code, health) = http_get(port, "/healthz").await?;
    ensure!(code == 200 && health == "ok\n");
    Ok(())
}

/// Chromium from Debian's `chromium` package, if installed.
fn chromium() -> Option<std::path::PathBuf> {
    ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_in_headless_chromium_shows_a_killed_node_red() -> anyhow::Result<()> {
    let Some(chromium) = chromium() else {
        println!(
            "SKIPPED status_page_in_headless_chromium_shows_a_killed_node_red: \
             no chromium on PATH (apt-get install chromium)"
        );
        return Ok(());
    };
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut cluster = ProcessCluster::start(ClusterOptions::default())?;
    cluster
        .wait_for_leader(Duration::from_secs(20), None)
        .await?;
    wait_all_ready(&cluster, &[1, 2, 3]).await?;
    cluster.kill(2);
    let port = cluster.node(1).ports.http;
    poll(Duration::from_secs(20), "node 2 red", || async move {
        let (_, page) = http_get(port, "/").await.ok()?;
        page.contains("id=\"node-2\" data-light=\"red\"")
            .then_some(())
    })
    .await?;

    let profile = tempfile::tempdir()?;
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(&chromium)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("http://127.0.0.1:{port}/"))
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("chromium did not finish")??;
    let dom = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success() && !dom.is_empty(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // What the browser built from the page: the rows, their lights and text.
    ensure!(
        dom.contains("id=\"node-2\" data-light=\"red\""),
        "node 2 not red: {dom}"
    );
    ensure!(dom.contains("unreachable"), "{dom}");
    ensure!(
        dom.contains("id=\"node-1\" data-light=\"green\"")
            && dom.contains("id=\"node-3\" data-light=\"green\""),
        "{dom}"
    );
    ensure!(dom.contains("DEGRADED"), "{dom}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_message_id_and_never_the_body() -> anyhow::Result<()> {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let target = TestTarget::start().await?;
    let mut cluster = ProcessCluster::start(ClusterOptions {
        routes: vec![(DOMAIN.to_string(), target.target())],
        ..Default::default()
    })?;
    cluster
        .wait_for_leader(Duration::from_secs(20), None)
        .await?;
    wait_all_ready(&cluster, &[1, 2, 3]).await?;

    // Restart node 2 with JSON logs; only what it writes from now on counts.
    cluster.kill(2);
    let skip = cluster.log(2).len();
    cluster.start_node_with_args(2, &["--log-format", "json"])?;
    wait_all_ready(&cluster, &[2]).await?;
    let port = cluster.node(2).ports.http;
    poll(
        Duration::from_secs(20),
        "route applied on node 2",
        || async move {
            let (_, page) = http_get(port, "/").await.ok()?;
            page.contains(DOMAIN).then_some(())
        },
    )
    .await?;

    // The body line is "message 4242"; the body marker must never be logged.
    let reply = send_message(cluster.node(2).ports.smtp, 4242).await?;
    let id = reply
        .split_whitespace()
        .last()
        .context("no id in the 250 reply")?
        .to_string();
    target
        .wait_for_messages(1, Duration::from_secs(30))
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", logs(&cluster)))?;
    // The Delivered entry has applied on node 2 (it accepted and owns the
    // message) once its queue is empty again: its log is then complete.
    poll(Duration::from_secs(20), "queue empty", || async move {
        let m = scrape(port).await.ok()?;
        (value(&m, "relay_queue_messages{state=\"queued\"}") == 0.0
            && value(&m, "relay_queue_messages{state=\"deferred\"}") == 0.0)
            .then_some(())
    })
    .await?;

    let log = cluster.log(2);
    let tail = &log[skip..];
    let mut accepted_with_id = false;
    for line in tail.lines().filter(|l| !l.trim().is_empty()) {
        let json: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("not a JSON log line: {line}"))?;
        ensure!(json.get("level").is_some(), "{line}");
        ensure!(
            !line.contains("message 4242"),
            "a body line was logged: {line}"
        );
        if json["fields"]["message"] == "message accepted" && line.contains(&id) {
            accepted_with_id = true;
            // The delivery log's acceptance line: its fields as JSON keys.
            let f = &json["fields"];
            ensure!(json["target"] == "maillog", "{line}");
            ensure!(f["queue_id"] == id.as_str(), "{line}");
            ensure!(f["from"] == "<sender@client.test>", "{line}");
            ensure!(f["nrcpt"] == 1 && f["size"].as_u64().is_some(), "{line}");
            ensure!(f["client"] == "unknown[127.0.0.1]", "{line}");
        }
    }
    ensure!(
        accepted_with_id,
        "no 'message accepted' line with id {id} in:\n{tail}"
    );
    // The delivery line of the owner (node 2 accepted, so it delivers),
    // logged once the Delivered entry committed.
    let sent = poll(Duration::from_secs(10), "a maillog sent line", || {
        let log = cluster.log(2);
        let id = id.clone();
        async move {
            log[skip..]
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|j| {
                    j["target"] == "maillog"
                        && j["fields"]["to"].is_string()
                        && j["fields"]["queue_id"] == id.as_str()
                })
        }
    })
    .await?;
    let f = &sent["fields"];
    ensure!(
        f["status"]
            .as_str()
            .is_some_and(|s| s.starts_with("sent (250")),
        "{sent}"
    );
    ensure!(f["dsn"] == "2.0.0", "{sent}");
    for key in ["relay", "delay", "delays"] {
        ensure!(f[key].is_string(), "{key} missing: {sent}");
    }
    Ok(())
}

/// Group commit: messages whose final dots arrive together at the
/// leader share log entries. The leader's `relay_raft_entry_commands`
/// histogram must show an entry that carried more than one command, its
/// sum must count every command, and the leader must have made more than
/// one command durable per log-append fsync. Every message still arrives
/// exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_messages_share_log_entries_on_the_leader() -> anyhow::Result<()> {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let target = TestTarget::start().await?;
    let cluster = ProcessCluster::start(ClusterOptions {
        routes: vec![(DOMAIN.to_string(), target.target())],
        ..Default::default()
    })?;
    let leader = cluster
        .wait_for_leader(Duration::from_secs(20), None)
        .await?;
    wait_all_ready(&cluster, &[1, 2, 3]).await?;
    let port = cluster.node(leader).ports.http;
    poll(Duration::from_secs(20), "route applied", || async move {
        let (_, page) = http_get(port, "/").await.ok()?;
        page.contains(DOMAIN).then_some(())
    })
    .await?;

    let before = scrape(port).await?;
    const SESSIONS: u32 = 40;
    let smtp = cluster.node(leader).ports.smtp;
    let sessions: Vec<_> = (0..SESSIONS)
        .map(|n| tokio::spawn(send_message(smtp, 1000 + n)))
        .collect();
    for session in sessions {
        let reply = session.await??;
        ensure!(reply.contains("queued as"), "{reply}");
    }
    target
        .wait_for_messages(SESSIONS as usize, Duration::from_secs(60))
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", logs(&cluster)))?;
    // Every Delivered entry has applied on the leader once its queue is
    // empty again.
    let after = poll(Duration::from_secs(30), "queue empty", || async move {
        let m = scrape(port).await.ok()?;
        (value(&m, "relay_queue_messages{state=\"queued\"}") == 0.0
            && value(&m, "relay_queue_messages{state=\"deferred\"}") == 0.0)
            .then_some(m)
    })
    .await?;

    let delta = |series: &str| value(&after, series) - value(&before, series);
    let commands = delta("relay_raft_entry_commands_sum");
    let entries = delta("relay_raft_entry_commands_count");
    let single = delta("relay_raft_entry_commands_bucket{le=\"1\"}");
    let append_fsyncs = delta("relay_raft_log_fsyncs_total{op=\"append\"}");
    // One Enqueue and one Delivered per message.
    ensure!(
        commands == f64::from(2 * SESSIONS),
        "commands applied {commands}, expected {}",
        2 * SESSIONS
    );
    ensure!(
        single < entries,
        "no entry carried more than one command ({entries} entries, all single)"
    );
    ensure!(
        append_fsyncs < commands,
        "leader fsynced its log {append_fsyncs} times for {commands} commands"
    );
    ensure!(
        target.accepted_count() == u64::from(SESSIONS),
        "target got {} copies of {SESSIONS} messages",
        target.accepted_count()
    );
    Ok(())
}

/// Every instrument is on `/metrics` from the first scrape of a node that
/// has seen no mail: histograms with zero counts, labelled counters at 0
/// for each label value known in advance. (A series that appears only with
/// its first event hides that event from `rate()`, and alerts over it see
/// nothing on a healthy idle tier.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instrument_is_on_the_first_scrape() -> anyhow::Result<()> {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = ProcessCluster::start(ClusterOptions::default())?;
    let port = cluster.node(2).ports.http;
    let first = poll(Duration::from_secs(20), "a first scrape", || async move {
        scrape(port).await.ok()
    })
    .await?;
    let expected = [
        "relay_submit_commit_seconds_count",
        "relay_submit_commit_seconds_sum",
        "relay_submit_commit_seconds_bucket{le=\"0.001\"}",
        "relay_submit_failures_total{reason=\"no_quorum\"}",
        "relay_submit_failures_total{reason=\"timeout\"}",
        "relay_delivery_attempt_seconds_count",
        "relay_message_delivery_seconds_count",
        "relay_delivery_attempts_total{result=\"delivered\"}",
        "relay_delivery_attempts_total{result=\"deferred\"}",
        "relay_delivery_attempts_total{result=\"bounced\"}",
        "relay_delivery_recipients_total{outcome=\"failed\"}",
        "relay_delivery_report_failures_total{reason=\"no_leader\"}",
        "relay_delivery_reports_rejected_total{reason=\"not_owner\"}",
        "relay_delivery_in_flight",
        "relay_delivery_damaged_bodies_total{kind=\"checksum_mismatch\",result=\"fetched\"}",
        "relay_delivery_damaged_bodies_total{kind=\"read_error\",result=\"unavailable\"}",
        "relay_bounces_total",
        "relay_messages_accepted_total",
        "relay_messages_accepted_bytes_total",
        "relay_smtp_connections_total{result=\"accepted\"}",
        "relay_smtp_sessions_active",
        "relay_smtp_auth_failures_total",
        "relay_raft_append_batch_entries_count",
        "relay_raft_entry_commands_count",
        "relay_raft_log_fsyncs_total{op=\"truncate\"}",
        "relay_raft_log_fsync_seconds_count",
        "relay_takeovers_total",
        "relay_messages_reassigned_total",
        "relay_tls_reloads_total{result=\"error\"}",
        "relay_queue_messages{state=\"held\"}",
    ];
    let missing: Vec<&str> = expected
        .iter()
        .copied()
        .filter(|s| !first.contains_key(*s))
        .collect();
    ensure!(
        missing.is_empty(),
        "missing from the first scrape: {missing:?}\n{first:#?}"
    );
    // Nothing was submitted: the series exist with zero values.
    for series in [
        "relay_submit_commit_seconds_count",
        "relay_delivery_attempt_seconds_count",
        "relay_delivery_attempts_total{result=\"bounced\"}",
        "relay_messages_accepted_total",
    ] {
        ensure!(
            value(&first, series) == 0.0,
            "{series} = {}",
            value(&first, series)
        );
    }
    Ok(())
}
