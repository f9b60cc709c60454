//! Replicated-state records → admin API messages, and request fields →
//! domain types. One place, so field meanings stay the same everywhere.

use relay_proto::admin as pb;
use relay_types::{
    MessageFilter, MessageId, MessageRecord, MessageState, RecipientStatus, Route, TraceEvent,
    UnixMillis,
};
use tonic::Status;

/// Parses a message id, or INVALID_ARGUMENT naming it.
pub fn parse_id(text: &str) -> Result<MessageId, Status> {
    text.parse()
        .map_err(|e: relay_types::id::ParseMessageIdError| Status::invalid_argument(e.to_string()))
}

/// A queue state filter (`queued`, `deferred`, `held`).
pub fn parse_state(text: &str) -> Result<MessageState, Status> {
    match text.to_ascii_lowercase().as_str() {
        "queued" => Ok(MessageState::Queued),
        "deferred" => Ok(MessageState::Deferred),
        "held" => Ok(MessageState::Held),
        other => Err(Status::invalid_argument(format!(
            "unknown state {other:?} (expected queued, deferred or held)"
        ))),
    }
}

/// The request filter as the replicated `MessageFilter` (evaluated the same
/// way on every replica) plus the finer state, which `MessageFilter` only
/// knows as held / not held.
pub fn filter(
    f: Option<&pb::QueueFilter>,
    now: UnixMillis,
) -> Result<(MessageFilter, Option<MessageState>), Status> {
    let Some(f) = f else {
        return Ok((MessageFilter::default(), None));
    };
    let state = f.state.as_deref().map(parse_state).transpose()?;
    let filter = MessageFilter {
        owner: f.owner,
        to_domain: f.to_domain.as_deref().map(relay_types::normalize_domain),
        from: f.from.clone(),
        received_before: f
            .older_than_ms
            .map(|ms| UnixMillis(now.0.saturating_sub(ms))),
        held: state.map(|s| s == MessageState::Held),
    };
    Ok((filter, state))
}

/// One line of `queue list`.
pub fn summary(r: &MessageRecord) -> pb::MessageSummary {
    let last_reply = r.recipients.iter().find_map(|s| match s {
        RecipientStatus::Pending { last_reply } => last_reply.clone(),
        _ => None,
    });
    pb::MessageSummary {
        id: r.id.to_string(),
        state: r.state().as_str().to_string(),
        from: r.envelope.reverse_path.clone(),
        to: r
            .pending_indexes()
            .into_iter()
            .filter_map(|i| r.envelope.recipients.get(i as usize))
            .map(|rcpt| rcpt.address.clone())
            .collect(),
        size: r.info.size,
        received_at_ms: r.received_at.0,
        owner: r.owner,
        attempts: r.attempts,
        next_attempt_ms: r.next_attempt_at.0,
        last_reply,
        subject: r.info.subject.clone(),
    }
}

/// `queue show`: everything but the body.
pub fn detail(r: &MessageRecord, history: &[TraceEvent]) -> pb::MessageDetail {
    pb::MessageDetail {
        summary: Some(summary(r)),
        accepted_by: r.accepted_by,
        expires_at_ms: r.expires_at.0,
        last_target: r.last_target.clone(),
        recipients: r
            .envelope
            .recipients
            .iter()
            .zip(&r.recipients)
            .map(|(rcpt, status)| {
                let (status, reply, at) = match status {
                    RecipientStatus::Pending { last_reply } => {
                        ("pending", last_reply.clone(), None)
                    }
                    RecipientStatus::Delivered { at } => ("delivered", None, Some(at.0)),
                    RecipientStatus::Failed { at, reply } => {
                        ("failed", Some(reply.clone()), Some(at.0))
                    }
                };
                pb::RecipientDetail {
                    address: rcpt.address.clone(),
                    status: status.to_string(),
                    reply,
                    at_ms: at,
                }
            })
            .collect(),
        held: r.held.as_ref().map(|h| pb::HoldInfo {
            by: h.by.clone(),
            reason: h.reason.clone(),
            at_ms: h.at.0,
        }),
        message_id_header: r.info.message_id_header.clone(),
        checksum: hex_lower(&r.checksum),
        history: history.iter().map(trace_event).collect(),
        answered_by: 0,
        now_ms: 0,
        content: None,
    }
}

/// The header section of a stored message: everything before the first
/// empty line (CRLF or bare LF), or all of it if there is no empty line.
pub fn header_section(message: &[u8]) -> &[u8] {
    let mut start = 0;
    while start < message.len() {
        let end = message[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(message.len(), |i| start + i + 1);
        let line = &message[start..end];
        if line == b"\r\n" || line == b"\n" {
            return &message[..start];
        }
        start = end;
    }
    message
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A trace event with its kind.
pub fn trace_event(e: &TraceEvent) -> pb::TraceEvent {
    pb::TraceEvent {
        index: e.index,
        at_ms: e.at.0,
        by: e.by.clone(),
        kind: trace_kind(&e.what).to_string(),
        what: e.what.clone(),
    }
}

/// The kind of a trace event, from the fixed leading words `relay_queue::apply`
/// writes (the trace keeps text, which is what people read; scripts get this
/// stable kind instead of parsing it).
pub fn trace_kind(what: &str) -> &'static str {
    const KINDS: [(&str, &str); 11] = [
        ("accepted ", "accepted"),
        ("attempt ", "attempt"),
        ("delivered ", "delivered"),
        ("bounce ", "bounce"),
        ("finished", "finished"),
        ("owner ", "owner"),
        ("held", "held"),
        ("released", "released"),
        ("retry now", "retry"),
        ("deleted", "deleted"),
        ("duplicate ", "duplicate"),
    ];
    KINDS
        .iter()
        .find(|(prefix, _)| what.starts_with(prefix))
        .map(|(_, kind)| *kind)
        .unwrap_or("other")
}

/// A route for `route list`.
pub fn route(domain: &str, r: &Route) -> pb::RouteInfo {
    pb::RouteInfo {
        domain: domain.to_string(),
        targets: r.targets.clone(),
        tls: r.tls.to_string(),
        concurrency: r.shaping.concurrency.unwrap_or(0),
        rate: r
            .shaping
            .rate
            .map(|rate| rate.to_string())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_kinds_follow_the_words_apply_writes() {
        assert_eq!(
            trace_kind("accepted from <a@b> for 1 recipient(s), 10 octets, owner node 1"),
            "accepted"
        );
        assert_eq!(
            trace_kind("attempt 2 via 127.0.0.1:25: <x@y> Deferred: 451 later"),
            "attempt"
        );
        assert_eq!(trace_kind("delivered via t: 250 ok; removed"), "delivered");
        assert_eq!(trace_kind("finished, removed"), "finished");
        assert_eq!(trace_kind("owner node 1 -> node 2"), "owner");
        assert_eq!(trace_kind("held: maintenance"), "held");
        assert_eq!(trace_kind("released: done"), "released");
        assert_eq!(trace_kind("retry now: flush"), "retry");
        assert_eq!(trace_kind("deleted: spam"), "deleted");
        assert_eq!(
            trace_kind("duplicate delivery via t after ownership moved (known duplicate): 250"),
            "duplicate"
        );
        assert_eq!(trace_kind("something new"), "other");
    }

    #[test]
    fn a_state_filter_maps_to_held_or_not_held() {
        let f = pb::QueueFilter {
            state: Some("deferred".into()),
            to_domain: Some("Example.TEST.".into()),
            older_than_ms: Some(1_000),
            ..Default::default()
        };
        let (filter, state) = super::filter(Some(&f), UnixMillis(5_000)).unwrap();
        assert_eq!(state, Some(MessageState::Deferred));
        assert_eq!(filter.held, Some(false));
        assert_eq!(filter.to_domain.as_deref(), Some("example.test"));
        assert_eq!(filter.received_before, Some(UnixMillis(4_000)));
        assert!(parse_state("bogus").is_err());
    }

    #[test]
    fn header_section_stops_at_the_first_empty_line() {
        assert_eq!(
            header_section(b"Subject: a\r\nTo: b\r\n\r\nbody\r\n\r\nmore"),
            b"Subject: a\r\nTo: b\r\n"
        );
        assert_eq!(header_section(b"Subject: a\n\nbody"), b"Subject: a\n");
        assert_eq!(header_section(b"Subject: only"), b"Subject: only");
        assert_eq!(header_section(b"\r\nbody"), b"");
    }
}
