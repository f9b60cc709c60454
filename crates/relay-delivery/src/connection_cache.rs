//! Idle SMTP sessions kept per target for the next message (like Postfix's
//! connection cache).
//!
//! Opening a session costs a TCP handshake, a greeting, EHLO and often
//! STARTTLS; with a backlog to one target that is most of a message's time.
//! After a transaction that ended cleanly (the final dot answered `2xx`),
//! the transport hands its session back here; the next transaction to the
//! same target with the same TLS policy takes it, says `RSET` (which also
//! proves the target still holds the connection) and runs through exactly
//! the same fencing gates as on a fresh session.
//!
//! A session is never given back after an unclear end — no reply to the
//! final dot, any timeout, a broken connection, or a fencing gate that
//! stopped the transaction — because the target may still answer that
//! transaction later, and its stale reply would be read as the answer to
//! the next command.
//!
//! Limits (Postfix names in brackets):
//! - `idle_timeout`: an idle session older than this is closed
//!   (`smtp_connection_cache_time_limit`, 2 s);
//! - `reuse_time_limit`: a session is not reused once it has been open this
//!   long (`smtp_connection_reuse_time_limit`, 300 s);
//! - `max_messages`: a session carries at most this many transactions
//!   (`smtp_connection_reuse_count_limit`; 1 turns the cache off).
//!
//! The TLS state travels with the session: a session that did STARTTLS
//! stays encrypted, and sessions are keyed by the route's TLS policy so a
//! route that requires verified TLS never gets a session opened under a
//! weaker policy.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use lettre::transport::smtp::client::AsyncSmtpConnection;
use relay_types::TlsPolicy;
use tokio::time::Instant;
use tracing::debug;

use crate::metrics as m;

/// How long and how often a session may be reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheSettings {
    /// Close a session that has been idle this long.
    pub idle_timeout: Duration,
    /// Do not reuse a session opened longer ago than this.
    pub reuse_time_limit: Duration,
    /// Transactions per session at most (0 and 1: no reuse).
    pub max_messages: u32,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            idle_timeout: Duration::from_secs(2),
            reuse_time_limit: Duration::from_secs(300),
            max_messages: 100,
        }
    }
}

impl CacheSettings {
    /// Whether any session can be reused under these limits.
    pub fn enabled(&self) -> bool {
        self.max_messages > 1 && !self.idle_timeout.is_zero() && !self.reuse_time_limit.is_zero()
    }
}

/// An open SMTP session to one target.
pub(crate) struct Session {
    pub(crate) conn: AsyncSmtpConnection,
    /// The address connected to (for the delivery log).
    pub(crate) peer: Option<SocketAddr>,
    opened: Instant,
    /// Transactions started on this session.
    pub(crate) transactions: u32,
}

impl Session {
    pub(crate) fn new(conn: AsyncSmtpConnection, peer: Option<SocketAddr>) -> Self {
        Session {
            conn,
            peer,
            opened: Instant::now(),
            transactions: 0,
        }
    }
}

struct Idle {
    session: Session,
    since: Instant,
}

/// What the cache did so far (also exported as metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Sessions opened (every transport open, cached or not).
    pub opened: u64,
    /// Transactions that ran on a reused session.
    pub reused: u64,
    /// Cached sessions found closed or broken when taken (`RSET` failed).
    pub stale: u64,
    /// Sessions idle in the cache right now.
    pub idle: usize,
}

/// Idle sessions per `(target, TLS policy)`.
pub struct ConnectionCache {
    settings: CacheSettings,
    idle: Mutex<HashMap<(String, TlsPolicy), Vec<Idle>>>,
    opened: AtomicU64,
    reused: AtomicU64,
    stale: AtomicU64,
}

impl std::fmt::Debug for ConnectionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionCache")
            .field("settings", &self.settings)
            .field("stats", &self.stats())
            .finish()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every step under the lock leaves the map consistent.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ConnectionCache {
    /// An empty cache with these limits.
    pub fn new(settings: CacheSettings) -> Self {
        ConnectionCache {
            settings,
            idle: Mutex::new(HashMap::new()),
            opened: AtomicU64::new(0),
            reused: AtomicU64::new(0),
            stale: AtomicU64::new(0),
        }
    }

    /// The limits.
    pub fn settings(&self) -> CacheSettings {
        self.settings
    }

    /// Counts so far.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            opened: self.opened.load(Ordering::Relaxed),
            reused: self.reused.load(Ordering::Relaxed),
            stale: self.stale.load(Ordering::Relaxed),
            idle: lock(&self.idle).values().map(Vec::len).sum(),
        }
    }

    pub(crate) fn note_opened(&self) {
        self.opened.fetch_add(1, Ordering::Relaxed);
    }

    /// A usable session to `target`, reset with `RSET` (which also proves
    /// the target has not closed it while idle). Sessions found closed are
    /// dropped and the next one is tried; `None` when none is left.
    pub(crate) async fn checkout(
        &self,
        target: &str,
        tls: TlsPolicy,
        command_timeout: Duration,
    ) -> Option<Session> {
        if !self.settings.enabled() {
            return None;
        }
        loop {
            let mut session = self.take(target, tls)?;
            let rset = tokio::time::timeout(command_timeout, session.conn.command(Rset)).await;
            match rset {
                Ok(Ok(_)) => {
                    self.reused.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!(m::CONNECTION_REUSES_TOTAL).increment(1);
                    return Some(session);
                }
                outcome => {
                    // Closed by the target while idle (or it no longer
                    // answers): nothing was sent on it, so the message
                    // simply goes over another session.
                    debug!(%target, failed = ?outcome.map(|r| r.map(|_| ()).map_err(|e| e.to_string())),
                        "cached session is gone");
                    self.stale.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!(m::CONNECTION_CACHE_STALE_TOTAL).increment(1);
                }
            }
        }
    }

    /// The most recently used idle session still within the limits;
    /// expired ones met on the way are dropped.
    fn take(&self, target: &str, tls: TlsPolicy) -> Option<Session> {
        let mut idle = lock(&self.idle);
        let key = (target.to_string(), tls);
        let list = idle.get_mut(&key)?;
        let now = Instant::now();
        let mut found = None;
        while let Some(entry) = list.pop() {
            if self.usable(&entry, now) {
                found = Some(entry.session);
                break;
            }
        }
        if list.is_empty() {
            idle.remove(&key);
        }
        found
    }

    fn usable(&self, entry: &Idle, now: Instant) -> bool {
        now.saturating_duration_since(entry.since) < self.settings.idle_timeout
            && now.saturating_duration_since(entry.session.opened) < self.settings.reuse_time_limit
            && entry.session.transactions < self.settings.max_messages
    }

    /// Keeps a session whose last transaction ended cleanly; gives it back
    /// when it may not be reused (limits reached), for the caller to close.
    pub(crate) fn put(&self, target: &str, tls: TlsPolicy, session: Session) -> Option<Session> {
        let entry = Idle {
            session,
            since: Instant::now(),
        };
        if !self.settings.enabled() || !self.usable(&entry, entry.since) {
            return Some(entry.session);
        }
        lock(&self.idle)
            .entry((target.to_string(), tls))
            .or_default()
            .push(entry);
        None
    }

    /// Removes the idle sessions past a limit, for the caller to close.
    pub(crate) fn take_expired(&self) -> Vec<Session> {
        let now = Instant::now();
        let mut expired = Vec::new();
        let mut idle = lock(&self.idle);
        for list in idle.values_mut() {
            let (keep, gone): (Vec<Idle>, Vec<Idle>) =
                list.drain(..).partition(|e| self.usable(e, now));
            *list = keep;
            expired.extend(gone.into_iter().map(|e| e.session));
        }
        idle.retain(|_, list| !list.is_empty());
        expired
    }

    /// Removes every idle session (shutdown), for the caller to close.
    pub(crate) fn take_all(&self) -> Vec<Session> {
        lock(&self.idle)
            .drain()
            .flat_map(|(_, list)| list.into_iter().map(|e| e.session))
            .collect()
    }

    /// Closes idle sessions past their limits with `QUIT`. Called by the
    /// delivery loop every round.
    pub async fn close_expired(&self, command_timeout: Duration) {
        close(self.take_expired(), command_timeout).await;
    }

    /// Closes every idle session with `QUIT` (at shutdown).
    pub async fn close_all(&self, command_timeout: Duration) {
        close(self.take_all(), command_timeout).await;
    }

    /// Whether an idle session is past a limit (a cheap check before
    /// spawning a task to close it).
    pub fn has_expired(&self) -> bool {
        let now = Instant::now();
        lock(&self.idle)
            .values()
            .any(|list| list.iter().any(|e| !self.usable(e, now)))
    }
}

async fn close(sessions: Vec<Session>, command_timeout: Duration) {
    for mut session in sessions {
        let _ = tokio::time::timeout(command_timeout, session.conn.quit()).await;
    }
}

/// `RSET`, as lettre sends a command.
struct Rset;

impl std::fmt::Display for Rset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RSET\r\n")
    }
}
