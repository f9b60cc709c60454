//! Guards of a running node, with real `relayd` processes: a failed fsync
//! stops the node with a non-zero exit status (so a supervisor with
//! restart-on-failure restarts it) while the rest of the cluster goes on;
//! the leadership RPC refuses strangers and unbounded pauses.

use std::time::Duration;

use relay_proto::raft::LeadershipRequest;
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
