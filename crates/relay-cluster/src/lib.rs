//! The consensus layer of a relay node: openraft wired to the RocksDB store
//! and to peers over gRPC.
//!
//! Owns: the openraft `Raft` instance and its configuration, the tonic Raft
//! network (client side [`network`], server side [`service`], mutual TLS
//! between nodes in [`tls`]), forwarding a
//! client write from a follower to the leader ([`Cluster::propose`]), cluster
//! bootstrap (exactly one node initialises, never on restart), and the
//! per-node status that `relayctl status` and drills read.
//!
//! Must never: parse SMTP, deliver mail, or decide anything the state machine
//! should decide; entries arrive fully formed from the node.
//!
//! # Layout
//! - [`config`]: `ClusterConfig` (ids, addresses, timing) → openraft `Config`.
//! - [`network`]: `GrpcNetworkFactory`, the openraft network over tonic.
//! - [`bodies`]: an intact copy of a message body from a peer, for an
//!   owner whose own copy is damaged.
//! - [`batcher`]: group commit: concurrent message commands on the leader
//!   share one `Command::Batch` entry (one append, one fsync per node).
//! - [`channels`]: one lazily connected tonic channel per peer address.
//! - [`service`]: the `RaftService` gRPC server (Raft RPCs, Submit,
//!   NodeStatus).
//! - [`cluster`]: `Cluster`: start, bootstrap, propose, status, shutdown.
//! - [`purge`]: periodic snapshot and log purge (bodies leave the log).
//! - [`ownership`]: who may deliver and when mail is taken over: the
//!   start lease, leader contact, the takeover loop (safety argument in its
//!   module doc).
//! - [`leadership`]: leadership transfer for `relayctl failover` (openraft
//!   0.9 has none: pause the others, elect the target, resume).
//! - [`membership`]: add learner, promote, remove, run on the leader.
//! - [`lag`]: each peer's lag in entries and seconds (the leader's view).
//! - [`maintenance`]: drain: a drained node stands for no election, hands
//!   leadership on, and reports when it is safe to stop.
//! - [`probe`]: the hook a node installs for drill SMTP connect tests.
//! - [`metrics`]: this crate's Prometheus instruments (stranded writes).
//! - [`supervise`]: [`Failure`], and the watch on the crate's own tasks
//!   (gRPC server, batcher, purger): one that ends early fails the cluster.
//! - [`secret`]: the cluster secret and the server-side interceptor.
//! - [`tls`]: mutual TLS between nodes: material from PEM files, node
//!   identity in certificates, the TLS accept loop, reload.
//! - [`error`]: `ProposeError`, `ClusterError`, `AdminError`.

pub mod batcher;
pub mod bodies;
pub mod channels;
pub mod cluster;
pub mod config;
pub mod error;
pub mod lag;
pub mod leadership;
pub mod maintenance;
pub mod membership;
pub mod metrics;
pub mod network;
pub mod ownership;
pub mod probe;
pub mod purge;
pub mod secret;
pub mod service;
pub mod supervise;
pub mod tls;
pub mod view;

pub use cluster::{Cluster, ClusterStatus, MemberStatus};
pub use config::ClusterConfig;
pub use error::{AdminError, ClusterError, ProposeError};
pub use leadership::{LeadershipStep, Transfer};
pub use maintenance::{DrainReport, NodeActivity};
pub use membership::{MemberChange, Members};
pub use ownership::{Contact, LeaderContact};
pub use probe::{ProbeResult, TargetProber};
pub use relay_proto::raft::NodeStatusReply;
pub use relay_store::TypeConfig;
pub use supervise::Failure;
pub use view::{RaftView, Role, ViewWatch};

/// The openraft handle for this type configuration.
pub type Raft = openraft::Raft<TypeConfig>;
