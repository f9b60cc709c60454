//! No open relay, no routing tricks from outside.

use crate::common::*;

async fn in_transaction(peer: &str, cfg: relay_smtp::SmtpConfig) -> Harness {
    let mut h = start_with(cfg, peer, FakeBackend::new()).await;
    h.client.ehlo().await;
    h.client
        .cmd("MAIL FROM:<a@sender.test>")
        .await
        .expect(250, "2.1.0");
    h
}

#[tokio::test]
async fn outsiders_may_only_send_to_relay_domains() {
    let mut h = in_transaction(OUTSIDER, config()).await;
    let r = h.client.cmd("RCPT TO:<eve@elsewhere.test>").await;
    assert_eq!(
        r.lines,
        ["554 5.7.1 <eve@elsewhere.test>: Relay access denied"]
    );
    h.client
        .cmd("RCPT TO:<eve@sub.example.test>")
        .await
        .expect(554, "5.7.1");
    h.client
        .cmd("RCPT TO:<Bob@EXAMPLE.Test>")
        .await
        .expect(250, "2.1.5");
    h.client
        .cmd("RCPT TO:<bob@example.test.>")
        .await
        .expect(250, "2.1.5");
}

#[tokio::test]
async fn authorized_networks_may_relay_anywhere() {
    let mut h = in_transaction(INSIDER, config()).await;
    h.client
        .cmd("RCPT TO:<eve@elsewhere.test>")
        .await
        .expect(250, "2.1.5");
    // A configured network, IPv4 and IPv6.
    let cfg = config_with(|c| {
        c.authorized_networks = vec![
            "10.0.0.0/8".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ]
    });
    let mut h = in_transaction("10.1.2.3:2525", cfg.clone()).await;
    h.client
        .cmd("RCPT TO:<eve@elsewhere.test>")
        .await
        .expect(250, "2.1.5");
    let mut h = in_transaction("[2001:db8::7]:2525", cfg.clone()).await;
    h.client
        .cmd("RCPT TO:<eve@elsewhere.test>")
        .await
        .expect(250, "2.1.5");
    // 127.0.0.1 is no longer trusted with that list.
    let mut h = in_transaction(INSIDER, cfg).await;
    h.client
        .cmd("RCPT TO:<eve@elsewhere.test>")
        .await
        .expect(554, "5.7.1");
}

const TRICKS: &[&str] = &[
    "bob%elsewhere.test@example.test",
    "elsewhere.test!bob@example.test",
    "@example.test:bob@elsewhere.test",
    "@elsewhere.test,@example.test:bob@example.test",
    "\"bob@elsewhere.test\"@example.test",
    "\"bob\"@example.test",
    "bob@[192.0.2.1]",
    "bob@[IPv6:2001:db8::1]",
    "bob@localhost",
    "bob@localhost.localdomain",
    "bob@foo.localhost",
];

#[tokio::test]
async fn routing_tricks_are_refused_from_outside() {
    let mut h = in_transaction(OUTSIDER, config()).await;
    for trick in TRICKS {
        let r = h.client.cmd(&format!("RCPT TO:<{trick}>")).await;
        r.expect(550, "5.7.1");
        assert!(r.text().contains("not accepted"), "{trick}: {r:?}");
    }
    h.client
        .cmd("RCPT TO:<postmaster>")
        .await
        .expect(550, "5.1.1");
    h.client.cmd("DATA").await.expect(503, "5.5.1");
}

#[tokio::test]
async fn routing_forms_are_accepted_from_authorized_networks() {
    let mut h = in_transaction(INSIDER, config()).await;
    for trick in TRICKS {
        h.client
            .cmd(&format!("RCPT TO:<{trick}>"))
            .await
            .expect(250, "2.1.5");
    }
    assert_eq!(h.client.cmd("DATA").await.code, 354);
    h.client
        .send(relay_smtp::data::dot_stuff(&message("tricks")))
        .await;
    h.client.reply().await.expect(250, "2.0.0");
    let env = &h.backend.submitted()[0].envelope;
    let addrs: Vec<&str> = env.recipients.iter().map(|r| r.address.as_str()).collect();
    // Source routes are dropped (RFC 5321 4.1.1.3: "SHOULD ignore"), quotes kept.
    assert!(addrs.contains(&"bob@elsewhere.test"));
    assert!(addrs.contains(&"\"bob@elsewhere.test\"@example.test"));
    assert!(addrs.contains(&"bob%elsewhere.test@example.test"));
}
