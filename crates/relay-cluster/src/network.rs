//! openraft's network over tonic: each Raft RPC is one unary gRPC call whose
//! payload is the openraft request in the relay codec (`relay_types::encode`) (and `Result` reply).

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

use std::sync::Arc;
use std::time::Instant;

use crate::TypeConfig;
use crate::channels::{Channels, MAX_GRPC_MESSAGE};
use crate::ownership::QuorumAcks;

/// Creates a [`GrpcNetwork`] per peer.
#[derive(Clone, Debug)]
pub struct GrpcNetworkFactory {
    me: NodeId,
    channels: Channels,
    acks: Arc<QuorumAcks>,
}

impl GrpcNetworkFactory {
    /// A factory for node `me` sharing `channels` with the rest of the
    /// node; accepted AppendEntries are recorded in `acks` (the leader's
    /// quorum lease).
    pub fn new(me: NodeId, channels: Channels, acks: Arc<QuorumAcks>) -> Self {
        GrpcNetworkFactory { me, channels, acks }
    }
}

impl RaftNetworkFactory<TypeConfig> for GrpcNetworkFactory {
    type Network = GrpcNetwork;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> GrpcNetwork {
        GrpcNetwork {
            me: self.me,
            target,
            addr: node.addr.clone(),
            channels: self.channels.clone(),
            acks: self.acks.clone(),
        }
    }
}

/// The Raft RPC client for one peer.
#[derive(Debug)]
pub struct GrpcNetwork {
    me: NodeId,
    target: NodeId,
    addr: String,
    channels: Channels,
    acks: Arc<QuorumAcks>,
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
            .client(self.target, &self.addr)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let leader_quorum_age_ms = match rpc {
            Rpc::AppendEntries => self
                .acks
                .published_quorum_age(self.me)
                .map(|age| age.as_millis() as u64),
            _ => None,
        };
        let mut request = tonic::Request::new(RaftPayload {
            data,
            leader_quorum_age_ms,
        });
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
        if let Some(fit) = entries_within(&rpc.entries, MAX_APPEND_ENTRIES_BYTES) {
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(fit),
            ));
        }
        let sent = Instant::now();
        let term = rpc.vote.leader_id().term;
        let response: AppendEntriesResponse<NodeId> = self
            .call(Rpc::AppendEntries, &rpc, &option, Some(entries))
            .await?;
        if !matches!(response, AppendEntriesResponse::HigherVote(_)) {
            self.acks.record(self.target, term, sent);
        }
        Ok(response)
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

/// Most body bytes one AppendEntries carries when it has more than one
/// entry. openraft 0.9 gives an AppendEntries the heartbeat interval to
/// complete (write and fsync on the follower included) and sends up to
/// `max_payload_entries` entries at once; with group-commit entries of many
/// messages each, a lagging follower was sent hundreds of MiB, timed out
/// again and again and never caught up (found by the 1 M queue benchmark).
pub const MAX_APPEND_ENTRIES_BYTES: usize = 2 * 1024 * 1024;

/// `Some(n)`: only the first `n` entries (at least one) fit in `limit`
/// body bytes, so the request must be split; `None`: send it as it is.
/// Counts body bytes without encoding anything.
fn entries_within(entries: &[openraft::Entry<TypeConfig>], limit: usize) -> Option<u64> {
    if entries.len() < 2 {
        return None;
    }
    let mut total = 0usize;
    for (i, entry) in entries.iter().enumerate() {
        total += match &entry.payload {
            openraft::EntryPayload::Normal(command) => command_bytes(command),
            _ => 0,
        };
        if total > limit {
            return Some(i.max(1) as u64);
        }
    }
    None
}

/// The body octets a command carries (what makes an entry large).
fn command_bytes(command: &relay_types::Command) -> usize {
    use relay_types::Command;
    match command {
        Command::Enqueue(e) => e.body.len(),
        Command::Attempt { dsn: Some(d), .. } => d.body.len(),
        Command::Batch(commands) => commands.iter().map(command_bytes).sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use openraft::{Entry, EntryPayload};
    use relay_types::{Command, Enqueue, MessageId, UnixMillis};

    use super::{TypeConfig, entries_within};

    fn entry(index: u64, body_bytes: usize) -> Entry<TypeConfig> {
        let enqueue = Enqueue {
            id: MessageId([index as u8; 16]),
            received_at: UnixMillis(1),
            accepted_by: 1,
            owner: 1,
            envelope: Default::default(),
            info: Default::default(),
            checksum: [0; 32],
            expires_at: UnixMillis(2),
            body: Bytes::from(vec![b'x'; body_bytes]),
        };
        Entry {
            log_id: openraft::testing::log_id(1, 1, index),
            payload: EntryPayload::Normal(Command::Batch(vec![Command::Enqueue(Box::new(
                enqueue,
            ))])),
        }
    }

    #[test]
    fn appends_are_split_by_body_bytes_but_one_entry_always_goes() {
        let small: Vec<_> = (1..=10).map(|i| entry(i, 1_000)).collect();
        assert_eq!(entries_within(&small, 100_000), None);
        let large: Vec<_> = (1..=10).map(|i| entry(i, 30_000)).collect();
        assert_eq!(entries_within(&large, 100_000), Some(3));
        let huge = vec![entry(1, 500_000), entry(2, 10)];
        assert_eq!(entries_within(&huge, 100_000), Some(1));
        assert_eq!(entries_within(&huge[..1], 100_000), None);
    }
}
