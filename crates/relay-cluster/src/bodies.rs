//! Intact copies of a message body from the other replicas.
//!
//! Every replica holds every queued body, checked against the SHA-256 in
//! the `Enqueue` entry when it was applied. If the owner later reads its
//! own copy and it no longer matches that checksum (a flipped bit that got
//! past RocksDB's block checksums, damaged memory) or cannot read it at all
//! (RocksDB reports corruption), two intact copies usually still exist on
//! the peers. Bouncing the message, or deferring it until its lifetime runs
//! out, would throw away mail the tier still holds; so the owner asks its
//! peers ([`Cluster::fetch_body_from_peers`]) and delivers the copy whose
//! checksum matches.
//!
//! Both ends check the checksum: the serving node refuses to hand out a
//! copy that does not match its own record (`DATA_LOSS`), and the owner
//! checks what it received against its record before using it. Nothing is
//! written back: the owner's damaged copy leaves with the message once it
//! is delivered, like any other copy.

use std::time::Duration;

use bytes::Bytes;
use relay_proto::raft::{FetchBodyReply, FetchBodyRequest};
use relay_queue::body_checksum;
use relay_types::{MessageId, NodeId};
use tonic::Status;
use tracing::{debug, warn};

use crate::cluster::Cluster;

/// How long one peer may take to send a body (bodies may be tens of MiB).
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

impl Cluster {
    /// An intact copy of queued message `id`'s body (its SHA-256 is
    /// `checksum`) from another member, asked one at a time, voters first.
    /// `Err` says what each peer answered when none had one.
    pub async fn fetch_body_from_peers(
        &self,
        id: MessageId,
        checksum: [u8; 32],
    ) -> Result<(NodeId, Bytes), String> {
        let me = self.node_id();
        let metrics = self.metrics();
        let voters: Vec<NodeId> = metrics.membership_config.membership().voter_ids().collect();
        let mut peers: Vec<(NodeId, String)> = metrics
            .membership_config
            .nodes()
            .filter(|(peer, _)| **peer != me)
            .map(|(peer, node)| (*peer, node.addr.clone()))
            .collect();
        peers.sort_by_key(|(peer, _)| (!voters.contains(peer), *peer));
        let mut answers = Vec::new();
        for (peer, addr) in peers {
            match self.fetch_body_from(&addr, id).await {
                Ok(body) if body_checksum(&body) == checksum => {
                    debug!(peer, "fetched an intact body from a peer");
                    return Ok((peer, body));
                }
                Ok(_) => {
                    warn!(
                        peer,
                        "a peer's copy of the body does not match its checksum"
                    );
                    answers.push(format!("node {peer}: copy does not match the checksum"));
                }
                Err(status) => {
                    answers.push(format!("node {peer}: {}", status.message()));
                }
            }
        }
        if answers.is_empty() {
            return Err("no other member to ask".into());
        }
        Err(answers.join("; "))
    }

    async fn fetch_body_from(&self, addr: &str, id: MessageId) -> Result<Bytes, Status> {
        let mut client = self.peer_client(addr)?;
        let mut request = tonic::Request::new(FetchBodyRequest {
            id: id.as_bytes().to_vec(),
            from: self.node_id(),
        });
        request.set_timeout(FETCH_TIMEOUT);
        let FetchBodyReply { body } = client.fetch_body(request).await?.into_inner();
        Ok(Bytes::from(body))
    }

    /// This node's copy of queued message `id`'s body, for a peer whose own
    /// copy is damaged: only if it matches the checksum in this node's
    /// record. Blocking (RocksDB reads).
    pub(crate) fn intact_local_body(&self, id: &MessageId) -> Result<Bytes, Status> {
        let store = self.store();
        let record = store
            .message(id)
            .map_err(|e| Status::internal(format!("cannot read the message record: {e}")))?
            .ok_or_else(|| Status::not_found(format!("message {id} is not queued here")))?;
        let body = store
            .body(id)
            .map_err(|e| Status::data_loss(format!("cannot read this node's copy: {e}")))?
            .ok_or_else(|| Status::not_found(format!("no body of message {id} here")))?;
        if body_checksum(&body) != record.checksum {
            return Err(Status::data_loss(format!(
                "this node's copy of message {id} is damaged too"
            )));
        }
        Ok(body)
    }
}
