//! Inbound SMTP for every quorum-relay node.
//!
//! Owns the server side of RFC 5321 with ESMTP (PIPELINING, SIZE, 8BITMIME,
//! SMTPUTF8, ENHANCEDSTATUSCODES, DSN, CHUNKING, STARTTLS, AUTH PLAIN/LOGIN over
//! TLS only) on relay and submission listeners: the accept loop
//! with global and per-IP connection caps, one task per session, per-command
//! and DATA timeouts, the relay policy (no open relay, no routing tricks), the
//! DATA/BDAT body reader that only ever ends DATA on `CRLF.CRLF` and refuses
//! bare CR/LF (the SMTP smuggling family), the `Received:` trace header, and
//! the hand-off of each accepted message to a [`SessionBackend`], which
//! commits it through Raft before the session answers `250`.
//!
//! Must never: depend on openraft, tonic or RocksDB (it submits through the
//! [`SessionBackend`] trait); answer `250` to DATA/BDAT LAST before
//! [`SessionBackend::submit`] returned `Ok`; log message bodies or put
//! addresses in metric labels; let one
//! session's failure (error, panic, slow client) affect another session.
//!
//! # Layout
//! - [`config`]: [`SmtpConfig`] (limits, timeouts, networks, TLS) and [`Cidr`].
//! - [`reply`]: every reply text the server sends, and the one mapping from
//!   [`SubmitError`] to an SMTP reply.
//! - [`data`]: the DATA terminator scanner, dot-unstuffer and line checker,
//!   pure and separately tested (a fuzz target).
//! - [`auth`]: SMTP AUTH credentials (argon2 hashes), the per-IP limit on
//!   failed logins, SASL PLAIN/LOGIN decoding.
//! - [`address`]: raw forward/reverse path analysis (source routes, quoted
//!   local parts, percent hack, bang paths, address literals).
//! - [`policy`]: the relay decision for one recipient, pure.
//! - [`proxy`]: the PROXY protocol v1/v2 header parser, pure (a fuzz
//!   target), for listeners behind a TCP load balancer.
//! - [`recipients`]: recipient lists of relay domains (`550 5.1.1` for
//!   the unlisted), reloadable.
//! - [`message`]: header-section checks and [`MessageInfo`] extraction.
//! - [`received`]: the `Received:` header and RFC 5322 dates.
//! - `session`: one SMTP session, one file per phase (greeting/EHLO, MAIL,
//!   RCPT, DATA, BDAT, STARTTLS, submit) over any async byte stream.
//! - [`server`]: [`serve`], the accept loop with connection caps, PROXY
//!   headers from load balancers, and shutdown. One per listener role
//!   ([`ListenerRole`]: relay on 25, submission on 587, implicit TLS on 465).
//! - [`tls`]: loading certificates or creating a self-signed development one.
//! - [`metrics`]: the crate's Prometheus instrument names and descriptions.
//!
//! # Reply decisions worth knowing
//! - A message containing a bare CR or bare LF anywhere (DATA or BDAT) is
//!   read to its real end (`CRLF.CRLF` or the last chunk) and then refused
//!   with `550 5.6.11 bare CR or LF in message`; a NUL octet gives
//!   `550 5.6.0`. So no end-of-data variant can smuggle a second message,
//!   and nothing stored can be re-interpreted by a lax downstream server.
//! - A message whose first line is neither a header field nor the empty line
//!   that ends an (empty) header section, or an empty message, is refused with
//!   `550 5.6.0 message has no header section`: prepending our `Received:`
//!   would otherwise turn its first body line into a broken header.
//! - The `220` greeting, the `354` DATA go-ahead and the EHLO capability
//!   lines carry no enhanced status code (RFC 2034 / 3463); every other reply
//!   does.

pub mod address;
pub mod auth;
pub mod config;
pub mod data;
pub mod message;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod received;
pub mod recipients;
pub mod reply;
pub mod server;
mod session;
pub mod tls;

use std::future::Future;

use bytes::Bytes;
use relay_types::{Envelope, MessageId, MessageInfo, UnixMillis};

pub use config::{Cidr, ListenerRole, SmtpConfig};
pub use reply::{Reply, submit_error_reply};
pub use server::{Prefixed, serve};
pub use session::run_session;
pub use tls::{ServerTls, TlsSetupError, load_or_create_tls, load_tls};

/// What the node gives every SMTP session: the relay-domain lookup and the
/// quorum commit of accepted messages.
pub trait SessionBackend: Send + Sync + 'static {
    /// Is this (normalised, lower-case) domain one we relay for (has a route)?
    fn is_relay_domain(&self, domain: &str) -> bool;

    /// Whether this node takes mail now. `false` (drained for maintenance,
    /// or a recovery replica told not to) answers new connections
    /// `421 4.3.2` at once and open sessions `421 4.3.2` at their next
    /// `MAIL`, after the transaction in progress finished: the client goes
    /// to another node.
    fn accepting(&self) -> bool {
        true
    }

    /// Whether this node's disk has room for a message of `declared_size`
    /// octets (the MAIL `SIZE` parameter; `None` when the client sent
    /// none). Asked at every `MAIL`; `false` answers `452 4.3.1` and the
    /// session stays open, so the client can retry here once space is
    /// freed or go to another node. The default always has room.
    fn has_room_for(&self, declared_size: Option<u64>) -> bool {
        let _ = declared_size;
        true
    }

    /// Recipient verification: does the relay domain's target know this
    /// recipient? Asked at RCPT for every recipient its domain's list (if
    /// any) accepted. The default, and a node without verification,
    /// answers [`RecipientVerdict::Exists`] at once.
    fn verify_recipient(
        &self,
        domain: &str,
        address: &str,
    ) -> impl Future<Output = RecipientVerdict> + Send {
        let _ = (domain, address);
        std::future::ready(RecipientVerdict::Exists)
    }

    /// Commit the message through Raft; returns only after commit.
    ///
    /// The session answers `250 2.0.0 Ok: queued as <id>` only after this
    /// returned `Ok`; every error is answered with a 4xx (see
    /// [`submit_error_reply`]).
    fn submit(
        &self,
        submission: Submission,
    ) -> impl Future<Output = Result<(), SubmitError>> + Send;
}

/// What recipient verification found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecipientVerdict {
    /// The target accepted the recipient (or nothing is verified).
    Exists,
    /// The target refused it permanently: `550 5.1.1` at RCPT.
    Unknown,
    /// The target could not say (unreachable, 4xx): `450 4.1.1`.
    TryLater,
}

/// One accepted message, ready to be proposed as an `Enqueue` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submission {
    /// Time-ordered id generated at end of data; echoed in the `250` reply.
    pub id: MessageId,
    /// When the end of data (final `.` or `BDAT … LAST`) arrived.
    pub received_at: UnixMillis,
    /// Everything the envelope said.
    pub envelope: Envelope,
    /// Message-ID, Subject and stored size.
    pub info: MessageInfo,
    /// Our `Received:` header followed by the client's message, byte-exact,
    /// dot-unstuffed, CRLF line ends only.
    pub body: Bytes,
}

/// Why a submission was not committed. Every variant is temporary for the
/// client (4xx): the message is not queued and the client should retry.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum SubmitError {
    /// No quorum could be reached (leader unknown, minority partition).
    /// Answered `451 4.3.0`.
    #[error("no quorum: {0}")]
    NoQuorum(String),
    /// The commit did not complete within the submit timeout. Answered
    /// `451 4.3.0` (a late commit may still deliver: at-least-once).
    #[error("commit timed out")]
    Timeout,
    /// The node is shutting down. Answered `421 4.3.2` and the session closes.
    #[error("node is shutting down")]
    ShuttingDown,
    /// Anything else (storage, encoding). Answered `451 4.3.0`.
    #[error("internal error: {0}")]
    Internal(String),
}
