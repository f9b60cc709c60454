//! No end-of-data variant but CRLF.CRLF ends DATA, so no second
//! message can be smuggled inside the first.

use crate::common::*;

const VARIANTS: &[&[u8]] = &[
    b"\n.\n",
    b"\r.\n",
    b"\n.\r\n",
    b"\r\n.\n",
    b"\r.\r\n",
    b"\n.\r",
    b"\r\n.\r",
    b"\r\n.\r\r\n",
    b"\r\n\x00.\r\n",
    b"\r\n.\x00\r\n",
    b"\n\n.\n\n",
    b"\r\r.\r\r",
];

/// The smuggled payload: a complete second transaction.
const SMUGGLED: &[u8] = b"MAIL FROM:<evil@attacker.test>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nspoofed\r\n";

#[tokio::test]
async fn every_variant_yields_at_most_one_refused_message_and_no_second() {
    for variant in VARIANTS {
        let mut h = start().await;
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
        let mut payload = b"Subject: first\r\n\r\nfirst".to_vec();
        payload.extend_from_slice(variant);
        payload.extend_from_slice(SMUGGLED);
        payload.extend_from_slice(b"\r\n.\r\n");
        h.client.send(&payload).await;
        let r = h.client.reply().await;
        let expected = if variant.contains(&0) && !has_bare_cr_or_lf(variant) {
            (550, "5.6.0")
        } else {
            (550, "5.6.11")
        };
        r.expect(expected.0, expected.1);
        if expected.1 == "5.6.11" {
            assert_eq!(r.lines, ["550 5.6.11 bare CR or LF in message"]);
        }
        // Exactly one reply for the whole payload: the next reply belongs
        // to our NOOP, not to a smuggled command.
        h.client.cmd("NOOP").await.expect(250, "2.0.0");
        assert_eq!(h.backend.count(), 0, "variant {variant:?}");
        // The session still works for a clean message.
        let r = h
            .client
            .send_message("a@sender.test", &["bob@example.test"], &message("clean"))
            .await;
        r.expect(250, "2.0.0");
        let subs = h.backend.submitted();
        assert_eq!(subs.len(), 1);
        assert_eq!(subs[0].envelope.reverse_path, "a@sender.test");
    }
}

fn has_bare_cr_or_lf(v: &[u8]) -> bool {
    v.iter().enumerate().any(|(i, &b)| {
        (b == b'\r' && v.get(i + 1) != Some(&b'\n'))
            || (b == b'\n' && (i == 0 || v[i - 1] != b'\r'))
    })
}

#[tokio::test]
async fn variants_split_across_writes_behave_the_same() {
    let mut h = start().await;
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
    // `\r\n.` then `\n`, one octet per write.
    for chunk in [&b"Subject: x\r\n\r\nbody"[..], b"\r", b"\n", b".", b"\n"] {
        h.client.send(chunk).await;
        tokio::task::yield_now().await;
    }
    h.client.send(SMUGGLED).await;
    for chunk in [&b"\r"[..], b"\n", b".", b"\r", b"\n"] {
        h.client.send(chunk).await;
    }
    h.client.reply().await.expect(550, "5.6.11");
    h.client.cmd("NOOP").await.expect(250, "2.0.0");
    assert_eq!(h.backend.count(), 0);
}
