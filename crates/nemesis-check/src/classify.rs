//! Every message classified from the two sides a relay cannot fake: what the
//! senders were told and what the target stored.
//!
//! A stored copy is matched to a sent message by its `Subject` (the marker)
//! and must carry exactly the sent bytes: the relay may only prepend its
//! own `Received:` trace fields (RFC 5321 §4.4). Anything else is
//! *unexpected* (a body nobody sent, or a changed one).

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use crate::records::{Outcome, Sent, Stored};

/// One anomalous message, for the report and the per-class table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The marker (or `seq N` for a stored copy without one).
    pub marker: String,
    /// When its transaction ran (ms since start), if it was sent.
    pub window: Option<(u64, u64)>,
    /// What is wrong.
    pub kind: Kind,
}

/// Kinds of finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Acknowledged with 250, never stored at the target.
    Lost,
    /// Stored more than once (one finding per extra copy).
    Duplicated,
    /// Stored but never sent, or stored with other bytes than were sent.
    Unexpected,
    /// Refused or cut off, stored all the same (allowed: a late commit).
    UnackedDelivered,
}

/// The figures of a run.
#[derive(Clone, Debug, Default)]
pub struct Verdict {
    /// Transactions that got 250.
    pub acked: usize,
    /// Transactions refused (4xx/5xx).
    pub refused: usize,
    /// Transactions cut off without a final reply.
    pub cut: usize,
    /// Acknowledged and stored exactly once.
    pub ok: usize,
    /// Acknowledged, never stored.
    pub lost: usize,
    /// Extra copies at the target (a message stored 3 times counts 2).
    pub duplicated: usize,
    /// Stored copies nobody sent, or whose bytes differ from what was sent.
    pub unexpected: usize,
    /// Refused or cut off, yet stored.
    pub unacked_delivered: usize,
    /// Every anomaly, in marker order.
    pub findings: Vec<Finding>,
}

/// The `Subject` of a stored message (first header block only).
pub fn subject(data: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    for line in text.split("\r\n") {
        if line.is_empty() {
            return None;
        }
        if let Some(rest) = line.strip_prefix("Subject: ") {
            return Some(rest.trim().to_string());
        }
    }
    None
}

/// The message without the trace fields a relay prepends: leading
/// `Received:` fields and their folded continuation lines.
pub fn without_trace(data: &[u8]) -> &[u8] {
    let mut at = 0;
    let mut in_received = false;
    while at < data.len() {
        let end = data[at..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(data.len(), |p| at + p + 2);
        let line = &data[at..end];
        let folded = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if line.len() >= 9 && line[..9].eq_ignore_ascii_case(b"received:") {
            in_received = true;
        } else if !(folded && in_received) {
            break;
        }
        at = end;
    }
    &data[at..]
}

/// SHA-256 in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Classifies every sent and stored message.
pub fn classify(sent: &[Sent], stored: &[Stored]) -> Verdict {
    let mut verdict = Verdict::default();
    let mut by_marker: BTreeMap<&str, &Sent> = BTreeMap::new();
    for s in sent {
        match s.outcome {
            Outcome::Acked => verdict.acked += 1,
            Outcome::Refused => verdict.refused += 1,
            Outcome::Cut => verdict.cut += 1,
        }
        by_marker.insert(&s.marker, s);
    }
    let mut copies: BTreeMap<String, usize> = BTreeMap::new();
    for copy in stored {
        let data = match hex::decode(&copy.data_hex) {
            Ok(d) => d,
            Err(_) => {
                verdict.findings.push(Finding {
                    marker: format!("seq {}", copy.seq),
                    window: None,
                    kind: Kind::Unexpected,
                });
                continue;
            }
        };
        let sent_as = subject(&data).and_then(|m| by_marker.get(m.as_str()).copied());
        match sent_as {
            Some(s) if sha256_hex(without_trace(&data)) == s.sha256 => {
                *copies.entry(s.marker.clone()).or_insert(0) += 1;
            }
            other => verdict.findings.push(Finding {
                marker: subject(&data).unwrap_or_else(|| format!("seq {}", copy.seq)),
                window: other.map(|s| (s.start_ms, s.end_ms)),
                kind: Kind::Unexpected,
            }),
        }
    }
    let mut seen = BTreeSet::new();
    for s in sent {
        if !seen.insert(s.marker.as_str()) {
            continue;
        }
        let n = copies.get(&s.marker).copied().unwrap_or(0);
        let window = Some((s.start_ms, s.end_ms));
        let mut find = |kind| {
            verdict.findings.push(Finding {
                marker: s.marker.clone(),
                window,
                kind,
            })
        };
        match (s.outcome, n) {
            (Outcome::Acked, 0) => find(Kind::Lost),
            (Outcome::Acked, 1) => verdict.ok += 1,
            (Outcome::Acked, _) | (_, 0) => {}
            (_, _) => find(Kind::UnackedDelivered),
        }
        for _ in 1..n {
            find(Kind::Duplicated);
        }
    }
    verdict.findings.sort_by(|a, b| a.marker.cmp(&b.marker));
    for f in &verdict.findings {
        match f.kind {
            Kind::Lost => verdict.lost += 1,
            Kind::Duplicated => verdict.duplicated += 1,
            Kind::Unexpected => verdict.unexpected += 1,
            Kind::UnackedDelivered => verdict.unacked_delivered += 1,
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(marker: &str, outcome: Outcome, body: &[u8]) -> Sent {
        Sent {
            marker: marker.into(),
            node: 1,
            outcome,
            reply: String::new(),
            sha256: sha256_hex(body),
            start_ms: 10,
            end_ms: 20,
        }
    }

    fn stored(seq: u64, data: &[u8]) -> Stored {
        Stored {
            seq,
            helo: "relay1.test".into(),
            data_hex: hex::encode(data),
        }
    }

    fn msg(marker: &str) -> Vec<u8> {
        format!("Subject: {marker}\r\n\r\nbody {marker}\r\n").into_bytes()
    }

    fn relayed(marker: &str) -> Vec<u8> {
        let mut out =
            b"Received: from client.test\r\n\tby relay1.test; Sat, 5 Dec 2026\r\n".to_vec();
        out.extend(msg(marker));
        out
    }

    #[test]
    fn every_class_is_found() {
        let sent = vec![
            sent("ok", Outcome::Acked, &msg("ok")),
            sent("lost", Outcome::Acked, &msg("lost")),
            sent("dup", Outcome::Acked, &msg("dup")),
            sent("late", Outcome::Cut, &msg("late")),
            sent("refused", Outcome::Refused, &msg("refused")),
        ];
        let stored = vec![
            stored(1, &relayed("ok")),
            stored(2, &relayed("dup")),
            stored(3, &relayed("dup")),
            stored(4, &relayed("dup")),
            stored(5, &relayed("late")),
            stored(6, &relayed("never-sent")),
            stored(7, b"Subject: ok\r\n\r\nchanged body\r\n"),
        ];
        let v = classify(&sent, &stored);
        assert_eq!((v.acked, v.refused, v.cut, v.ok), (3, 1, 1, 1), "{v:?}");
        assert_eq!(v.lost, 1);
        assert_eq!(v.duplicated, 2);
        assert_eq!(v.unexpected, 2, "never sent + changed body");
        assert_eq!(v.unacked_delivered, 1, "{:?}", v.findings);
    }

    #[test]
    fn only_leading_received_fields_are_stripped() {
        let data = b"Received: a\r\n b\r\nReceived: c\r\nSubject: x\r\nReceived: d\r\n\r\n";
        assert_eq!(without_trace(data), b"Subject: x\r\nReceived: d\r\n\r\n");
        assert_eq!(without_trace(b"Subject: y\r\n\r\n"), b"Subject: y\r\n\r\n");
    }
}
