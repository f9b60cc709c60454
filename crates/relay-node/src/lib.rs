//! `relayd`: one quorum-relay node.
//!
//! Owns: reading and validating the node's configuration, wiring the crates
//! together (store → cluster → SMTP, delivery, admin, HTTP), the admin gRPC
//! service, and the node's lifecycle with ordered shutdown: stop accepting
//! SMTP → finish sessions → stop delivery → shut Raft → close RocksDB.
//!
//! Must never: implement protocol details (SMTP parsing, Raft, storage
//! layout); it adapts the library crates to each other.
//!
//! # Layout
//! - [`config`]: the TOML file shape and its validation.
//! - [`node`]: `run(config, shutdown)`: start everything, stop in order.
//! - [`adapters`]: the SMTP backend and delivery store/proposer over the
//!   cluster.
//! - [`admin`]: the admin gRPC service and its token check.
//! - [`http`]: `/healthz`, `/readyz`.
//! - [`takeover`]: the leader reassigns an unreachable node's mail.

pub mod adapters;
pub mod admin;
pub mod config;
pub mod http;
pub mod node;
pub mod takeover;

pub use config::{ConfigError, NodeConfig};
