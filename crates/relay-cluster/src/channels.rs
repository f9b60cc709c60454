//! One tonic channel per peer address, connected lazily and reused by the
//! Raft network, write forwarding and status queries.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use relay_proto::raft::raft_service_client::RaftServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::secret::ClusterSecret;

/// A Raft-service client that sends the cluster secret with every call.
pub type PeerClient = RaftServiceClient<InterceptedService<Channel, ClusterSecret>>;

/// Largest gRPC message accepted or sent between nodes. AppendEntries carry
/// message bodies; larger batches are split (see `network`).
pub const MAX_GRPC_MESSAGE: usize = 64 * 1024 * 1024;

/// Why no client for a peer could be made.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The address does not make an endpoint.
    #[error(transparent)]
    Endpoint(#[from] tonic::transport::Error),
    /// A test cut the link from this node to that address.
    #[error("link to {0} is cut (fault injection)")]
    LinkCut(String),
}

/// Links cut on purpose, for in-process cluster tests: every call from node
/// `from` to address `to` fails as an unreachable peer would (Raft RPCs,
/// forwarded writes, status probes, leadership steps). Shared by all the
/// nodes of a test cluster; production nodes have none.
#[derive(Debug, Default)]
pub struct LinkFaults {
    cut: Mutex<HashSet<(relay_types::NodeId, String)>>,
}

impl LinkFaults {
    /// Cuts the link from node `from` to address `to` (one direction).
    pub fn cut(&self, from: relay_types::NodeId, to: &str) {
        self.lock().insert((from, to.to_string()));
    }

    /// Restores the link from `from` to `to`.
    pub fn restore(&self, from: relay_types::NodeId, to: &str) {
        self.lock().remove(&(from, to.to_string()));
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.lock().clear();
    }

    /// Whether the link from `from` to `to` is cut.
    pub fn is_cut(&self, from: relay_types::NodeId, to: &str) -> bool {
        self.lock().contains(&(from, to.to_string()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<(relay_types::NodeId, String)>> {
        self.cut.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Shared map of peer address → channel.
#[derive(Clone, Debug)]
pub struct Channels {
    inner: Arc<Mutex<HashMap<String, Channel>>>,
    secret: ClusterSecret,
    /// This node, and the links a test cut (see [`LinkFaults`]).
    me: relay_types::NodeId,
    faults: Option<Arc<LinkFaults>>,
}

impl Channels {
    /// Channels of node `me` whose calls carry `secret`; `faults`, in
    /// tests only, can cut links.
    pub fn new(
        me: relay_types::NodeId,
        secret: ClusterSecret,
        faults: Option<Arc<LinkFaults>>,
    ) -> Self {
        Channels {
            inner: Arc::default(),
            secret,
            me,
            faults,
        }
    }

    /// A Raft-service client for `addr` (`host:port`).
    pub fn client(&self, addr: &str) -> Result<PeerClient, ChannelError> {
        if self
            .faults
            .as_ref()
            .is_some_and(|faults| faults.is_cut(self.me, addr))
        {
            return Err(ChannelError::LinkCut(addr.to_string()));
        }
        let channel = {
            let mut map = self.inner.lock().expect("channel map lock poisoned");
            match map.get(addr) {
                Some(channel) => channel.clone(),
                None => {
                    let channel = Endpoint::from_shared(format!("http://{addr}"))?
                        .connect_timeout(Duration::from_millis(500))
                        .tcp_nodelay(true)
                        .http2_keep_alive_interval(Duration::from_secs(5))
                        .keep_alive_timeout(Duration::from_secs(5))
                        .connect_lazy();
                    map.insert(addr.to_string(), channel.clone());
                    channel
                }
            }
        };
        Ok(
            RaftServiceClient::with_interceptor(channel, self.secret.clone())
                .max_decoding_message_size(MAX_GRPC_MESSAGE)
                .max_encoding_message_size(MAX_GRPC_MESSAGE),
        )
    }
}
