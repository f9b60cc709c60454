//! Greeting, EHLO/HELO, command sequencing, syntax errors, limits on
//! command lines and errors, pipelining.

use relay_types::{BodyType, DsnRet};

use crate::common::*;

#[tokio::test]
async fn ehlo_advertises_the_extensions_and_helo_works() {
    let mut h = start().await;
    let r = h.client.ehlo().await;
    assert_eq!(
        r.lines,
        [
            "250-mx.test",
            "250-PIPELINING",
            "250-SIZE 10485760",
            "250-8BITMIME",
            "250-SMTPUTF8",
            "250-ENHANCEDSTATUSCODES",
            "250-DSN",
            "250 CHUNKING",
        ],
        "no STARTTLS without TLS configured, never AUTH"
    );
    h.client.cmd("HELO client.test").await.expect(250, "2.0.0");
    let r = h
        .client
        .send_message("a@sender.test", &["bob@example.test"], &message("helo"))
        .await;
    r.expect(250, "2.0.0");
    let sub = &h.backend.submitted()[0];
    assert_eq!(sub.envelope.helo, "client.test");
    assert!(
        String::from_utf8_lossy(&sub.body).contains(" with SMTP id "),
        "HELO means SMTP"
    );
}

#[tokio::test]
async fn commands_out_of_sequence_get_503() {
    let mut h = start().await;
    h.client
        .cmd("MAIL FROM:<a@sender.test>")
        .await
        .expect(503, "5.5.1");
    h.client
        .cmd("RCPT TO:<bob@example.test>")
        .await
        .expect(503, "5.5.1");
    h.client.cmd("DATA").await.expect(503, "5.5.1");
    h.client.ehlo().await;
    h.client
        .cmd("RCPT TO:<bob@example.test>")
        .await
        .expect(503, "5.5.1");
    h.client.cmd("DATA").await.expect(503, "5.5.1");
    h.client
        .cmd("MAIL FROM:<a@sender.test>")
        .await
        .expect(250, "2.1.0");
    h.client
        .cmd("MAIL FROM:<a@sender.test>")
        .await
        .expect(503, "5.5.1");
    h.client.cmd("DATA").await.expect(503, "5.5.1");
    // RSET ends the transaction.
    h.client.cmd("RSET").await.expect(250, "2.0.0");
    h.client
        .cmd("RCPT TO:<bob@example.test>")
        .await
        .expect(503, "5.5.1");
    // EHLO ends it too.
    h.client
        .cmd("MAIL FROM:<a@sender.test>")
        .await
        .expect(250, "2.1.0");
    h.client.ehlo().await;
    h.client
        .cmd("RCPT TO:<bob@example.test>")
        .await
        .expect(503, "5.5.1");
    assert_eq!(h.backend.count(), 0);
}

#[tokio::test]
async fn syntax_errors_get_500_501_and_555() {
    let mut h = start().await;
    h.client.cmd("FROBNICATE").await.expect(500, "5.5.2");
    h.client.cmd("EHLO").await.expect(501, "5.5.4");
    h.client.ehlo().await;
    h.client
        .cmd("MAIL FROM:a@sender.test")
        .await
        .expect(501, "5.5.4");
    h.client
        .cmd("MAIL FROM:<a@@sender.test>")
        .await
        .expect(501, "5.1.7");
    h.client
        .cmd("MAIL FROM:<a@sender.test> BODY=9BIT")
        .await
        .expect(501, "5.5.4");
    h.client
        .cmd("MAIL FROM:<a@sender.test> FOO=bar")
        .await
        .expect(555, "5.5.4");
    h.client
        .cmd("MAIL FROM:<a@sender.test> REQUIRETLS")
        .await
        .expect(555, "5.5.4");
    h.client
        .cmd("MAIL FROM:<a@sender.test> BODY=BINARYMIME")
        .await
        .expect(555, "5.5.4");
    h.client
        .cmd("MAIL FROM:<a@sender.test>")
        .await
        .expect(250, "2.1.0");
    h.client.cmd("RCPT TO:<>").await.expect(501, "5.1.3");
    h.client
        .cmd("RCPT TO:<a b@example.test>")
        .await
        .expect(501, "5.1.3");
    h.client
        .cmd("RCPT TO:bob@example.test")
        .await
        .expect(501, "5.5.4");
    h.client
        .cmd("RCPT TO:<bob@example.test> RRVS=2030-01-01T00:00:00Z")
        .await
        .expect(555, "5.5.4");
    h.client
        .cmd("RCPT TO:<bob@example.test> NOTIFY=SOMETIMES")
        .await
        .expect(501, "5.5.4");
    h.client
        .cmd("RCPT TO:<bob@example.test>")
        .await
        .expect(250, "2.1.5");
}

#[tokio::test]
async fn small_commands_answer_with_enhanced_codes() {
    let mut h = start().await;
    h.client.cmd("NOOP").await.expect(250, "2.0.0");
    h.client.cmd("VRFY bob").await.expect(252, "2.0.0");
    h.client.cmd("EXPN staff").await.expect(502, "5.5.1");
    h.client.cmd("HELP").await.expect(214, "2.0.0");
    h.client.cmd("ETRN example.test").await.expect(502, "5.5.1");
    h.client
        .cmd("AUTH PLAIN AGJvYgBzZWNyZXQ=")
        .await
        .expect(503, "5.5.1");
    h.client.cmd("STARTTLS").await.expect(502, "5.5.1");
    h.client.cmd("QUIT").await.expect(221, "2.0.0");
    assert!(h.client.closed().await);
    h.task.await.unwrap();
}

#[tokio::test]
async fn command_lines_are_limited_to_512_octets_with_crlf() {
    let mut h = start().await;
    // 512 octets including CRLF: fine.
    let ok = format!("NOOP {}", "x".repeat(512 - 2 - 5));
    assert_eq!(ok.len() + 2, 512);
    h.client.cmd(&ok).await.expect(250, "2.0.0");
    let long = format!("NOOP {}", "x".repeat(512 - 2 - 4));
    h.client.cmd(&long).await.expect(500, "5.5.2");
    // A huge line is skipped without being buffered, then we go on.
    h.client.send(vec![b'A'; 200_000]).await;
    h.client.send(b"\r\nNOOP\r\n").await;
    h.client.reply().await.expect(500, "5.5.2");
    h.client.reply().await.expect(250, "2.0.0");
    // Bare LF and bare CR in command lines are refused.
    h.client.send(b"NOOP\n").await;
    h.client.reply().await.expect(500, "5.5.2");
    h.client.send(b"NOOP\rRSET\r\n").await;
    h.client.reply().await.expect(500, "5.5.2");
    h.client.cmd("NOOP").await.expect(250, "2.0.0");
}

#[tokio::test]
async fn too_many_errors_end_the_session_with_421() {
    let cfg = config_with(|c| c.max_errors = 3);
    let mut h = start_with(cfg, OUTSIDER, FakeBackend::new()).await;
    h.client.cmd("BAD1").await.expect(500, "5.5.2");
    h.client.cmd("BAD2").await.expect(500, "5.5.2");
    h.client.cmd("BAD3").await.expect(500, "5.5.2");
    h.client.reply().await.expect(421, "4.7.0");
    assert!(h.client.closed().await);
}

#[tokio::test]
async fn pipelined_commands_get_replies_in_order() {
    let mut h = start().await;
    h.client.ehlo().await;
    h.client
        .send(
            "MAIL FROM:<a@sender.test>\r\nRCPT TO:<bob@example.test>\r\n\
             RCPT TO:<eve@elsewhere.test>\r\nRCPT TO:<carol@example.test>\r\nDATA\r\n",
        )
        .await;
    h.client.reply().await.expect(250, "2.1.0");
    h.client.reply().await.expect(250, "2.1.5");
    h.client.reply().await.expect(554, "5.7.1");
    h.client.reply().await.expect(250, "2.1.5");
    assert_eq!(h.client.reply().await.code, 354);
    // Body, terminator and the next transaction in one write.
    let mut burst = relay_smtp::data::dot_stuff(&message("one"));
    burst.extend_from_slice(b"MAIL FROM:<a@sender.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n");
    h.client.send(&burst).await;
    let first = h.client.reply().await;
    first.expect(250, "2.0.0");
    h.client.reply().await.expect(250, "2.1.0");
    h.client.reply().await.expect(250, "2.1.5");
    assert_eq!(h.client.reply().await.code, 354);
    let mut burst = relay_smtp::data::dot_stuff(&message("two"));
    burst.extend_from_slice(b"QUIT\r\n");
    h.client.send(&burst).await;
    h.client.reply().await.expect(250, "2.0.0");
    h.client.reply().await.expect(221, "2.0.0");
    let subs = h.backend.submitted();
    assert_eq!(subs.len(), 2);
    assert_eq!(subs[0].envelope.recipients.len(), 2);
    assert_eq!(
        first.lines[0],
        format!("250 2.0.0 Ok: queued as {}", subs[0].id)
    );
}

#[tokio::test]
async fn mail_and_rcpt_parameters_are_carried_in_the_envelope() {
    let mut h = start().await;
    h.client.ehlo().await;
    h.client
        .cmd("MAIL FROM:<a@sender.test> SIZE=1234 BODY=8BITMIME RET=HDRS ENVID=env+2B1 SMTPUTF8")
        .await
        .expect(250, "2.1.0");
    h.client
        .cmd("RCPT TO:<bob@example.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;bob+40example.test")
        .await
        .expect(250, "2.1.5");
    h.client
        .cmd("RCPT TO:<carol@example.test> NOTIFY=NEVER")
        .await
        .expect(250, "2.1.5");
    // The same recipient twice is kept once.
    h.client
        .cmd("RCPT TO:<carol@example.test>")
        .await
        .expect(250, "2.1.5");
    h.client
        .cmd("RCPT TO:<dave@example.test>")
        .await
        .expect(250, "2.1.5");
    assert_eq!(h.client.cmd("DATA").await.code, 354);
    h.client
        .send(relay_smtp::data::dot_stuff(&message("params")))
        .await;
    h.client.reply().await.expect(250, "2.0.0");
    let env = &h.backend.submitted()[0].envelope;
    assert_eq!(env.reverse_path, "a@sender.test");
    assert_eq!(env.declared_size, Some(1234));
    assert_eq!(env.body_type, BodyType::EightBitMime);
    assert_eq!(env.ret, Some(DsnRet::Headers));
    assert_eq!(env.envid.as_deref(), Some("env+2B1"));
    assert!(env.smtputf8);
    assert_eq!(env.helo, "client.test");
    assert_eq!(env.client_addr, OUTSIDER);
    assert_eq!(env.auth_user, None);
    let r = &env.recipients;
    assert_eq!(r.len(), 3);
    assert_eq!(r[0].address, "bob@example.test");
    assert_eq!(r[0].orcpt.as_deref(), Some("rfc822;bob+40example.test"));
    assert!(r[0].notify.success && r[0].notify.delay && !r[0].notify.failure);
    assert!(r[1].notify.never && r[1].orcpt.is_none());
    assert_eq!(r[2].notify, Default::default());

    // Null sender, no parameters.
    h.client.cmd("MAIL FROM:<>").await.expect(250, "2.1.0");
    h.client
        .cmd("RCPT TO:<bob@example.test>")
        .await
        .expect(250, "2.1.5");
    assert_eq!(h.client.cmd("DATA").await.code, 354);
    h.client
        .send(relay_smtp::data::dot_stuff(&message("bounce")))
        .await;
    h.client.reply().await.expect(250, "2.0.0");
    let env = &h.backend.submitted()[1].envelope;
    assert!(env.is_null_sender());
    assert_eq!(
        (env.declared_size, env.body_type, env.ret),
        (None, BodyType::SevenBit, None)
    );
}

#[tokio::test]
async fn declared_size_over_the_limit_gets_552() {
    let mut h = start().await;
    h.client.ehlo().await;
    h.client
        .cmd("MAIL FROM:<a@sender.test> SIZE=10485761")
        .await
        .expect(552, "5.3.4");
    h.client
        .cmd("MAIL FROM:<a@sender.test> SIZE=10485760")
        .await
        .expect(250, "2.1.0");
}

#[tokio::test]
async fn recipients_past_the_limit_get_452_and_the_rest_is_delivered() {
    let cfg = config_with(|c| c.max_recipients = 2);
    let mut h = start_with(cfg, OUTSIDER, FakeBackend::new()).await;
    h.client.ehlo().await;
    h.client
        .cmd("MAIL FROM:<a@sender.test>")
        .await
        .expect(250, "2.1.0");
    h.client
        .cmd("RCPT TO:<r1@example.test>")
        .await
        .expect(250, "2.1.5");
    h.client
        .cmd("RCPT TO:<r2@example.test>")
        .await
        .expect(250, "2.1.5");
    h.client
        .cmd("RCPT TO:<r3@example.test>")
        .await
        .expect(452, "4.5.3");
    assert_eq!(h.client.cmd("DATA").await.code, 354);
    h.client
        .send(relay_smtp::data::dot_stuff(&message("limit")))
        .await;
    h.client.reply().await.expect(250, "2.0.0");
    assert_eq!(h.backend.submitted()[0].envelope.recipients.len(), 2);
}

#[tokio::test]
async fn non_ascii_addresses_need_smtputf8() {
    let mut h = start().await;
    h.client.ehlo().await;
    h.client
        .cmd("MAIL FROM:<jösé@sender.test>")
        .await
        .expect(553, "5.6.7");
    h.client
        .cmd("MAIL FROM:<a@sender.test>")
        .await
        .expect(250, "2.1.0");
    h.client
        .cmd("RCPT TO:<bjørn@example.test>")
        .await
        .expect(553, "5.6.7");
    h.client.cmd("RSET").await.expect(250, "2.0.0");
    h.client
        .cmd("MAIL FROM:<jösé@sender.test> SMTPUTF8")
        .await
        .expect(250, "2.1.0");
    h.client
        .cmd("RCPT TO:<bjørn@example.test>")
        .await
        .expect(250, "2.1.5");
}
