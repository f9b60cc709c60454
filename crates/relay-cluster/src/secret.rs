//! The shared cluster secret on the node-to-node gRPC port.
//!
//! Every Raft RPC, forwarded write, membership change, leadership step and
//! target probe carries `authorization: Bearer <secret>`; the server
//! refuses anything else with `UNAUTHENTICATED` before decoding the
//! request, so a stranger who can reach the port can neither append
//! entries, vote, join, nor make a node connect somewhere (ProbeTargets).
//! The comparison is constant-time. Members are additionally checked per
//! RPC in [`service`](crate::service): a holder of the secret whose node
//! id is not in the membership gets `PERMISSION_DENIED`. With TLS on, the
//! interceptor also requires a client certificate naming a member (see
//! [`crate::tls`]).

use std::sync::Arc;

use subtle::ConstantTimeEq;

use crate::tls::{PeerNodes, certified_nodes};
use tonic::metadata::MetadataValue;
use tonic::{Request, Status};

/// The secret, for both directions: clients attach it, the server checks it.
#[derive(Clone)]
pub struct ClusterSecret {
    bearer: Arc<str>,
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(<redacted>)")
    }
}

impl ClusterSecret {
    /// A secret; must be non-empty and printable ASCII (it travels in a
    /// header), which the node's config validation ensures.
    pub fn new(secret: &str) -> Self {
        ClusterSecret {
            bearer: format!("Bearer {secret}").into(),
        }
    }

    /// Server side: does the request carry the secret?
    pub fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let given = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes())
            .unwrap_or(b"");
        if bool::from(given.ct_eq(self.bearer.as_bytes())) {
            Ok(())
        } else {
            Err(Status::unauthenticated(
                "missing or wrong cluster secret (cluster.secret must match on every node)",
            ))
        }
    }
}

/// Client side: adds the secret to every outgoing request.
impl tonic::service::Interceptor for ClusterSecret {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let value = MetadataValue::try_from(&*self.bearer)
            .map_err(|_| Status::internal("cluster secret is not a valid header value"))?;
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }
}

/// Server side as a tonic interceptor: the secret, and with TLS on the
/// client certificate's node identity.
#[derive(Clone, Debug)]
pub struct RequireClusterSecret {
    /// The secret every call must carry.
    pub secret: ClusterSecret,
    /// With TLS on: the cluster whose members' certificates are accepted.
    /// The certificate must name at least one of them (`node-<id>`); the
    /// ids it names travel on in the request as [`PeerNodes`], for the
    /// Raft RPCs to compare with the sender they claim.
    pub peers: Option<std::sync::Arc<crate::Cluster>>,
}

impl tonic::service::Interceptor for RequireClusterSecret {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        self.secret.check(&request)?;
        if let Some(cluster) = &self.peers {
            let certs = request
                .peer_certs()
                .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
            let leaf = certs
                .first()
                .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
            let nodes = certified_nodes(leaf, cluster.known_node_ids());
            if nodes.is_empty() {
                return Err(Status::permission_denied(
                    "the client certificate names no member of this cluster \
                     (a node certificate carries the DNS name node-<id>)",
                ));
            }
            request.extensions_mut().insert(PeerNodes(nodes));
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::service::Interceptor;

    #[test]
    fn only_the_same_secret_passes() {
        let mut client = ClusterSecret::new("s3cret");
        let server = ClusterSecret::new("s3cret");
        let request = client.call(Request::new(())).unwrap();
        assert!(server.check(&request).is_ok());
        let wrong = ClusterSecret::new("other").call(Request::new(())).unwrap();
        assert_eq!(
            server.check(&wrong).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert!(server.check(&Request::new(())).is_err());
        assert!(!format!("{server:?}").contains("s3cret"));
    }
}
