//! The vocabulary of quorum-relay.
//!
//! Owns the plain data types every other crate speaks: message ids, node ids,
//! timestamps, the SMTP envelope (everything RFC 5321/3461 carries), routes,
//! and the replicated log entries ([`Command`]) with their results
//! ([`CommandResult`]). Also owns the one binary codec used for entries and
//! state records, so every replica encodes the same value to the same bytes.
//!
//! Must never: do I/O, read a clock, generate randomness inside anything the
//! state machine calls, or depend on tokio, tonic, openraft or RocksDB.
//!
//! # Layout
//! - [`id`]: `MessageId` (UUIDv7, time-ordered), `NodeId`.
//! - [`time`]: `UnixMillis`, the only notion of time inside entries.
//! - [`envelope`]: `Envelope`, `Recipient`, DSN parameters.
//! - [`route`]: `Route`, `TlsPolicy`, `Shaping` (`Rate`), domain
//!   normalisation.
//! - [`command`]: the log entries and their results.
//! - [`record`]: what the state machine stores per message.
//! - [`codec`]: deterministic binary encoding (postcard behind a format
//!   version octet).

pub mod codec;
pub mod command;
pub mod envelope;
pub mod id;
pub mod record;
pub mod route;
pub mod time;

pub use codec::{CodecError, FORMAT_VERSION, decode, encode};
pub use command::{
    AdminAction, AttemptOutcome, Command, CommandResult, Enqueue, MAX_BATCH_COMMANDS,
    MessageFilter, MessageInfo, RecipientOutcome, Rejection, Selector,
};
pub use envelope::{BodyType, DsnNotify, DsnRet, Envelope, Recipient};
pub use id::{MessageId, NodeId};
pub use record::{
    Hold, MessageRecord, MessageState, QueueCounts, RecipientStatus, TraceEvent, node_name,
};
pub use route::{Rate, Route, Shaping, TlsPolicy, normalize_domain};
pub use time::UnixMillis;
