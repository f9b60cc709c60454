//! This crate's Prometheus instruments (through the `metrics` facade; the
//! node installs the recorder and calls [`describe`]).

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Counter, label `result` = `delivered` | `deferred` | `bounced` | `mixed`:
/// delivery attempts whose report committed, by what they recorded.
pub const DELIVERY_ATTEMPTS_TOTAL: &str = "relay_delivery_attempts_total";
/// Counter: messages removed because the target accepted every recipient
/// (`Delivered` committed).
pub const MESSAGES_DELIVERED_TOTAL: &str = "relay_messages_delivered_total";
/// Counter, label `outcome` = `delivered` | `deferred` | `failed`:
/// recipient outcomes in committed reports.
pub const RECIPIENTS_TOTAL: &str = "relay_delivery_recipients_total";
/// Counter: DSNs enqueued with a committed report.
pub const BOUNCES_TOTAL: &str = "relay_bounces_total";
/// Counter, label `reason` = `no_leader` | `timeout` | `other`: reports
/// that did not commit and are kept to be proposed again.
pub const REPORT_FAILURES_TOTAL: &str = "relay_delivery_report_failures_total";
/// Counter, label `reason` = `not_owner` | `unknown_message` | `other`:
/// reports the state machine rejected. `not_owner` after a successful
/// delivery means the new owner may deliver the message again.
pub const REPORTS_REJECTED_TOTAL: &str = "relay_delivery_reports_rejected_total";
/// Counter, label `reason` = `not_owner` | `already_finished` |
/// `outcome_unknown`: deliveries that are, or may be, a second copy at the
/// target. `not_owner`/`already_finished`: the target accepted but the
/// report was refused because another node owns the message now (it
/// delivers it too) or already finished it (or, after an operator
/// deletion, a message delivered once that the queue no longer shows).
/// `outcome_unknown`: delivered after an earlier attempt lost its reply to
/// the final dot, so the target may hold that copy as well.
pub const DUPLICATE_DELIVERIES_TOTAL: &str = "relay_duplicate_deliveries_total";
/// Counter, labels `kind` = `checksum_mismatch` | `read_error` and `result`
/// = `fetched` | `unavailable`: this node's copy of a body it was about to
/// deliver was damaged or unreadable; `fetched`: an intact copy came from
/// another replica and was delivered instead; `unavailable`: no replica
/// supplied one, the attempt was deferred. Any increase means this node's
/// disk (or memory) returns wrong data.
pub const DAMAGED_BODIES_TOTAL: &str = "relay_delivery_damaged_bodies_total";
/// Gauge: messages being delivered or waiting for their report to commit.
pub const IN_FLIGHT: &str = "relay_delivery_in_flight";
/// Histogram, seconds: from the start of an attempt to its report being
/// ready (SMTP work only, without the proposal).
pub const ATTEMPT_SECONDS: &str = "relay_delivery_attempt_seconds";

/// Counter, labels `target` (the entry's `host:port`, or several joined by
/// `, ` when recipients went to different targets) and `result` as in
/// [`DELIVERY_ATTEMPTS_TOTAL`]: committed attempts per target. Targets come
/// from routes, so the label set stays small.
pub const TARGET_ATTEMPTS_TOTAL: &str = "relay_delivery_target_attempts_total";
/// Histogram, seconds: from acceptance (`received_at`) to the committed
/// `Delivered` entry's time, for messages this node delivered.
pub const MESSAGE_DELIVERY_SECONDS: &str = "relay_message_delivery_seconds";

/// Counter: SMTP sessions opened to targets (each connect that got as far
/// as a usable session). With the connection cache working, far fewer than
/// the transactions under a steady backlog.
pub const CONNECTIONS_OPENED_TOTAL: &str = "relay_delivery_connections_opened_total";
/// Counter: transactions that ran on a cached session instead of a new one.
pub const CONNECTION_REUSES_TOTAL: &str = "relay_delivery_connection_reuses_total";
/// Counter: cached sessions found closed by the target (or not answering
/// `RSET`) when taken; the message went over another session.
pub const CONNECTION_CACHE_STALE_TOTAL: &str = "relay_delivery_connection_cache_stale_total";
/// Counter, label `result` = `mx` | `implicit_mx` | `null_mx` | `nxdomain`
/// | `no_address` | `temporary`: DNS resolutions of recipient domains
/// without a route (MX, then the hosts' addresses; cached answers are not
/// counted). `implicit_mx`: no MX, the domain's own address; `no_address`:
/// no host had an address (bounced); `temporary`: SERVFAIL, timeout or no
/// server answering (deferred). A rising `temporary` rate means the name
/// servers are failing.
pub const DNS_LOOKUPS_TOTAL: &str = "relay_dns_lookups_total";

/// Gauge, label `destination` (a route's targets joined by `,`): this
/// node's deliveries to the destination running now (see
/// [`crate::shaping`]). Destinations come from routes, so the label set
/// stays small.
pub const DESTINATION_CONCURRENCY: &str = "relay_destination_concurrency";
/// Gauge, label `destination`: how many deliveries this node may run to
/// the destination now: its share of the route's limit, lowered by slow
/// start and back-off (or `per_target_concurrency` for an unshaped route).
pub const DESTINATION_CONCURRENCY_LIMIT: &str = "relay_destination_concurrency_limit";
/// Counter, label `destination`: deliveries to the destination that ended
/// with a temporary failure (4xx, connection or timeout) for every
/// recipient: each one is a back-off signal.
pub const DESTINATION_DEFERRALS_TOTAL: &str = "relay_destination_deferrals_total";
/// Counter, labels `destination` and `reason` = `concurrency` | `rate`:
/// due messages held back in a round because the destination was at its
/// concurrency or rate limit (they start in a later round).
pub const DESTINATION_THROTTLED_TOTAL: &str = "relay_destination_throttled_total";

/// Creates every series whose labels are known in advance at zero (the
/// histograms too), so each is on `/metrics` from the first scrape and
/// alerts over `rate()` see the first event. Per-target series of
/// [`TARGET_ATTEMPTS_TOTAL`] appear with their target's first attempt.
pub fn register() {
    for result in ["delivered", "deferred", "bounced", "mixed"] {
        metrics::counter!(DELIVERY_ATTEMPTS_TOTAL, "result" => result).increment(0);
    }
    metrics::counter!(MESSAGES_DELIVERED_TOTAL).increment(0);
    for outcome in ["delivered", "deferred", "failed"] {
        metrics::counter!(RECIPIENTS_TOTAL, "outcome" => outcome).increment(0);
    }
    metrics::counter!(BOUNCES_TOTAL).increment(0);
    for reason in ["no_leader", "timeout", "other"] {
        metrics::counter!(REPORT_FAILURES_TOTAL, "reason" => reason).increment(0);
    }
    for reason in ["not_owner", "unknown_message", "other"] {
        metrics::counter!(REPORTS_REJECTED_TOTAL, "reason" => reason).increment(0);
    }
    for kind in ["checksum_mismatch", "read_error"] {
        for result in ["fetched", "unavailable"] {
            metrics::counter!(DAMAGED_BODIES_TOTAL, "kind" => kind, "result" => result)
                .increment(0);
        }
    }
    metrics::gauge!(IN_FLIGHT).increment(0.0);
    metrics::counter!(CONNECTIONS_OPENED_TOTAL).increment(0);
    metrics::counter!(CONNECTION_REUSES_TOTAL).increment(0);
    metrics::counter!(CONNECTION_CACHE_STALE_TOTAL).increment(0);
    for result in crate::mx::LOOKUP_RESULTS {
        metrics::counter!(DNS_LOOKUPS_TOTAL, "result" => result).increment(0);
    }
    // Taking a handle registers the series; no sample is recorded.
    let _registered = metrics::histogram!(ATTEMPT_SECONDS);
    let _registered = metrics::histogram!(MESSAGE_DELIVERY_SECONDS);
}

/// Registers descriptions of every instrument with the installed recorder.
pub fn describe() {
    describe_counter!(
        DELIVERY_ATTEMPTS_TOTAL,
        "Delivery attempts whose report committed, by result."
    );
    describe_counter!(
        MESSAGES_DELIVERED_TOTAL,
        "Messages the target accepted for every recipient."
    );
    describe_counter!(
        RECIPIENTS_TOTAL,
        "Recipient outcomes in committed delivery reports."
    );
    describe_counter!(BOUNCES_TOTAL, "Delivery status notifications enqueued.");
    describe_counter!(
        REPORT_FAILURES_TOTAL,
        "Delivery reports that did not commit and will be proposed again."
    );
    describe_counter!(
        REPORTS_REJECTED_TOTAL,
        "Delivery reports the state machine rejected."
    );
    describe_counter!(
        DUPLICATE_DELIVERIES_TOTAL,
        "Deliveries that are, or may be, a second copy at the target."
    );
    for reason in ["not_owner", "already_finished", "outcome_unknown"] {
        metrics::counter!(DUPLICATE_DELIVERIES_TOTAL, "reason" => reason).increment(0);
    }
    describe_counter!(
        DAMAGED_BODIES_TOTAL,
        "Bodies this node found damaged or unreadable before delivery, by kind and by whether an intact copy came from another replica."
    );
    describe_gauge!(
        IN_FLIGHT,
        "Messages being delivered or waiting for their report to commit."
    );
    describe_counter!(
        TARGET_ATTEMPTS_TOTAL,
        "Delivery attempts whose report committed, by target and result."
    );
    describe_counter!(
        CONNECTIONS_OPENED_TOTAL,
        "SMTP sessions opened to delivery targets."
    );
    describe_counter!(
        CONNECTION_REUSES_TOTAL,
        "Delivery transactions that reused a cached SMTP session."
    );
    describe_counter!(
        CONNECTION_CACHE_STALE_TOTAL,
        "Cached SMTP sessions found closed by the target when taken."
    );
    describe_gauge!(
        DESTINATION_CONCURRENCY,
        "Deliveries running now per destination (route targets), on this node."
    );
    describe_gauge!(
        DESTINATION_CONCURRENCY_LIMIT,
        "Deliveries this node may run at once per destination, after slow start and back-off."
    );
    describe_counter!(
        DESTINATION_DEFERRALS_TOTAL,
        "Deliveries per destination that failed temporarily for every recipient (back-off signals)."
    );
    describe_counter!(
        DESTINATION_THROTTLED_TOTAL,
        "Due messages held back per destination by its concurrency or rate limit."
    );
    describe_counter!(
        DNS_LOOKUPS_TOTAL,
        "DNS resolutions (MX, then addresses) of recipient domains without a route, by result."
    );
    describe_histogram!(
        MESSAGE_DELIVERY_SECONDS,
        Unit::Seconds,
        "Time from acceptance to delivery, for messages this node delivered."
    );
    describe_histogram!(
        ATTEMPT_SECONDS,
        Unit::Seconds,
        "Duration of delivery attempts (SMTP work only)."
    );
}
