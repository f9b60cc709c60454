//! Errors of the consensus layer.

/// A proposal could not be committed. Each maps to an SMTP `451 4.3.0` or a
/// gRPC `UNAVAILABLE` at the edge; none means "maybe": a proposal that timed
/// out may still commit later (at-least-once; counted as a duplicate then).
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// No leader is known (election under way, or this node is cut off).
    #[error("no leader is known")]
    NoLeader,
    /// No commit within the submit timeout (no quorum, slow disks).
    #[error("not committed within {0:?}")]
    Timeout(std::time::Duration),
    /// The node is shutting down.
    #[error("node is shutting down")]
    ShuttingDown,
    /// Raft stopped with a fatal error (storage failure).
    #[error("raft stopped: {0}")]
    Fatal(String),
}

/// The consensus layer could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// openraft rejected the configuration.
    #[error("invalid raft configuration: {0}")]
    Config(String),
    /// openraft could not start on the store.
    #[error("raft failed to start: {0}")]
    Start(String),
    /// The Raft gRPC listener could not bind.
    #[error("cannot listen for raft gRPC on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Initialising the cluster failed.
    #[error("cluster bootstrap failed: {0}")]
    Bootstrap(String),
    /// Raft stopped in this process and cannot take the request.
    #[error("raft stopped: {0}")]
    Stopped(String),
}

/// An operator request (leadership, membership) could not be carried out.
/// Each variant maps to one gRPC code at the admin edge.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The request names something that is not there (an unknown node).
    #[error("{0}")]
    NotFound(String),
    /// The request cannot be valid in the current cluster.
    #[error("{0}")]
    Invalid(String),
    /// The cluster cannot do it now (no leader, node unreachable).
    #[error("{0}")]
    Unavailable(String),
    /// It was tried and did not happen in time.
    #[error("{0}")]
    Failed(String),
}
