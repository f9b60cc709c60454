//! The node-to-node gRPC server: Raft RPCs, forwarded writes, node status.

use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
use relay_proto::raft::raft_service_server::RaftService;
use relay_proto::raft::{
    NodeStatusReply, NodeStatusRequest, RaftPayload, SubmitReply, SubmitRequest,
};
use relay_types::{Command, decode, encode};
use tonic::{Request, Response, Status};

use crate::TypeConfig;
use crate::cluster::Cluster;

/// Serves `RaftService` for one node.
#[derive(Debug, Clone)]
pub struct RaftGrpc {
    cluster: Arc<Cluster>,
}

impl RaftGrpc {
    /// A server for `cluster`.
    pub fn new(cluster: Arc<Cluster>) -> Self {
        RaftGrpc { cluster }
    }
}

fn bad_payload(what: &str, e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("malformed {what} payload: {e}"))
}

#[tonic::async_trait]
impl RaftService for RaftGrpc {
    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> =
            decode(&request.into_inner().data).map_err(|e| bad_payload("AppendEntries", e))?;
        let sender = rpc.vote.leader_id().voted_for();
        let leader_commit = rpc.leader_commit.map(|l| l.index).unwrap_or(0);
        let result = self.cluster.raft().append_entries(rpc).await;
        // Any answer but HigherVote means this node accepts the sender as
        // its leader: that is "heard from the leader" for readiness.
        if let (Some(leader), Ok(response)) = (sender, &result)
            && !matches!(response, AppendEntriesResponse::HigherVote(_))
        {
            self.cluster
                .contact()
                .record(leader, leader_commit, self.cluster.delivery_lease());
        }
        Ok(Response::new(RaftPayload {
            data: encode(&result),
        }))
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode(&request.into_inner().data).map_err(|e| bad_payload("Vote", e))?;
        let result = self.cluster.raft().vote(rpc).await;
        Ok(Response::new(RaftPayload {
            data: encode(&result),
        }))
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc =
            decode(&request.into_inner().data).map_err(|e| bad_payload("InstallSnapshot", e))?;
        let result = self.cluster.raft().install_snapshot(rpc).await;
        Ok(Response::new(RaftPayload {
            data: encode(&result),
        }))
    }

    /// A follower's forwarded write. Only the leader commits it; anyone else
    /// answers FAILED_PRECONDITION so the caller looks for the leader again.
    async fn submit(
        &self,
        request: Request<SubmitRequest>,
    ) -> Result<Response<SubmitReply>, Status> {
        let command: Command =
            decode(&request.into_inner().command).map_err(|e| bad_payload("Submit", e))?;
        match self.cluster.raft().client_write(command).await {
            Ok(written) => Ok(Response::new(SubmitReply {
                result: encode(&written.data),
            })),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                let mut status = Status::failed_precondition("not the leader");
                if let Some(leader) = f.leader_id
                    && let Ok(v) = leader.to_string().parse()
                {
                    status.metadata_mut().insert("x-leader-id", v);
                }
                Err(status)
            }
            Err(e) => Err(Status::unavailable(format!("cannot commit: {e}"))),
        }
    }

    async fn node_status(
        &self,
        request: Request<NodeStatusRequest>,
    ) -> Result<Response<NodeStatusReply>, Status> {
        let with_digest = request.into_inner().with_digest;
        let cluster = self.cluster.clone();
        // The digest reads the whole state: keep it off the async workers.
        let reply = tokio::task::spawn_blocking(move || cluster.local_status(with_digest))
            .await
            .map_err(|e| Status::internal(format!("status task failed: {e}")))?
            .map_err(|e| Status::internal(format!("cannot read state: {e}")))?;
        Ok(Response::new(reply))
    }
}
