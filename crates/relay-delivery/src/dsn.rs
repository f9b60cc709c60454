//! Delivery status notifications (RFC 3464) for failed recipients.
//!
//! A DSN is an ordinary message from the null sender `<>` to the original
//! sender, enqueued atomically with the failure (it rides inside the
//! `Attempt` entry), owned and delivered by the node that bounced it. It is
//! never sent for a null-sender message (that is
//! [`failed_recipients_wanting_dsn`](relay_queue::failed_recipients_wanting_dsn)'s
//! decision), so bounces cannot loop.

use relay_queue::{RetryPolicy, body_checksum};
use relay_types::{
    BodyType, DsnRet, Enqueue, Envelope, MessageId, MessageInfo, MessageRecord, NodeId, Recipient,
    UnixMillis,
};

use crate::classify::enhanced_status;

/// The subject line of every DSN.
pub const SUBJECT: &str = "Undelivered Mail Returned to Sender";

/// One recipient to report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedRecipient {
    /// Index into the original envelope.
    pub index: u32,
    /// The reply that failed it.
    pub reply: String,
    /// The target that answered (`-` when none was reached).
    pub target: String,
    /// Failed because the queue lifetime ran out (not a 5xx).
    pub expired: bool,
}

/// Who is bouncing, and when.
#[derive(Clone, Copy, Debug)]
pub struct Reporter<'a> {
    /// This node: the DSN's `accepted_by` and `owner`.
    pub node_id: NodeId,
    /// Our name (`Reporting-MTA`, `From:`, `Message-ID:`).
    pub hostname: &'a str,
    /// The DSN's own queue lifetime comes from here.
    pub retry: &'a RetryPolicy,
    /// The attempt's time.
    pub now: UnixMillis,
}

/// Builds the `Enqueue` for a DSN about `failed` recipients of `record`.
pub fn build(
    record: &MessageRecord,
    body: &[u8],
    failed: &[FailedRecipient],
    reporter: &Reporter<'_>,
) -> Enqueue {
    let id = MessageId::generate();
    let text = render(record, body, failed, reporter, &id);
    let bytes = bytes::Bytes::from(text);
    let sender = record.envelope.reverse_path.clone();
    let envelope = Envelope {
        reverse_path: String::new(),
        recipients: vec![Recipient::new(sender.clone())],
        declared_size: None,
        body_type: if bytes.is_ascii() {
            BodyType::SevenBit
        } else {
            BodyType::EightBitMime
        },
        smtputf8: !sender.is_ascii() || record.envelope.smtputf8,
        envid: None,
        ret: None,
        helo: reporter.hostname.to_string(),
        client_addr: "local".into(),
        auth_user: None,
    };
    Enqueue {
        id,
        received_at: reporter.now,
        accepted_by: reporter.node_id,
        owner: reporter.node_id,
        envelope,
        info: MessageInfo {
            message_id_header: Some(format!("<{id}@{}>", reporter.hostname)),
            subject: Some(SUBJECT.into()),
            size: bytes.len() as u64,
        },
        checksum: body_checksum(&bytes),
        expires_at: reporter.now.plus_millis(reporter.retry.queue_lifetime_ms),
        body: bytes,
    }
}

/// The `Status:` field for one failure.
pub fn status_code(failure: &FailedRecipient) -> String {
    let found = enhanced_status(&failure.reply);
    if failure.expired {
        found
            .filter(|s| s.starts_with('4'))
            .unwrap_or("4.4.7")
            .to_string()
    } else {
        found
            .filter(|s| s.starts_with('5'))
            .unwrap_or("5.0.0")
            .to_string()
    }
}

fn render(
    record: &MessageRecord,
    body: &[u8],
    failed: &[FailedRecipient],
    reporter: &Reporter<'_>,
    id: &MessageId,
) -> Vec<u8> {
    let host = reporter.hostname;
    let boundary = format!("{id}/{host}");
    let now = reporter.now.rfc5322();
    let arrival = record.received_at.rfc5322();
    let address = |index: u32| {
        record
            .envelope
            .recipients
            .get(index as usize)
            .map(|r| r.address.as_str())
            .unwrap_or("unknown")
    };

    let mut out = Lines::default();
    out.line(&format!("Date: {now}"));
    out.line(&format!(
        "From: Mail Delivery System <MAILER-DAEMON@{host}>"
    ));
    out.line(&format!("To: <{}>", record.envelope.reverse_path));
    out.line(&format!("Subject: {SUBJECT}"));
    out.line(&format!("Message-ID: <{id}@{host}>"));
    out.line("Auto-Submitted: auto-replied");
    out.line("MIME-Version: 1.0");
    out.line("Content-Type: multipart/report; report-type=delivery-status;");
    out.line(&format!(" boundary=\"{boundary}\""));
    out.line("");
    out.line("This is a MIME-encapsulated message.");
    out.line("");

    // Part 1: for people.
    let mut human = Lines::default();
    human.line(&format!("This is the mail system at host {host}."));
    human.line("");
    human.line("Your message could not be delivered to one or more recipients.");
    human.line(&format!(
        "It was received at {arrival} (queue id {}).",
        record.id
    ));
    human.line("");
    for f in failed {
        let why = if f.expired {
            "gave up after the queue lifetime"
        } else {
            "permanently refused"
        };
        human.line(&format!("<{}>: {why}: {}", address(f.index), f.reply));
    }
    let human = human.0;
    out.line(&format!("--{boundary}"));
    out.line("Content-Description: Notification");
    out.line("Content-Type: text/plain; charset=utf-8");
    if !human.is_ascii() {
        out.line("Content-Transfer-Encoding: 8bit");
    }
    out.line("");
    out.0.extend_from_slice(&human);
    out.line("");

    // Part 2: for machines.
    out.line(&format!("--{boundary}"));
    out.line("Content-Description: Delivery report");
    out.line("Content-Type: message/delivery-status");
    out.line("");
    out.line(&format!("Reporting-MTA: dns; {host}"));
    out.line(&format!("X-Queue-ID: {}", record.id));
    if let Some(envid) = &record.envelope.envid {
        out.line(&format!("Original-Envelope-Id: {envid}"));
    }
    out.line(&format!("Arrival-Date: {arrival}"));
    for f in failed {
        out.line("");
        out.line(&format!("Final-Recipient: rfc822; {}", address(f.index)));
        if let Some(orcpt) = record
            .envelope
            .recipients
            .get(f.index as usize)
            .and_then(|r| r.orcpt.as_ref())
        {
            out.line(&format!("Original-Recipient: {orcpt}"));
        }
        out.line("Action: failed");
        out.line(&format!("Status: {}", status_code(f)));
        if f.target != "-" {
            let host = crate::transport::parse_target(&f.target)
                .map(|(h, _)| h)
                .unwrap_or_else(|_| f.target.clone());
            out.line(&format!("Remote-MTA: dns; {host}"));
        }
        if starts_with_reply_code(&f.reply) {
            out.line(&format!("Diagnostic-Code: smtp; {}", f.reply));
        }
        out.line(&format!("Last-Attempt-Date: {now}"));
    }
    out.line("");

    // Part 3: the message (RET=FULL) or its header section.
    let full = record.envelope.ret == Some(DsnRet::Full);
    let returned = if full { body } else { header_section(body) };
    out.line(&format!("--{boundary}"));
    if full {
        out.line("Content-Description: Undelivered Message");
        out.line("Content-Type: message/rfc822");
    } else {
        out.line("Content-Description: Undelivered Message Headers");
        out.line("Content-Type: text/rfc822-headers");
    }
    if !returned.is_ascii() {
        out.line("Content-Transfer-Encoding: 8bit");
    }
    out.line("");
    out.0.extend_from_slice(returned);
    if !returned.is_empty() && !returned.ends_with(b"\r\n") {
        out.line("");
    }
    out.line("");
    out.line(&format!("--{boundary}--"));
    out.0
}

/// CRLF-terminated lines.
#[derive(Default)]
struct Lines(Vec<u8>);

impl Lines {
    fn line(&mut self, text: &str) {
        self.0.extend_from_slice(text.as_bytes());
        self.0.extend_from_slice(b"\r\n");
    }
}

fn starts_with_reply_code(reply: &str) -> bool {
    let b = reply.as_bytes();
    b.len() >= 3
        && b[..3].iter().all(u8::is_ascii_digit)
        && (b.len() == 3 || b[3] == b' ' || b[3] == b'-')
}

/// The header section of a message, with the CRLF that ends its last
/// field (without the empty line).
pub fn header_section(body: &[u8]) -> &[u8] {
    if body.starts_with(b"\r\n") {
        return &[];
    }
    match body.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(pos) => &body[..pos + 2],
        None => body,
    }
}

#[cfg(test)]
mod tests {
    use relay_types::{DsnNotify, RecipientStatus};

    use super::*;

    fn record(ret: Option<DsnRet>) -> MessageRecord {
        let envelope = Envelope {
            reverse_path: "sender@sender.test".into(),
            recipients: vec![
                Recipient {
                    address: "bad@example.test".into(),
                    orcpt: Some("rfc822;bad@example.test".into()),
                    notify: DsnNotify::default(),
                },
                Recipient::new("good@example.test"),
            ],
            envid: Some("ENV1".into()),
            ret,
            ..Default::default()
        };
        MessageRecord {
            id: MessageId([7; 16]),
            received_at: UnixMillis(1_700_000_000_000),
            accepted_by: 1,
            owner: 1,
            envelope,
            info: MessageInfo::default(),
            checksum: [0; 32],
            expires_at: UnixMillis(1_800_000_000_000),
            recipients: vec![RecipientStatus::Pending { last_reply: None }; 2],
            attempts: 0,
            next_attempt_at: UnixMillis(0),
            last_target: None,
            held: None,
        }
    }

    const BODY: &[u8] = b"Subject: hello\r\nFrom: s@sender.test\r\n\r\nsecret body\r\n";

    fn failure() -> FailedRecipient {
        FailedRecipient {
            index: 0,
            reply: "550 5.1.1 user unknown".into(),
            target: "127.0.0.1:2600".into(),
            expired: false,
        }
    }

    #[test]
    fn header_section_stops_at_the_empty_line() {
        assert_eq!(
            header_section(BODY),
            b"Subject: hello\r\nFrom: s@sender.test\r\n"
        );
        assert_eq!(header_section(b"\r\nbody only\r\n"), b"");
        assert_eq!(header_section(b"A: b\r\n"), b"A: b\r\n");
    }

    #[test]
    fn status_codes_follow_the_reply_or_the_failure_kind() {
        assert_eq!(status_code(&failure()), "5.1.1");
        let plain = FailedRecipient {
            reply: "554 no".into(),
            ..failure()
        };
        assert_eq!(status_code(&plain), "5.0.0");
        let expired = FailedRecipient {
            reply: "451 4.3.0 later".into(),
            expired: true,
            ..failure()
        };
        assert_eq!(status_code(&expired), "4.3.0");
        let expired_local = FailedRecipient {
            reply: "connection refused".into(),
            expired: true,
            ..failure()
        };
        assert_eq!(status_code(&expired_local), "4.4.7");
    }

    #[test]
    fn dsn_goes_from_null_sender_to_the_sender_with_a_delivery_report() {
        let retry = RetryPolicy::default();
        let now = UnixMillis(1_700_000_100_000);
        let reporter = Reporter {
            node_id: 3,
            hostname: "relay1.test",
            retry: &retry,
            now,
        };
        let dsn = build(&record(None), BODY, &[failure()], &reporter);
        assert_eq!(dsn.envelope.reverse_path, "");
        assert_eq!(
            dsn.envelope.recipients,
            vec![Recipient::new("sender@sender.test")]
        );
        assert_eq!((dsn.owner, dsn.accepted_by), (3, 3));
        assert_eq!(dsn.received_at, now);
        assert_eq!(dsn.expires_at, now.plus_millis(retry.queue_lifetime_ms));
        assert_eq!(dsn.checksum, body_checksum(&dsn.body));
        assert_eq!(dsn.info.size, dsn.body.len() as u64);

        let text = String::from_utf8(dsn.body.to_vec()).expect("ascii");
        assert!(!text.contains("\r\n\r\n\r\n--"), "no stray blank lines");
        let pieces: Vec<&str> = text.split('\n').collect();
        assert_eq!(pieces.last(), Some(&""), "ends with a line end");
        assert!(
            pieces[..pieces.len() - 1].iter().all(|l| l.ends_with('\r')),
            "CRLF line ends only"
        );
        assert!(text.contains("report-type=delivery-status"));
        assert!(text.contains("\r\nReporting-MTA: dns; relay1.test\r\n"));
        assert!(text.contains("\r\nOriginal-Envelope-Id: ENV1\r\n"));
        assert!(text.contains("\r\nFinal-Recipient: rfc822; bad@example.test\r\n"));
        assert!(text.contains("\r\nOriginal-Recipient: rfc822;bad@example.test\r\n"));
        assert!(text.contains("\r\nAction: failed\r\nStatus: 5.1.1\r\n"));
        assert!(text.contains("\r\nRemote-MTA: dns; 127.0.0.1\r\n"));
        assert!(text.contains("\r\nDiagnostic-Code: smtp; 550 5.1.1 user unknown\r\n"));
        assert!(
            !text.contains("good@example.test"),
            "only failed recipients"
        );
        // Without RET=FULL only the headers come back.
        assert!(text.contains("text/rfc822-headers\r\n\r\nSubject: hello\r\n"));
        assert!(!text.contains("secret body"));
        assert!(text.ends_with("--\r\n"));
    }

    #[test]
    fn ret_full_returns_the_whole_message() {
        let retry = RetryPolicy::default();
        let reporter = Reporter {
            node_id: 1,
            hostname: "relay1.test",
            retry: &retry,
            now: UnixMillis(1_700_000_100_000),
        };
        let dsn = build(&record(Some(DsnRet::Full)), BODY, &[failure()], &reporter);
        let text = String::from_utf8(dsn.body.to_vec()).expect("ascii");
        assert!(text.contains("Content-Type: message/rfc822\r\n\r\nSubject: hello\r\n"));
        assert!(text.contains("secret body\r\n\r\n--"));
    }
}
