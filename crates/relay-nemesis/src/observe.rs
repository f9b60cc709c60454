//! Watching the nodes through their own interfaces: `NodeStatus` over the
//! Raft gRPC port (role, leader, queue, state checksum, stored bodies,
//! purged index) and `/metrics` over HTTP (the relay's duplicate counter).
//!
//! The duplicate counter lives in process memory and restarts at zero with
//! the process, so [`DupCounter`] banks each process lifetime's last value:
//! it is read every second and right before every kill, stop or pause.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use relay_proto::raft::raft_service_client::RaftServiceClient;
use relay_proto::raft::{NodeStatusReply, NodeStatusRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::topology::SECRET;

#[derive(Clone, Debug)]
struct Secret;

impl tonic::service::Interceptor for Secret {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let value = format!("Bearer {SECRET}")
            .parse()
            .map_err(|_| tonic::Status::internal("secret is not a header value"))?;
        r.metadata_mut().insert("authorization", value);
        Ok(r)
    }
}

/// `NodeStatus` of the node whose Raft port is `raft` (short timeouts: a
/// paused node must not stall the harness).
pub async fn status(raft: SocketAddr, with_digest: bool) -> anyhow::Result<NodeStatusReply> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{raft}"))?
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(5))
        .connect()
        .await?;
    let mut client = RaftServiceClient::with_interceptor(channel, Secret);
    Ok(client
        .node_status(NodeStatusRequest { with_digest })
        .await?
        .into_inner())
}

/// The body of `GET /metrics` at `http`.
pub async fn metrics(http: SocketAddr) -> anyhow::Result<String> {
    let fetch = async {
        let mut s = TcpStream::connect(http).await?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: nemesis\r\n\r\n")
            .await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        anyhow::Ok(String::from_utf8_lossy(&out).into_owned())
    };
    let text = tokio::time::timeout(Duration::from_secs(3), fetch)
        .await
        .context("metrics timed out")??;
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP body")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        anyhow::bail!("metrics: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_string())
}

/// The sum of every sample of `name` (all label sets) in Prometheus text.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let metric = key.split('{').next()?;
            (metric == name).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// The relay's own duplicate count for one node across its restarts.
#[derive(Clone, Copy, Debug, Default)]
pub struct DupCounter {
    banked: u64,
    current: u64,
}

impl DupCounter {
    /// A fresh reading from the running process.
    pub fn observe(&mut self, value: u64) {
        self.current = self.current.max(value);
    }

    /// The process ended: keep its count, the next one starts at zero.
    pub fn process_ended(&mut self) {
        self.banked += self.current;
        self.current = 0;
    }

    /// Everything counted so far.
    pub fn total(&self) -> u64 {
        self.banked + self.current
    }
}

/// `relay_duplicate_deliveries_total` of the node at `http`.
pub async fn duplicates(http: SocketAddr) -> anyhow::Result<u64> {
    let text = metrics(http).await?;
    Ok(metric_sum(&text, "relay_duplicate_deliveries_total") as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_every_label_set_and_banks_across_restarts() {
        let text = "# TYPE relay_duplicate_deliveries_total counter\n\
            relay_duplicate_deliveries_total{reason=\"not_owner\"} 2\n\
            relay_duplicate_deliveries_total{reason=\"outcome_unknown\"} 3\n\
            relay_duplicate_deliveries_total_other 7\n";
        assert_eq!(metric_sum(text, "relay_duplicate_deliveries_total"), 5.0);
        let mut c = DupCounter::default();
        c.observe(5);
        c.process_ended();
        c.observe(1);
        assert_eq!(c.total(), 6);
    }
}
