//! This crate's Prometheus instruments (through the `metrics` facade; the
//! node installs the recorder and calls [`describe`]). Without a recorder
//! every update is a no-op, so the session tests need none.

use metrics::{Unit, describe_counter, describe_gauge};

/// Counter, label `result` = `accepted` | `refused_global` |
/// `refused_per_ip` | `refused_not_accepting` (drained node, or a recovery
/// replica that takes no mail) | `refused_proxy_untrusted` (a PROXY
/// header from an address not in `smtp.proxy_protocol_from`) |
/// `refused_proxy_missing` / `refused_proxy_malformed` /
/// `refused_proxy_timeout` (a load balancer's connection without a usable
/// header): TCP connections taken from the SMTP listeners.
pub const CONNECTIONS_TOTAL: &str = "relay_smtp_connections_total";
/// Gauge: SMTP sessions running now.
pub const SESSIONS_ACTIVE: &str = "relay_smtp_sessions_active";
/// Counter: messages answered `250 … queued as` (committed on a quorum).
pub const MESSAGES_ACCEPTED_TOTAL: &str = "relay_messages_accepted_total";
/// Counter: bytes of the messages counted in [`MESSAGES_ACCEPTED_TOTAL`]
/// (as stored, with our `Received:` header).
pub const ACCEPTED_BYTES_TOTAL: &str = "relay_messages_accepted_bytes_total";
/// Counter, label `code` = the SMTP reply code (`451`, `550`, `552`, ...):
/// messages whose end of data was answered with a refusal.
pub const MESSAGES_REJECTED_TOTAL: &str = "relay_messages_rejected_total";
/// Counter: recipients refused `550 5.1.1` because their relay domain's
/// recipient list does not hold them, or its target refused them when
/// verified.
pub const UNKNOWN_RECIPIENTS: &str = "relay_smtp_unknown_recipients_total";
/// Failed SMTP AUTH attempts (wrong user or password).
pub const AUTH_FAILURES: &str = "relay_smtp_auth_failures_total";

/// Registers descriptions of every instrument with the installed recorder.
pub fn describe() {
    describe_counter!(
        CONNECTIONS_TOTAL,
        "SMTP connections taken from the listener, by admission result."
    );
    describe_gauge!(SESSIONS_ACTIVE, "SMTP sessions running now.");
    describe_counter!(
        MESSAGES_ACCEPTED_TOTAL,
        "Messages acknowledged with 250 after their quorum commit."
    );
    describe_counter!(
        ACCEPTED_BYTES_TOTAL,
        Unit::Bytes,
        "Bytes of accepted messages, as stored."
    );
    describe_counter!(
        AUTH_FAILURES,
        "SMTP AUTH attempts refused for a wrong user name or password."
    );
    describe_counter!(
        UNKNOWN_RECIPIENTS,
        "Recipients refused 550 5.1.1: not in their relay domain's recipient list, or refused by its target."
    );
    describe_counter!(
        MESSAGES_REJECTED_TOTAL,
        "Messages refused at end of data, by SMTP reply code."
    );
}

/// Creates every series whose labels are known in advance at zero, so each
/// is on `/metrics` from the first scrape (a series that appears only with
/// its first event hides that first event from `rate()` and `increase()`,
/// and from alerts). Reply codes of [`MESSAGES_REJECTED_TOTAL`] are open
/// ended and appear when first used.
pub fn register() {
    for result in [
        "accepted",
        "refused_global",
        "refused_per_ip",
        "refused_not_accepting",
        "refused_proxy_untrusted",
        "refused_proxy_missing",
        "refused_proxy_malformed",
        "refused_proxy_timeout",
    ] {
        metrics::counter!(CONNECTIONS_TOTAL, "result" => result).increment(0);
    }
    metrics::gauge!(SESSIONS_ACTIVE).increment(0.0);
    metrics::counter!(MESSAGES_ACCEPTED_TOTAL).increment(0);
    metrics::counter!(ACCEPTED_BYTES_TOTAL).increment(0);
    metrics::counter!(AUTH_FAILURES).increment(0);
    metrics::counter!(UNKNOWN_RECIPIENTS).increment(0);
}

/// Counts a message refused at end of data with `code`.
pub(crate) fn message_rejected(code: u16) {
    metrics::counter!(MESSAGES_REJECTED_TOTAL, "code" => code.to_string()).increment(1);
}
