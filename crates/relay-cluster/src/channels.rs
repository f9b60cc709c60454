//! One tonic channel per peer, connected lazily and reused by the Raft
//! network, write forwarding and status queries.
//!
//! With TLS on, a channel dials `https://` and accepts only a server whose
//! certificate is valid for `node-<id>` of the member it meant to reach
//! (see [`crate::tls`]). After a certificate reload every channel is built
//! anew, so new connections present the new certificate; calls already
//! running finish on the channel they hold.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use relay_proto::raft::raft_service_client::RaftServiceClient;
use relay_types::NodeId;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::secret::ClusterSecret;
use crate::tls::ClusterTls;

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
    cut: Mutex<HashSet<(NodeId, String)>>,
}

impl LinkFaults {
    /// Cuts the link from node `from` to address `to` (one direction).
    pub fn cut(&self, from: NodeId, to: &str) {
        self.lock().insert((from, to.to_string()));
    }

    /// Restores the link from `from` to `to`.
    pub fn restore(&self, from: NodeId, to: &str) {
        self.lock().remove(&(from, to.to_string()));
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.lock().clear();
    }

    /// Whether the link from `from` to `to` is cut.
    pub fn is_cut(&self, from: NodeId, to: &str) -> bool {
        self.lock().contains(&(from, to.to_string()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<(NodeId, String)>> {
        self.cut.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The channels and the TLS generation they were built with.
#[derive(Debug, Default)]
struct ChannelMap {
    generation: u64,
    channels: HashMap<(NodeId, String), Channel>,
}

/// Shared map of (peer id, address) → channel.
#[derive(Clone, Debug)]
pub struct Channels {
    inner: Arc<Mutex<ChannelMap>>,
    secret: ClusterSecret,
    tls: Option<Arc<ClusterTls>>,
    /// This node, and the links a test cut (see [`LinkFaults`]).
    me: NodeId,
    faults: Option<Arc<LinkFaults>>,
    /// Source IP of every connection to a peer (`None`: the kernel's).
    source: Option<std::net::IpAddr>,
}

impl Channels {
    /// Channels of node `me` whose calls carry `secret`, over mTLS when
    /// `tls` is set; `faults`, in tests only, can cut links.
    pub fn new(
        me: NodeId,
        secret: ClusterSecret,
        tls: Option<Arc<ClusterTls>>,
        faults: Option<Arc<LinkFaults>>,
    ) -> Self {
        Channels {
            inner: Arc::default(),
            secret,
            tls,
            me,
            faults,
            source: None,
        }
    }

    /// Dials every peer from `source` (`None`: the kernel chooses).
    pub fn with_source_address(mut self, source: Option<std::net::IpAddr>) -> Self {
        self.source = source;
        self
    }

    /// A Raft-service client for node `peer` at `addr` (`host:port`).
    pub fn client(&self, peer: NodeId, addr: &str) -> Result<PeerClient, ChannelError> {
        if self
            .faults
            .as_ref()
            .is_some_and(|faults| faults.is_cut(self.me, addr))
        {
            return Err(ChannelError::LinkCut(addr.to_string()));
        }
        let channel = {
            let mut map = self.inner.lock().expect("channel map lock poisoned");
            if let Some(tls) = &self.tls {
                let generation = tls.generation();
                if generation != map.generation {
                    map.channels.clear();
                    map.generation = generation;
                }
            }
            match map.channels.get(&(peer, addr.to_string())) {
                Some(channel) => channel.clone(),
                None => {
                    let channel = self.endpoint(peer, addr)?.connect_lazy();
                    map.channels
                        .insert((peer, addr.to_string()), channel.clone());
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

    fn endpoint(&self, peer: NodeId, addr: &str) -> Result<Endpoint, tonic::transport::Error> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .local_address(self.source)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5));
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.client_config(peer).0)?;
        }
        Ok(endpoint)
    }
}
