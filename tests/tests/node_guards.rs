//! Guards of a running node, with real `relayd` processes: a failed fsync
//! stops the node with a non-zero exit status (so a supervisor with
//! restart-on-failure restarts it) while the rest of the cluster goes on;
//! the leadership RPC refuses strangers and unbounded pauses; a node short
//! of disk space refuses mail in time instead of stopping.

use std::time::Duration;

use relay_proto::raft::LeadershipRequest;
use relay_testkit::TestTarget;
use relay_tests::smtp::{SmtpClient, send_mail};
use relay_tests::{ClusterOptions, ProcessCluster, test_enqueue};

/// WAL syncs a restarted follower is allowed before the failpoint fails
/// one: enough to open and rejoin, few enough that the first entries it
/// receives hit it.
const SYNCS_BEFORE_FAILURE: &str = "3";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_stops_the_node_with_a_non_zero_status() {
    let mut cluster = ProcessCluster::start(ClusterOptions::default()).expect("start cluster");
    let leader = cluster
        .wait_for_leader(Duration::from_secs(30), None)
        .await
        .expect("a leader");
    let victim = (1..=3).find(|id| *id != leader).unwrap();

    // Restart a follower with one fsync set to fail.
    cluster.kill(victim);
    cluster
        .start_node_with_env(
            victim,
            &[],
            &[("QR_FAILPOINT_FAIL_FSYNC_AFTER", SYNCS_BEFORE_FAILURE)],
        )
        .expect("restart the follower");

    // Entries reach it through its log appends; one of them hits the
    // failed fsync. The two other voters keep committing.
    let mut n = 0;
    let status = loop {
        n += 1;
        cluster
            .submit(leader, &test_enqueue(n, 99, "unrouted.test"))
            .await
            .unwrap_or_else(|e| panic!("the healthy majority commits entry {n}: {e}"));
        if let Ok(status) = cluster.wait_exit(victim, Duration::from_millis(200)).await {
            break status;
        }
        assert!(
            n < 300,
            "the node did not stop after its fsync failed\n{}",
            cluster.log(victim)
        );
    };
    assert_eq!(
        status.code(),
        Some(1),
        "a node that stopped on a failed fsync exits with 1\n{}",
        cluster.log(victim)
    );
    let log = cluster.log(victim);
    assert!(log.contains("fsync"), "the log says why:\n{log}");

    // Restarted without the failpoint (what the supervisor does), it
    // recovers from its disk and catches up.
    cluster.start_node(victim).expect("restart");
    let leader_index = cluster.status(leader, false).await.unwrap().applied_index;
    cluster
        .wait_converged(Duration::from_secs(60), leader_index)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.log(victim)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_steps_come_only_from_members_and_pauses_are_bounded() {
    let cluster = ProcessCluster::start(ClusterOptions::default()).expect("start cluster");
    cluster
        .wait_for_leader(Duration::from_secs(30), None)
        .await
        .expect("a leader");
    let mut client = cluster.raft_client(2).await.expect("client");
    let step = |action: &str, millis: u64, from: u64| LeadershipRequest {
        action: action.into(),
        millis,
        from,
    };

    let stranger = client
        .leadership(step("pause", 1_000, 99))
        .await
        .expect_err("a node outside the membership may not pause elections");
    assert_eq!(
        stranger.code(),
        tonic::Code::PermissionDenied,
        "{stranger:?}"
    );

    let forever = client
        .leadership(step("pause", u64::MAX, 1))
        .await
        .expect_err("an unbounded pause is refused");
    assert_eq!(forever.code(), tonic::Code::InvalidArgument, "{forever:?}");
    let hour = client
        .leadership(step("pause", 3_600_000, 1))
        .await
        .expect_err("an hour's pause is refused");
    assert_eq!(hour.code(), tonic::Code::InvalidArgument, "{hour:?}");

    // A member's bounded pause and its resume are accepted.
    client
        .leadership(step("pause", 1_000, 1))
        .await
        .expect("a member pauses for a second");
    client
        .leadership(step("resume", 0, 1))
        .await
        .expect("and resumes");
}

/// A queued body is handed to members only (a node whose own copy is
/// damaged asks its peers for theirs): a stranger is refused, a malformed
/// id is answered, an unknown message is not found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_handed_only_to_members() {
    use relay_proto::raft::FetchBodyRequest;

    let cluster = ProcessCluster::start(ClusterOptions::default()).expect("start cluster");
    cluster
        .wait_for_leader(Duration::from_secs(30), None)
        .await
        .expect("a leader");
    let mut client = cluster.raft_client(2).await.expect("client");
    let unknown = relay_types::MessageId::generate();
    let ask = |from: u64, id: Vec<u8>| FetchBodyRequest { id, from };

    let stranger = client
        .fetch_body(ask(99, unknown.as_bytes().to_vec()))
        .await
        .expect_err("a node outside the membership gets no mail");
    assert_eq!(
        stranger.code(),
        tonic::Code::PermissionDenied,
        "{stranger:?}"
    );
    let malformed = client
        .fetch_body(ask(1, vec![1, 2, 3]))
        .await
        .expect_err("a malformed id is refused");
    assert_eq!(
        malformed.code(),
        tonic::Code::InvalidArgument,
        "{malformed:?}"
    );
    let missing = client
        .fetch_body(ask(1, unknown.as_bytes().to_vec()))
        .await
        .expect_err("no such message");
    assert_eq!(missing.code(), tonic::Code::NotFound, "{missing:?}");
}

/// A `queue_minfree` larger than any disk: the node is short of space
/// whatever the machine has free.
const MORE_THAN_ANY_DISK: &str = "queue_minfree = 1152921504606846976";

/// Restarts node `id` with `[smtp]` extended by `line` (or as configured
/// at the start when `line` is empty) and waits until it answers EHLO.
async fn restart_with_smtp_line(cluster: &mut ProcessCluster, id: u64, line: &str) {
    cluster.kill(id);
    let path = cluster.node(id).config.clone();
    let config = std::fs::read_to_string(&path).unwrap();
    let config = config.replace(&format!("{MORE_THAN_ANY_DISK}\n"), "");
    let config = if line.is_empty() {
        config
    } else {
        config.replacen("[smtp]\n", &format!("[smtp]\n{line}\n"), 1)
    };
    std::fs::write(&path, config).unwrap();
    cluster.start_node(id).expect("restart");
    let addr = cluster.smtp_addr(id);
    relay_testkit::wait_for(Duration::from_secs(30), || async move {
        SmtpClient::connect_ehlo(addr).await.ok().map(|_| ())
    })
    .await
    .unwrap_or_else(|e| panic!("node {id} answers SMTP again: {e}\n{}", cluster.log(id)));
}

/// Metric `name` (a gauge without labels) on node `id`'s `/metrics`.
async fn gauge(cluster: &ProcessCluster, id: u64, name: &str) -> Option<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let port = cluster.node(id).ports.http;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut page = String::new();
    stream.read_to_string(&mut page).await.ok()?;
    page.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

/// Sends one message through node `via` and waits until the target holds
/// `delivered` messages.
async fn send_and_deliver(
    cluster: &ProcessCluster,
    target: &TestTarget,
    via: u64,
    delivered: usize,
) {
    let message = format!("Subject: room\r\n\r\nvia node {via}\r\n");
    let reply = send_mail(
        cluster.smtp_addr(via),
        "a@sender.test",
        &["b@dest.test"],
        message.as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(reply.code, 250, "{reply}");
    target
        .wait_for_messages(delivered, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("the mail through node {via} is delivered: {e}"));
}

/// A node whose queue file system is short of space refuses MAIL with
/// `452 4.3.1`, like Postfix under `queue_minfree`, and keeps serving: the
/// session stays open, the cluster takes the mail through another node,
/// this node still answers status and metrics. With room again it takes
/// mail itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_short_of_disk_space_refuses_mail_with_452_and_keeps_serving() {
    let target = TestTarget::start().await.expect("target");
    let mut cluster = ProcessCluster::start(ClusterOptions {
        routes: vec![("dest.test".into(), target.target())],
        ..ClusterOptions::default()
    })
    .expect("start cluster");
    cluster
        .wait_for_leader(Duration::from_secs(30), None)
        .await
        .expect("a leader");
    restart_with_smtp_line(&mut cluster, 1, MORE_THAN_ANY_DISK).await;

    let mut client = SmtpClient::connect_ehlo(cluster.smtp_addr(1))
        .await
        .expect("EHLO at node 1");
    let mail = client.command("MAIL FROM:<a@sender.test>").await.unwrap();
    assert_eq!(mail.code, 452, "{mail}");
    assert!(mail.text().starts_with("4.3.1"), "{mail}");
    let again = client
        .command("MAIL FROM:<a@sender.test> SIZE=100")
        .await
        .unwrap();
    assert_eq!(
        again.code, 452,
        "a small declared size is refused too: {again}"
    );
    assert_eq!(client.command("NOOP").await.unwrap().code, 250);
    assert!(
        cluster.log(1).contains("too little free space"),
        "the node logs why:\n{}",
        cluster.log(1)
    );

    // The rest of the tier takes the mail; node 1 keeps answering.
    send_and_deliver(&cluster, &target, 2, 1).await;
    cluster
        .status(1, false)
        .await
        .expect("node 1 answers status");
    let free = gauge(&cluster, 1, "relay_store_free_bytes").await;
    assert!(
        free.is_some_and(|f| f > 0.0),
        "free bytes on /metrics: {free:?}"
    );
    assert!(gauge(&cluster, 1, "relay_store_wal_bytes").await.is_some());

    // Room again (the default setting): node 1 takes mail.
    restart_with_smtp_line(&mut cluster, 1, "").await;
    send_and_deliver(&cluster, &target, 1, 2).await;
}
