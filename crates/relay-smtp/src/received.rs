//! The `Received:` trace header (RFC 5321 4.4) and RFC 5322 dates.

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
///     for <bob@example.test>; Tue, 1 Jul 2025 10:52:37 +0000
/// ```
pub fn received_header(t: &Trace<'_>) -> String {
    let helo = sanitize_helo(t.helo);
    let ip = match canonical(t.ip) {
        IpAddr::V4(v4) => format!("[{v4}]"),
        IpAddr::V6(v6) => format!("[IPv6:{v6}]"),
    };
    let date = rfc5322_date(t.at);
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

/// `Tue, 1 Jul 2025 10:52:37 +0000` (RFC 5322 3.3), in UTC.
pub fn rfc5322_date(at: UnixMillis) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = at.0 / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{}, {} {} {} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month 1-12, day 1-31), proleptic
/// Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc5322() {
        assert_eq!(
            rfc5322_date(UnixMillis(0)),
            "Thu, 1 Jan 1970 00:00:00 +0000"
        );
        // 2024-02-29T23:59:59Z, a leap day.
        assert_eq!(
            rfc5322_date(UnixMillis(1_709_251_199_000)),
            "Thu, 29 Feb 2024 23:59:59 +0000"
        );
        // 2025-07-01T10:52:37Z
        assert_eq!(
            rfc5322_date(UnixMillis(1_751_367_157_123)),
            "Tue, 1 Jul 2025 10:52:37 +0000"
        );
    }

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
                "Received: from client?evil????X:?y ([192.0.2.1])\r\n\tby mx.test (quorum-relay) with ESMTPS id {}\r\n\tfor <bob@example.test>; Thu, 1 Jan 1970 00:00:00 +0000\r\n",
                MessageId([1; 16])
            )
        );
        let v6 = received_header(&Trace {
            ip: "2001:db8::1".parse().unwrap(),
            recipient: Some("a;b@x"),
            ..t
        });
        assert!(v6.contains("([IPv6:2001:db8::1])"));
        assert!(v6.contains(&format!("id {};\r\n\tThu, 1 Jan", MessageId([1; 16]))));
        assert!(!v6.contains("for <"));
    }
}
