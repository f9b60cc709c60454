//! Mail whose owner leaves the voters, with three real `relayd`
//! processes: takeover reads the owners of queued mail, not the member
//! list, so messages accepted by a node that was then removed and
//! stopped, or by a learner that was then killed, are delivered by the
//! others, each exactly once.

use std::time::Duration;

use relay_testkit::{Behaviour, Reply, TargetOptions, TestTarget};
use relay_tests::load::{copies, queue_on};
use relay_tests::{ClusterOptions, ProcessCluster};
use relay_types::NodeId;
use tokio::time::Instant;

const LONG: Duration = Duration::from_secs(60);
const MESSAGES: usize = 10;

/// relayctl `--json ARGS` against node `id`: (exit code, JSON, stderr).
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

/// A cluster routing `dest.test` to `target`, which refuses every
/// recipient with 451 until the test lets it accept.
async fn tier_with_target_down() -> (ProcessCluster, TestTarget, NodeId, NodeId) {
    let target = TestTarget::start_with(TargetOptions {
        behaviour: Behaviour::RejectRcpt(Reply::temporary()),
        ..Default::default()
    })
    .await
    .expect("target");
    let cluster = ProcessCluster::start(ClusterOptions {
        routes: vec![("dest.test".into(), target.target())],
        min_backoff: "1s".into(),
        // Longer than the test: only non-voter takeover can move the mail.
        cluster_extra: "takeover_after = \"300s\"".into(),
        delivery_extra: "max_backoff = \"2s\"".into(),
        ..Default::default()
    })
    .expect("cluster");
    let leader = cluster.wait_for_leader(LONG, None).await.expect("leader");
    // A follower that is not the bootstrap node.
    let owner = if leader == 3 { 2 } else { 3 };
    // Its SMTP listener may open a moment after the leader is known.
    let deadline = Instant::now() + LONG;
    while relay_tests::smtp::SmtpClient::connect_ehlo(cluster.smtp_addr(owner))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "node {owner} never served SMTP");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (cluster, target, leader, owner)
}

/// Lets the target accept and checks that every marker arrives exactly
/// once, none by `gone`.
async fn assert_delivered_once(
    cluster: &ProcessCluster,
    target: &TestTarget,
    markers: &[String],
    gone: NodeId,
) {
    target.set_behaviour(Behaviour::AcceptAll);
    let deadline = Instant::now() + LONG;
    while copies(&target.messages()).len() < markers.len() {
        assert!(
            Instant::now() < deadline,
            "only {:?} of {} delivered",
            copies(&target.messages()),
            markers.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.wait_drained(LONG).await.expect("drained");
    let messages = target.messages();
    let got = copies(&messages);
    for marker in markers {
        assert_eq!(got.get(marker), Some(&1), "{marker} exactly once: {got:?}");
    }
    assert_eq!(got.len(), markers.len(), "nothing else: {got:?}");
    assert!(
        messages
            .iter()
            .all(|m| m.helo != format!("relay{gone}.test")),
        "nothing delivered by the departed node {gone}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mail_of_a_removed_and_stopped_node_is_delivered_once() {
    let (mut cluster, target, leader, owner) = tier_with_target_down().await;
    let markers = queue_on(&cluster, owner, "removed", MESSAGES).await;

    let (code, reply, stderr) = ctl(&cluster, leader, &["member", "remove", &owner.to_string()]);
    assert_eq!(code, 0, "member remove: {reply} {stderr}");
    cluster.kill(owner);

    assert_delivered_once(&cluster, &target, &markers, owner).await;
    println!("{MESSAGES} messages of removed node {owner}: each delivered once by the others");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mail_of_a_killed_learner_is_delivered_once() {
    let (mut cluster, target, leader, owner) = tier_with_target_down().await;
    // Make the owner a learner: removed, then added back (it keeps its
    // store and catches up).
    let (code, reply, stderr) = ctl(&cluster, leader, &["member", "remove", &owner.to_string()]);
    assert_eq!(code, 0, "member remove: {reply} {stderr}");
    let raft_addr = format!("127.0.0.1:{}", cluster.node(owner).ports.raft);
    let (code, reply, stderr) = ctl(
        &cluster,
        leader,
        &["member", "add", &owner.to_string(), &raft_addr],
    );
    assert_eq!(code, 0, "member add: {reply} {stderr}");
    assert!(
        reply["learners"]
            .as_array()
            .is_some_and(|l| l.contains(&owner.into())),
        "{reply}"
    );

    // The learner accepts SMTP (its submits go to the leader).
    let markers = queue_on(&cluster, owner, "learner", MESSAGES).await;
    cluster.kill(owner);

    assert_delivered_once(&cluster, &target, &markers, owner).await;
    println!("{MESSAGES} messages of killed learner {owner}: each delivered once by the others");
}
