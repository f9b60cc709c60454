//! What the consensus layer needs from the node's configuration.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use relay_types::NodeId;

use crate::error::ClusterError;

/// Consensus settings of one node.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// This node's id.
    pub node_id: NodeId,
    /// Where this node's Raft gRPC server listens.
    pub listen: SocketAddr,
    /// Every initial voter: id → Raft gRPC address (`host:port`) as peers
    /// reach it. Includes this node.
    pub members: BTreeMap<NodeId, String>,
    /// Whether this node may initialise a brand-new cluster (exactly one
    /// node's config says true).
    pub bootstrap: bool,
    /// Leader heartbeat interval.
    pub heartbeat: Duration,
    /// Election timeout range: a follower that hears no leader for a random
    /// time in this range starts an election.
    pub election_timeout: (Duration, Duration),
    /// Build a snapshot after this many applied entries since the last one.
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot (for slow followers); everything
    /// older is purged, bodies included.
    pub keep_logs: u64,
    /// Snapshot and purge the log at least this often, so delivered bodies
    /// do not linger in the Raft log (see [`crate::purge`]).
    pub purge_interval: Duration,
    /// How long this node may go without contact with a working cluster
    /// before it treats its leader as gone (half of `takeover_after`).
    pub delivery_lease: Duration,
    /// How fresh this node's proof of a working cluster must be for it to
    /// start a delivery (a few heartbeats; far below `takeover_after`; see
    /// [`crate::ownership`]).
    pub start_lease: Duration,
    /// How long a proposal may wait for commit before the caller gets
    /// `ProposeError::Timeout` (SMTP 451).
    pub submit_timeout: Duration,
    /// The shared secret every node-to-node call carries (see
    /// [`crate::secret`]); the same on every node.
    pub secret: crate::secret::ClusterSecret,
    /// Mutual TLS on the node-to-node port (server and clients); `None`:
    /// plaintext (see [`crate::tls`]).
    pub tls: Option<std::sync::Arc<crate::tls::ClusterTls>>,
    /// Source IP of outgoing connections to peers; `None`: the kernel
    /// chooses. (Lets a host with one address per node, like the nemesis
    /// topology on 127.0.0.0/8, have its links cut per pair.)
    pub source_address: Option<std::net::IpAddr>,
    /// Hex digest of the node's shared settings (limits, retry policy,
    /// timings), reported in `NodeStatus` so drills can compare nodes.
    /// Computed by the node; empty if not provided.
    pub config_digest: String,
}

impl ClusterConfig {
    /// The openraft configuration.
    pub fn raft_config(&self) -> Result<openraft::Config, ClusterError> {
        let config = openraft::Config {
            cluster_name: "quorum-relay".to_string(),
            heartbeat_interval: self.heartbeat.as_millis() as u64,
            election_timeout_min: self.election_timeout.0.as_millis() as u64,
            election_timeout_max: self.election_timeout.1.as_millis() as u64,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.keep_logs,
            // Bounded AppendEntries: bodies travel in entries.
            max_payload_entries: 256,
            // openraft 0.9 installs inside the last chunk's RPC; a million
            // queued messages take 9-18 s to install on this hardware.
            install_snapshot_timeout: 60_000,
            ..Default::default()
        };
        config
            .validate()
            .map_err(|e| ClusterError::Config(e.to_string()))
    }
}
