//! openraft's network over tonic: each Raft RPC is one unary gRPC call whose
//! payload is the bincode-encoded openraft request (and `Result` reply).

use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use relay_proto::raft::RaftPayload;
use relay_types::{NodeId, decode, encode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::TypeConfig;
use crate::channels::{Channels, MAX_GRPC_MESSAGE};

/// Creates a [`GrpcNetwork`] per peer.
#[derive(Clone, Debug)]
pub struct GrpcNetworkFactory {
    channels: Channels,
}

impl GrpcNetworkFactory {
    /// A factory sharing `channels` with the rest of the node.
    pub fn new(channels: Channels) -> Self {
        GrpcNetworkFactory { channels }
    }
}

impl RaftNetworkFactory<TypeConfig> for GrpcNetworkFactory {
    type Network = GrpcNetwork;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> GrpcNetwork {
        GrpcNetwork {
            target,
            addr: node.addr.clone(),
            channels: self.channels.clone(),
        }
    }
}

/// The Raft RPC client for one peer.
#[derive(Debug)]
pub struct GrpcNetwork {
    target: NodeId,
    addr: String,
    channels: Channels,
}

/// Which RPC to call.
#[derive(Clone, Copy, Debug)]
enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl GrpcNetwork {
    /// Sends `request`, returns the decoded `Result<Resp, RaftError<E>>` the
    /// peer's Raft produced, or a transport error.
    async fn call<Req, Resp, E>(
        &self,
        rpc: Rpc,
        request: &Req,
        option: &RPCOption,
        entries: Option<u64>,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let data = encode(request);
        if data.len() > MAX_GRPC_MESSAGE - 1024 {
            // Ask openraft to send fewer entries per request.
            let hint = entries.unwrap_or(1).div_ceil(2).max(1);
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(hint),
            ));
        }
        let mut client = self
            .channels
            .client(&self.addr)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let mut request = tonic::Request::new(RaftPayload { data });
        request.set_timeout(option.hard_ttl());
        let reply = match rpc {
            Rpc::AppendEntries => client.append_entries(request).await,
            Rpc::Vote => client.vote(request).await,
            Rpc::InstallSnapshot => client.install_snapshot(request).await,
        };
        let reply = reply.map_err(|status| transport_error(&status))?;
        let result: Result<Resp, RaftError<NodeId, E>> = decode(&reply.into_inner().data)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// A gRPC failure: connection problems make openraft back off
/// (`Unreachable`); anything else is retried at once (`Network`).
fn transport_error<E: std::error::Error>(
    status: &tonic::Status,
) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            RPCError::Unreachable(Unreachable::new(status))
        }
        _ => RPCError::Network(NetworkError::new(status)),
    }
}

impl RaftNetwork<TypeConfig> for GrpcNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let entries = rpc.entries.len() as u64;
        self.call(Rpc::AppendEntries, &rpc, &option, Some(entries))
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(Rpc::InstallSnapshot, &rpc, &option, None).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Rpc::Vote, &rpc, &option, None).await
    }
}
