//! The node's small HTTP listener: `/healthz` (process up), `/readyz` (can
//! commit now: see [`crate::health`]), `/metrics` (Prometheus text format)
//! and `/` (the status page, [`crate::status_page`]).
//!
//! A deliberately tiny HTTP/1.1 responder: one request per connection,
//! bounded request head, no bodies accepted, GET (and HEAD) only. It serves
//! operators and Prometheus on a private port, not the public.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use metrics_exporter_prometheus::PrometheusHandle;
use relay_cluster::Cluster;
use relay_types::UnixMillis;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::health::{Readiness, readiness};
use crate::recent::RecentResults;
use crate::status_page::{RouteRow, StatusView, node_rows, render};

/// What the handlers read.
#[derive(Clone)]
pub struct HttpState {
    /// The node's consensus handle (Raft metrics, state machine, peers).
    pub cluster: Arc<Cluster>,
    /// Renders the Prometheus text format.
    pub prometheus: PrometheusHandle,
    /// Last delivery result per target, for the status page.
    pub recent: Arc<RecentResults>,
    /// `smtp.accept_as_learner`: a learner without it takes no mail and
    /// is not ready.
    pub accept_as_learner: bool,
}

impl std::fmt::Debug for HttpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpState")
            .field("node", &self.cluster.node_id())
            .finish_non_exhaustive()
    }
}

impl HttpState {
    /// This node's readiness now.
    pub fn readiness(&self) -> Readiness {
        // A node that takes no mail must not get any from a load balancer.
        if let Some(why) =
            crate::adapters::not_accepting_reason(&self.cluster, self.accept_as_learner)
        {
            return Readiness::NotReady(format!("not taking mail: {why}"));
        }
        let m = self.cluster.view();
        let contact = self.cluster.contact().last().map(|c| (c, c.at.elapsed()));
        let window = self.cluster.election_timeout().1 * 2;
        readiness(&m, contact, window)
    }
}

/// Largest request head read.
const MAX_HEAD: usize = 8 * 1024;

/// Serves until `shutdown`.
pub async fn serve(listener: TcpListener, state: HttpState, shutdown: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    debug!(error = %e, "http accept failed");
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let state = state.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), handle(stream, state)).await;
        });
    }
}

async fn handle(mut stream: TcpStream, state: HttpState) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > MAX_HEAD {
            return respond(
                &mut stream,
                "400 Bad Request",
                "text/plain",
                "bad request\n",
            )
            .await;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" && method != "HEAD" {
        return respond(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n",
        )
        .await;
    }
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = match path {
        "/healthz" => ("200 OK", "text/plain", "ok\n".to_string()),
        "/readyz" => match state.readiness() {
            Readiness::Ready(why) => ("200 OK", "text/plain", format!("ready: {why}\n")),
            Readiness::NotReady(why) => (
                "503 Service Unavailable",
                "text/plain",
                format!("not ready: {why}\n"),
            ),
        },
        "/metrics" => {
            crate::metrics::refresh_state(&state.cluster, UnixMillis::now());
            (
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                state.prometheus.render(),
            )
        }
        "/" => (
            "200 OK",
            "text/html; charset=utf-8",
            render(&status_view(&state).await),
        ),
        _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
    };
    if method == "HEAD" {
        return respond_head(&mut stream, status, content_type, body.len()).await;
    }
    respond(&mut stream, status, content_type, &body).await
}

/// Gathers the status page: every member asked over the NodeStatus RPC
/// (bounded by its per-peer timeout), plus routes and queue from this
/// replica.
async fn status_view(state: &HttpState) -> StatusView {
    let cluster = &state.cluster;
    let status = cluster.status(false).await;
    let store = cluster.store();
    let routes = store
        .routes()
        .unwrap_or_default()
        .into_iter()
        .map(|(domain, route)| RouteRow {
            last: route.targets.iter().map(|t| state.recent.get(t)).collect(),
            domain,
            route,
        })
        .collect();
    let now = UnixMillis::now();
    let oldest_age_seconds = store
        .oldest()
        .ok()
        .flatten()
        .map(|m| now.0.saturating_sub(m.received_at.0) / 1000);
    StatusView {
        this_node: cluster.node_id(),
        readiness: state.readiness(),
        leader: status.leader,
        term: status.term,
        nodes: node_rows(&status),
        routes,
        queue: status.queue,
        oldest_age_seconds,
        generated_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        now,
    }
}

async fn respond_head(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    len: usize,
) -> std::io::Result<()> {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
