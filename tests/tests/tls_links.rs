//! Mutual TLS on the Raft and admin ports, with three real `relayd`
//! processes on loopback using `relayd --dev-certs` certificates: who is
//! refused (plaintext, another CA, the wrong node, a non-member, a sender
//! the certificate does not name), `relayctl` with the development CA, and
//! certificate rotation by SIGHUP under SMTP load with every message
//! delivered.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use relay_proto::raft::{NodeStatusRequest, RaftPayload};
use relay_testkit::TestTarget;
use relay_tests::load::{FaultVerdict, Ledger, spawn_senders, subject};
use relay_tests::{ClusterOptions, ProcessCluster, bin_path, dev_certs, node_client_tls};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const LONG: Duration = Duration::from_secs(90);

/// A node-status call to node `id` with `tls` (`None`: plaintext).
async fn status_call(
    cluster: &ProcessCluster,
    id: u64,
    tls: Option<tonic::transport::ClientTlsConfig>,
) -> Result<(), String> {
    let mut client = cluster
        .raft_client_with_tls(id, tls)
        .await
        .map_err(|e| format!("connect: {e:#}"))?;
    client
        .node_status(NodeStatusRequest { with_digest: false })
        .await
        .map(|_| ())
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

/// `relayctl --json status` against node `id`'s admin port with exactly
/// `args` for address, token and TLS (no environment).
fn relayctl(cluster: &ProcessCluster, id: u64, args: &[&str]) -> std::process::Output {
    std::process::Command::new(bin_path("relayctl"))
        .arg("--addr")
        .arg(format!("127.0.0.1:{}", cluster.node(id).ports.admin))
        .arg("--token")
        .arg(&cluster.token)
        .args(args)
        .args(["--json", "status"])
        .env_remove("RELAYCTL_ADDR")
        .env_remove("RELAYCTL_TOKEN")
        .env_remove("RELAYCTL_CA")
        .env_remove("RELAYCTL_CERT")
        .env_remove("RELAYCTL_KEY")
        .output()
        .expect("run relayctl")
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plaintext_foreign_and_misnamed_peers_are_refused_on_both_ports() {
    let cluster = ProcessCluster::start(ClusterOptions {
        tls: true,
        ..Default::default()
    })
    .expect("cluster");
    // The harness itself speaks mTLS as node 1: a leader means the nodes
    // reach each other over mTLS too.
    cluster.wait_for_leader(LONG, None).await.expect("leader");
    let certs = cluster.certs.clone().expect("TLS cluster");
    let ca = certs.join("ca.pem");
    let foreign = cluster.dir.path().join("foreign");
    dev_certs(&foreign, "1,2,3").expect("a second CA");
    let foreign_ca = foreign.join("ca.pem");

    // Raft port. A member's certificate from the cluster CA works.
    status_call(
        &cluster,
        2,
        Some(node_client_tls(&certs, &ca, "node-1", 2).unwrap()),
    )
    .await
    .expect("node 1's certificate is accepted by node 2");
    // Plaintext.
    let plain = status_call(&cluster, 2, None).await;
    assert!(plain.is_err(), "plaintext gRPC accepted: {plain:?}");
    // A client certificate from another CA (the server is trusted).
    let other = status_call(
        &cluster,
        2,
        Some(node_client_tls(&foreign, &ca, "node-1", 2).unwrap()),
    )
    .await;
    assert!(other.is_err(), "another CA's client certificate: {other:?}");
    // A client that trusts only another CA refuses the node.
    let untrusted = status_call(
        &cluster,
        2,
        Some(node_client_tls(&certs, &foreign_ca, "node-1", 2).unwrap()),
    )
    .await;
    assert!(
        untrusted.is_err(),
        "a server from an unknown CA: {untrusted:?}"
    );
    // Dialling node 2 while expecting node 1: the client refuses.
    let tls = node_client_tls(&certs, &ca, "node-1", 1).unwrap();
    let misnamed = status_call(&cluster, 2, Some(tls)).await;
    assert!(misnamed.is_err(), "node 2 passed as node 1: {misnamed:?}");
    // The CA's relayctl certificate is no member: refused per call.
    let ctl = status_call(
        &cluster,
        2,
        Some(node_client_tls(&certs, &ca, "relayctl", 2).unwrap()),
    )
    .await;
    assert!(
        ctl.as_ref()
            .is_err_and(|e| e.starts_with("PermissionDenied")),
        "a non-member certificate on the Raft port: {ctl:?}"
    );
    // Node 1's certificate cannot vote in node 3's name.
    let term = cluster.status(1, false).await.unwrap().term;
    let mut as_node1 = cluster
        .raft_client_with_tls(2, Some(node_client_tls(&certs, &ca, "node-1", 2).unwrap()))
        .await
        .unwrap();
    let vote = openraft::raft::VoteRequest::<u64> {
        vote: openraft::Vote::new(term + 1000, 3),
        last_log_id: None,
    };
    let err = as_node1
        .vote(RaftPayload {
            data: relay_types::encode(&vote),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(cluster.status(2, false).await.unwrap().term < term + 1000);

    // Admin port: relayctl with the development CA and its certificate.
    let (cert, key) = (certs.join("relayctl.pem"), certs.join("relayctl-key.pem"));
    let (foreign_cert, foreign_key) = (
        foreign.join("relayctl.pem"),
        foreign.join("relayctl-key.pem"),
    );
    let ok = relayctl(
        &cluster,
        1,
        &[
            "--ca",
            path(&ca),
            "--cert",
            path(&cert),
            "--key",
            path(&key),
        ],
    );
    assert!(
        ok.status.success(),
        "relayctl over mTLS: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&ok.stdout).expect("JSON status");
    assert_eq!(status["nodes"].as_array().map(Vec::len), Some(3));
    let refused = [
        ("plaintext", vec![]),
        ("no client certificate", vec!["--ca", path(&ca)]),
        (
            "a client certificate from another CA",
            vec![
                "--ca",
                path(&ca),
                "--cert",
                path(&foreign_cert),
                "--key",
                path(&foreign_key),
            ],
        ),
        (
            "a server from an unknown CA",
            vec![
                "--ca",
                path(&foreign_ca),
                "--cert",
                path(&cert),
                "--key",
                path(&key),
            ],
        ),
    ];
    for (what, args) in refused {
        let out = relayctl(&cluster, 1, &args);
        assert_eq!(
            out.status.code(),
            Some(3),
            "{what}: relayctl must be refused as unreachable; stdout {} stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout.is_empty(), "{what}: printed a status");
    }
}

/// The leaf certificate node `id` presents on `port` now (DER), seen by a
/// client with the CA and the relayctl certificate from `certs`.
async fn served_certificate(certs: &Path, port: u16, id: u64) -> anyhow::Result<Vec<u8>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(certs.join("ca.pem"))?)?;
    let chain = vec![CertificateDer::from_pem_file(certs.join("relayctl.pem"))?];
    let key = PrivateKeyDer::from_pem_file(certs.join("relayctl-key.pem"))?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let tls = connector
        .connect(ServerName::try_from(format!("node-{id}"))?, tcp)
        .await?;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or_else(|| anyhow::anyhow!("no server certificate"))?;
    Ok(leaf.to_vec())
}

fn file_certificate(certs: &Path, id: u64) -> Vec<u8> {
    CertificateDer::from_pem_file(certs.join(format!("node-{id}.pem")))
        .expect("node certificate")
        .to_vec()
}

async fn wait_acked(ledger: &Mutex<Ledger>, n: usize, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let acked = ledger.lock().unwrap().acked.len();
        if acked >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {acked} of {n} messages acknowledged within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificates_rotate_by_sighup_under_load_and_every_message_arrives() {
    let target = TestTarget::start().await.expect("target");
    let cluster = ProcessCluster::start(ClusterOptions {
        tls: true,
        routes: vec![("dest.test".into(), target.target())],
        min_backoff: "1s".into(),
        delivery_extra: "max_backoff = \"2s\"".into(),
        ..Default::default()
    })
    .expect("cluster");
    cluster.wait_for_leader(LONG, None).await.expect("leader");
    let certs = cluster.certs.clone().expect("TLS cluster");

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = CancellationToken::new();
    let nodes: Vec<(u64, std::net::SocketAddr)> =
        (1..=3u64).map(|id| (id, cluster.smtp_addr(id))).collect();
    let senders = spawn_senders(&nodes, 2, &ledger, &stop);
    wait_acked(&ledger, 100, LONG).await;

    // New certificates for every node from the same CA, then SIGHUP.
    let old: Vec<Vec<u8>> = (1..=3).map(|id| file_certificate(&certs, id)).collect();
    dev_certs(&certs, "1,2,3").expect("rotate");
    for id in 1..=3 {
        assert_ne!(file_certificate(&certs, id), old[id as usize - 1]);
        cluster.hangup(id);
    }
    // Each node presents its new certificate on both ports.
    for id in 1..=3u64 {
        let want = file_certificate(&certs, id);
        let node = cluster.node(id).ports;
        for (port_name, port) in [("raft", node.raft), ("admin", node.admin)] {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let served = served_certificate(&certs, port, id).await;
                if served.as_ref().is_ok_and(|c| *c == want) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {id} {port_name} port does not serve the new certificate: {:?}",
                    served.map(|c| c == old[id as usize - 1])
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let at_rotation = ledger.lock().unwrap().acked.len();
    wait_acked(&ledger, at_rotation + 200, LONG).await;
    stop.cancel();
    for s in senders {
        s.await.expect("sender task");
    }
    cluster.wait_drained(LONG).await.expect("queue drained");

    let received: Vec<(String, String)> = target
        .messages()
        .iter()
        .filter_map(|m| Some((subject(&m.data)?, m.helo.clone())))
        .collect();
    let ledger = ledger.lock().unwrap();
    let verdict = FaultVerdict::new(&ledger, &received);
    println!("rotation under load: {verdict}");
    assert!(verdict.acked >= 300, "{verdict}");
    assert!(verdict.lost.is_empty(), "lost: {:?}", verdict.lost);
    assert_eq!(verdict.never_sent, 0);
    assert_eq!(
        verdict.unacked, 0,
        "a certificate reload must not refuse or cut off a submission: {verdict}"
    );
    // relayctl with the certificate issued by the rotation.
    let out = cluster.relayctl(1, &["--json", "status"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
