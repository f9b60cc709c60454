//! STARTTLS with a rustls client trusting the generated development
//! certificate; plaintext pipelined after STARTTLS is discarded; all
//! session state is reset by TLS.

use std::sync::Arc;

use relay_smtp::{ServerTls, SmtpConfig, load_or_create_tls};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::common::*;

pub struct Tls {
    _dir: tempfile::TempDir,
    pub config: SmtpConfig,
    connector: TlsConnector,
}

pub fn tls_setup() -> Tls {
    let dir = tempfile::tempdir().unwrap();
    let server = load_or_create_tls(dir.path(), "mx.test").unwrap();
    let cert = CertificateDer::from_pem_file(dir.path().join("cert.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    Tls {
        _dir: dir,
        config: config_with(|c| c.tls = Some(ServerTls::new(server))),
        connector: TlsConnector::from(Arc::new(client)),
    }
}

pub async fn upgrade<S>(tls: &Tls, client: Client<S>) -> Client<TlsStream<S>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let name = ServerName::try_from("mx.test").unwrap();
    let stream = tls
        .connector
        .connect(name, client.into_inner())
        .await
        .unwrap();
    Client::new(stream)
}

#[tokio::test]
async fn starttls_upgrades_and_resets_the_session() {
    let tls = tls_setup();
    let mut h = start_with(tls.config.clone(), OUTSIDER, FakeBackend::new()).await;
    let ehlo = h.client.ehlo().await;
    assert_eq!(ehlo.lines.last().unwrap(), "250 STARTTLS");
    h.client.cmd("STARTTLS").await.expect(220, "2.0.0");
    let mut c = upgrade(&tls, h.client).await;
    // Everything learnt in clear is forgotten: EHLO first.
    c.cmd("MAIL FROM:<a@sender.test>")
        .await
        .expect(503, "5.5.1");
    let ehlo = c.ehlo().await;
    assert!(
        !ehlo.text().contains("STARTTLS"),
        "no STARTTLS once TLS is active"
    );
    c.cmd("STARTTLS").await.expect(503, "5.5.1");
    let r = c
        .send_message("a@sender.test", &["bob@example.test"], &message("tls"))
        .await;
    r.expect(250, "2.0.0");
    let body = String::from_utf8_lossy(&h.backend.submitted()[0].body).into_owned();
    assert!(body.contains(" with ESMTPS id "), "{body}");
    c.cmd("QUIT").await.expect(221, "2.0.0");
}

#[tokio::test]
async fn commands_pipelined_after_starttls_are_discarded() {
    let tls = tls_setup();
    let mut h = start_with(tls.config.clone(), OUTSIDER, FakeBackend::new()).await;
    h.client.ehlo().await;
    // The CVE-2011-0411 injection: plaintext commands in the same packet
    // as STARTTLS.
    h.client
        .send("STARTTLS\r\nEHLO injected.test\r\nMAIL FROM:<evil@attacker.test>\r\n")
        .await;
    h.client.reply().await.expect(220, "2.0.0");
    let mut c = upgrade(&tls, h.client).await;
    // Were the injected commands executed, MAIL would be "nested" (503 with
    // a different text) or RCPT would be accepted; and extra replies would
    // arrive first. Instead: a fresh session.
    c.ehlo().await;
    c.cmd("RCPT TO:<bob@example.test>")
        .await
        .expect(503, "5.5.1");
    c.cmd("MAIL FROM:<a@sender.test>")
        .await
        .expect(250, "2.1.0");
    c.cmd("RCPT TO:<bob@example.test>")
        .await
        .expect(250, "2.1.5");
    c.cmd("QUIT").await.expect(221, "2.0.0");
    assert!(c.unread().is_empty());
    assert_eq!(h.backend.count(), 0);
}

#[tokio::test]
async fn starttls_misuse_is_refused() {
    let tls = tls_setup();
    let mut h = start_with(tls.config.clone(), OUTSIDER, FakeBackend::new()).await;
    h.client.ehlo().await;
    h.client
        .cmd("MAIL FROM:<a@sender.test>")
        .await
        .expect(250, "2.1.0");
    h.client.cmd("STARTTLS").await.expect(503, "5.5.1");
    h.client.cmd("RSET").await.expect(250, "2.0.0");
    // A failed handshake ends the session without harm.
    h.client.cmd("STARTTLS").await.expect(220, "2.0.0");
    h.client.send(b"this is not a TLS client hello\r\n").await;
    assert!(h.client.closed().await);
    h.task.await.unwrap();
    // Without TLS configured STARTTLS is not implemented.
    let mut h = start().await;
    h.client.ehlo().await;
    h.client.cmd("STARTTLS").await.expect(502, "5.5.1");
}

#[tokio::test]
async fn a_replaced_certificate_is_used_by_the_next_handshake() {
    // What SIGHUP does in relayd: swap in a new configuration; sessions
    // that start TLS afterwards get the new certificate.
    let old = tls_setup();
    let new = tls_setup();
    let live = old.config.tls.clone().unwrap();
    let mut h = start_with(old.config.clone(), OUTSIDER, FakeBackend::new()).await;
    h.client.ehlo().await;
    h.client.cmd("STARTTLS").await.expect(220, "2.0.0");
    upgrade(&old, h.client).await.ehlo().await;

    live.replace(new.config.tls.as_ref().unwrap().current());
    let mut h = start_with(old.config.clone(), OUTSIDER, FakeBackend::new()).await;
    h.client.ehlo().await;
    h.client.cmd("STARTTLS").await.expect(220, "2.0.0");
    // A client trusting only the new certificate completes the handshake.
    let mut c = upgrade(&new, h.client).await;
    c.ehlo().await;
    c.cmd("QUIT").await.expect(221, "2.0.0");
}
