//! The SMTP connect test a node runs for drills, as a hook: this crate
//! carries the request between nodes but never speaks SMTP itself; the node
//! installs an implementation (from `relay-delivery`) with
//! [`Cluster::set_prober`](crate::Cluster::set_prober).

use std::time::Duration;

use futures::future::BoxFuture;
pub use relay_proto::raft::ProbeResult;

/// Connects to SMTP targets and says hello, without sending mail.
pub trait TargetProber: Send + Sync + std::fmt::Debug + 'static {
    /// One result per target, in order; never fails as a whole.
    fn probe(&self, targets: Vec<String>, timeout: Duration) -> BoxFuture<'_, Vec<ProbeResult>>;
}

impl crate::Cluster {
    /// Runs the SMTP connect test on member `id` (here, or over the Raft
    /// service at `addr`).
    pub async fn probe_from(
        &self,
        id: relay_types::NodeId,
        addr: &str,
        targets: Vec<String>,
        timeout: Duration,
    ) -> Result<Vec<ProbeResult>, String> {
        if id == self.node_id() {
            let prober = self
                .prober()
                .ok_or_else(|| "this node has no SMTP prober".to_string())?;
            return Ok(prober.probe(targets, timeout).await);
        }
        let mut client = self
            .peer_client(addr)
            .map_err(|e| e.message().to_string())?;
        let count = targets.len().max(1) as u32;
        let mut request = tonic::Request::new(relay_proto::raft::ProbeRequest {
            targets,
            timeout_ms: timeout.as_millis() as u64,
        });
        // Probes run concurrently on the peer; leave room for the slowest.
        request.set_timeout(timeout + Duration::from_secs(2) + Duration::from_millis(10) * count);
        client
            .probe_targets(request)
            .await
            .map(|r| r.into_inner().results)
            .map_err(|e| e.message().to_string())
    }
}
