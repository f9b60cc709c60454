//! The node's small HTTP listener: `/healthz` (process up) and `/readyz`
//! (in a cluster with a known leader).
//!
//! A deliberately tiny HTTP/1.1 responder: one request per connection,
//! bounded request head, no bodies accepted.

use std::sync::Arc;
use std::time::Duration;

use relay_cluster::Cluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// Largest request head read.
const MAX_HEAD: usize = 8 * 1024;

/// Serves until `shutdown`.
pub async fn serve(listener: TcpListener, cluster: Arc<Cluster>, shutdown: CancellationToken) {
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
        let cluster = cluster.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), handle(stream, cluster)).await;
        });
    }
}

async fn handle(mut stream: TcpStream, cluster: Arc<Cluster>) -> std::io::Result<()> {
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
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" {
        return respond(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n",
        )
        .await;
    }
    match path {
        "/healthz" => respond(&mut stream, "200 OK", "text/plain", "ok\n").await,
        "/readyz" => {
            let leader = cluster.current_leader();
            match leader {
                Some(id) => {
                    let body = format!("ready: leader is node {id}\n");
                    respond(&mut stream, "200 OK", "text/plain", &body).await
                }
                None => {
                    respond(
                        &mut stream,
                        "503 Service Unavailable",
                        "text/plain",
                        "not ready: no known leader\n",
                    )
                    .await
                }
            }
        }
        _ => respond(&mut stream, "404 Not Found", "text/plain", "not found\n").await,
    }
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
