//! What goes on the wire after `DATA` (the outbound half of
//! SMTP smuggling).
//!
//! The inbound side refuses bare CR and bare LF, so a stored body normally
//! has CRLF line ends only. This module does not rely on that: whatever
//! bytes a body holds (an older store, a DSN, a bug elsewhere), every bare
//! CR and every bare LF is sent as CRLF, so a lax downstream server can
//! never read `\n.\n` or `\r.\r\n` inside a body as an end of data.
//!
//! lettre's `AsyncSmtpConnection::message` then adds the transparency dot
//! to every line that starts with `.` and writes the terminating
//! `CRLF.CRLF`. [`wire_bytes`] is the same encoding written out in full;
//! the tests compare it with what lettre really writes to a socket, so the
//! strict-decoder property (and the fuzz target) on [`wire_bytes`] holds
//! for the bytes a target receives.

use std::borrow::Cow;

/// The body with every bare CR and bare LF replaced by CRLF; borrowed when
/// there is nothing to replace (the normal case).
pub fn normalize_line_ends(body: &[u8]) -> Cow<'_, [u8]> {
    if is_crlf_only(body) {
        return Cow::Borrowed(body);
    }
    let mut out = Vec::with_capacity(body.len() + body.len() / 32 + 2);
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'\r' if body.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 2;
            }
            b'\r' | b'\n' => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(out)
}

/// True when every CR is followed by LF and every LF follows a CR.
pub fn is_crlf_only(body: &[u8]) -> bool {
    let mut prev_cr = false;
    for &b in body {
        match b {
            b'\n' if !prev_cr => return false,
            _ if prev_cr && b != b'\n' => return false,
            _ => {}
        }
        prev_cr = b == b'\r';
    }
    !prev_cr
}

/// What is handed to lettre's `message`: the normalised body without its
/// final CRLF, because lettre always appends `CRLF.CRLF` (the stored final
/// CRLF belongs to that terminator on the wire).
pub fn data_payload(body: &[u8]) -> Cow<'_, [u8]> {
    match normalize_line_ends(body) {
        Cow::Borrowed(b) => Cow::Borrowed(b.strip_suffix(b"\r\n").unwrap_or(b)),
        Cow::Owned(mut v) => {
            if v.ends_with(b"\r\n") {
                v.truncate(v.len() - 2);
            }
            Cow::Owned(v)
        }
    }
}

/// Every byte written after the `354` reply: the payload with a dot added
/// before each line that starts with `.`, then `CRLF.CRLF`.
pub fn wire_bytes(body: &[u8]) -> Vec<u8> {
    let payload = data_payload(body);
    let mut out = Vec::with_capacity(payload.len() + payload.len() / 64 + 8);
    let mut line_start = true;
    for &b in payload.iter() {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n';
    }
    out.extend_from_slice(b"\r\n.\r\n");
    out
}

/// A strict receiver: splits on CRLF only, takes the first line that is
/// exactly `.` as the end, removes one leading dot from other lines.
/// Returns the body (each line with CRLF) and the bytes after the end, or
/// `None` if there is no end or a line has a bare CR or LF.
pub fn strict_decode(wire: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let mut body = Vec::with_capacity(wire.len());
    let mut rest = wire;
    loop {
        let end = rest.windows(2).position(|w| w == b"\r\n")?;
        let line = &rest[..end];
        rest = &rest[end + 2..];
        if line.contains(&b'\r') || line.contains(&b'\n') {
            return None;
        }
        if line == b"." {
            return Some((body, rest));
        }
        body.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        body.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The body a strict receiver must see: normalised, ending in CRLF.
    fn expected(body: &[u8]) -> Vec<u8> {
        let mut v = data_payload(body).into_owned();
        v.extend_from_slice(b"\r\n");
        v
    }

    #[test]
    fn bare_line_ends_become_crlf() {
        assert_eq!(&*normalize_line_ends(b"a\nb\rc\r\nd"), b"a\r\nb\r\nc\r\nd");
        assert_eq!(&*normalize_line_ends(b"\r\r\n\n"), b"\r\n\r\n\r\n");
        assert!(matches!(
            normalize_line_ends(b"clean\r\nbody\r\n"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn smuggling_shapes_cannot_end_data_early() {
        for body in [
            &b"a\r\n\n.\r\nMAIL FROM:<x>\r\n"[..],
            b"a\n.\nRCPT TO:<y>\r\n",
            b"a\r.\r\nDATA\r\n",
            b"a\r\n.\rb\r\n",
            b".\r\n",
            b"..\r\n.x\r\n",
        ] {
            let wire = wire_bytes(body);
            let (decoded, rest) = strict_decode(&wire).expect("decodes");
            assert_eq!(decoded, expected(body), "{body:?}");
            assert!(rest.is_empty(), "{body:?}: data ended early");
        }
    }

    proptest! {
        #[test]
        fn strict_decoder_gets_back_the_normalised_body(
            body in proptest::collection::vec(
                prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), Just(b'a'), any::<u8>()],
                0..300,
            )
        ) {
            let wire = wire_bytes(&body);
            let (decoded, rest) = strict_decode(&wire).expect("wire bytes always decode");
            prop_assert_eq!(decoded, expected(&body));
            prop_assert!(rest.is_empty());
            prop_assert!(is_crlf_only(&wire));
        }
    }

    /// What lettre really writes after `354`, captured by a raw loopback
    /// listener (no SMTP library on the receiving side).
    async fn lettre_wire(body: &[u8]) -> Vec<u8> {
        use lettre::transport::smtp::client::AsyncSmtpConnection;
        use lettre::transport::smtp::commands::Data;
        use lettre::transport::smtp::extension::ClientId;
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut stream = BufReader::new(stream);
            stream.get_mut().write_all(b"220 raw\r\n").await.unwrap();
            let mut line = String::new();
            stream.read_line(&mut line).await.unwrap(); // EHLO
            stream.get_mut().write_all(b"250 raw\r\n").await.unwrap();
            line.clear();
            stream.read_line(&mut line).await.unwrap();
            assert_eq!(line, "DATA\r\n");
            stream.get_mut().write_all(b"354 go\r\n").await.unwrap();
            let mut wire = Vec::new();
            let mut buf = [0u8; 4096];
            while !wire.ends_with(b"\r\n.\r\n") {
                let n = stream.read(&mut buf).await.unwrap();
                assert!(n > 0, "client closed before the end of data");
                wire.extend_from_slice(&buf[..n]);
            }
            stream.get_mut().write_all(b"250 ok\r\n").await.unwrap();
            wire
        });
        let id = ClientId::Domain("test".into());
        let mut conn = AsyncSmtpConnection::connect_tokio1(addr, None, &id, None, None)
            .await
            .unwrap();
        conn.command(Data).await.unwrap();
        conn.message(&data_payload(body)).await.unwrap();
        server.await.unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn lettre_writes_exactly_the_wire_bytes(
            body in proptest::collection::vec(
                prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), Just(b'a')],
                0..80,
            )
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let captured = rt.block_on(lettre_wire(&body));
            prop_assert_eq!(captured, wire_bytes(&body));
        }
    }
}
