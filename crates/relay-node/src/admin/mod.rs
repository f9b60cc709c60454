//! The admin gRPC service (`relayctl`), behind a bearer-token check.

use std::sync::Arc;

use relay_cluster::Cluster;
use relay_proto::admin::admin_server::Admin;
use relay_proto::admin::{NodeInfo, QueueCounts, StatusReply, StatusRequest};
use subtle::ConstantTimeEq;
use tonic::{Request, Response, Status};

/// Checks `authorization: Bearer <token>` in constant time.
#[derive(Clone)]
pub struct TokenCheck {
    token: Arc<[u8]>,
}

impl std::fmt::Debug for TokenCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenCheck(<redacted>)")
    }
}

impl TokenCheck {
    /// A check for `token`.
    pub fn new(token: &str) -> Self {
        TokenCheck {
            token: token.as_bytes().into(),
        }
    }
}

impl tonic::service::Interceptor for TokenCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let given = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if bool::from(given.as_bytes().ct_eq(&self.token)) {
            Ok(request)
        } else {
            Err(Status::unauthenticated("missing or wrong admin token"))
        }
    }
}

/// The admin service of one node.
#[derive(Debug, Clone)]
pub struct AdminService {
    cluster: Arc<Cluster>,
}

impl AdminService {
    /// Serves admin requests from `cluster`.
    pub fn new(cluster: Arc<Cluster>) -> Self {
        AdminService { cluster }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusReply>, Status> {
        let status = self.cluster.status(false).await;
        Ok(Response::new(StatusReply {
            leader: status.leader,
            term: status.term,
            nodes: status
                .members
                .into_iter()
                .map(|m| NodeInfo {
                    id: m.id,
                    role: m.role,
                    addr: m.addr,
                    reachable: m.reachable,
                    applied: m.applied,
                    lag: m.lag,
                    voter: m.voter,
                })
                .collect(),
            queue: Some(QueueCounts {
                queued: status.queue.queued,
                deferred: status.queue.deferred,
                held: status.queue.held,
            }),
            answered_by: self.cluster.node_id(),
        }))
    }
}
