//! The owner-side delivery of quorum-relay.
//!
//! Owns what a node does with the messages it owns once they are committed:
//! the [`DeliveryLoop`] that finds due messages, looks up each recipient
//! domain's route (or, without one, its MX hosts in DNS), forwards the
//! stored bytes unchanged to the route's targets over SMTP (lettre,
//! rustls), classifies every reply per recipient,
//! and reports the result as a log entry — `Command::Delivered` when the
//! target accepted every pending recipient, otherwise `Command::Attempt`
//! with per-recipient outcomes, the next attempt time from the
//! [`RetryPolicy`](relay_queue::RetryPolicy) and, for recipients that failed
//! for good (5xx, or queue lifetime over), the DSN to enqueue in the same
//! entry.
//!
//! Must never: know about Raft, openraft or RocksDB (it reads through
//! [`DeliveryStore`] and writes only by proposing through [`Proposer`]);
//! delete or change anything itself (the state machine does that when the
//! entry commits); attempt a message it does not own or one it is already
//! delivering; change the message bytes it forwards (the one exception: a
//! bare CR or LF goes out as CRLF, see [`outbound`]).
//!
//! # Delivery guarantee: at least once, duplicates counted
//! A message is removed only after `Delivered` (or a finishing `Attempt`)
//! commits. When the target accepted a message but the report does not
//! commit (no leader, timeout), the loop keeps the report and proposes it
//! again on later rounds instead of delivering again.
//!
//! Fencing decides only whether a transaction may *start*
//! ([`Proposer::may_start_session`], asked before `MAIL FROM`; and right
//! before the message text, [`Proposer::confirm_lease_since`] waits for
//! proof of a working cluster newer than the transaction's start). A transaction whose text is on its way always runs to its
//! final reply (bounded by the data timeout), and that reply is reported:
//! abandoning it would leave a message the target may already hold
//! unrecorded, and the next attempt would send it again.
//!
//! # A damaged local copy
//! Before a body goes out, its SHA-256 is compared with the checksum in
//! the replicated record. A copy that does not match, or that the store
//! cannot read, is never sent and never bounced for: the loop fetches an
//! intact copy from another replica ([`Proposer::fetch_intact_body`]) and
//! delivers that, counting it (`relay_delivery_damaged_bodies_total`).
//! Only when no replica can supply one now is the attempt deferred like a
//! temporary failure, and tried again later.
//!
//! Duplicates therefore come only from a transaction the target accepted
//! whose report could not be recorded: the owner died first, or the report
//! was refused because ownership had moved (or another owner finished the
//! message) meanwhile. The second case is counted here
//! (`relay_duplicate_deliveries_total`); the first is visible as a saved
//! report proposed after the restart.
//!
//! # Layout
//! - [`config`] — [`DeliveryConfig`] (timeouts, concurrency, retry policy).
//! - `claim_guard` — releases a message's in-flight claim when its task
//!   panics, so it is tried again in a later round.
//! - [`classify`] — SMTP replies and transport errors → success, temporary
//!   or permanent, with the text that goes into traces and DSNs.
//! - [`transport`] — one SMTP transaction to a route's targets with lettre,
//!   per-recipient results, TLS per route policy.
//! - [`connection_cache`] — idle SMTP sessions kept per target for the
//!   next message (`RSET` between, idle/age/count limits).
//! - [`outbound`] — the bytes after `DATA`: CRLF-only line ends whatever
//!   was stored, dot-stuffing.
//! - [`mx`] — where a domain without a route goes, from DNS: MX by
//!   preference, the implicit MX, null MX, answers cached per TTL.
//! - [`report`] — an attempt's results → `Delivered` or `Attempt`.
//! - [`dsn`] — the RFC 3464 delivery status notification for failures.
//! - `delivery_loop` — [`DeliveryLoop`]: scheduling, concurrency limits,
//!   in-flight tracking, proposing.
//! - [`shaping`] — per-destination concurrency (slow start, back-off) and
//!   rate, the route's cluster-wide limits split between the voters.
//! - [`maillog`] — the delivery log: one Postfix-style line per recipient
//!   per attempt (`tracing` target `maillog`).
//! - [`metrics`] — this crate's Prometheus instruments.
//! - [`probe`] — EHLO/QUIT connect test to a target, for drills.
//! - [`error`] — [`ProposeError`].

mod claim_guard;
pub mod classify;
pub mod config;
pub mod connection_cache;
mod delivery_loop;
pub mod dsn;
pub mod error;
pub mod maillog;
pub mod metrics;
pub mod mx;
pub mod outbound;
pub mod probe;
pub mod report;
pub mod shaping;
pub mod transport;

use std::future::Future;

use bytes::Bytes;
use relay_types::{Command, CommandResult, MessageId, MessageRecord, NodeId, Route, UnixMillis};

pub use config::DeliveryConfig;
pub use delivery_loop::{BusyDeliveries, DeliveryLoop};
pub use error::ProposeError;

/// The delivery loop's read-only view of the replicated state on this node.
///
/// Calls are synchronous (a local database read); the loop runs them on
/// tokio's blocking pool.
pub trait DeliveryStore: Send + Sync + 'static {
    /// The store's error.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Up to `limit` messages owned by `owner`, not held, whose next
    /// attempt is due at `now`, earliest first.
    fn due(
        &self,
        owner: NodeId,
        now: UnixMillis,
        limit: usize,
    ) -> Result<Vec<MessageRecord>, Self::Error>;

    /// A queued message's body, `None` once it is gone.
    fn body(&self, id: &MessageId) -> Result<Option<Bytes>, Self::Error>;

    /// The route of a normalised domain, if one is set.
    fn route(&self, domain: &str) -> Result<Option<Route>, Self::Error>;

    /// Durably remembers (synced before returning) the report of an attempt
    /// in which the target accepted at least one recipient, until its entry
    /// commits: after a crash the node proposes it instead of delivering
    /// again. The default keeps nothing (a store without durability).
    fn save_pending_report(&self, _id: &MessageId, _report: &Command) -> Result<(), Self::Error> {
        Ok(())
    }

    /// Forgets a pending report (its entry committed or was refused).
    fn clear_pending_report(&self, _id: &MessageId) -> Result<(), Self::Error> {
        Ok(())
    }

    /// The pending reports left by an earlier run.
    fn pending_reports(&self) -> Result<Vec<(MessageId, Command)>, Self::Error> {
        Ok(Vec::new())
    }
}

/// Proposes a log entry and waits until it is committed and applied.
pub trait Proposer: Send + Sync + 'static {
    /// Commits `command`; `Ok` carries what applying it did (which may be a
    /// deterministic rejection, e.g. when this node no longer owns the
    /// message).
    fn propose(
        &self,
        command: Command,
    ) -> impl Future<Output = Result<CommandResult, ProposeError>> + Send;

    /// Fencing: whether this node may start handing a message to a target
    /// now (its *start lease*): it has fresh proof that it is part of a
    /// working cluster and has applied what that cluster committed, so no
    /// other node can own the message yet. Asked before each round, before
    /// `MAIL FROM` and before the message text; never used to abort a
    /// transaction whose text is on its way (its reply is read and
    /// reported, see the crate's delivery guarantee).
    fn may_start_session(&self) -> bool {
        true
    }

    /// How many nodes share a route's cluster-wide limits (the voters in
    /// this node's current membership; see [`shaping`]). The default is a
    /// cluster of one.
    fn voter_count(&self) -> usize {
        1
    }

    /// Right before a transaction's message text: resolves `true` once
    /// this node holds proof of a working cluster newer than `since` (the
    /// transaction's start), `false` if none comes soon. Without it, an
    /// owner cut off between `MAIL FROM` and the text would still send it.
    /// The default asks [`Proposer::may_start_session`].
    fn confirm_lease_since(&self, since: std::time::Instant) -> impl Future<Output = bool> + Send {
        let _ = since;
        std::future::ready(self.may_start_session())
    }

    /// This node's copy of message `id`'s body is damaged (it does not
    /// match `checksum`, the SHA-256 in the replicated record) or
    /// unreadable: an intact copy from another replica, or why none could
    /// be had. The loop checks the checksum of what it gets again. The
    /// default has no other replica to ask.
    fn fetch_intact_body(
        &self,
        id: MessageId,
        checksum: [u8; 32],
    ) -> impl Future<Output = Result<Bytes, String>> + Send {
        let _ = (id, checksum);
        std::future::ready(Err("no other replica to ask".to_string()))
    }
}
