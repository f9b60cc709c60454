//! The accept loop: connection caps, one task per session, panic
//! containment, ordered shutdown.

use std::collections::HashMap;
use std::io;
use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::canonical;
use crate::metrics as m;
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
/// gets `421 4.3.2` that way. Accept errors (e.g. out of file descriptors)
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
    tracing::info!(addr = ?listener.local_addr().ok(), "SMTP listener started");
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
                let ip = canonical(peer.ip());
                if !backend.accepting() {
                    tracing::debug!(%peer, "not accepting mail on this node; connection refused");
                    metrics::counter!(m::CONNECTIONS_TOTAL, "result" => "refused_not_accepting").increment(1);
                    refuse(stream, &reply::not_accepting(&config.hostname));
                    continue;
                }
                match limits.admit(ip, config.is_authorized(ip)) {
                    Ok(permit) => {
                        metrics::counter!(m::CONNECTIONS_TOTAL, "result" => "accepted").increment(1);
                        let config = config.clone();
                        let backend = backend.clone();
                        let shutdown = shutdown.clone();
                        sessions.spawn(async move {
                            let _permit = permit;
                            run_session(stream, peer, config, backend, shutdown).await;
                        });
                    }
                    Err(refusal) => {
                        tracing::debug!(%peer, ?refusal, "connection refused");
                        let (reply, label) = match refusal {
                            Refusal::Global => (reply::too_many_connections(&config.hostname), "refused_global"),
                            Refusal::PerIp => (reply::too_many_connections_from_ip(&config.hostname), "refused_per_ip"),
                        };
                        metrics::counter!(m::CONNECTIONS_TOTAL, "result" => label).increment(1);
                        refuse(stream, &reply);
                    }
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
        self.open.store(c.total as u64, Ordering::Relaxed);
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
        self.limits.open.store(c.total as u64, Ordering::Relaxed);
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
