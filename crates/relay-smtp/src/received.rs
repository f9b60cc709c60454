//! The `Received:` trace header (RFC 5321 4.4); its date is
//! [`UnixMillis::rfc5322`].

use std::net::IpAddr;

use relay_types::{MessageId, UnixMillis};

use crate::config::canonical;

/// What goes into one `Received:` header.
#[derive(Clone, Copy, Debug)]
pub struct Trace<'a> {
    /// The client's EHLO/HELO argument (sanitised here).
    pub helo: &'a str,
    /// The client's IP address.
    pub ip: IpAddr,
    /// Our host name.
    pub hostname: &'a str,
    /// `ESMTPSA`, `ESMTPS`, `ESMTP` or `SMTP` (RFC 3848).
    pub protocol: &'a str,
    /// The queue id.
    pub id: MessageId,
    /// The recipient, when there is exactly one.
    pub recipient: Option<&'a str>,
    /// When the message was received.
    pub at: UnixMillis,
}

/// The header, folded with CRLF + TAB (shown as spaces), ending in CRLF:
///
/// ```text
/// Received: from client.test ([192.0.2.1])
///     by mx.test (quorum-relay) with ESMTPS id 0190…
///     for <bob@example.test>; Tue, 01 Jul 2025 10:52:37 +0000
/// ```
pub fn received_header(t: &Trace<'_>) -> String {
    let helo = sanitize_helo(t.helo);
    let ip = match canonical(t.ip) {
        IpAddr::V4(v4) => format!("[{v4}]"),
        IpAddr::V6(v6) => format!("[IPv6:{v6}]"),
    };
    let date = t.at.rfc5322();
    let mut h = format!(
        "Received: from {helo} ({ip})\r\n\tby {} (quorum-relay) with {} id {}",
        t.hostname, t.protocol, t.id
    );
    match t.recipient.filter(|r| safe_in_header(r)) {
        Some(rcpt) => h.push_str(&format!("\r\n\tfor <{rcpt}>; {date}\r\n")),
        None => h.push_str(&format!(";\r\n\t{date}\r\n")),
    }
    h
}

/// Only characters that cannot break the header's structure.
fn sanitize_helo(helo: &str) -> String {
    let s: String = helo
        .chars()
        .take(255)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '[' | ']') {
                c
            } else {
                '?'
            }
        })
        .collect();
    if s.is_empty() { "unknown".into() } else { s }
}

fn safe_in_header(addr: &str) -> bool {
    !addr.is_empty()
        && addr
            .chars()
            .all(|c| !c.is_control() && !c.is_whitespace() && !"<>();\"\\".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_folded_and_safe() {
        let t = Trace {
            helo: "client(evil);\r\nX: y",
            ip: "::ffff:192.0.2.1".parse().unwrap(),
            hostname: "mx.test",
            protocol: "ESMTPS",
            id: MessageId([1; 16]),
            recipient: Some("bob@example.test"),
            at: UnixMillis(0),
        };
        let h = received_header(&t);
        assert_eq!(
            h,
            format!(
                "Received: from client?evil????X:?y ([192.0.2.1])\r\n\tby mx.test (quorum-relay) with ESMTPS id {}\r\n\tfor <bob@example.test>; Thu, 01 Jan 1970 00:00:00 +0000\r\n",
                MessageId([1; 16])
            )
        );
        let v6 = received_header(&Trace {
            ip: "2001:db8::1".parse().unwrap(),
            recipient: Some("a;b@x"),
            ..t
        });
        assert!(v6.contains("([IPv6:2001:db8::1])"));
        assert!(v6.contains(&format!("id {};\r\n\tThu, 01 Jan", MessageId([1; 16]))));
        assert!(!v6.contains("for <"));
    }
}
