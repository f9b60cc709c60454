//! The Compose deployment as shipped (docker-compose.yml, the FROM-scratch
//! image, cluster-config/compose/): `up` brings every service to healthy
//! with mutual TLS on every node-to-node and admin link, plaintext and
//! foreign certificates are refused on the published Raft and admin ports,
//! relayctl works with the development CA, and a message sent to one node
//! reaches the demo target.
//!
//! Skipped (with a message) where no Docker engine answers. About 20
//! seconds with the image built: in the default suite.

use std::time::Duration;

use relay_proto::admin::admin_client::AdminClient;
use relay_proto::raft::NodeStatusRequest;
use relay_proto::raft::raft_service_client::RaftServiceClient;
use relay_tests::compose::{COMPOSE_CLUSTER_SECRET, ComposeCluster, build_image, docker_available};
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
    let cluster = ComposeCluster::up().expect("compose up");

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
        "not healthy within {LONG:?}: {:?}\n{}",
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
            &cluster,
            ports.raft,
            Some(cluster.client_tls("node-1", id).unwrap()),
        )
        .await
        .unwrap_or_else(|e| panic!("node {id} Raft port over mTLS: {e}"));
        let plain = raft_status(&cluster, ports.raft, None).await;
        assert!(plain.is_err(), "node {id} Raft port accepted plaintext");
        let other = relay_tests::node_client_tls(
            foreign.path(),
            &cluster.certs.path().join("ca.pem"),
            "node-1",
            id,
        )
        .unwrap();
        let other = raft_status(&cluster, ports.raft, Some(other)).await;
        assert!(
            other.is_err(),
            "node {id} Raft port accepted another CA's certificate"
        );
        // Admin port: the same, with relayctl's certificate.
        admin_status(
            &cluster,
            ports.admin,
            Some(cluster.client_tls("relayctl", id).unwrap()),
        )
        .await
        .unwrap_or_else(|e| panic!("node {id} admin port over mTLS: {e}"));
        let plain = admin_status(&cluster, ports.admin, None).await;
        assert!(plain.is_err(), "node {id} admin port accepted plaintext");
        let other = relay_tests::node_client_tls(
            foreign.path(),
            &cluster.certs.path().join("ca.pem"),
            "relayctl",
            id,
        )
        .unwrap();
        let other = admin_status(&cluster, ports.admin, Some(other)).await;
        assert!(
            other.is_err(),
            "node {id} admin port accepted another CA's certificate"
        );
        // A client that trusts only another CA refuses the node.
        let untrusted =
            relay_tests::node_client_tls(cluster.certs.path(), &foreign_ca, "relayctl", id)
                .unwrap();
        let untrusted = admin_status(&cluster, ports.admin, Some(untrusted)).await;
        assert!(
            untrusted.is_err(),
            "node {id} served a certificate of an unknown CA"
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
        "relayctl status: {report} {}",
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
    assert_eq!(reply.code, 250, "not accepted: {}", reply.text());
    relay_testkit::wait_until(LONG, || {
        cluster
            .received()
            .is_ok_and(|r| r.iter().any(|(s, _)| s == "compose-mtls-1"))
    })
    .await
    .unwrap_or_else(|_| panic!("not delivered within {LONG:?}\n{}", cluster.logs()));
}
