//! `relayctl` against three real `relayd` processes and real SMTP targets:
//! every command runs through the binary and is checked on its `--json`
//! output and on its effect (what the targets receive, what each node's
//! replica holds).

use std::time::Duration;

use relay_testkit::{Behaviour, Reply, TestTarget};
use relay_tests::{ClusterOptions, ProcessCluster};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::Instant;

const WITHIN: Duration = Duration::from_secs(30);

/// Polls `probe` every 200 ms until it yields a value or `within` passes.
async fn poll<T>(within: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

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

/// Like [`ctl`], but the command must succeed; its JSON.
fn ctl_ok(cluster: &ProcessCluster, id: u64, args: &[&str]) -> Value {
    let (code, json, stderr) = ctl(cluster, id, args);
    assert_eq!(code, 0, "relayctl {args:?} on node {id} failed: {stderr}");
    json
}

/// Reads one SMTP reply (all lines); its code and last line.
async fn smtp_reply(reader: &mut BufReader<TcpStream>) -> (u16, String) {
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).await.expect("read reply");
        assert!(n > 0, "SMTP connection closed");
        let code: u16 = line[..3].parse().expect("reply code");
        if line.as_bytes().get(3) != Some(&b'-') {
            return (code, line.trim_end().to_string());
        }
    }
}

/// Sends one message over SMTP to `port`; its queue id.
async fn smtp_send(port: u16, from: &str, to: &str, subject: &str) -> String {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect SMTP");
    let mut r = BufReader::new(stream);
    assert_eq!(smtp_reply(&mut r).await.0, 220);
    for (command, want) in [
        ("EHLO client.test".to_string(), 250),
        (format!("MAIL FROM:<{from}>"), 250),
        (format!("RCPT TO:<{to}>"), 250),
        ("DATA".to_string(), 354),
    ] {
        r.get_mut()
            .write_all(format!("{command}\r\n").as_bytes())
            .await
            .unwrap();
        let (code, line) = smtp_reply(&mut r).await;
        assert_eq!(code, want, "{command} -> {line}");
    }
    let body = format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n\r\n{subject} body\r\n.\r\n"
    );
    r.get_mut().write_all(body.as_bytes()).await.unwrap();
    let (code, line) = smtp_reply(&mut r).await;
    assert_eq!(code, 250, "DATA -> {line}");
    let _ = r.get_mut().write_all(b"QUIT\r\n").await;
    line.rsplit(' ').next().expect("queue id").to_string()
}

/// Waits until every node answers relayctl and sees a leader and all three
/// nodes; the last answer if not within `within`, at once if a node lost a
/// port (see `cluster_with`).
async fn all_nodes_up(cluster: &ProcessCluster, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    for node in 1..=3 {
        loop {
            let (code, json, stderr) = ctl(cluster, node, &["status"]);
            let all_up = json["nodes"]
                .as_array()
                .is_some_and(|n| n.len() == 3 && n.iter().all(|n| n["reachable"] == true));
            if code == 0 && json["leader"].is_u64() && all_up {
                break;
            }
            let port_lost = (1..=3).any(|n| cluster.log(n).contains("Address already in use"));
            if port_lost || Instant::now() >= deadline {
                return Err(format!("node {node}: {stderr} {json}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// A cluster with `routes` and `min_backoff`, once every node is up, sees
/// the leader, and has the seeded routes.
///
/// The harness picks ports by binding port 0 and releasing them, so with
/// several clusters starting at once a node can lose a port to another
/// process ("Address already in use"); such a start is thrown away and
/// retried (the race is the harness's, not what these tests check).
async fn cluster_with(routes: Vec<(String, String)>, min_backoff: &str) -> ProcessCluster {
    let mut attempt = 0;
    let cluster = loop {
        attempt += 1;
        let cluster = ProcessCluster::start(ClusterOptions {
            routes: routes.clone(),
            min_backoff: min_backoff.into(),
            ..Default::default()
        })
        .expect("start cluster");
        match all_nodes_up(&cluster, WITHIN).await {
            Ok(()) => break cluster,
            Err(last) => {
                let logs: Vec<String> = (1..=3).map(|n| cluster.log(n)).collect();
                let port_lost = logs.iter().any(|l| l.contains("Address already in use"));
                assert!(
                    port_lost && attempt < 3,
                    "cluster never came up: {last}\n--- node 1 log:\n{}\n--- node 2 log:\n{}\n--- node 3 log:\n{}",
                    logs[0],
                    logs[1],
                    logs[2]
                );
                eprintln!("a node lost its port to another process; starting a fresh cluster");
            }
        }
    };
    // Each node accepts mail for a domain once its own replica has the route.
    for (domain, node) in routes.iter().flat_map(|(d, _)| [(d, 1), (d, 2), (d, 3)]) {
        poll(WITHIN, "seeded routes on every node", || {
            let (code, json, _) = ctl(&cluster, node, &["route", "list"]);
            (code == 0
                && json["routes"]
                    .as_array()?
                    .iter()
                    .any(|r| r["domain"] == domain.as_str()))
            .then_some(())
        })
        .await;
    }
    cluster
}

/// The message with `id` in node `node`'s `queue list --json`.
fn listed(cluster: &ProcessCluster, node: u64, id: &str) -> Option<Value> {
    let json = ctl_ok(cluster, node, &["queue", "list"]);
    json["messages"]
        .as_array()?
        .iter()
        .find(|m| m["id"] == id)
        .cloned()
}

fn kinds(trace: &Value) -> Vec<String> {
    trace["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hold_release_flush_delete_and_trace_through_relayctl() {
    let target = TestTarget::start().await.expect("target");
    target.set_behaviour(Behaviour::RejectRcpt(Reply::temporary()));
    let cluster = cluster_with(vec![("hold.test".into(), target.target())], "300s").await;
    let smtp = cluster.node(1).ports.smtp;

    let a = smtp_send(smtp, "alice@sender.test", "a@hold.test", "held one").await;
    let b = smtp_send(smtp, "bob@sender.test", "b@hold.test", "flushed one").await;
    // Both are tried once and deferred by the target's 451.
    for id in [&a, &b] {
        poll(WITHIN, "first deferral", || {
            let m = listed(&cluster, 1, id)?;
            (m["state"] == "deferred").then_some(())
        })
        .await;
    }

    // Usage errors exit 2 before anything is sent.
    let (code, _, stderr) = ctl(&cluster, 1, &["queue", "hold"]);
    assert_eq!(code, 2, "hold without ids: {stderr}");
    let (code, _, _) = ctl(&cluster, 1, &["queue", "show", "not-an-id"]);
    assert_eq!(code, 2);
    // Even with no node to ask.
    let out = std::process::Command::new(relay_tests::bin_path("relayctl"))
        .args([
            "--addr",
            "127.0.0.1:1",
            "queue",
            "delete",
            &a,
            "--to",
            "x.test",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "filters without --all");
    let out = std::process::Command::new(relay_tests::bin_path("relayctl"))
        .args(["--addr", "127.0.0.1:1", "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "nothing listens on port 1");

    // Hold A through a follower-or-leader node 2: writes are forwarded.
    let held = ctl_ok(
        &cluster,
        2,
        &[
            "queue",
            "hold",
            &a,
            "--reason",
            "maintenance",
            "--by",
            "ops",
        ],
    );
    assert_eq!(held["affected"], 1);
    let show = ctl_ok(&cluster, 1, &["queue", "show", &a]);
    assert_eq!(show["state"], "held");
    assert_eq!(show["held"]["by"], "ops");
    assert_eq!(show["held"]["reason"], "maintenance");
    assert_eq!(show["recipients"][0]["status"], "pending");
    assert!(
        show["recipients"][0]["reply"]
            .as_str()
            .unwrap()
            .contains("451"),
        "{show}"
    );
    let held_list = ctl_ok(&cluster, 1, &["queue", "list", "--state", "held"]);
    let held_ids: Vec<&str> = held_list["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(held_ids, vec![a.as_str()]);
    let to_list = ctl_ok(&cluster, 1, &["queue", "list", "--to", "hold.test"]);
    assert_eq!(to_list["messages"].as_array().unwrap().len(), 2);

    // The target recovers; flush --all retries everything not held: B
    // arrives and, by then, A (held) has not.
    target.set_behaviour(Behaviour::AcceptAll);
    let flushed = ctl_ok(&cluster, 1, &["queue", "flush", "--all", "--yes"]);
    assert_eq!(flushed["affected"], 1, "held messages are not flushed");
    let got = target
        .wait_for_messages(1, WITHIN)
        .await
        .expect("B delivered");
    assert_eq!(got[0].rcpt_to, vec!["b@hold.test".to_string()]);
    assert_eq!(
        listed(&cluster, 1, &a).expect("A still queued")["state"],
        "held"
    );

    // Release: A goes now.
    let released = ctl_ok(&cluster, 3, &["queue", "release", &a, "--reason", "done"]);
    assert_eq!(released["affected"], 1);
    let got = target
        .wait_for_messages(2, WITHIN)
        .await
        .expect("A delivered");
    assert!(
        got.iter()
            .any(|m| m.rcpt_to == vec!["a@hold.test".to_string()])
    );

    // Trace of A: accepted, the 451 attempt, held, released, delivered 250;
    // every node keeps the same history.
    let trace = poll(WITHIN, "A's trace to end in delivery", || {
        let t = ctl_ok(&cluster, 1, &["trace", &a]);
        (t["queued"] == false).then_some(t)
    })
    .await;
    assert_eq!(
        kinds(&trace),
        vec!["accepted", "attempt", "held", "released", "delivered"],
        "{trace}"
    );
    let events = trace["events"].as_array().unwrap();
    assert!(
        events[1]["what"].as_str().unwrap().contains("451"),
        "{trace}"
    );
    assert!(
        events[4]["what"].as_str().unwrap().contains("250"),
        "{trace}"
    );
    assert_eq!(events[2]["by"], "ops");
    let indexes: Vec<u64> = events
        .iter()
        .map(|e| e["index"].as_u64().unwrap())
        .collect();
    assert!(indexes.windows(2).all(|w| w[0] <= w[1]), "log order");
    for node in [2, 3] {
        let other = poll(WITHIN, "trace replicated", || {
            let t = ctl_ok(&cluster, node, &["trace", &a]);
            (kinds(&t).len() == 5).then_some(t)
        })
        .await;
        assert_eq!(other["events"], trace["events"], "node {node}");
    }

    // B's trace: accepted, the 451 attempt, retry now (flush), delivered.
    let trace_b = ctl_ok(&cluster, 2, &["trace", &b]);
    assert_eq!(
        kinds(&trace_b),
        vec!["accepted", "attempt", "retry", "delivered"],
        "{trace_b}"
    );

    // Delete: C is deferred, deleted, and gone from every replica.
    target.set_behaviour(Behaviour::RejectRcpt(Reply::temporary()));
    let c = smtp_send(smtp, "carol@sender.test", "c@hold.test", "deleted one").await;
    poll(WITHIN, "C deferred", || {
        (listed(&cluster, 1, &c)?["state"] == "deferred").then_some(())
    })
    .await;
    let deleted = ctl_ok(
        &cluster,
        1,
        &["queue", "delete", &c, "--reason", "spam", "--by", "ops"],
    );
    assert_eq!(deleted["affected"], 1);
    for node in [1, 2, 3] {
        poll(WITHIN, "C gone on every node", || {
            let s = node_status(&cluster, node)?;
            let q = &s["queue"];
            (q["queued"] == 0 && q["deferred"] == 0 && q["held"] == 0).then_some(())
        })
        .await;
        let (code, _, stderr) = ctl(&cluster, node, &["queue", "show", &c]);
        assert_eq!(code, 1, "node {node}: {stderr}");
        assert!(stderr.contains("not queued"), "{stderr}");
        let t = ctl_ok(&cluster, node, &["trace", &c]);
        assert_eq!(kinds(&t).last().map(String::as_str), Some("deleted"));
        assert_eq!(t["events"].as_array().unwrap().last().unwrap()["by"], "ops");
    }
    // Deleting it again changes nothing: exit 1 for scripts.
    let (code, json, _) = ctl(&cluster, 1, &["queue", "delete", &c]);
    assert_eq!((code, &json["affected"]), (1, &Value::from(0)));
    assert_eq!(target.accepted_count(), 2, "C was never delivered");
}

/// `relayctl status --json` of node `node`, answered by that node (its own
/// replica's counts).
fn node_status(cluster: &ProcessCluster, node: u64) -> Option<Value> {
    let (code, json, _) = ctl(cluster, node, &["status"]);
    (code == 0).then_some(json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn route_change_sends_the_backlog_to_the_new_target() {
    let old = TestTarget::start().await.expect("old target");
    old.set_behaviour(Behaviour::RejectRcpt(Reply::temporary()));
    let new = TestTarget::start().await.expect("new target");
    let cluster = cluster_with(vec![("route.test".into(), old.target())], "300s").await;
    let smtp = cluster.node(2).ports.smtp;

    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(
            smtp_send(
                smtp,
                "s@sender.test",
                &format!("r{n}@route.test"),
                "backlog",
            )
            .await,
        );
    }
    for id in &ids {
        poll(WITHIN, "backlog deferred at the old target", || {
            (listed(&cluster, 1, id)?["state"] == "deferred").then_some(())
        })
        .await;
    }
    // Node 3's replica may apply the attempts a moment after node 1's.
    poll(WITHIN, "node 3 to list the deferred backlog", || {
        let deferred = ctl_ok(&cluster, 3, &["queue", "list", "--state", "deferred"]);
        (deferred["messages"].as_array()?.len() == 3).then_some(())
    })
    .await;

    // Listing filters, all evaluated on node 3's replica.
    let count = |args: &[&str]| {
        let mut all = vec!["queue", "list"];
        all.extend_from_slice(args);
        let json = ctl_ok(&cluster, 3, &all);
        (
            json["messages"].as_array().unwrap().len(),
            json["truncated"].as_bool().unwrap(),
        )
    };
    assert_eq!(count(&["--from", "S@Sender.test"]), (3, false));
    assert_eq!(count(&["--from", "other@sender.test"]), (0, false));
    assert_eq!(count(&["--to", "elsewhere.test"]), (0, false));
    assert_eq!(count(&["--limit", "2"]), (2, true));
    assert_eq!(count(&["--older-than", "1h"]), (0, false));
    assert_eq!(count(&["--older-than", "0s", "--owner", "2"]), (3, false));
    assert_eq!(count(&["--owner", "1"]), (0, false));
    // A state filter the log cannot express (queued vs deferred) is
    // resolved to ids by the node; none are merely queued.
    let none = ctl_ok(
        &cluster,
        1,
        &["queue", "flush", "--all", "--yes", "--state", "queued"],
    );
    assert_eq!(none["affected"], 0);

    let new_target = new.target();
    let set = ctl_ok(
        &cluster,
        3,
        &["route", "set", "Route.Test.", &new_target, "--tls", "none"],
    );
    assert_eq!(set["domain"], "route.test");
    assert_eq!(set["flushed"], 3);
    let got = new
        .wait_for_messages(3, WITHIN)
        .await
        .expect("backlog at the new target");
    assert_eq!(got.len(), 3);
    assert_eq!(old.accepted_count(), 0);

    for node in [1, 2, 3] {
        let routes = poll(WITHIN, "route replicated", || {
            let r = ctl_ok(&cluster, node, &["route", "list"]);
            let route = r["routes"]
                .as_array()?
                .iter()
                .find(|r| r["domain"] == "route.test")?
                .clone();
            (route["targets"][0] == new_target.as_str()).then_some(route)
        })
        .await;
        assert_eq!(routes["tls"], "none");
        assert_eq!(routes["concurrency"], Value::Null);
        assert_eq!(routes["rate"], Value::Null);
    }

    // Shaping travels with the route to every node (all of them read
    // format 2, so the admin service proposes it).
    let shaped = ctl_ok(
        &cluster,
        2,
        &[
            "route",
            "set",
            "route.test",
            &new_target,
            "--tls",
            "none",
            "--concurrency",
            "6",
            "--rate",
            "20/s",
        ],
    );
    assert_eq!(shaped["concurrency"], 6);
    assert_eq!(shaped["rate"], "20/s");
    for node in [1, 2, 3] {
        poll(WITHIN, "shaping replicated", || {
            let r = ctl_ok(&cluster, node, &["route", "list"]);
            let route = r["routes"]
                .as_array()?
                .iter()
                .find(|r| r["domain"] == "route.test")?
                .clone();
            (route["concurrency"] == 6 && route["rate"] == "20/s").then_some(())
        })
        .await;
    }
    let table = cluster.relayctl(1, &["route", "list"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("CONCURRENCY") && table.contains("20/s"),
        "{table}"
    );
    let (code, _, stderr) = ctl(
        &cluster,
        1,
        &["route", "set", "route.test", &new_target, "--rate", "fast"],
    );
    assert_eq!(code, 2, "a bad rate is a usage error: {stderr}");
    assert!(stderr.contains("invalid rate"), "{stderr}");
    // `route set` replaces the whole route: without the flags, no shaping.
    ctl_ok(&cluster, 3, &["route", "set", "route.test", &new_target]);
    poll(WITHIN, "shaping cleared", || {
        let r = ctl_ok(&cluster, 1, &["route", "list"]);
        let route = r["routes"]
            .as_array()?
            .iter()
            .find(|r| r["domain"] == "route.test")?
            .clone();
        (route["concurrency"].is_null() && route["rate"].is_null()).then_some(())
    })
    .await;

    let removed = ctl_ok(&cluster, 1, &["route", "remove", "route.test"]);
    assert_eq!(removed["removed"], true);
    let (code, _, stderr) = ctl(&cluster, 1, &["route", "remove", "route.test"]);
    assert_eq!(code, 1, "removing a missing route fails: {stderr}");
    let (code, _, stderr) = ctl(&cluster, 1, &["route", "set", "x.test", "no-port:"]);
    assert_eq!(code, 2, "a bad target is a usage error: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failover_moves_leadership_and_members_are_listed() {
    let cluster = cluster_with(Vec::new(), "300s").await;
    let leader = cluster.wait_for_leader(WITHIN, None).await.unwrap();

    // cluster_with waited for every node to see this leader.
    let members = ctl_ok(&cluster, 1, &["member", "list"]);
    assert_eq!(members["leader"], leader);
    let list = members["members"].as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert!(
        list.iter()
            .all(|m| m["voter"] == true && m["reachable"] == true)
    );

    // Any other voter, asked through a node that is not the leader.
    let via = if leader == 1 { 2 } else { 1 };
    let moved = ctl_ok(&cluster, via, &["failover"]);
    assert_eq!(moved["previous_leader"], leader);
    let new_leader = moved["leader"].as_u64().unwrap();
    assert_ne!(new_leader, leader);
    let seen = cluster.wait_for_leader(WITHIN, Some(leader)).await.unwrap();
    assert_eq!(seen, new_leader);

    // And back, by name.
    let back = ctl_ok(&cluster, via, &["failover", "--to", &leader.to_string()]);
    assert_eq!(back["leader"], leader);
    assert_eq!(
        cluster
            .wait_for_leader(WITHIN, Some(new_leader))
            .await
            .unwrap(),
        leader
    );

    // The cluster still commits after two transfers.
    let routes = ctl_ok(
        &cluster,
        via,
        &["route", "set", "after.test", "127.0.0.1:2600"],
    );
    assert_eq!(routes["domain"], "after.test");

    let (code, _, stderr) = ctl(&cluster, 1, &["failover", "--to", "9"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("node 9"), "{stderr}");

    // Wrong token: refused, exit 3, and the message says what to fix.
    let out = std::process::Command::new(relay_tests::bin_path("relayctl"))
        .args([
            "--addr",
            &format!("127.0.0.1:{}", cluster.node(1).ports.admin),
        ])
        .args(["--token", "wrong", "member", "list"])
        .env_remove("RELAYCTL_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("token"));
}

fn red_checks(drill: &Value) -> Vec<(String, u64)> {
    drill["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| {
            (
                c["check"].as_str().unwrap().to_string(),
                c["node"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drill_is_green_when_healthy_and_names_what_is_red() {
    let target = TestTarget::start().await.expect("target");
    let cluster = cluster_with(vec![("drill.test".into(), target.target())], "300s").await;
    smtp_send(
        cluster.node(1).ports.smtp,
        "s@sender.test",
        "d@drill.test",
        "drill",
    )
    .await;
    target
        .wait_for_messages(1, WITHIN)
        .await
        .expect("delivered");

    let drill = poll(WITHIN, "a green drill", || {
        let (code, json, _) = ctl(&cluster, 1, &["drill"]);
        (code == 0).then_some(json)
    })
    .await;
    assert_eq!(drill["ok"], true);
    for check in [
        "reachable",
        "replication",
        "state_checksum",
        "config_digest",
        "smtp_target",
    ] {
        let nodes: Vec<u64> = drill["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["check"] == check)
            .map(|c| c["node"].as_u64().unwrap())
            .collect();
        assert_eq!(nodes, vec![1, 2, 3], "{check} on every node: {drill}");
    }

    // --transfer moves leadership to each other voter and back.
    let leader = cluster.wait_for_leader(WITHIN, None).await.unwrap();
    let drill = ctl_ok(&cluster, 2, &["drill", "--transfer"]);
    let transfers: Vec<u64> = drill["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["check"] == "transfer" && c["ok"] == true)
        .map(|c| c["node"].as_u64().unwrap())
        .collect();
    assert_eq!(transfers.len(), 3, "{drill}");
    assert_eq!(transfers.last(), Some(&leader), "leadership comes back");
    assert_eq!(cluster.wait_for_leader(WITHIN, None).await.unwrap(), leader);

    // A snapshot on demand (entries were applied since start).
    let snap = ctl_ok(&cluster, 1, &["snapshot"]);
    assert!(
        snap["index"].as_u64().unwrap() > snap["previous_index"].as_u64().unwrap(),
        "{snap}"
    );

    // The route target goes away: every node's SMTP check is red.
    target.shutdown().await;
    let (code, drill, stderr) = ctl(&cluster, 1, &["drill"]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(drill["ok"], false);
    assert_eq!(
        red_checks(&drill),
        vec![
            ("smtp_target".to_string(), 1),
            ("smtp_target".to_string(), 2),
            ("smtp_target".to_string(), 3)
        ]
    );
    assert!(stderr.contains("smtp_target on node 2"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drill_names_a_down_node_and_a_node_with_other_settings() {
    let mut cluster = cluster_with(Vec::new(), "300s").await;
    poll(WITHIN, "a green drill", || {
        (ctl(&cluster, 1, &["drill"]).0 == 0).then_some(())
    })
    .await;
    let leader = cluster.wait_for_leader(WITHIN, None).await.unwrap();
    // Kill a follower other than node 1, and ask node 1.
    let victim = if leader == 3 { 2 } else { 3 };
    let asked = 1;
    cluster.kill(victim);
    let (code, drill, stderr) = ctl(&cluster, asked, &["drill"]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(drill["ok"], false);
    assert_eq!(red_checks(&drill), vec![("reachable".to_string(), victim)]);
    assert!(
        stderr.contains(&format!("reachable on node {victim}")),
        "{stderr}"
    );

    // The node comes back with a different retry setting: reachable and in
    // sync again, but its settings digest differs from the leader's.
    let config = cluster.node(victim).config.clone();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("min_backoff = \"300s\"", "min_backoff = \"301s\""),
    )
    .unwrap();
    cluster.start_node(victim).unwrap();
    let drill = poll(WITHIN, "only the settings digest red", || {
        let (code, json, _) = ctl(&cluster, asked, &["drill"]);
        (code == 1 && red_checks(&json) == vec![("config_digest".to_string(), victim)])
            .then_some(json)
    })
    .await;
    assert_eq!(drill["ok"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn member_remove_add_and_promote_through_relayctl() {
    let cluster = cluster_with(Vec::new(), "300s").await;
    let leader = cluster.wait_for_leader(WITHIN, None).await.unwrap();
    // A follower other than node 1; node 1 is asked.
    let victim = if leader == 3 { 2 } else { 3 };
    let asked = 1;

    let removed = ctl_ok(&cluster, asked, &["member", "remove", &victim.to_string()]);
    assert!(
        !removed["voters"]
            .as_array()
            .unwrap()
            .contains(&victim.into()),
        "{removed}"
    );
    let (code, _, stderr) = ctl(&cluster, asked, &["member", "promote", &victim.to_string()]);
    assert_eq!(code, 1, "promoting a non-member fails: {stderr}");

    let raft_addr = format!("127.0.0.1:{}", cluster.node(victim).ports.raft);
    let added = ctl_ok(
        &cluster,
        asked,
        &["member", "add", &victim.to_string(), &raft_addr],
    );
    assert!(
        added["learners"]
            .as_array()
            .unwrap()
            .contains(&victim.into()),
        "{added}"
    );
    let promoted = poll(WITHIN, "promotion", || {
        let (code, json, _) = ctl(&cluster, asked, &["member", "promote", &victim.to_string()]);
        (code == 0).then_some(json)
    })
    .await;
    assert_eq!(
        promoted["voters"].as_array().unwrap().len(),
        3,
        "{promoted}"
    );
    assert!(promoted["learners"].as_array().unwrap().is_empty());

    // The re-added voter replicates new entries like the others.
    ctl_ok(
        &cluster,
        asked,
        &["route", "set", "member.test", "127.0.0.1:2600"],
    );
    let list = poll(WITHIN, "three reachable voters", || {
        let m = ctl_ok(&cluster, asked, &["member", "list"]);
        m["members"]
            .as_array()?
            .iter()
            .all(|m| m["voter"] == true && m["reachable"] == true)
            .then_some(m)
    })
    .await;
    assert_eq!(list["members"].as_array().unwrap().len(), 3);
    cluster
        .wait_converged(WITHIN, 0)
        .await
        .expect("all three replicas equal");
}

/// Runs relayctl with `--addr addrs` (a comma-separated list) and `--json`;
/// (exit code, parsed stdout, stderr).
fn ctl_at(cluster: &ProcessCluster, addrs: &str, args: &[&str]) -> (i32, Value, String) {
    let out = std::process::Command::new(relay_tests::bin_path("relayctl"))
        .args(["--addr", addrs, "--token", &cluster.token, "--json"])
        .args(args)
        .env_remove("RELAYCTL_ADDR")
        .env_remove("RELAYCTL_TOKEN")
        .output()
        .expect("run relayctl");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), json, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_exit_codes_address_fallback_and_a_closed_pipe() {
    let mut cluster = cluster_with(vec![("pipe.test".into(), "127.0.0.1:9".into())], "300s").await;
    let addrs: Vec<String> = (1..=3)
        .map(|id| format!("127.0.0.1:{}", cluster.node(id).ports.admin))
        .collect();
    let admin = |id: u64| addrs[id as usize - 1].clone();
    let (code, json, stderr) = ctl(&cluster, 1, &["status"]);
    assert_eq!(
        (code, json["verdict"].as_str()),
        (0, Some("ok")),
        "{stderr}"
    );

    // The reader closes its end before relayctl writes (like `grep -q`
    // that has found its line): no panic, nothing on stderr, status 0.
    for args in [&["--json", "route", "list"][..], &["route", "list"][..]] {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = std::process::Command::new(relay_tests::bin_path("relayctl"))
            .args(["--addr", &admin(1), "--token", &cluster.token])
            .args(args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .expect("run relayctl");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.is_empty(), "{args:?}: stderr {stderr:?}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    }

    // Node 1 goes down: a list naming it first falls through to node 2,
    // which reports the cluster degraded (exit 4).
    cluster.kill(1);
    let list = format!("{},{}", admin(1), admin(2));
    let json = poll(WITHIN, "status degraded through the second address", || {
        let (code, json, _) = ctl_at(&cluster, &list, &["status"]);
        (code == 4).then_some(json)
    })
    .await;
    assert_eq!(json["verdict"], "degraded", "{json}");
    assert_eq!(json["answered_by"], 2, "{json}");
    // The same list through RELAYCTL_ADDR, with spaces after the commas.
    let out = std::process::Command::new(relay_tests::bin_path("relayctl"))
        .args(["--token", &cluster.token, "--json", "route", "list"])
        .env("RELAYCTL_ADDR", format!("{}, {}", admin(1), admin(3)))
        .output()
        .expect("run relayctl");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let routes: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(routes["routes"][0]["domain"], "pipe.test");

    // Node 2 too: node 3 alone has no quorum, status says down (exit 5).
    cluster.kill(2);
    let all = format!("{},{},{}", admin(1), admin(2), admin(3));
    let json = poll(WITHIN, "status down", || {
        let (code, json, _) = ctl_at(&cluster, &all, &["status"]);
        (code == 5).then_some(json)
    })
    .await;
    assert_eq!(json["verdict"], "down", "{json}");
    assert_eq!(json["answered_by"], 3, "{json}");

    // Nobody answers: exit 3, and the message names every address tried.
    cluster.kill(3);
    let (code, _, stderr) = ctl_at(&cluster, &all, &["status"]);
    assert_eq!(code, 3, "{stderr}");
    for id in 1..=3 {
        assert!(stderr.contains(&admin(id)), "{stderr}");
    }
}

/// The ids in a `--json` answer's `messages`, sorted.
fn ids_of(json: &Value) -> Vec<String> {
    let mut ids: Vec<String> = json["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queue_selectors_summary_headers_and_dry_runs() {
    let target = TestTarget::start().await.expect("target");
    target.set_behaviour(Behaviour::RejectRcpt(Reply::temporary()));
    let cluster = cluster_with(
        vec![
            ("a.test".into(), target.target()),
            ("b.test".into(), target.target()),
        ],
        "300s",
    )
    .await;
    let smtp = cluster.node(1).ports.smtp;
    let mut a = vec![
        smtp_send(smtp, "x@sender.test", "one@a.test", "first a").await,
        smtp_send(smtp, "x@sender.test", "two@a.test", "second a").await,
    ];
    a.sort();
    let b = smtp_send(smtp, "y@sender.test", "one@b.test", "only b").await;
    poll(WITHIN, "all three deferred on node 2", || {
        let json = ctl_ok(&cluster, 2, &["queue", "list", "--state", "deferred"]);
        (json["messages"].as_array()?.len() == 3).then_some(())
    })
    .await;

    // Selectors under their long names.
    let list = ctl_ok(&cluster, 2, &["queue", "list", "--to-domain", "A.test"]);
    assert_eq!(ids_of(&list), a);
    let list = ctl_ok(&cluster, 2, &["queue", "list", "--from", "y@sender.test"]);
    assert_eq!(ids_of(&list), vec![b.clone()]);

    // Summary: domain x age, the same from every replica.
    let summary = ctl_ok(&cluster, 2, &["queue", "summary"]);
    let buckets: Vec<&str> = summary["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap())
        .collect();
    assert_eq!(
        buckets,
        [
            "0-5m", "5-10m", "10-20m", "20-40m", "40-80m", "80-160m", "160m+"
        ]
    );
    assert_eq!(summary["total"]["total"], 3, "{summary}");
    assert_eq!(summary["total"]["counts"][0], 3, "{summary}");
    assert_eq!(summary["domains"][0]["domain"], "a.test", "{summary}");
    assert_eq!(summary["domains"][0]["total"], 2, "{summary}");
    assert_eq!(summary["domains"][0]["counts"][0], 2, "{summary}");
    assert_eq!(summary["domains"][1]["domain"], "b.test", "{summary}");
    assert_eq!(summary["domains"][1]["total"], 1, "{summary}");
    assert_eq!(summary["domains"].as_array().unwrap().len(), 2);
    for node in [1, 3] {
        poll(WITHIN, "the same summary on every node", || {
            let other = ctl_ok(&cluster, node, &["queue", "summary"]);
            (other["domains"] == summary["domains"]).then_some(())
        })
        .await;
    }
    let only_b = ctl_ok(&cluster, 2, &["queue", "summary", "--to-domain", "b.test"]);
    assert_eq!(only_b["total"]["total"], 1, "{only_b}");
    let old = ctl_ok(&cluster, 2, &["queue", "summary", "--older-than", "1h"]);
    assert_eq!(old["total"]["total"], 0, "{old}");
    // The table form names the domains and the buckets.
    let out = cluster.relayctl(2, &["queue", "summary"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("160m+") && text.contains("a.test"), "{text}");

    // show: the header section by default, the whole message with --body.
    let show = ctl_ok(&cluster, 1, &["queue", "show", &b]);
    let headers = show["content"].as_str().expect("headers");
    assert!(headers.contains("Subject: only b"), "{show}");
    assert!(!headers.contains("only b body"), "{show}");
    let full = ctl_ok(&cluster, 1, &["queue", "show", &b, "--body"]);
    let content = full["content"].as_str().expect("message");
    assert!(content.starts_with(headers), "{full}");
    assert!(content.contains("\r\n\r\nonly b body"), "{full}");

    // --all without --yes: a usage error, nothing changes.
    let (code, _, stderr) = ctl(
        &cluster,
        1,
        &["queue", "delete", "--all", "--to-domain", "a.test"],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--yes"), "{stderr}");

    // Dry runs list what would change and change nothing.
    let dry = ctl_ok(
        &cluster,
        1,
        &[
            "queue",
            "hold",
            "--all",
            "--dry-run",
            "--to-domain",
            "a.test",
        ],
    );
    assert_eq!(
        (&dry["dry_run"], &dry["affected"]),
        (&Value::from(true), &Value::from(2))
    );
    assert_eq!(ids_of(&dry), a);
    let dry = ctl_ok(&cluster, 1, &["queue", "release", "--all", "--dry-run"]);
    assert_eq!(dry["affected"], 0, "nothing is held: {dry}");
    let dry = ctl_ok(&cluster, 1, &["queue", "delete", &b, "--dry-run"]);
    assert_eq!(ids_of(&dry), vec![b.clone()]);
    let held = ctl_ok(&cluster, 1, &["queue", "list", "--state", "held"]);
    assert_eq!(ids_of(&held), Vec::<String>::new(), "dry runs held nothing");
    let all = ctl_ok(&cluster, 1, &["queue", "list"]);
    assert_eq!(
        all["messages"].as_array().unwrap().len(),
        3,
        "nothing deleted"
    );

    // The same selectors, confirmed, act.
    let hold = ctl_ok(
        &cluster,
        1,
        &["queue", "hold", "--all", "--yes", "--to-domain", "a.test"],
    );
    assert_eq!(
        (&hold["dry_run"], &hold["affected"]),
        (&Value::from(false), &Value::from(2))
    );
    let held = ctl_ok(&cluster, 1, &["queue", "list", "--state", "held"]);
    assert_eq!(ids_of(&held), a);
    let dry = ctl_ok(&cluster, 1, &["queue", "flush", "--all", "--dry-run"]);
    assert_eq!(ids_of(&dry), vec![b.clone()], "flush skips held messages");
    let dry = ctl_ok(
        &cluster,
        1,
        &["queue", "release", &a[0], &a[1], "--dry-run"],
    );
    assert_eq!(ids_of(&dry), a);
}
