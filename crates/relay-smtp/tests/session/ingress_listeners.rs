//! The ingress listeners over real loopback sockets: PROXY protocol v1/v2
//! from a configured load balancer (relay control, per-IP limits and the
//! trace see the real client), refused from anyone else or when missing;
//! the submission roles (587: STARTTLS, then AUTH, before MAIL; 465: TLS
//! from the first octet); recipient lists of relay domains.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use relay_smtp::auth::{AuthFailures, Credentials, SmtpAuth, hash_password};
use relay_smtp::proxy::{V2_SIGNATURE, encode_v1, encode_v2};
use relay_smtp::recipients::RecipientLists;
use relay_smtp::{Cidr, ListenerRole, SmtpConfig, serve};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::common::*;
use crate::starttls::{tls_setup, upgrade};

struct Server {
    addr: SocketAddr,
    backend: Arc<FakeBackend>,
    shutdown: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(cfg: SmtpConfig) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let backend = FakeBackend::new();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(
            listener,
            Arc::new(cfg),
            backend.clone(),
            shutdown.clone(),
        ));
        Server {
            addr,
            backend,
            shutdown,
            task,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }

    /// A connection from loopback address `from` (e.g. `127.0.0.2`).
    async fn connect_from(&self, from: &str) -> Client<TcpStream> {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
        Client::new(socket.connect(self.addr).await.unwrap())
    }
}

fn net(s: &str) -> Cidr {
    s.parse().unwrap()
}

/// The balancer is 127.0.0.1; authorized clients are 10.1.0.0/16 only
/// (loopback is not, so the balancer's own address grants nothing).
fn behind_balancer() -> SmtpConfig {
    config_with(|c| {
        c.proxy_protocol_from = vec![net("127.0.0.1/32")];
        c.authorized_networks = vec![net("10.1.0.0/16")];
    })
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

const FRONT: &str = "198.51.100.1:25";

#[tokio::test]
async fn proxy_v1_and_v2_relay_control_applies_to_the_real_client() {
    let server = Server::start(behind_balancer()).await;

    // v1, an authorized client: may relay anywhere.
    let mut c = server.connect_from("127.0.0.1").await;
    c.send(encode_v1(addr("10.1.2.3:40001"), addr(FRONT))).await;
    c.reply().await.expect(220, "");
    c.ehlo().await;
    c.cmd("MAIL FROM:<a@sender.test>")
        .await
        .expect(250, "2.1.0");
    c.cmd("RCPT TO:<bob@elsewhere.test>")
        .await
        .expect(250, "2.1.5");
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send(relay_smtp::data::dot_stuff(&message("v1"))).await;
    c.reply().await.expect(250, "2.0.0");
    c.cmd("QUIT").await;

    // v2, an outsider: relay denied, its relay domain accepted.
    let mut c = server.connect_from("127.0.0.1").await;
    c.send(encode_v2(addr("192.0.2.10:40002"), addr(FRONT)))
        .await;
    c.reply().await.expect(220, "");
    c.ehlo().await;
    c.cmd("MAIL FROM:<a@sender.test>")
        .await
        .expect(250, "2.1.0");
    c.cmd("RCPT TO:<bob@elsewhere.test>")
        .await
        .expect(554, "5.7.1");
    c.cmd("RSET").await.expect(250, "2.0.0");
    let r = c
        .send_message("a@sender.test", &["bob@example.test"], &message("v2"))
        .await;
    r.expect(250, "2.0.0");
    c.cmd("QUIT").await;

    let got = server.backend.submitted();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].envelope.client_addr, "10.1.2.3:40001");
    assert_eq!(got[1].envelope.client_addr, "192.0.2.10:40002");
    let received = String::from_utf8_lossy(&got[1].body[..200]).into_owned();
    assert!(received.contains("[192.0.2.10]"), "{received}");
    assert!(!received.contains("127.0.0.1"), "{received}");
    server.stop().await;
}

#[tokio::test]
async fn proxy_header_from_an_untrusted_address_is_refused() {
    // Only 127.0.0.2 is a balancer; these connections come from 127.0.0.1.
    let server = Server::start(config_with(|c| {
        c.proxy_protocol_from = vec![net("127.0.0.2/32")];
    }))
    .await;
    for header in [
        encode_v1(addr("10.1.2.3:1"), addr(FRONT)),
        encode_v2(addr("10.1.2.3:1"), addr(FRONT)),
    ] {
        let mut c = server.connect_from("127.0.0.1").await;
        c.reply().await.expect(220, "");
        c.send(&header).await;
        c.reply().await.expect(421, "4.7.0");
        assert!(c.closed().await);
    }
    // The balancer itself is served (with a header).
    let mut c = server.connect_from("127.0.0.2").await;
    c.send(encode_v1(addr("192.0.2.10:1"), addr(FRONT))).await;
    c.reply().await.expect(220, "");
    assert_eq!(server.backend.count(), 0);
    server.stop().await;
}

#[tokio::test]
async fn a_balancer_connection_without_a_valid_header_is_refused() {
    let server = Server::start(config_with(|c| {
        c.proxy_protocol_from = vec![net("127.0.0.1/32")];
        c.proxy_protocol_timeout = Duration::from_millis(300);
    }))
    .await;
    // Plain SMTP from the balancer's address: no header.
    let mut c = server.connect_from("127.0.0.1").await;
    c.send("EHLO client.test\r\n").await;
    c.reply().await.expect(421, "4.7.0");
    assert!(c.closed().await);
    // A broken header.
    let mut c = server.connect_from("127.0.0.1").await;
    c.send("PROXY TCP4 192.0.2.10 198.51.100.1 99999 25\r\n")
        .await;
    c.reply().await.expect(421, "4.7.0");
    // A v2 header with version 1 in it.
    let mut bad = encode_v2(addr("192.0.2.10:1"), addr(FRONT));
    bad[12] = 0x11;
    let mut c = server.connect_from("127.0.0.1").await;
    c.send(&bad).await;
    c.reply().await.expect(421, "4.7.0");
    // Nothing at all: refused when proxy_protocol_timeout is over.
    let mut c = server.connect_from("127.0.0.1").await;
    c.reply().await.expect(421, "4.7.0");
    // A LOCAL health check is served as the balancer itself.
    let mut local = V2_SIGNATURE.to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0, 0]);
    let mut c = server.connect_from("127.0.0.1").await;
    c.send(&local).await;
    c.reply().await.expect(220, "");
    c.cmd("QUIT").await.expect(221, "2.0.0");
    server.stop().await;
}

#[tokio::test]
async fn per_ip_limits_count_the_real_client() {
    let server = Server::start(config_with(|c| {
        c.proxy_protocol_from = vec![net("127.0.0.1/32")];
        c.authorized_networks.clear();
        c.max_connections_per_ip = 1;
    }))
    .await;
    let mut first = server.connect_from("127.0.0.1").await;
    first
        .send(encode_v1(addr("192.0.2.10:1"), addr(FRONT)))
        .await;
    first.reply().await.expect(220, "");
    let mut same = server.connect_from("127.0.0.1").await;
    same.send(encode_v2(addr("192.0.2.10:2"), addr(FRONT)))
        .await;
    same.reply().await.expect(421, "4.7.0");
    let mut other = server.connect_from("127.0.0.1").await;
    other
        .send(encode_v1(addr("192.0.2.11:1"), addr(FRONT)))
        .await;
    other.reply().await.expect(220, "");
    server.stop().await;
}

fn with_auth(mut config: SmtpConfig, role: ListenerRole) -> SmtpConfig {
    let users = HashMap::from([("alice".to_string(), hash_password("correct horse"))]);
    config.auth = Some(Arc::new(SmtpAuth {
        credentials: Credentials::new(users).unwrap(),
        failures: AuthFailures::new(5, Duration::from_secs(600)),
    }));
    config.role = role;
    config
}

fn plain() -> String {
    format!("AUTH PLAIN {}", STANDARD.encode(b"\0alice\0correct horse"))
}

#[tokio::test]
async fn submission_needs_starttls_then_auth_before_mail() {
    let tls = tls_setup();
    let server = Server::start(with_auth(tls.config.clone(), ListenerRole::Submission)).await;
    let mut c = server.connect_from("127.0.0.1").await;
    c.reply().await.expect(220, "");
    let ehlo = c.ehlo().await;
    assert!(ehlo.text().contains("STARTTLS"), "{ehlo:?}");
    c.cmd(&plain()).await.expect(530, "5.7.0");
    // Even from an authorized network (loopback): submission means login.
    c.cmd("MAIL FROM:<a@sender.test>")
        .await
        .expect(530, "5.7.0");
    c.cmd("STARTTLS").await.expect(220, "2.0.0");
    let mut c = upgrade(&tls, c).await;
    let ehlo = c.ehlo().await;
    assert!(ehlo.text().contains("AUTH PLAIN LOGIN"), "{ehlo:?}");
    let r = c.cmd("MAIL FROM:<a@sender.test>").await;
    r.expect(530, "5.7.0");
    assert!(r.text().contains("Authentication required"), "{r:?}");
    c.cmd(&plain()).await.expect(235, "2.7.0");
    let r = c
        .send_message("a@sender.test", &["bob@elsewhere.test"], &message("587"))
        .await;
    r.expect(250, "2.0.0");
    let got = server.backend.submitted();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].envelope.auth_user.as_deref(), Some("alice"));
    assert!(got[0].body.windows(12).any(|w| w == b"with ESMTPSA"));
    server.stop().await;
}

#[tokio::test]
async fn smtps_speaks_tls_from_the_first_octet_also_behind_a_balancer() {
    let tls = tls_setup();
    let mut cfg = with_auth(tls.config.clone(), ListenerRole::Smtps);
    cfg.proxy_protocol_from = vec![net("127.0.0.2/32")];
    let server = Server::start(cfg).await;

    let c = server.connect_from("127.0.0.1").await;
    let mut c = upgrade(&tls, c).await;
    c.reply().await.expect(220, "");
    let ehlo = c.ehlo().await;
    assert!(!ehlo.text().contains("STARTTLS"), "{ehlo:?}");
    assert!(ehlo.text().contains("AUTH PLAIN LOGIN"), "{ehlo:?}");
    c.cmd("MAIL FROM:<a@sender.test>")
        .await
        .expect(530, "5.7.0");
    c.cmd(&plain()).await.expect(235, "2.7.0");
    c.send_message("a@sender.test", &["bob@elsewhere.test"], &message("465"))
        .await
        .expect(250, "2.0.0");

    // The header first, then the TLS handshake, in one write.
    let mut c = server.connect_from("127.0.0.2").await;
    c.send(encode_v2(addr("192.0.2.20:4650"), addr(FRONT)))
        .await;
    let mut c = upgrade(&tls, c).await;
    c.reply().await.expect(220, "");
    c.ehlo().await;
    c.cmd(&plain()).await.expect(235, "2.7.0");
    c.send_message("a@sender.test", &["bob@example.test"], &message("465p"))
        .await
        .expect(250, "2.0.0");

    // Plaintext SMTP on 465 gets no greeting and no session.
    let mut c = server.connect_from("127.0.0.1").await;
    c.send("EHLO client.test\r\n").await;
    assert!(c.closed().await);
    assert!(!String::from_utf8_lossy(c.unread()).contains("220"));

    let got = server.backend.submitted();
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].envelope.client_addr, "192.0.2.20:4650");
    server.stop().await;
}

#[tokio::test]
async fn recipient_lists_refuse_unknown_recipients_of_listed_domains() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("example.test");
    std::fs::write(&file, "alice\nBob@example.test\n").unwrap();
    let lists = RecipientLists::load(dir.path()).unwrap();
    let server = Server::start(config_with(|c| {
        c.authorized_networks.clear();
        c.recipients = Some(lists.clone());
    }))
    .await;
    let mut c = server.connect_from("127.0.0.1").await;
    c.reply().await.expect(220, "");
    c.ehlo().await;
    c.cmd("MAIL FROM:<a@sender.test>")
        .await
        .expect(250, "2.1.0");
    c.cmd("RCPT TO:<alice@example.test>")
        .await
        .expect(250, "2.1.5");
    c.cmd("RCPT TO:<BOB@Example.Test>")
        .await
        .expect(250, "2.1.5");
    let r = c.cmd("RCPT TO:<mallory@example.test>").await;
    r.expect(550, "5.1.1");
    assert!(r.text().contains("User unknown"), "{r:?}");
    // A reload adds mallory.
    std::fs::write(&file, "alice\nbob\nmallory\n").unwrap();
    assert_eq!(lists.reload().unwrap(), (1, 3));
    c.cmd("RCPT TO:<mallory@example.test>")
        .await
        .expect(250, "2.1.5");
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send(relay_smtp::data::dot_stuff(&message("lists"))).await;
    c.reply().await.expect(250, "2.0.0");
    let got = server.backend.submitted();
    assert_eq!(got[0].envelope.recipients.len(), 3);
    server.stop().await;
}
