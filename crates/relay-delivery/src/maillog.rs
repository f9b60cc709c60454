//! The delivery log ("maillog"): one line per recipient per attempt, with
//! Postfix's field names, so an operator's greps and log parsers work.
//!
//! Lines go through `tracing` with the target [`TARGET`] at INFO, fields
//! only (no free text), so the text format prints
//! `maillog: queue_id=… to=<…> relay=… delay=… delays=… dsn=… status=…`
//! and the JSON format carries the same keys under `fields`. They are
//! emitted when the attempt's report has committed (the outcome is then
//! the cluster's, not only this node's), on the owner that made it.
//!
//! Fields (docs/observability.md lists them with examples):
//! - `queue_id`: the message id (`queued as <ID>`).
//! - `to=<address>`: the recipient.
//! - `relay`: `host[ip]:port` of the target that answered, `none` when no
//!   target answered (or there is no route).
//! - `delay`: seconds from acceptance to the commit of this outcome, one
//!   decimal.
//! - `delays=a/b/c/d`, seconds, two decimals: a = queue wait (accepted →
//!   this attempt started), b = report commit (attempt finished → outcome
//!   committed), c = connection setup (TCP, greeting, EHLO, STARTTLS, every
//!   target tried), d = transmission (MAIL FROM → QUIT). Postfix's b is
//!   time in its queue manager and its a includes receiving the message;
//!   here acceptance already includes the cluster commit, so a is pure
//!   waiting. a, c and d come from two clocks (wall clock for a, a
//!   monotonic one for c and d), so they may not add up to `delay` to the
//!   hundredth.
//! - `dsn`: the enhanced status code of the reply, or `2.0.0`, `4.0.0`,
//!   `5.0.0` by reply class when the reply carries none.
//! - `status`: `sent`, `deferred` or `bounced`, then the reply in
//!   parentheses.
//!
//! A report proposed again after a restart (the target accepted, the node
//! died before the outcome committed) has no per-recipient details left and
//! logs no lines.

use std::time::Duration;

use relay_types::{AttemptOutcome, MessageId, UnixMillis};

use crate::classify::{ReplyClass, enhanced_status};

/// The `tracing` target of every delivery log line (the SMTP side's
/// acceptance line uses the same target).
pub const TARGET: &str = "maillog";

/// One recipient's outcome of one attempt, captured when the report is
/// built and logged when it commits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecipientLine {
    /// The recipient address.
    pub to: String,
    /// `host[ip]:port`, or `none`.
    pub relay: String,
    /// When the attempt's session started (the attempt's end without one).
    pub started_at: UnixMillis,
    /// Connection setup.
    pub connect: Duration,
    /// Transmission.
    pub transmit: Duration,
    /// `X.Y.Z`.
    pub dsn: String,
    /// `sent`, `deferred` or `bounced`.
    pub status: &'static str,
    /// The reply (or local reason) in one line.
    pub reply: String,
}

impl RecipientLine {
    /// The line for `outcome` with the target's `reply` (`class` is the
    /// reply's class, for the DSN code when the reply carries none).
    pub fn new(
        to: &str,
        outcome: AttemptOutcome,
        class: ReplyClass,
        reply: &str,
        session: Option<&crate::transport::SessionInfo>,
        finished_at: UnixMillis,
    ) -> Self {
        let status = match outcome {
            AttemptOutcome::Delivered => "sent",
            AttemptOutcome::Deferred => "deferred",
            AttemptOutcome::Failed => "bounced",
        };
        let dsn = enhanced_status(reply)
            .map(str::to_string)
            .unwrap_or_else(|| {
                match class {
                    ReplyClass::Success => "2.0.0",
                    ReplyClass::Temporary => "4.0.0",
                    ReplyClass::Permanent => "5.0.0",
                }
                .to_string()
            });
        RecipientLine {
            to: to.to_string(),
            relay: session.map_or_else(|| "none".to_string(), |s| s.relay.clone()),
            started_at: session.map_or(finished_at, |s| s.started_at),
            connect: session.map_or(Duration::ZERO, |s| s.connect),
            transmit: session.map_or(Duration::ZERO, |s| s.transmit),
            dsn,
            status,
            reply: reply.to_string(),
        }
    }
}

/// Seconds with `decimals` decimals.
fn secs(ms: u64, decimals: usize) -> String {
    format!("{:.decimals$}", ms as f64 / 1000.0)
}

/// `delay` and `delays` of `line` for a message received at `received_at`
/// whose attempt finished at `finished_at` and committed at `now`.
pub fn delays(
    line: &RecipientLine,
    received_at: UnixMillis,
    finished_at: UnixMillis,
    now: UnixMillis,
) -> (String, String) {
    let delay = secs(now.0.saturating_sub(received_at.0), 1);
    let a = line.started_at.0.saturating_sub(received_at.0);
    let b = now.0.saturating_sub(finished_at.0);
    let c = line.connect.as_millis() as u64;
    let d = line.transmit.as_millis() as u64;
    let delays = format!(
        "{}/{}/{}/{}",
        secs(a, 2),
        secs(b, 2),
        secs(c, 2),
        secs(d, 2)
    );
    (delay, delays)
}

/// Logs the lines of `report`, which has just committed.
pub fn committed(report: &crate::report::Report, received_at: UnixMillis) {
    if let relay_types::Command::Delivered { id, at, .. }
    | relay_types::Command::Attempt { id, at, .. } = &report.command
    {
        emit(id, &report.maillog, received_at, *at, UnixMillis::now());
    }
}

/// Logs `lines` of message `id`, whose outcome committed at `now`.
pub fn emit(
    id: &MessageId,
    lines: &[RecipientLine],
    received_at: UnixMillis,
    finished_at: UnixMillis,
    now: UnixMillis,
) {
    for line in lines {
        let (delay, delays) = delays(line, received_at, finished_at, now);
        tracing::info!(
            target: TARGET,
            queue_id = %id,
            to = %format_args!("<{}>", line.to),
            relay = %line.relay,
            delay = %delay,
            delays = %delays,
            dsn = %line.dsn,
            status = %format_args!("{} ({})", line.status, line.reply),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::SessionInfo;

    #[test]
    fn fields_read_like_postfix() {
        let session = SessionInfo {
            relay: "mx.test[127.0.0.1]:2600".into(),
            started_at: UnixMillis(10_500),
            connect: Duration::from_millis(120),
            transmit: Duration::from_millis(340),
        };
        let line = RecipientLine::new(
            "a@b.test",
            AttemptOutcome::Delivered,
            ReplyClass::Success,
            "250 2.0.0 Ok: queued",
            Some(&session),
            UnixMillis(11_000),
        );
        assert_eq!(line.dsn, "2.0.0");
        assert_eq!(line.status, "sent");
        let (delay, delays) = delays(
            &line,
            UnixMillis(10_000),
            UnixMillis(11_000),
            UnixMillis(11_250),
        );
        assert_eq!(delay, "1.2");
        assert_eq!(delays, "0.50/0.25/0.12/0.34");

        let line = RecipientLine::new(
            "a@b.test",
            AttemptOutcome::Deferred,
            ReplyClass::Temporary,
            "no route for domain \"b.test\"",
            None,
            UnixMillis(11_000),
        );
        assert_eq!((line.relay.as_str(), line.dsn.as_str()), ("none", "4.0.0"));
        let line = RecipientLine::new(
            "a@b.test",
            AttemptOutcome::Failed,
            ReplyClass::Permanent,
            "550 5.1.1 no such user",
            None,
            UnixMillis(11_000),
        );
        assert_eq!((line.status, line.dsn.as_str()), ("bounced", "5.1.1"));
    }
}
