//! One tonic channel per peer address, connected lazily and reused by the
//! Raft network, write forwarding and status queries.

use std::collections::HashMap;
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

/// Shared map of peer address → channel.
#[derive(Clone, Debug)]
pub struct Channels {
    inner: Arc<Mutex<HashMap<String, Channel>>>,
    secret: ClusterSecret,
}

impl Channels {
    /// Channels whose calls carry `secret`.
    pub fn new(secret: ClusterSecret) -> Self {
        Channels {
            inner: Arc::default(),
            secret,
        }
    }

    /// A Raft-service client for `addr` (`host:port`).
    pub fn client(&self, addr: &str) -> Result<PeerClient, tonic::transport::Error> {
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
