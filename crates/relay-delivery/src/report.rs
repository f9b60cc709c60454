//! One attempt's per-recipient results → the log entry that records it.
//!
//! Pure (the caller passes `now`), so every rule is unit tested:
//! - every pending recipient accepted → `Command::Delivered`;
//! - otherwise `Command::Attempt` with one outcome per pending recipient:
//!   2xx delivered, 5xx failed, 4xx/local failures deferred — or failed
//!   once the message's queue lifetime is over;
//! - `next_attempt_at` = now + backoff(attempts + 1), but never later than
//!   the expiry time, so expiry bounces on time;
//! - a DSN rides along when a recipient failed for good and
//!   [`failed_recipients_wanting_dsn`] says the sender wants to know.

use std::collections::HashSet;

use relay_queue::{RetryPolicy, failed_recipients_wanting_dsn};
use relay_types::{AttemptOutcome, Command, MessageRecord, NodeId, RecipientOutcome, UnixMillis};

use crate::classify::ReplyClass;
use crate::dsn::{self, FailedRecipient, Reporter};
use crate::maillog::RecipientLine;
use crate::transport::RecipientResult;

/// What the entry is built from besides the results.
#[derive(Clone, Copy, Debug)]
pub struct ReportContext<'a> {
    /// This node (the entry's `by`).
    pub node_id: NodeId,
    /// Our name, for DSNs.
    pub hostname: &'a str,
    /// Backoff and lifetime.
    pub retry: &'a RetryPolicy,
    /// When the attempt finished.
    pub now: UnixMillis,
}

/// Recipient counts of one report, for logs and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Accepted by the target.
    pub delivered: usize,
    /// To be retried.
    pub deferred: usize,
    /// Failed for good (5xx or expiry).
    pub failed: usize,
}

/// The entry to propose and what it says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// `Delivered` or `Attempt`.
    pub command: Command,
    /// Per-recipient tallies.
    pub counts: Counts,
    /// A DSN is enqueued with it.
    pub bounced: bool,
    /// One delivery log line per recipient, logged once the entry commits
    /// (empty for a report restored after a restart).
    pub maillog: Vec<RecipientLine>,
}

impl Report {
    /// A short label: `delivered`, `deferred`, `bounced` or `mixed`.
    pub fn result_label(&self) -> &'static str {
        let c = self.counts;
        match &self.command {
            Command::Delivered { .. } => "delivered",
            _ if c.deferred > 0 && c.delivered == 0 && c.failed == 0 => "deferred",
            _ if c.failed > 0 && c.delivered == 0 && c.deferred == 0 => "bounced",
            _ => "mixed",
        }
    }
}

/// Builds the entry for an attempt on `record` (whose body is `body`).
/// Results for recipients that are not pending are ignored, as are repeats.
pub fn build(
    record: &MessageRecord,
    body: &[u8],
    results: &[RecipientResult],
    ctx: &ReportContext<'_>,
) -> Report {
    let pending: HashSet<u32> = record.pending_indexes().into_iter().collect();
    let mut seen = HashSet::new();
    let results: Vec<&RecipientResult> = results
        .iter()
        .filter(|r| pending.contains(&r.index) && seen.insert(r.index))
        .collect();
    let line = |r: &RecipientResult, outcome: AttemptOutcome, reply: &str| {
        let to = record
            .envelope
            .recipients
            .get(r.index as usize)
            .map_or("", |rcpt| rcpt.address.as_str());
        RecipientLine::new(
            to,
            outcome,
            r.result.class,
            reply,
            r.session.as_ref(),
            ctx.now,
        )
    };
    let target = distinct(results.iter().map(|r| r.target.as_str()), ", ");

    if !results.is_empty()
        && results.len() == pending.len()
        && results
            .iter()
            .all(|r| r.result.class == ReplyClass::Success)
    {
        return Report {
            command: Command::Delivered {
                id: record.id,
                by: ctx.node_id,
                at: ctx.now,
                target,
                reply: distinct(results.iter().map(|r| r.result.reply.as_str()), "; "),
            },
            counts: Counts {
                delivered: results.len(),
                ..Counts::default()
            },
            bounced: false,
            maillog: results
                .iter()
                .map(|r| line(r, AttemptOutcome::Delivered, &r.result.reply))
                .collect(),
        };
    }

    let expired = ctx.now >= record.expires_at;
    let attempt_number = record.attempts.saturating_add(1);
    let mut counts = Counts::default();
    let mut outcomes = Vec::with_capacity(results.len());
    let mut failures = Vec::new();
    let mut maillog = Vec::with_capacity(results.len());
    for r in &results {
        let (outcome, reply) = match r.result.class {
            ReplyClass::Success => (AttemptOutcome::Delivered, r.result.reply.clone()),
            ReplyClass::Permanent => (AttemptOutcome::Failed, r.result.reply.clone()),
            ReplyClass::Temporary if expired => (
                AttemptOutcome::Failed,
                format!(
                    "queue lifetime expired after {attempt_number} attempt(s); last: {}",
                    r.result.reply
                ),
            ),
            ReplyClass::Temporary => (AttemptOutcome::Deferred, r.result.reply.clone()),
        };
        match outcome {
            AttemptOutcome::Delivered => counts.delivered += 1,
            AttemptOutcome::Deferred => counts.deferred += 1,
            AttemptOutcome::Failed => {
                counts.failed += 1;
                failures.push(FailedRecipient {
                    index: r.index,
                    reply: r.result.reply.clone(),
                    target: r.target.clone(),
                    expired: r.result.class == ReplyClass::Temporary,
                });
            }
        }
        maillog.push(line(r, outcome, &reply));
        outcomes.push(RecipientOutcome {
            index: r.index,
            outcome,
            reply,
        });
    }

    let backoff = ctx.now.plus_millis(ctx.retry.backoff_ms(attempt_number));
    let next_attempt_at = if expired {
        backoff
    } else {
        backoff.min(record.expires_at)
    };

    let wanting = failed_recipients_wanting_dsn(record, &outcomes);
    let dsn = (!wanting.is_empty()).then(|| {
        let failed: Vec<FailedRecipient> = failures
            .into_iter()
            .filter(|f| wanting.contains(&f.index))
            .collect();
        let reporter = Reporter {
            node_id: ctx.node_id,
            hostname: ctx.hostname,
            retry: ctx.retry,
            now: ctx.now,
        };
        Box::new(dsn::build(record, body, &failed, &reporter))
    });
    let bounced = dsn.is_some();
    Report {
        command: Command::Attempt {
            id: record.id,
            by: ctx.node_id,
            at: ctx.now,
            target,
            outcomes,
            next_attempt_at,
            dsn,
        },
        counts,
        bounced,
        maillog,
    }
}

/// Distinct values in first-seen order, joined.
fn distinct<'a>(values: impl Iterator<Item = &'a str>, sep: &str) -> String {
    let mut seen = HashSet::new();
    values
        .filter(|v| seen.insert(*v))
        .collect::<Vec<_>>()
        .join(sep)
}

#[cfg(test)]
mod tests {
    use relay_types::{DsnNotify, Envelope, MessageId, MessageInfo, Recipient, RecipientStatus};

    use super::*;
    use crate::classify::Classified;

    const NOW: UnixMillis = UnixMillis(1_000_000_000);

    fn record(recipients: &[&str], sender: &str) -> MessageRecord {
        MessageRecord {
            id: MessageId([1; 16]),
            received_at: UnixMillis(999_000_000),
            accepted_by: 1,
            owner: 1,
            envelope: Envelope {
                reverse_path: sender.into(),
                recipients: recipients.iter().map(|r| Recipient::new(*r)).collect(),
                ..Default::default()
            },
            info: MessageInfo::default(),
            checksum: [0; 32],
            expires_at: UnixMillis(2_000_000_000),
            recipients: vec![RecipientStatus::Pending { last_reply: None }; recipients.len()],
            attempts: 2,
            next_attempt_at: UnixMillis(0),
            last_target: None,
            held: None,
        }
    }

    fn result(index: u32, class: ReplyClass, reply: &str) -> RecipientResult {
        RecipientResult {
            index,
            target: "127.0.0.1:2600".into(),
            result: Classified {
                class,
                reply: reply.into(),
            },
            session: None,
        }
    }

    fn ctx(retry: &RetryPolicy) -> ReportContext<'_> {
        ReportContext {
            node_id: 1,
            hostname: "relay1.test",
            retry,
            now: NOW,
        }
    }

    #[test]
    fn all_pending_accepted_is_delivered() {
        let retry = RetryPolicy::default();
        let rec = record(&["a@x.test", "b@x.test"], "s@s.test");
        let results = [
            result(0, ReplyClass::Success, "250 2.0.0 Ok: queued as 1"),
            result(1, ReplyClass::Success, "250 2.0.0 Ok: queued as 1"),
        ];
        let report = build(&rec, b"", &results, &ctx(&retry));
        assert_eq!(
            report.command,
            Command::Delivered {
                id: rec.id,
                by: 1,
                at: NOW,
                target: "127.0.0.1:2600".into(),
                reply: "250 2.0.0 Ok: queued as 1".into(),
            }
        );
        assert_eq!(report.result_label(), "delivered");
    }

    #[test]
    fn a_recipient_finished_earlier_does_not_block_delivered() {
        let retry = RetryPolicy::default();
        let mut rec = record(&["a@x.test", "b@x.test"], "s@s.test");
        rec.recipients[0] = RecipientStatus::Delivered { at: UnixMillis(5) };
        let results = [
            result(0, ReplyClass::Permanent, "550 stale result ignored"),
            result(1, ReplyClass::Success, "250 ok"),
        ];
        let report = build(&rec, b"", &results, &ctx(&retry));
        assert!(matches!(report.command, Command::Delivered { .. }));
    }

    #[test]
    fn temporary_failure_defers_with_backoff() {
        let retry = RetryPolicy::default();
        let rec = record(&["a@x.test", "b@x.test"], "s@s.test");
        let results = [
            result(0, ReplyClass::Success, "250 ok"),
            result(1, ReplyClass::Temporary, "451 4.3.0 later"),
        ];
        let report = build(&rec, b"", &results, &ctx(&retry));
        let Command::Attempt {
            outcomes,
            next_attempt_at,
            dsn,
            by,
            at,
            ..
        } = report.command
        else {
            panic!("expected an attempt, got {:?}", report.command);
        };
        assert_eq!((by, at), (1, NOW));
        assert_eq!(
            outcomes,
            vec![
                RecipientOutcome {
                    index: 0,
                    outcome: AttemptOutcome::Delivered,
                    reply: "250 ok".into()
                },
                RecipientOutcome {
                    index: 1,
                    outcome: AttemptOutcome::Deferred,
                    reply: "451 4.3.0 later".into()
                },
            ]
        );
        // Third attempt: min backoff × 4.
        assert_eq!(next_attempt_at, NOW.plus_millis(retry.backoff_ms(3)));
        assert!(dsn.is_none());
        assert_eq!(report.counts.deferred, 1);
    }

    #[test]
    fn permanent_failure_fails_and_carries_a_dsn() {
        let retry = RetryPolicy::default();
        let rec = record(&["a@x.test"], "s@s.test");
        let results = [result(0, ReplyClass::Permanent, "550 5.1.1 unknown")];
        let report = build(&rec, b"Subject: x\r\n\r\nbody\r\n", &results, &ctx(&retry));
        assert!(report.bounced);
        assert_eq!(report.result_label(), "bounced");
        let Command::Attempt { outcomes, dsn, .. } = report.command else {
            panic!("expected an attempt");
        };
        assert_eq!(outcomes[0].outcome, AttemptOutcome::Failed);
        let dsn = dsn.expect("dsn");
        assert_eq!(dsn.envelope.reverse_path, "");
        assert_eq!(dsn.envelope.recipients[0].address, "s@s.test");
    }

    #[test]
    fn no_dsn_for_null_sender_or_notify_never() {
        let retry = RetryPolicy::default();
        let rec = record(&["a@x.test"], "");
        let results = [result(0, ReplyClass::Permanent, "550 no")];
        let report = build(&rec, b"", &results, &ctx(&retry));
        assert!(!report.bounced);

        let mut rec = record(&["a@x.test"], "s@s.test");
        rec.envelope.recipients[0].notify = DsnNotify {
            never: true,
            ..Default::default()
        };
        let report = build(&rec, b"", &results, &ctx(&retry));
        assert!(!report.bounced);
        let Command::Attempt { outcomes, .. } = report.command else {
            panic!("expected an attempt");
        };
        assert_eq!(outcomes[0].outcome, AttemptOutcome::Failed);
    }

    #[test]
    fn expiry_turns_temporary_into_failed_with_a_dsn() {
        let retry = RetryPolicy::default();
        let mut rec = record(&["a@x.test"], "s@s.test");
        rec.expires_at = NOW;
        let results = [result(0, ReplyClass::Temporary, "451 4.3.0 later")];
        let report = build(&rec, b"", &results, &ctx(&retry));
        assert!(report.bounced);
        let Command::Attempt { outcomes, dsn, .. } = report.command else {
            panic!("expected an attempt");
        };
        assert_eq!(outcomes[0].outcome, AttemptOutcome::Failed);
        assert!(
            outcomes[0]
                .reply
                .starts_with("queue lifetime expired after 3 attempt(s)")
        );
        let text = String::from_utf8(dsn.expect("dsn").body.to_vec()).expect("ascii");
        assert!(text.contains("Status: 4.3.0"));
    }

    #[test]
    fn next_attempt_never_passes_expiry() {
        let retry = RetryPolicy::default();
        let mut rec = record(&["a@x.test"], "s@s.test");
        rec.expires_at = NOW.plus_millis(1_000);
        let results = [result(0, ReplyClass::Temporary, "451 later")];
        let report = build(&rec, b"", &results, &ctx(&retry));
        let Command::Attempt {
            next_attempt_at, ..
        } = report.command
        else {
            panic!("expected an attempt");
        };
        assert_eq!(next_attempt_at, rec.expires_at);
    }

    #[test]
    fn targets_and_replies_are_listed_once() {
        assert_eq!(distinct(["a", "b", "a"].into_iter(), ", "), "a, b");
    }
}
