//! Test helpers for quorum-relay.
//!
//! Owns what tests (and `scripts/local-cluster.sh`) need around a cluster: a
//! real, controllable SMTP target ([`TestTarget`]) that records what it
//! received and can be told at runtime to defer, reject or drop; deadline-
//! bounded wait helpers ([`wait_until`], [`wait_for`]) so tests never use a
//! bare sleep as synchronisation; a [`DirSink`] that writes received mail to
//! a directory; a [`TestDns`] name server whose MX and address answers
//! (and failures) each test sets; and the `demo-target` binary.
//!
//! Must never: ship in a release of `relayd`/`relayctl` (only tests, dev
//! tooling and the demo target depend on it), depend on relay internals
//! (RocksDB, openraft, the state machine), or be used as a real mail server
//! (it keeps no queue, ignores most ESMTP parameters and trusts everyone).
//!
//! # Layout
//! - [`target`] — [`TestTarget`], its [`TargetOptions`], runtime
//!   [`Behaviour`], [`Reply`], the recorded [`ReceivedMessage`] and
//!   [`TransactionStart`] (concurrent transactions, for shaping tests).
//! - `session` — one hand-written ESMTP server session (EHLO/HELO, MAIL,
//!   RCPT, DATA with dot-unstuffing, RSET, NOOP, VRFY, QUIT, STARTTLS).
//! - `tls` — a throw-away self-signed certificate for STARTTLS.
//! - [`sink`] — [`MessageSink`] and [`DirSink`] (`<n>.eml` + `<n>.env`).
//! - [`wait`] — [`wait_until`], [`wait_for`] and [`WaitTimeout`].
//! - [`dns`] — [`TestDns`], an authoritative DNS server on loopback UDP.
//! - [`error`] — [`TestkitError`].

pub mod dns;
pub mod error;
mod session;
pub mod sink;
pub mod target;
mod tls;
pub mod wait;

pub use dns::TestDns;
pub use error::TestkitError;
pub use sink::{DirSink, MessageSink};
pub use target::{Behaviour, ReceivedMessage, Reply, TargetOptions, TestTarget, TransactionStart};
pub use wait::{WaitTimeout, wait_for, wait_until};
