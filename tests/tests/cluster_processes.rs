//! Three real `relayd` processes on loopback: commit, kill -9 the leader,
//! commit through the new leader, restart, converge; wipe a node and catch it
//! up from a snapshot; bad configurations; `relayctl status`.

use std::time::Duration;

use relay_tests::{ClusterOptions, ProcessCluster, bin_path, test_enqueue};
use relay_types::{Command, CommandResult, Route, TlsPolicy};

fn route(n: u32) -> Command {
    Command::SetRoute {
        domain: format!("d{n}.test"),
        route: Route::new(vec![format!("127.0.0.1:{}", 1000 + n)], TlsPolicy::None),
    }
}

/// Commits `count` entries (alternating routes and messages owned by a node
/// id that is not in the cluster, for an unrouted domain: takeover moves them
/// to live voters, which can only defer them) through `leader`, asserting
/// each one applied.
async fn commit_entries(cluster: &ProcessCluster, leader: u64, from: u32, count: u32) {
    for n in from..from + count {
        let command = if n % 2 == 0 {
            route(n)
        } else {
            test_enqueue(n, 99, "unrouted.test")
        };
        let result = cluster.submit(leader, &command).await.unwrap_or_else(|e| {
            panic!(
                "submit {n} to leader {leader} failed: {e}\n{}",
                cluster.log(leader)
            )
        });
        assert!(
            matches!(
                result,
                CommandResult::Applied { affected: 1 } | CommandResult::Enqueued(_)
            ),
            "entry {n} applied as {result:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_converge_after_leader_kill_and_restart() {
    let mut cluster = ProcessCluster::start(ClusterOptions::default()).expect("start cluster");
    let leader = cluster
        .wait_for_leader(Duration::from_secs(30), None)
        .await
        .expect("first leader");
    commit_entries(&cluster, leader, 0, 20).await;
    let (index_before, _) = cluster
        .wait_converged(Duration::from_secs(30), 20)
        .await
        .expect("converged");

    cluster.kill(leader);
    let new_leader = cluster
        .wait_for_leader(Duration::from_secs(30), Some(leader))
        .await
        .expect("a new leader after kill -9");
    assert_ne!(new_leader, leader);
    commit_entries(&cluster, new_leader, 100, 20).await;

    cluster.start_node(leader).expect("restart killed node");
    let (index_after, checksum) = cluster
        .wait_converged(Duration::from_secs(60), index_before + 20)
        .await
        .unwrap_or_else(|e| panic!("{e}\nrestarted node log:\n{}", cluster.log(leader)));
    assert!(index_after >= index_before + 20);
    assert_eq!(checksum.len(), 64, "hex SHA-256");

    // The restarted node holds every message committed while it was down.
    let status = cluster
        .status(leader, false)
        .await
        .expect("status of restarted node");
    let queue = status.queue.expect("queue counts");
    // Owner 99 is no member: takeover hands these to live voters, which try
    // them (no route) and defer them; either way every one is still queued.
    assert_eq!(
        queue.queued + queue.deferred,
        20,
        "10 messages before and 10 after the kill"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_node_catches_up_from_a_snapshot() {
    let options = ClusterOptions {
        snapshot_every: 10,
        keep_logs: 0,
        ..Default::default()
    };
    let mut cluster = ProcessCluster::start(options).expect("start cluster");
    let leader = cluster
        .wait_for_leader(Duration::from_secs(30), None)
        .await
        .expect("leader");
    let victim = if leader == 3 { 2 } else { 3 };
    commit_entries(&cluster, leader, 0, 10).await;
    cluster
        .wait_converged(Duration::from_secs(30), 10)
        .await
        .expect("converged");

    cluster.kill(victim);
    cluster.wipe(victim).expect("wipe data dir");
    // Enough entries for the leader to snapshot and purge its log, so the
    // wiped node can only catch up by installing a snapshot.
    commit_entries(&cluster, leader, 100, 30).await;
    // Snapshot and purge run in the background on the leader: poll.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let leader_status = loop {
        let s = cluster.status(leader, false).await.expect("leader status");
        if s.purged_index > 0 {
            break s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "leader never purged its log: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    cluster.start_node(victim).expect("restart wiped node");
    cluster
        .wait_converged(Duration::from_secs(60), leader_status.purged_index)
        .await
        .unwrap_or_else(|e| panic!("{e}\nwiped node log:\n{}", cluster.log(victim)));
    let victim_status = cluster.status(victim, false).await.expect("victim status");
    assert!(
        victim_status.snapshot_index >= leader_status.purged_index,
        "the wiped node installed a snapshot covering the purged log: {victim_status:?}"
    );
    let queue = victim_status.queue.expect("counts");
    assert_eq!(queue.queued + queue.deferred, 20, "every message survived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayctl_status_json_shows_one_leader_and_three_nodes() {
    let cluster = ProcessCluster::start(ClusterOptions::default()).expect("start cluster");
    let leader = cluster
        .wait_for_leader(Duration::from_secs(30), None)
        .await
        .expect("leader");
    // Every node must see all three reachable; poll until they do.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let json = loop {
        let out = std::process::Command::new(bin_path("relayctl"))
            .args([
                "--addr",
                &format!("127.0.0.1:{}", cluster.node(2).ports.admin),
            ])
            .args(["--token", &cluster.token, "--json", "status"])
            .output()
            .expect("run relayctl");
        // 0 ok, 4 degraded, 5 down: all three print the status.
        let code = out.status.code();
        assert!(
            matches!(code, Some(0 | 4 | 5)),
            "relayctl failed ({code:?}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON output");
        let nodes = json["nodes"].as_array().expect("nodes").clone();
        if code == Some(0) && nodes.len() == 3 && nodes.iter().all(|n| n["reachable"] == true) {
            break json;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not all reachable: {json}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(json["leader"], leader);
    let nodes = json["nodes"].as_array().unwrap();
    assert_eq!(
        nodes.iter().filter(|n| n["role"] == "leader").count(),
        1,
        "{json}"
    );
    for (i, n) in nodes.iter().enumerate() {
        assert_eq!(n["id"], i as u64 + 1);
        assert!(n["applied"].as_u64().unwrap() > 0);
        assert!(n["addr"].as_str().unwrap().starts_with("127.0.0.1:"));
    }
    assert_eq!(json["queue"]["queued"], 0);

    // Wrong token: exit code 3 and a clear message.
    let out = std::process::Command::new(bin_path("relayctl"))
        .args([
            "--addr",
            &format!("127.0.0.1:{}", cluster.node(1).ports.admin),
        ])
        .args(["--token", "wrong", "status"])
        .output()
        .expect("run relayctl");
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused the admin token"));
}

/// Runs `relayd --config <file with text>` and returns (exit code, stderr).
fn relayd_with_config(text: Option<&str>) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    if let Some(text) = text {
        std::fs::write(&path, text).unwrap();
    }
    let out = std::process::Command::new(bin_path("relayd"))
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run relayd");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!stderr.contains("panicked"), "relayd panicked: {stderr}");
    (
        out.status.code(),
        stderr.replace(&path.display().to_string(), "FILE"),
    )
}

const GOOD: &str = r#"node_id = 1
data_dir = "data"
[listen]
smtp = "127.0.0.1:0"
raft = "127.0.0.1:0"
admin = "127.0.0.1:0"
http = "127.0.0.1:0"
[cluster]
secret = "test-cluster-secret-0123456789"
[[cluster.members]]
id = 1
raft = "127.0.0.1:7101"
[admin]
token = "t"
"#;

#[test]
fn bad_configs_exit_nonzero_naming_file_and_key() {
    let (code, err) = relayd_with_config(None);
    assert_eq!(code, Some(2));
    assert!(err.contains("FILE: cannot read"), "{err}");

    let (code, err) = relayd_with_config(Some(&GOOD.replace("[admin]", "[admin]\nsurprise = 1")));
    assert_eq!(code, Some(2));
    assert!(err.contains("FILE") && err.contains("surprise"), "{err}");

    let (code, err) = relayd_with_config(Some(
        &GOOD.replace("smtp = \"127.0.0.1:0\"", "smtp = \"nowhere\""),
    ));
    assert_eq!(code, Some(2));
    assert!(
        err.contains("FILE: listen.smtp:") && err.contains("nowhere"),
        "{err}"
    );

    let dup = GOOD.replace(
        "[admin]",
        "[[cluster.members]]\nid = 1\nraft = \"127.0.0.1:7102\"\n[admin]",
    );
    let (code, err) = relayd_with_config(Some(&dup));
    assert_eq!(code, Some(2));
    assert!(
        err.contains("FILE: cluster.members[1].id: duplicate node id 1"),
        "{err}"
    );

    let (code, err) = relayd_with_config(Some("node_id = \"one\""));
    assert_eq!(code, Some(2));
    assert!(err.contains("FILE") && err.contains("node_id"), "{err}");
}
