//! DATA: what is stored (byte-exact, unstuffed, Received first), what is
//! learnt from the headers, and every refusal at end of data.

use relay_smtp::data::dot_stuff;

use crate::common::*;

async fn data_phase(h: &mut Harness) {
    h.client.ehlo().await;
    h.client
        .cmd("MAIL FROM:<a@sender.test>")
        .await
        .expect(250, "2.1.0");
    h.client
        .cmd("RCPT TO:<bob@example.test>")
        .await
        .expect(250, "2.1.5");
    assert_eq!(h.client.cmd("DATA").await.code, 354);
}

#[tokio::test]
async fn accepted_message_is_stored_with_received_header_and_info() {
    let mut h = start().await;
    h.client.ehlo().await;
    let body = message("hello world");
    let r = h
        .client
        .send_message("a@sender.test", &["bob@example.test"], &body)
        .await;
    let subs = h.backend.submitted();
    assert_eq!(subs.len(), 1);
    let sub = &subs[0];
    assert_eq!(r.lines, [format!("250 2.0.0 Ok: queued as {}", sub.id)]);
    assert_eq!(client_part(&sub.body), &body[..]);
    let text = String::from_utf8_lossy(&sub.body);
    let received = &text[..text.len() - body.len()];
    let expected_start = format!(
        "Received: from client.test ([192.0.2.10])\r\n\tby mx.test (quorum-relay) with ESMTP id {}\r\n\tfor <bob@example.test>; ",
        sub.id
    );
    assert!(received.starts_with(&expected_start), "{received:?}");
    assert!(received.ends_with(" +0000\r\n"), "{received:?}");
    assert_eq!(
        sub.info.message_id_header.as_deref(),
        Some("hello world@sender.test")
    );
    assert_eq!(sub.info.subject.as_deref(), Some("hello world"));
    assert_eq!(sub.info.size, sub.body.len() as u64);
    assert!(sub.received_at.0 > 0);
    // The transaction is over: a new one is needed.
    h.client
        .cmd("RCPT TO:<bob@example.test>")
        .await
        .expect(503, "5.5.1");
}

#[tokio::test]
async fn dot_stuffed_lines_are_unstuffed_exactly() {
    let mut h = start().await;
    data_phase(&mut h).await;
    h.client
        .send(b"Subject: dots\r\n\r\n..\r\n...\r\n..leading\r\n.single\r\n. \r\nend.\r\n.\r\n")
        .await;
    h.client.reply().await.expect(250, "2.0.0");
    let sub = &h.backend.submitted()[0];
    assert_eq!(
        client_part(&sub.body),
        b"Subject: dots\r\n\r\n.\r\n..\r\n.leading\r\nsingle\r\n \r\nend.\r\n"
    );
}

#[tokio::test]
async fn eight_bit_bodies_and_998_octet_lines_are_stored_byte_exact() {
    let mut h = start().await;
    h.client.ehlo().await;
    let mut body = b"Subject: 8bit\r\nContent-Type: text/plain; charset=latin1\r\n\r\n".to_vec();
    body.extend((1u8..=255).filter(|b| !matches!(b, b'\r' | b'\n')));
    body.extend_from_slice(b"\r\n");
    body.extend(std::iter::repeat_n(b'x', 998));
    body.extend_from_slice(b"\r\n.");
    body.extend(std::iter::repeat_n(b'y', 997)); // 998 with the leading dot
    body.extend_from_slice(b"\r\n");
    h.client
        .cmd("MAIL FROM:<a@sender.test> BODY=8BITMIME")
        .await
        .expect(250, "2.1.0");
    h.client
        .cmd("RCPT TO:<bob@example.test>")
        .await
        .expect(250, "2.1.5");
    assert_eq!(h.client.cmd("DATA").await.code, 354);
    h.client.send(dot_stuff(&body)).await;
    h.client.reply().await.expect(250, "2.0.0");
    assert_eq!(client_part(&h.backend.submitted()[0].body), &body[..]);
}

#[tokio::test]
async fn a_text_line_over_1000_octets_is_refused_and_nothing_submitted() {
    let mut h = start().await;
    data_phase(&mut h).await;
    let mut body = b"Subject: long\r\n\r\n".to_vec();
    body.extend(std::iter::repeat_n(b'x', 999)); // 1001 with CRLF
    body.extend_from_slice(b"\r\n");
    h.client.send(dot_stuff(&body)).await;
    h.client.reply().await.expect(500, "5.5.2");
    assert_eq!(h.backend.count(), 0);
    h.client.cmd("NOOP").await.expect(250, "2.0.0");
}

#[tokio::test]
async fn size_limit_is_enforced_while_streaming() {
    let cfg = config_with(|c| c.max_message_size = 64 * 1024);
    let mut h = start_with(cfg, OUTSIDER, FakeBackend::new()).await;
    data_phase(&mut h).await;
    let mut body = b"Subject: big\r\n\r\n".to_vec();
    for _ in 0..20_000 {
        body.extend_from_slice(&[b'z'; 98]);
        body.extend_from_slice(b"\r\n");
    }
    // 2 MB streamed at a 64 KiB limit: read to the end, then refused.
    h.client.send(dot_stuff(&body)).await;
    h.client.reply().await.expect(552, "5.3.4");
    assert_eq!(h.backend.count(), 0);
    // The session goes on and a message within the limit is accepted.
    let r = h
        .client
        .send_message("a@sender.test", &["bob@example.test"], &message("small"))
        .await;
    r.expect(250, "2.0.0");
    assert_eq!(h.backend.count(), 1);
}

#[tokio::test]
async fn messages_without_a_header_section_are_refused() {
    let mut h = start().await;
    h.client.ehlo().await;
    for body in [
        &b"Hello, no headers here\r\n"[..],
        b"",
        b"From bob Mon Jan 1\r\nSubject: x\r\n\r\n",
    ] {
        let r = h
            .client
            .send_message("a@sender.test", &["bob@example.test"], body)
            .await;
        r.expect(550, "5.6.0");
        assert!(r.text().contains("message has no header section"), "{r:?}");
    }
    assert_eq!(h.backend.count(), 0);
    // An empty header section (first line empty) is a valid message.
    let r = h
        .client
        .send_message("a@sender.test", &["bob@example.test"], b"\r\nbody only\r\n")
        .await;
    r.expect(250, "2.0.0");
    let sub = &h.backend.submitted()[0];
    assert_eq!(client_part(&sub.body), b"\r\nbody only\r\n");
    assert_eq!(
        (
            sub.info.subject.as_deref(),
            sub.info.message_id_header.as_deref()
        ),
        (None, None)
    );
}

#[tokio::test]
async fn an_oversized_header_section_is_refused() {
    let cfg = config_with(|c| c.max_header_size = 1024);
    let mut h = start_with(cfg, OUTSIDER, FakeBackend::new()).await;
    h.client.ehlo().await;
    let mut body = Vec::new();
    for i in 0..40 {
        body.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "f".repeat(40)).as_bytes());
    }
    body.extend_from_slice(b"\r\nbody\r\n");
    let r = h
        .client
        .send_message("a@sender.test", &["bob@example.test"], &body)
        .await;
    r.expect(552, "5.3.4");
    assert_eq!(h.backend.count(), 0);
}

#[tokio::test]
async fn a_nul_octet_is_refused() {
    let mut h = start().await;
    data_phase(&mut h).await;
    h.client.send(b"Subject: nul\r\n\r\na\0b\r\n.\r\n").await;
    h.client.reply().await.expect(550, "5.6.0");
    assert_eq!(h.backend.count(), 0);
}

#[tokio::test]
async fn a_client_that_disconnects_mid_data_submits_nothing() {
    let mut h = start().await;
    data_phase(&mut h).await;
    h.client.send(b"Subject: cut\r\n\r\npartial").await;
    drop(h.client);
    h.task.await.unwrap();
    assert_eq!(h.backend.count(), 0);
}
