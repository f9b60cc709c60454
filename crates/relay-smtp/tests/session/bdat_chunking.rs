//! CHUNKING (RFC 3030): BDAT chunks, LAST, and the same rules as DATA.

use crate::common::*;

async fn ready(h: &mut Harness) {
    h.client.ehlo().await;
    h.client
        .cmd("MAIL FROM:<a@sender.test>")
        .await
        .expect(250, "2.1.0");
    h.client
        .cmd("RCPT TO:<bob@example.test>")
        .await
        .expect(250, "2.1.5");
}

async fn bdat(h: &mut Harness, chunk: &[u8], last: bool) -> Reply {
    let mut cmd = format!(
        "BDAT {}{}\r\n",
        chunk.len(),
        if last { " LAST" } else { "" }
    )
    .into_bytes();
    cmd.extend_from_slice(chunk);
    h.client.send(&cmd).await;
    h.client.reply().await
}

#[tokio::test]
async fn chunks_are_assembled_byte_exact() {
    let mut h = start().await;
    ready(&mut h).await;
    // CRLF split across chunks, dots NOT unstuffed (BDAT is raw).
    let r = bdat(&mut h, b"Subject: chunks\r", false).await;
    assert_eq!(r.lines, ["250 2.0.0 Ok: 16 octets received"]);
    bdat(&mut h, b"\n\r\n.not stuffed\r\n", false)
        .await
        .expect(250, "2.0.0");
    let r = bdat(&mut h, b"last line\r\n", true).await;
    r.expect(250, "2.0.0");
    let sub = &h.backend.submitted()[0];
    assert_eq!(r.lines[0], format!("250 2.0.0 Ok: queued as {}", sub.id));
    assert_eq!(
        client_part(&sub.body),
        b"Subject: chunks\r\n\r\n.not stuffed\r\nlast line\r\n"
    );
    assert_eq!(sub.info.subject.as_deref(), Some("chunks"));
}

#[tokio::test]
async fn pipelined_bdat_and_empty_last_chunk() {
    let mut h = start().await;
    ready(&mut h).await;
    h.client
        .send(b"BDAT 15\r\nSubject: pipe\r\nBDAT 8\r\n\r\nbody\r\nBDAT 0 LAST\r\nNOOP\r\n")
        .await;
    h.client.reply().await.expect(250, "2.0.0");
    h.client.reply().await.expect(250, "2.0.0");
    h.client.reply().await.expect(250, "2.0.0");
    h.client.reply().await.expect(250, "2.0.0");
    let sub = &h.backend.submitted()[0];
    assert_eq!(client_part(&sub.body), b"Subject: pipe\r\n\r\nbody\r\n");
}

#[tokio::test]
async fn an_unterminated_last_line_gets_crlf() {
    let mut h = start().await;
    ready(&mut h).await;
    bdat(&mut h, b"Subject: t\r\n\r\nno newline", true)
        .await
        .expect(250, "2.0.0");
    assert_eq!(
        client_part(&h.backend.submitted()[0].body),
        b"Subject: t\r\n\r\nno newline\r\n"
    );
}

#[tokio::test]
async fn bdat_out_of_sequence_is_refused_and_its_octets_skipped() {
    let mut h = start().await;
    h.client.ehlo().await;
    // The chunk holds something that looks like a command: it must be
    // skipped as data, not run.
    bdat(&mut h, b"QUIT\r\n", false).await.expect(503, "5.5.1");
    h.client
        .cmd("MAIL FROM:<a@sender.test>")
        .await
        .expect(250, "2.1.0");
    bdat(&mut h, b"RSET\r\n", true).await.expect(503, "5.5.1");
    h.client
        .cmd("RCPT TO:<bob@example.test>")
        .await
        .expect(250, "2.1.5");
    bdat(&mut h, b"Subject: x\r\n\r\n", false)
        .await
        .expect(250, "2.0.0");
    h.client.cmd("DATA").await.expect(503, "5.5.1");
    h.client
        .cmd("RCPT TO:<carol@example.test>")
        .await
        .expect(503, "5.5.1");
    bdat(&mut h, b"ok\r\n", true).await.expect(250, "2.0.0");
    assert_eq!(h.backend.count(), 1);
}

#[tokio::test]
async fn bdat_with_bare_lf_or_cr_is_refused() {
    let mut h = start().await;
    ready(&mut h).await;
    bdat(
        &mut h,
        b"Subject: x\r\n\r\nsmuggle\n.\nMAIL FROM:<e@x>\r\n",
        false,
    )
    .await
    .expect(550, "5.6.11");
    // The transaction is over.
    bdat(&mut h, b"more\r\n", true).await.expect(503, "5.5.1");
    ready_again(&mut h).await;
    // A trailing bare CR at LAST.
    bdat(&mut h, b"Subject: x\r\n\r\nend\r", true)
        .await
        .expect(550, "5.6.11");
    assert_eq!(h.backend.count(), 0);
}

async fn ready_again(h: &mut Harness) {
    h.client
        .cmd("MAIL FROM:<a@sender.test>")
        .await
        .expect(250, "2.1.0");
    h.client
        .cmd("RCPT TO:<bob@example.test>")
        .await
        .expect(250, "2.1.5");
}

#[tokio::test]
async fn bdat_over_the_size_limit_is_read_and_refused() {
    let cfg = config_with(|c| c.max_message_size = 1000);
    let mut h = start_with(cfg, OUTSIDER, FakeBackend::new()).await;
    ready(&mut h).await;
    bdat(&mut h, b"Subject: big\r\n\r\n", false)
        .await
        .expect(250, "2.0.0");
    let mut big = Vec::new();
    for _ in 0..100 {
        big.extend_from_slice(&[b'b'; 48]);
        big.extend_from_slice(b"\r\n");
    }
    bdat(&mut h, &big, true).await.expect(552, "5.3.4");
    assert_eq!(h.backend.count(), 0);
    h.client.cmd("NOOP").await.expect(250, "2.0.0");
}

#[tokio::test]
async fn bdat_with_a_line_over_1000_octets_is_refused() {
    let mut h = start().await;
    ready(&mut h).await;
    let mut long = b"Subject: l\r\n\r\n".to_vec();
    long.extend(std::iter::repeat_n(b'l', 999));
    long.extend_from_slice(b"\r\n");
    bdat(&mut h, &long, true).await.expect(500, "5.5.2");
    assert_eq!(h.backend.count(), 0);
}
