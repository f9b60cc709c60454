//! The queue state machine of quorum-relay, as a pure function.
//!
//! Owns what every replica does with a committed entry: [`apply`] reads the
//! current state through [`QueueRead`] and returns the [`Change`]s to make and
//! the [`CommandResult`](relay_types::CommandResult) to answer. It also owns
//! queue policy that must be the same everywhere: filters, backoff, expiry and
//! when a DSN is due.
//!
//! Must never: do I/O, read a clock, use randomness, or read configuration.
//! Time, ids and decisions arrive inside entries (docs/design.md, invariant 5). The
//! RocksDB store (`relay-store`) implements [`QueueRead`] and writes the
//! changes; [`MemQueue`] is the in-memory reference used by tests.
//!
//! # Layout
//! - [`apply`](mod@apply): `apply(state, index, command) -> Applied`.
//! - [`change`]: the `Change` list a store must write atomically.
//! - [`filter`]: `MessageFilter` matching.
//! - [`policy`]: retry schedule, queue lifetime, DSN decision.
//! - [`memory`]: `MemQueue`, the in-memory reference state.

pub mod apply;
pub mod change;
pub mod filter;
pub mod memory;
pub mod policy;

pub use apply::{Applied, QueueRead, apply, body_checksum};
pub use change::Change;
pub use filter::matches;
pub use memory::MemQueue;
pub use policy::{RetryPolicy, failed_recipients_wanting_dsn};
