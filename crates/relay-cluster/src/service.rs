//! The node-to-node gRPC server: Raft RPCs, forwarded writes, node status.

use std::sync::Arc;

use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
use relay_proto::raft::raft_service_server::RaftService;
use relay_proto::raft::{
    FetchBodyReply, FetchBodyRequest, LeadershipReply, LeadershipRequest, MembershipChange,
    MembershipChangeReply, NodeStatusReply, NodeStatusRequest, ProbeReply, ProbeRequest,
    RaftPayload, SubmitReply, SubmitRequest,
};
use relay_types::{Command, MessageId, NodeId, decode, encode};
use tonic::{Request, Response, Status};

use crate::TypeConfig;
use crate::batcher::BatchWriteError;
use crate::cluster::Cluster;
use crate::error::AdminError;
use crate::leadership::LeadershipStep;
use crate::membership::MemberChange;
use crate::tls::PeerNodes;

/// Longest per-target probe timeout a peer may ask for.
const MAX_PROBE_TIMEOUT_MS: u64 = 30_000;

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

/// Refuses Raft RPCs from a node id outside the membership, and with TLS
/// on from a sender the client certificate does not name.
fn require_member(
    cluster: &Cluster,
    sender: Option<NodeId>,
    certified: Option<&PeerNodes>,
    what: &str,
) -> Result<(), Status> {
    if let (Some(id), Some(certified)) = (sender, certified)
        && !certified.0.contains(&id)
    {
        return Err(Status::permission_denied(format!(
            "{what} claims to come from node {id}, but the client certificate is for {:?}",
            certified.0
        )));
    }
    match sender {
        Some(id) if cluster.is_member_or_uninitialised(id) => Ok(()),
        Some(id) => Err(Status::permission_denied(format!(
            "{what} from node {id}, which is not a member of this cluster"
        ))),
        None => Ok(()),
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
        let received = std::time::Instant::now();
        let certified = request.extensions().get::<PeerNodes>().cloned();
        let payload = request.into_inner();
        let leader_quorum_age =
            std::time::Duration::from_millis(payload.leader_quorum_age_ms.unwrap_or(0));
        let rpc: AppendEntriesRequest<TypeConfig> =
            decode(&payload.data).map_err(|e| bad_payload("AppendEntries", e))?;
        let sender = rpc.vote.leader_id().voted_for();
        require_member(&self.cluster, sender, certified.as_ref(), "AppendEntries")?;
        let leader_commit = rpc.leader_commit.map(|l| l.index).unwrap_or(0);
        let result = self.cluster.raft().append_entries(rpc).await;
        // Any answer but HigherVote means this node accepts the sender as
        // its leader: that is "heard from the leader" for readiness.
        if let (Some(leader), Ok(response)) = (sender, &result)
            && !matches!(response, AppendEntriesResponse::HigherVote(_))
        {
            self.cluster.contact().record(
                received,
                leader,
                leader_commit,
                leader_quorum_age,
                self.cluster.delivery_lease(),
                self.cluster.election_timeout().1,
            );
        }
        Ok(Response::new(RaftPayload {
            data: encode(&result),
            leader_quorum_age_ms: None,
        }))
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let certified = request.extensions().get::<PeerNodes>().cloned();
        let rpc: openraft::raft::VoteRequest<NodeId> =
            decode(&request.into_inner().data).map_err(|e| bad_payload("Vote", e))?;
        require_member(
            &self.cluster,
            rpc.vote.leader_id().voted_for(),
            certified.as_ref(),
            "Vote",
        )?;
        let result = self.cluster.raft().vote(rpc).await;
        Ok(Response::new(RaftPayload {
            data: encode(&result),
            leader_quorum_age_ms: None,
        }))
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let certified = request.extensions().get::<PeerNodes>().cloned();
        let rpc: openraft::raft::InstallSnapshotRequest<TypeConfig> =
            decode(&request.into_inner().data).map_err(|e| bad_payload("InstallSnapshot", e))?;
        require_member(
            &self.cluster,
            rpc.vote.leader_id().voted_for(),
            certified.as_ref(),
            "InstallSnapshot",
        )?;
        let result = self.cluster.raft().install_snapshot(rpc).await;
        Ok(Response::new(RaftPayload {
            data: encode(&result),
            leader_quorum_age_ms: None,
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
        match self.cluster.write_as_leader(command).await {
            Ok(result) => Ok(Response::new(SubmitReply {
                result: encode(&result),
            })),
            Err(BatchWriteError::ForwardToLeader(leader)) => {
                let mut status = Status::failed_precondition("not the leader");
                if let Some(leader) = leader
                    && let Ok(v) = leader.to_string().parse()
                {
                    status.metadata_mut().insert("x-leader-id", v);
                }
                Err(status)
            }
            Err(BatchWriteError::Fatal(e)) => {
                Err(Status::unavailable(format!("cannot commit: {e}")))
            }
            Err(BatchWriteError::ShuttingDown) => Err(Status::unavailable("node is shutting down")),
            Err(BatchWriteError::Stranded(after)) => Err(Status::deadline_exceeded(format!(
                "no answer from raft within {after:?}; the write may or may not commit"
            ))),
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

    async fn leadership(
        &self,
        request: Request<LeadershipRequest>,
    ) -> Result<Response<LeadershipReply>, Status> {
        let request = request.into_inner();
        // A step switches elections off: only a member may ask for one,
        // and never for long.
        if !self.cluster.is_member(request.from) {
            return Err(Status::permission_denied(format!(
                "leadership step from node {}, which is not a member of this cluster",
                request.from
            )));
        }
        let step = LeadershipStep::from_wire(&request.action, request.millis)
            .map_err(Status::invalid_argument)?;
        self.cluster
            .leadership_step(step)
            .await
            .map_err(Status::unavailable)?;
        Ok(Response::new(LeadershipReply {}))
    }

    /// Only the leader changes membership; followers forward here.
    async fn change_membership(
        &self,
        request: Request<MembershipChange>,
    ) -> Result<Response<MembershipChangeReply>, Status> {
        let change = MemberChange::from_wire(&request.into_inner()).map_err(admin_status)?;
        if self.cluster.current_leader() != Some(self.cluster.node_id()) {
            return Err(Status::failed_precondition("not the leader"));
        }
        let members = self
            .cluster
            .change_membership_here(change)
            .await
            .map_err(admin_status)?;
        Ok(Response::new(MembershipChangeReply {
            voters: members.voters,
            learners: members.learners,
        }))
    }

    async fn probe_targets(
        &self,
        request: Request<ProbeRequest>,
    ) -> Result<Response<ProbeReply>, Status> {
        let request = request.into_inner();
        let prober = self
            .cluster
            .prober()
            .ok_or_else(|| Status::unimplemented("this node has no SMTP prober"))?;
        let timeout =
            std::time::Duration::from_millis(request.timeout_ms.clamp(1, MAX_PROBE_TIMEOUT_MS));
        let results = prober.probe(request.targets, timeout).await;
        Ok(Response::new(ProbeReply { results }))
    }

    /// A peer's own copy of a body is damaged: hand it ours, if ours is
    /// intact (see [`crate::bodies`]).
    async fn fetch_body(
        &self,
        request: Request<FetchBodyRequest>,
    ) -> Result<Response<FetchBodyReply>, Status> {
        let certified = request.extensions().get::<PeerNodes>().cloned();
        let request = request.into_inner();
        // Bodies are mail: only a member of the cluster may read them
        // (a node without a membership yet holds none to give).
        if !self.cluster.is_member(request.from) {
            return Err(Status::permission_denied(format!(
                "body request from node {}, which is not a member of this cluster",
                request.from
            )));
        }
        require_member(
            &self.cluster,
            Some(request.from),
            certified.as_ref(),
            "FetchBody",
        )?;
        let id = MessageId::from_slice(&request.id)
            .ok_or_else(|| Status::invalid_argument("a message id is 16 bytes"))?;
        let cluster = self.cluster.clone();
        let body = tokio::task::spawn_blocking(move || cluster.intact_local_body(&id))
            .await
            .map_err(|e| Status::internal(format!("body read task failed: {e}")))??;
        Ok(Response::new(FetchBodyReply {
            body: body.to_vec(),
        }))
    }
}

/// The gRPC status for an operator-request error (the one mapping used by
/// node-to-node forwarding).
pub fn admin_status(e: AdminError) -> Status {
    match e {
        AdminError::NotFound(m) => Status::not_found(m),
        AdminError::Invalid(m) => Status::invalid_argument(m),
        AdminError::Unavailable(m) => Status::unavailable(m),
        AdminError::Failed(m) => Status::aborted(m),
    }
}
