//! SMTP AUTH: only over TLS, PLAIN and LOGIN against argon2 hashes, a
//! login lets an outsider relay, and failed logins are limited per IP.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use relay_smtp::SmtpConfig;
use relay_smtp::auth::{AuthFailures, Credentials, SmtpAuth, hash_password};

use crate::common::*;
use crate::starttls::{Tls, tls_setup, upgrade};

fn b64(s: &[u8]) -> String {
    STANDARD.encode(s)
}

fn with_auth(mut config: SmtpConfig, max_failures: u32) -> SmtpConfig {
    let users = HashMap::from([("alice".to_string(), hash_password("correct horse"))]);
    config.auth = Some(Arc::new(SmtpAuth {
        credentials: Credentials::new(users).unwrap(),
        failures: AuthFailures::new(max_failures, Duration::from_secs(600)),
    }));
    config
}

/// A session from `peer` that said EHLO, started TLS and said EHLO again.
async fn tls_session(
    tls: &Tls,
    config: SmtpConfig,
    peer: &str,
    backend: Arc<FakeBackend>,
) -> Client<tokio_rustls::client::TlsStream<tokio::io::DuplexStream>> {
    let mut h = start_with(config, peer, backend).await;
    h.client.ehlo().await;
    h.client.cmd("STARTTLS").await.expect(220, "2.0.0");
    let mut c = upgrade(tls, h.client).await;
    c.ehlo().await;
    c
}

#[tokio::test]
async fn auth_is_never_offered_or_accepted_in_clear() {
    let tls = tls_setup();
    let config = with_auth(tls.config.clone(), 5);
    let mut h = start_with(config, OUTSIDER, FakeBackend::new()).await;
    let ehlo = h.client.ehlo().await;
    assert!(!ehlo.text().contains("AUTH"), "{}", ehlo.text());
    let plain = b64(b"\0alice\0correct horse");
    h.client
        .cmd(&format!("AUTH PLAIN {plain}"))
        .await
        .expect(538, "5.7.11");
    // Without credentials configured AUTH is not enabled at all.
    let mut h = start().await;
    h.client.ehlo().await;
    h.client.cmd("AUTH PLAIN").await.expect(503, "5.5.1");
}

#[tokio::test]
async fn plain_login_lets_an_outsider_relay() {
    let tls = tls_setup();
    let config = with_auth(tls.config.clone(), 5);
    let mut h = start_with(config, OUTSIDER, FakeBackend::new()).await;
    h.client.ehlo().await;
    h.client.cmd("STARTTLS").await.expect(220, "2.0.0");
    let mut c = upgrade(&tls, h.client).await;
    let ehlo = c.ehlo().await;
    assert!(ehlo.text().contains("AUTH PLAIN LOGIN"), "{}", ehlo.text());
    // Before login: no relaying to a foreign domain.
    c.cmd("MAIL FROM:<a@sender.test>")
        .await
        .expect(250, "2.1.0");
    c.cmd("RCPT TO:<x@foreign.test>").await.expect(554, "5.7.1");
    c.cmd("AUTH PLAIN").await.expect(503, "5.5.1");
    c.cmd("RSET").await.expect(250, "2.0.0");
    // Wrong password, then malformed, then right (empty 334 challenge).
    c.cmd(&format!("AUTH PLAIN {}", b64(b"\0alice\0wrong")))
        .await
        .expect(535, "5.7.8");
    c.cmd("AUTH PLAIN !!notbase64").await.expect(501, "5.5.2");
    let challenge = c.cmd("AUTH PLAIN").await;
    assert_eq!(challenge.lines, ["334 "]);
    c.cmd(&b64(b"\0alice\0correct horse"))
        .await
        .expect(235, "2.7.0");
    c.cmd("AUTH PLAIN").await.expect(503, "5.5.1");
    let ehlo = c.ehlo().await;
    assert!(!ehlo.text().contains("AUTH"), "not offered twice");
    let r = c
        .send_message(
            "a@sender.test",
            &["x@foreign.test"],
            &message("authenticated"),
        )
        .await;
    r.expect(250, "2.0.0");
    let body = String::from_utf8_lossy(&h.backend.submitted()[0].body).into_owned();
    assert!(body.contains(" with ESMTPSA id "), "{body}");
    assert!(!body.contains("correct horse"));
    // The envelope records the login (fuzz/artifacts/session/auth-user-lost).
    let envelope = &h.backend.submitted()[0].envelope;
    assert_eq!(envelope.auth_user.as_deref(), Some("alice"));
}

#[tokio::test]
async fn login_mechanism_and_cancel() {
    let tls = tls_setup();
    let config = with_auth(tls.config.clone(), 5);
    let mut c = tls_session(&tls, config, OUTSIDER, FakeBackend::new()).await;
    assert_eq!(c.cmd("AUTH LOGIN").await.lines, ["334 VXNlcm5hbWU6"]);
    c.cmd("*").await.expect(501, "5.0.0");
    c.cmd("AUTH CRAM-MD5").await.expect(504, "5.5.4");
    assert_eq!(c.cmd("AUTH LOGIN").await.lines, ["334 VXNlcm5hbWU6"]);
    assert_eq!(c.cmd(&b64(b"alice")).await.lines, ["334 UGFzc3dvcmQ6"]);
    c.cmd(&b64(b"correct horse")).await.expect(235, "2.7.0");
    c.cmd("MAIL FROM:<a@sender.test>")
        .await
        .expect(250, "2.1.0");
    c.cmd("RCPT TO:<x@foreign.test>").await.expect(250, "2.1.5");
}

#[tokio::test]
async fn failed_logins_are_limited_per_client_address() {
    let tls = tls_setup();
    let config = with_auth(tls.config.clone(), 3);
    let backend = FakeBackend::new();
    let mut c = tls_session(&tls, config.clone(), OUTSIDER, backend.clone()).await;
    let bad = format!("AUTH PLAIN {}", b64(b"\0alice\0guess"));
    c.cmd(&bad).await.expect(535, "5.7.8");
    c.cmd(&bad).await.expect(535, "5.7.8");
    c.cmd(&bad).await.expect(535, "5.7.8");
    c.reply().await.expect(421, "4.7.0");
    assert!(c.closed().await);

    // A new session from the same address is refused even with the right
    // password until the window passes.
    let mut c = tls_session(&tls, config.clone(), OUTSIDER, backend.clone()).await;
    c.cmd(&format!("AUTH PLAIN {}", b64(b"\0alice\0correct horse")))
        .await
        .expect(421, "4.7.0");

    // Another address is not affected.
    let mut c = tls_session(&tls, config, "192.0.2.99:4000", backend).await;
    c.cmd(&format!("AUTH PLAIN {}", b64(b"\0alice\0correct horse")))
        .await
        .expect(235, "2.7.0");
}
