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
//! - [`node`]: `run(config, shutdown)`: start everything, stop in order;
//!   mTLS on the Raft and admin ports and its SIGHUP reload.
//! - [`dev_certs`]: `relayd --dev-certs`: a development CA and
//!   certificates for nodes and relayctl.
//! - [`adapters`]: the SMTP backend and delivery store/proposer over the
//!   cluster.
//! - [`admin`]: the admin gRPC service and its token check.
//! - [`http`]: the HTTP listener: `/healthz`, `/readyz`, `/metrics`, `/`.
//! - [`health`]: readiness (a leader known and heard from a quorum lately).
//! - [`metrics`]: the Prometheus recorder, node-level instruments, and the
//!   tasks that keep Raft, queue and store gauges current.
//! - [`status_page`]: the server-rendered status page with node lights.
//! - [`recent`]: last committed delivery result per target (status page).
//! - `testing` (feature `testing`): an in-process cluster of real nodes
//!   with cuttable links, for tests.
//! - [`supervise`]: which tasks stop the node and which restart, and the
//!   exit statuses.
//! - [`recover`]: `relayd --recover`: a new one-voter cluster from this
//!   node's store after a quorum loss, with the report of what may be
//!   missing.
//! - [`verify`]: recipient verification at RCPT: a probe to the route's
//!   targets, answers cached with expiry.
//! - [`check`]: `relayd --health-check URL`, the probe a container health
//!   check runs (the image has no shell or curl).

pub mod adapters;
pub mod admin;
pub mod check;
pub mod config;
pub mod dev_certs;
pub mod health;
pub mod http;
pub mod metrics;
pub mod node;
pub mod recent;
pub mod recover;
pub mod status_page;
pub mod supervise;
#[cfg(feature = "testing")]
pub mod testing;
pub mod verify;

pub use config::{ConfigError, NodeConfig};
