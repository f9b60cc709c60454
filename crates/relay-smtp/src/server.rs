//! The accept loop: connection caps, one task per session, panic
//! containment, ordered shutdown.

use std::collections::HashMap;
use std::io;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::canonical;
use crate::metrics as m;
use crate::proxy;
use crate::reply::{self, Reply};
use crate::{SessionBackend, SmtpConfig, run_session};

/// Accepts SMTP connections until `shutdown` fires.
///
/// Each connection runs [`run_session`] in its own task, so an error or a
/// panic in one session never reaches the others or this loop. A
/// connection over `max_connections` (or over `max_connections_per_ip`, for
/// clients outside the authorized networks) gets `421 4.7.0` and is closed
/// at once, without a task; while the backend is not
/// [`accepting`](crate::SessionBackend::accepting), every new connection
/// gets `421 4.3.2` that way. A connection from a load balancer in
/// [`proxy_protocol_from`](SmtpConfig::proxy_protocol_from) must start with
/// a PROXY header; admission, and the whole session, then use the client
/// address it names (see [`crate::proxy`]). Accept errors (e.g. out of file descriptors)
/// are logged and retried with a short back-off.
///
/// On shutdown the listener is closed, sessions answer `421 4.3.2` at their
/// next command (idle ones at once), and this returns when they have ended
/// or after `shutdown_grace`, when the rest are aborted.
pub async fn serve<B: SessionBackend>(
    listener: TcpListener,
    config: Arc<SmtpConfig>,
    backend: Arc<B>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let limits = Arc::new(Limits::new(
        config.max_connections,
        config.max_connections_per_ip,
        config.open_sessions.clone(),
    ));
    let mut sessions = JoinSet::new();
    let mut backoff = Duration::from_millis(10);
    tracing::info!(addr = ?listener.local_addr().ok(), listener = config.role.name(), "SMTP listener started");
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            Some(done) = sessions.join_next(), if !sessions.is_empty() => reap(done),
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => {
                        backoff = Duration::from_millis(10);
                        x
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed, retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                        continue;
                    }
                };
                if config.is_proxy(peer.ip()) {
                    // The header comes first; admission is by the client it
                    // names, so it is read in the session's own task
                    // (bounded by `proxy_protocol_timeout`).
                    let (config, backend, shutdown, limits) =
                        (config.clone(), backend.clone(), shutdown.clone(), limits.clone());
                    sessions.spawn(async move {
                        let Some((stream, client)) = read_proxied(stream, peer, &config).await else {
                            return;
                        };
                        admit_and_run(stream, client, config, backend, shutdown, limits).await;
                    });
                    continue;
                }
                let stream = Prefixed::new(stream, Vec::new());
                if let Some(start) = admit(stream, peer, &config, &*backend, &limits) {
                    let (config, backend, shutdown) = (config.clone(), backend.clone(), shutdown.clone());
                    sessions.spawn(async move {
                        let (stream, permit) = start;
                        let _permit = permit;
                        run_session(stream, peer, config, backend, shutdown).await;
                    });
                }
            }
        }
    }
    drop(listener);
    tracing::info!(
        sessions = sessions.len(),
        "SMTP listener closed, ending sessions"
    );
    let grace = tokio::time::sleep(config.shutdown_grace);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            done = sessions.join_next() => match done {
                Some(done) => reap(done),
                None => break,
            },
            _ = &mut grace => {
                tracing::warn!(sessions = sessions.len(), "shutdown grace over, aborting sessions");
                sessions.abort_all();
                while let Some(done) = sessions.join_next().await {
                    reap(done);
                }
                break;
            }
        }
    }
    Ok(())
}

/// Reads the PROXY header of a connection from a load balancer. `None`:
/// the connection was refused (logged, counted, answered `421 4.7.0`).
async fn read_proxied(
    mut stream: TcpStream,
    peer: SocketAddr,
    config: &SmtpConfig,
) -> Option<(Prefixed<TcpStream>, SocketAddr)> {
    let mut buf = Vec::with_capacity(256);
    let read = async {
        loop {
            match proxy::parse(&buf) {
                Ok(proxy::Parsed::Complete { header, len }) => {
                    return Ok((header, buf.split_off(len)));
                }
                Ok(proxy::Parsed::Incomplete) => {}
                Err(e) => return Err(ProxyFailure::Header(e)),
            }
            let mut chunk = [0u8; 512];
            match stream.read(&mut chunk).await {
                Ok(0) => return Err(ProxyFailure::Closed),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(ProxyFailure::Io(e)),
            }
        }
    };
    let failure = match tokio::time::timeout(config.proxy_protocol_timeout, read).await {
        Ok(Ok((header, rest))) => {
            let client = header.client(peer);
            tracing::debug!(%peer, %client, version = header.version, "PROXY header accepted");
            return Some((Prefixed::new(stream, rest), client));
        }
        Ok(Err(f)) => f,
        Err(_) => ProxyFailure::Timeout,
    };
    let label = failure.label();
    metrics::counter!(m::CONNECTIONS_TOTAL, "result" => label).increment(1);
    tracing::warn!(%peer, listener = config.role.name(), error = %failure,
        "PROXY protocol: load balancer connection refused");
    if !matches!(failure, ProxyFailure::Closed | ProxyFailure::Io(_)) {
        refuse(stream, &reply::proxy_refused(&config.hostname));
    }
    None
}

/// Why a load balancer's connection had no usable PROXY header.
#[derive(Debug, thiserror::Error)]
enum ProxyFailure {
    #[error("{0}")]
    Header(proxy::ProxyError),
    #[error("no PROXY header in time")]
    Timeout,
    #[error("closed before a PROXY header")]
    Closed,
    #[error("connection failed: {0}")]
    Io(io::Error),
}

impl ProxyFailure {
    fn label(&self) -> &'static str {
        match self {
            ProxyFailure::Header(proxy::ProxyError::Missing) => "refused_proxy_missing",
            ProxyFailure::Header(_) => "refused_proxy_malformed",
            ProxyFailure::Timeout | ProxyFailure::Closed | ProxyFailure::Io(_) => {
                "refused_proxy_timeout"
            }
        }
    }
}

/// Admission of a proxied connection by its real client, then the session.
async fn admit_and_run<B: SessionBackend>(
    stream: Prefixed<TcpStream>,
    client: SocketAddr,
    config: Arc<SmtpConfig>,
    backend: Arc<B>,
    shutdown: CancellationToken,
    limits: Arc<Limits>,
) {
    if let Some((stream, permit)) = admit(stream, client, &config, &*backend, &limits) {
        let _permit = permit;
        run_session(stream, client, config, backend, shutdown).await;
    }
}

/// The admission decision for `client` (the connection's peer, or the
/// client a PROXY header named): a permit, or `None` after the refusal
/// reply was written.
fn admit<B: SessionBackend>(
    stream: Prefixed<TcpStream>,
    client: SocketAddr,
    config: &SmtpConfig,
    backend: &B,
    limits: &Arc<Limits>,
) -> Option<(Prefixed<TcpStream>, Permit)> {
    let ip = canonical(client.ip());
    if !backend.accepting() {
        tracing::debug!(%client, "not accepting mail on this node; connection refused");
        metrics::counter!(m::CONNECTIONS_TOTAL, "result" => "refused_not_accepting").increment(1);
        refuse(stream.into_inner(), &reply::not_accepting(&config.hostname));
        return None;
    }
    match limits.admit(ip, config.is_authorized(ip)) {
        Ok(permit) => {
            metrics::counter!(m::CONNECTIONS_TOTAL, "result" => "accepted").increment(1);
            Some((stream, permit))
        }
        Err(refusal) => {
            tracing::debug!(%client, ?refusal, "connection refused");
            let (reply, label) = match refusal {
                Refusal::Global => (
                    reply::too_many_connections(&config.hostname),
                    "refused_global",
                ),
                Refusal::PerIp => (
                    reply::too_many_connections_from_ip(&config.hostname),
                    "refused_per_ip",
                ),
            };
            metrics::counter!(m::CONNECTIONS_TOTAL, "result" => label).increment(1);
            refuse(stream.into_inner(), &reply);
            None
        }
    }
}

/// A stream that first yields octets already read from it (what followed
/// a PROXY header in the same segment), so the session, or the TLS
/// handshake on port 465, sees the connection's bytes in order.
#[derive(Debug)]
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    /// `inner`, read after `prefix`.
    pub fn new(inner: S, prefix: Vec<u8>) -> Self {
        Prefixed {
            prefix,
            at: 0,
            inner,
        }
    }

    /// The underlying stream (any unread prefix is dropped).
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.prefix.len() {
            let n = (this.prefix.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.prefix[this.at..this.at + n]);
            this.at += n;
            if this.at == this.prefix.len() {
                this.prefix = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

fn reap(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        // Contained: the task is gone, its permit released, the loop goes on.
        tracing::error!("SMTP session panicked; the session was closed");
    }
}

/// Writes the refusal without waiting (a fresh socket's send buffer is
/// empty) and closes.
fn refuse(stream: TcpStream, reply: &Reply) {
    let mut bytes = Vec::new();
    reply.write_to(&mut bytes);
    if let Ok(std_stream) = stream.into_std() {
        let _ = (&std_stream).write(&bytes);
    }
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    Global,
    PerIp,
}

/// Global and per-IP session counts.
#[derive(Debug)]
struct Limits {
    max_total: usize,
    max_per_ip: usize,
    counts: Mutex<Counts>,
    /// The open sessions, published for the node.
    open: Arc<AtomicU64>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

impl Limits {
    fn new(max_total: usize, max_per_ip: usize, open: Arc<AtomicU64>) -> Self {
        Limits {
            max_total,
            max_per_ip,
            counts: Mutex::new(Counts::default()),
            open,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // A poisoned lock only means a panic elsewhere; counts stay valid.
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn admit(self: &Arc<Self>, ip: IpAddr, exempt: bool) -> Result<Permit, Refusal> {
        let mut c = self.lock();
        if c.total >= self.max_total {
            return Err(Refusal::Global);
        }
        if !exempt {
            let n = c.per_ip.entry(ip).or_insert(0);
            if *n >= self.max_per_ip {
                if *n == 0 {
                    c.per_ip.remove(&ip);
                }
                return Err(Refusal::PerIp);
            }
            *n += 1;
        }
        c.total += 1;
        // Added, not stored: every listener of the node counts into it.
        self.open.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!(m::SESSIONS_ACTIVE).increment(1.0);
        Ok(Permit {
            limits: self.clone(),
            ip: (!exempt).then_some(ip),
        })
    }
}

/// One admitted session; releases its counts when dropped (also when the
/// session panics).
#[derive(Debug)]
struct Permit {
    limits: Arc<Limits>,
    ip: Option<IpAddr>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut c = self.limits.lock();
        c.total -= 1;
        self.limits.open.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!(m::SESSIONS_ACTIVE).decrement(1.0);
        if let Some(ip) = self.ip
            && let Some(n) = c.per_ip.get_mut(&ip)
        {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_count_and_release() {
        let limits = Arc::new(Limits::new(3, 2, Arc::default()));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let p1 = limits.admit(a, false).unwrap();
        let p2 = limits.admit(a, false).unwrap();
        assert_eq!(limits.admit(a, false).unwrap_err(), Refusal::PerIp);
        let p3 = limits.admit(b, false).unwrap();
        assert_eq!(limits.admit(b, false).unwrap_err(), Refusal::Global);
        assert_eq!(limits.admit(a, true).unwrap_err(), Refusal::Global);
        drop(p1);
        let p4 = limits.admit(a, false).unwrap();
        drop((p2, p3, p4));
        let c = limits.lock();
        assert_eq!(c.total, 0);
        assert!(c.per_ip.is_empty());
    }

    #[test]
    fn authorized_clients_skip_the_per_ip_cap() {
        let limits = Arc::new(Limits::new(10, 1, Arc::default()));
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let permits: Vec<_> = (0..5).map(|_| limits.admit(ip, true).unwrap()).collect();
        assert_eq!(limits.lock().total, 5);
        drop(permits);
        assert_eq!(limits.lock().total, 0);
    }
}
