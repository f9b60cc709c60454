//! The Compose deployment as shipped (docker-compose.yml, the FROM-scratch
//! image, cluster-config/compose/): `up` brings every service to healthy
//! with mutual TLS on every node-to-node and admin link, plaintext and
//! foreign certificates are refused on the published Raft and admin ports,
//! relayctl works with the development CA, and a message sent to one node
//! reaches the demo target.
//!
//! Run once with each Compose tool installed: the v2 plugin (`docker
//! compose`) and the classic `docker-compose` (`scripts/setup.sh test`
//! installs both). Skipped (with a message) where no Docker engine answers;
//! a missing tool is named. About 20 seconds per tool with the image
//! built: in the default suite.

use std::time::Duration;

use relay_proto::admin::admin_client::AdminClient;
use relay_proto::raft::NodeStatusRequest;
use relay_proto::raft::raft_service_client::RaftServiceClient;
use relay_tests::compose::{
    COMPOSE_CLUSTER_SECRET, ComposeCluster, build_image, compose_commands, docker_available,
};
use relay_tests::load::message;
use relay_tests::smtp::{SmtpClient, transaction};
use relay_tests::{SecretHeader, bin_path, dev_certs};

const LONG: Duration = Duration::from_secs(120);

/// One node-status call on a Raft port; `Err` carries why it failed.
async fn raft_status(
    cluster: &ComposeCluster,
    port: u16,
    tls: Option<tonic::transport::ClientTlsConfig>,
) -> Result<(), String> {
    let channel = cluster
        .channel(port, tls)
        .await
        .map_err(|e| format!("connect: {e:#}"))?;
    RaftServiceClient::with_interceptor(channel, SecretHeader(COMPOSE_CLUSTER_SECRET.into()))
        .node_status(NodeStatusRequest { with_digest: false })
        .await
        .map(|_| ())
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

/// One admin status call (token `dev-token`); `Err` carries why it failed.
async fn admin_status(
    cluster: &ComposeCluster,
    port: u16,
    tls: Option<tonic::transport::ClientTlsConfig>,
) -> Result<(), String> {
    let channel = cluster
        .channel(port, tls)
        .await
        .map_err(|e| format!("connect: {e:#}"))?;
    AdminClient::with_interceptor(channel, SecretHeader("dev-token".into()))
        .status(relay_proto::admin::StatusRequest {})
        .await
        .map(|_| ())
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_up_is_healthy_with_mtls_on_every_link() {
    if !docker_available() {
        eprintln!("SKIPPED: no Docker engine or Compose tool answers here");
        return;
    }
    build_image().expect("image");
    let tools = compose_commands();
    for (tool, name) in [
        (&["docker", "compose"][..], "the Compose v2 plugin"),
        (&["docker-compose"][..], "docker-compose"),
    ] {
        if !tools.iter().any(|t| t == tool) {
            eprintln!(
                "SKIPPED with {name}: '{}' does not answer here",
                tool.join(" ")
            );
        }
    }
    for tool in tools {
        let cluster = ComposeCluster::up_with(tool.clone())
            .unwrap_or_else(|e| panic!("{} up: {e:#}", tool.join(" ")));
        check_tier(&cluster).await;
        eprintln!(
            "{}: healthy, mTLS on every link, relayctl and a message through",
            cluster.tool()
        );
    }
}

/// Everything the test asserts about one running tier.
async fn check_tier(cluster: &ComposeCluster) {
    let tool = cluster.tool();

    // Every long-running service healthy: relays by /readyz (they can
    // commit, so the nodes reach each other over mTLS), the target by 220.
    let healthy = relay_testkit::wait_until(LONG, || {
        cluster
            .health()
            .is_ok_and(|h| h.len() == 4 && h.values().all(|s| s == "healthy"))
    })
    .await;
    assert!(
        healthy.is_ok(),
        "{tool}: not healthy within {LONG:?}: {:?}\n{}",
        cluster.health(),
        cluster.logs()
    );
    let leader = cluster
        .wait_for_leader(LONG, &[1, 2, 3], None)
        .await
        .expect("a leader, seen over mTLS");

    let foreign = tempfile::tempdir().expect("tempdir");
    dev_certs(foreign.path(), "1,2,3").expect("a second CA");
    let foreign_ca = foreign.path().join("ca.pem");
    for id in 1..=3u64 {
        let ports = cluster.ports[id as usize - 1];
        // Raft port: the cluster CA's node certificate works; plaintext and
        // another CA's certificate do not.
        raft_status(
            cluster,
            ports.raft,
            Some(cluster.client_tls("node-1", id).unwrap()),
        )
        .await
        .unwrap_or_else(|e| panic!("{tool}: node {id} Raft port over mTLS: {e}"));
        let plain = raft_status(cluster, ports.raft, None).await;
        assert!(
            plain.is_err(),
            "{tool}: node {id} Raft port accepted plaintext"
        );
        let other = relay_tests::node_client_tls(
            foreign.path(),
            &cluster.certs.path().join("ca.pem"),
            "node-1",
            id,
        )
        .unwrap();
        let other = raft_status(cluster, ports.raft, Some(other)).await;
        assert!(
            other.is_err(),
            "{tool}: node {id} Raft port accepted another CA's certificate"
        );
        // Admin port: the same, with relayctl's certificate.
        admin_status(
            cluster,
            ports.admin,
            Some(cluster.client_tls("relayctl", id).unwrap()),
        )
        .await
        .unwrap_or_else(|e| panic!("{tool}: node {id} admin port over mTLS: {e}"));
        let plain = admin_status(cluster, ports.admin, None).await;
        assert!(
            plain.is_err(),
            "{tool}: node {id} admin port accepted plaintext"
        );
        let other = relay_tests::node_client_tls(
            foreign.path(),
            &cluster.certs.path().join("ca.pem"),
            "relayctl",
            id,
        )
        .unwrap();
        let other = admin_status(cluster, ports.admin, Some(other)).await;
        assert!(
            other.is_err(),
            "{tool}: node {id} admin port accepted another CA's certificate"
        );
        // A client that trusts only another CA refuses the node.
        let untrusted =
            relay_tests::node_client_tls(cluster.certs.path(), &foreign_ca, "relayctl", id)
                .unwrap();
        let untrusted = admin_status(cluster, ports.admin, Some(untrusted)).await;
        assert!(
            untrusted.is_err(),
            "{tool}: node {id} served a certificate of an unknown CA"
        );
    }

    // relayctl on the host with the development CA, as the README says.
    let certs = cluster.certs.path();
    let out = std::process::Command::new(bin_path("relayctl"))
        .arg("--addr")
        .arg(format!("127.0.0.1:{}", cluster.ports[0].admin))
        .args(["--token", "dev-token", "--ca"])
        .arg(certs.join("ca.pem"))
        .arg("--cert")
        .arg(certs.join("relayctl.pem"))
        .arg("--key")
        .arg(certs.join("relayctl-key.pem"))
        .args(["--json", "status"])
        .env_remove("RELAYCTL_ADDR")
        .env_remove("RELAYCTL_TOKEN")
        .output()
        .expect("run relayctl");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{tool}: relayctl status: {report} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&report).expect("relayctl --json");
    assert_eq!(report["leader"], leader, "{report}");
    assert_eq!(report["verdict"], "ok", "{report}");

    // A message into a follower travels leader-ward and to the target.
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let mut session = SmtpClient::connect_ehlo(cluster.smtp_addr(follower))
        .await
        .expect("SMTP session");
    let reply = transaction(
        &mut session,
        "someone@sender.test",
        &["user@dest.test"],
        &message("compose-mtls-1"),
    )
    .await
    .expect("SMTP transaction");
    assert_eq!(reply.code, 250, "{tool}: not accepted: {}", reply.text());
    relay_testkit::wait_until(LONG, || {
        cluster
            .received()
            .is_ok_and(|r| r.iter().any(|(s, _)| s == "compose-mtls-1"))
    })
    .await
    .unwrap_or_else(|_| panic!("{tool}: not delivered within {LONG:?}\n{}", cluster.logs()));
}
