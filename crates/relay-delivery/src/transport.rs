//! One SMTP transaction to a route's targets, with lettre.
//!
//! Uses lettre's connection-level client ([`AsyncSmtpConnection`], tokio +
//! rustls) rather than `AsyncSmtpTransport::send_raw`, because a relay needs
//! a result per recipient: `send_raw` aborts the whole transaction at the
//! first refused `RCPT`, which would bounce or defer every other recipient
//! with it. The stored bytes are sent unchanged (lettre only adds the
//! dot-stuffing and the terminating `.`).
//!
//! Targets are tried in route order until one gets as far as `MAIL FROM`;
//! a failure before that (connect, greeting, EHLO, TLS — including a 5xx
//! greeting, as Postfix's `smtp_skip_5xx_greeting`) moves on to the next
//! target, and when none answers every recipient is deferred with the last
//! failure. One connection per transaction; no pooling yet. TCP_NODELAY is
//! set on every connection (see `connect_tcp`).

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use lettre::transport::smtp::Error as SmtpError;
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::extension::{ClientId, Extension};
use relay_types::{Route, TlsPolicy, UnixMillis};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::debug;

use crate::classify::{Classified, ReplyClass, classify_error, connection_lost, response_text};
use crate::config::DeliveryConfig;
use crate::connection_cache::{ConnectionCache, Session};
use crate::metrics as m;
use crate::outbound;

/// The SMTP port used when a target names none.
pub const DEFAULT_PORT: u16 = 25;

/// Client-side settings for every transaction.
#[derive(Clone, Debug)]
pub struct TransportSettings {
    /// EHLO name.
    pub hostname: String,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Greeting and per-command reply timeout.
    pub command_timeout: Duration,
    /// Reply timeout after the final dot.
    pub data_timeout: Duration,
    /// Extra PEM trust anchors for `TlsPolicy::Required`.
    pub extra_root_certificates_pem: Vec<String>,
}

impl TransportSettings {
    /// The transport part of a delivery configuration.
    pub fn from_config(config: &DeliveryConfig) -> Self {
        TransportSettings {
            hostname: config.hostname.clone(),
            connect_timeout: config.connect_timeout,
            command_timeout: config.command_timeout,
            data_timeout: config.data_timeout,
            extra_root_certificates_pem: config.extra_root_certificates_pem.clone(),
        }
    }

    fn client_id(&self) -> ClientId {
        ClientId::Domain(self.hostname.clone())
    }
}

/// What to send in one transaction.
#[derive(Clone, Debug)]
pub struct Transaction<'a> {
    /// Reverse path without brackets; empty for the null sender `<>`.
    pub reverse_path: &'a str,
    /// `(index into the envelope, address)` of each recipient.
    pub recipients: Vec<(u32, &'a str)>,
    /// The message as stored (CRLF line ends, not dot-stuffed).
    pub body: &'a [u8],
    /// The sender asked for SMTPUTF8.
    pub smtputf8: bool,
    /// The body is 8-bit (`BODY=8BITMIME` or non-ASCII octets).
    pub eight_bit: bool,
}

/// The result for one recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecipientResult {
    /// Index into the envelope's recipients.
    pub index: u32,
    /// The target that answered (or was tried last).
    pub target: String,
    /// What happened.
    pub result: Classified,
    /// The session the result came from, for the delivery log (`None` for
    /// results decided without a session, e.g. no route).
    pub session: Option<SessionInfo>,
}

/// Where and how long: what the delivery log says about a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    /// `host[ip]:port` of the target that answered, or `none` when no
    /// target did.
    pub relay: String,
    /// When the first connection attempt started.
    pub started_at: UnixMillis,
    /// Connection setup: TCP connects (every target tried), greeting,
    /// EHLO and STARTTLS.
    pub connect: Duration,
    /// From MAIL FROM to the end of QUIT.
    pub transmit: Duration,
}

/// Fencing for one transaction: whether this node may still hand the
/// message to a target. Asked right before `MAIL FROM`, and again right
/// before the message text is sent after `354`. At both points the target
/// cannot have accepted anything yet, so stopping there can never cause a
/// duplicate. Once the text is on its way nothing stops the transaction:
/// the final reply is read (bounded by the data timeout) and reported,
/// whatever happens to the lease meanwhile.
pub trait SessionGate: Send + Sync {
    /// May a transaction start now?
    fn may_start(&self) -> bool;

    /// Right before the message text: resolves `true` once this node holds
    /// proof of a working cluster that is newer than `since` (when the
    /// transaction started), `false` if none arrives soon. A node cut off
    /// after it started the transaction therefore never sends the text.
    fn confirm_since(&self, since: std::time::Instant) -> BoxFuture<'_, bool>;
}

/// A boxed future borrowing its gate.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A gate that is always open (no fencing: tests and tools).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoFencing;

impl SessionGate for NoFencing {
    fn may_start(&self) -> bool {
        true
    }

    fn confirm_since(&self, _since: std::time::Instant) -> BoxFuture<'_, bool> {
        Box::pin(std::future::ready(true))
    }
}

/// Sends `tx` to the first target of `route` that answers. Never fails as
/// a whole: every recipient of `tx` gets exactly one result.
pub async fn send(
    route: &Route,
    tx: &Transaction<'_>,
    settings: &TransportSettings,
) -> Vec<RecipientResult> {
    send_gated(route, tx, settings, &NoFencing)
        .await
        .unwrap_or_default()
}

/// Like [`send`], but asks `gate` before `MAIL FROM` and before the message
/// text. `None`: the gate closed before the target could accept anything,
/// so there is nothing to report (the connection was dropped before the
/// final dot, which makes the target discard the transaction).
pub async fn send_gated(
    route: &Route,
    tx: &Transaction<'_>,
    settings: &TransportSettings,
    gate: &dyn SessionGate,
) -> Option<Vec<RecipientResult>> {
    send_via(route, tx, settings, gate, None).await
}

/// Like [`send_gated`], but takes an idle session to the target from
/// `cache` when there is one (reset with `RSET`), and hands the session
/// back after a transaction that ended cleanly. The gates are asked on a
/// reused session exactly as on a fresh one.
pub async fn send_cached(
    route: &Route,
    tx: &Transaction<'_>,
    settings: &TransportSettings,
    gate: &dyn SessionGate,
    cache: &ConnectionCache,
) -> Option<Vec<RecipientResult>> {
    send_via(route, tx, settings, gate, Some(cache)).await
}

async fn send_via(
    route: &Route,
    tx: &Transaction<'_>,
    settings: &TransportSettings,
    gate: &dyn SessionGate,
    cache: Option<&ConnectionCache>,
) -> Option<Vec<RecipientResult>> {
    let started_at = UnixMillis::now();
    let started = Instant::now();
    let mut last: Option<(String, Classified)> = None;
    for target in &route.targets {
        let cached = match cache {
            Some(cache) => {
                cache
                    .checkout(target, route.tls, settings.command_timeout)
                    .await
            }
            None => None,
        };
        let mut session = match cached {
            Some(session) => session,
            None => {
                let mut peer = None;
                match open(target, route.tls, settings, &mut peer).await {
                    Ok(conn) => {
                        metrics::counter!(m::CONNECTIONS_OPENED_TOTAL).increment(1);
                        if let Some(cache) = cache {
                            cache.note_opened();
                        }
                        Session::new(conn, peer)
                    }
                    Err(failure) => {
                        debug!(%target, reply = %failure.reply, "target did not answer");
                        last = Some((target.clone(), failure));
                        continue;
                    }
                }
            }
        };
        let connect = started.elapsed();
        session.transactions = session.transactions.saturating_add(1);
        let (results, after) = transact(&mut session.conn, target, tx, settings, gate).await;
        let peer = session.peer;
        match (after, cache) {
            (After::Reusable, Some(cache)) => {
                if let Some(mut done) = cache.put(target, route.tls, session) {
                    quit(&mut done.conn, settings).await;
                }
            }
            (After::Reusable | After::Quit, _) => quit(&mut session.conn, settings).await,
            // Unclear state: close without another word.
            (After::Drop, _) => drop(session),
        }
        let mut results = results?;
        let session = SessionInfo {
            relay: relay_name(target, peer),
            started_at,
            connect,
            transmit: started.elapsed().saturating_sub(connect),
        };
        for r in &mut results {
            r.session = Some(session.clone());
        }
        return Some(results);
    }
    let (target, failure) = last.unwrap_or_else(|| {
        (
            "-".to_string(),
            Classified::temporary("route has no targets"),
        )
    });
    let session = SessionInfo {
        relay: "none".into(),
        started_at,
        connect: started.elapsed(),
        transmit: Duration::ZERO,
    };
    let mut results = all(tx, &target, &failure);
    for r in &mut results {
        r.session = Some(session.clone());
    }
    Some(results)
}

/// What may be done with a session after a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum After {
    /// The final dot was answered: the session is between transactions
    /// and may carry the next one.
    Reusable,
    /// The session is in a known state but not worth keeping: say QUIT.
    Quit,
    /// The session's state is unclear (lost connection, timeout, or the
    /// gate stopped the transaction inside DATA): close it silently and
    /// never reuse it.
    Drop,
}

/// `host[ip]:port` as Postfix logs a relay (`host:port` when the address
/// is unknown).
fn relay_name(target: &str, peer: Option<SocketAddr>) -> String {
    match (parse_target(target), peer) {
        (Ok((host, _)), Some(peer)) => format!("{host}[{}]:{}", peer.ip(), peer.port()),
        _ => target.to_string(),
    }
}

/// The step name in the reply text of a failure after the message text was
/// sent: no reply to the final dot, or the connection lost while waiting.
const FINAL_REPLY_STEP: &str = "end of data";

/// Whether a deferral's reply text says the reply to the final dot was
/// lost (timeout or broken connection): the target may have accepted that
/// copy, so the next delivery is a possible duplicate.
pub fn is_lost_final_reply(reply: &str) -> bool {
    reply.starts_with(FINAL_REPLY_STEP)
}

/// Splits `host:port`, `[v6]:port`, `host` or a bare IPv6 address.
pub fn parse_target(target: &str) -> Result<(String, u16), String> {
    let t = target.trim();
    let bad = || format!("invalid target {t:?} (expected host:port)");
    let (host, port) = if let Some(rest) = t.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match t.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => (host, Some(port)),
            // Several colons without brackets: only a bare IPv6 address.
            // `2001:db8::1]:2525` used to become a host named the whole
            // string on port 25, dropping the port that was written
            // (found by fuzz/admin_request).
            Some(_) if t.parse::<std::net::Ipv6Addr>().is_err() => return Err(bad()),
            _ => (t, None),
        }
    };
    // No host name or address contains brackets or white space.
    if host.is_empty() || host.contains(['[', ']']) || host.contains(char::is_whitespace) {
        return Err(bad());
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad)?,
    };
    Ok((host.to_string(), port))
}

/// A command line as lettre sends it (our own text, so any parameter and
/// any already-validated address can be sent as is).
struct Raw(String);

impl fmt::Display for Raw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A failed step: the classified result and whether the connection is
/// still usable.
struct Failure {
    result: Classified,
    lost: bool,
}

async fn within<T>(
    limit: Duration,
    what: &str,
    step: impl Future<Output = Result<T, SmtpError>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(limit, step).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => {
            let lost = connection_lost(&e);
            let mut result = classify_error(&e);
            if lost {
                result.reply = format!("{what}: {}", result.reply);
            }
            Err(Failure { result, lost })
        }
        Err(_) => Err(Failure {
            result: Classified::temporary(format!(
                "{what}: no reply within {}s",
                limit.as_secs_f32()
            )),
            lost: true,
        }),
    }
}

/// Connects, reads the greeting, says EHLO and applies the TLS policy.
/// `peer` is set to the address connected to.
async fn open(
    target: &str,
    tls: TlsPolicy,
    settings: &TransportSettings,
    peer: &mut Option<SocketAddr>,
) -> Result<AsyncSmtpConnection, Classified> {
    let (host, port) = parse_target(target).map_err(Classified::temporary)?;
    let mut conn = connect_plain(target, &host, port, settings, peer).await?;
    let client_id = settings.client_id();
    match tls {
        TlsPolicy::None => Ok(conn),
        TlsPolicy::Opportunistic => {
            if !conn.can_starttls() {
                return Ok(conn);
            }
            let Ok(params) = TlsParameters::builder(host.clone())
                .dangerous_accept_invalid_certs(true)
                .dangerous_accept_invalid_hostnames(true)
                .build_rustls()
            else {
                return Ok(conn);
            };
            match within(
                settings.command_timeout,
                "STARTTLS",
                conn.starttls(params, &client_id),
            )
            .await
            {
                Ok(()) => Ok(conn),
                Err(failure) => {
                    // Opportunistic: encryption failed, plain text is allowed.
                    // The old connection is in an unknown TLS state; start over.
                    debug!(%target, reply = %failure.result.reply, "STARTTLS failed, retrying without TLS");
                    drop(conn);
                    connect_plain(target, &host, port, settings, peer).await
                }
            }
        }
        TlsPolicy::Required => {
            if !conn.can_starttls() {
                let _ = tokio::time::timeout(settings.command_timeout, conn.quit()).await;
                return Err(Classified::temporary(format!(
                    "{target} does not offer STARTTLS and the route requires TLS"
                )));
            }
            let params = verified_tls(&host, settings)
                .map_err(|e| Classified::temporary(format!("TLS settings for {target}: {e}")))?;
            within(
                settings.command_timeout,
                "STARTTLS",
                conn.starttls(params, &client_id),
            )
            .await
            .map_err(|failure| {
                Classified::temporary(format!("TLS required, {target}: {}", failure.result.reply))
            })?;
            Ok(conn)
        }
    }
}

async fn connect_plain(
    target: &str,
    host: &str,
    port: u16,
    settings: &TransportSettings,
    peer: &mut Option<SocketAddr>,
) -> Result<AsyncSmtpConnection, Classified> {
    let client_id = settings.client_id();
    let stream = connect_tcp(target, host, port, settings.connect_timeout).await?;
    *peer = stream.peer_addr().ok();
    // The greeting and the EHLO reply get one command timeout each.
    let limit = settings.command_timeout * 2;
    let connect = AsyncSmtpConnection::connect_with_transport(Box::new(stream), &client_id);
    match tokio::time::timeout(limit, connect).await {
        Ok(Ok(conn)) => Ok(conn),
        // A 5xx greeting or EHLO is not a verdict on the recipients: skip
        // to the next target, defer if none answers.
        Ok(Err(e)) => Err(Classified::temporary(format!(
            "{target}: {}",
            classify_error(&e).reply
        ))),
        Err(_) => Err(Classified::temporary(format!(
            "{target}: no greeting within {}s",
            limit.as_secs_f32()
        ))),
    }
}

/// TCP connect, each resolved address in turn with `timeout` (as lettre's
/// own connect does), with `TCP_NODELAY` set. lettre never sets it, and it
/// writes a message and its terminating `.` in two writes before reading
/// the reply: with Nagle's algorithm on, the `.` waits for the target's
/// delayed ACK of the message (40 ms on Linux), which made every delivery
/// last at least 40 ms even on loopback.
async fn connect_tcp(
    target: &str,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<TcpStream, Classified> {
    // The same texts as lettre's connect errors after `classify_error`.
    let failed = |e: std::io::Error| {
        Classified::temporary(if e.kind() == std::io::ErrorKind::TimedOut {
            format!("{target}: timed out")
        } else {
            format!("{target}: Connection error: {e}")
        })
    };
    let addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(failed)?;
    let mut last = None;
    for addr in addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                stream.set_nodelay(true).map_err(failed)?;
                return Ok(stream);
            }
            Ok(Err(e)) => last = Some(e),
            Err(_) => last = Some(std::io::ErrorKind::TimedOut.into()),
        }
    }
    Err(failed(last.unwrap_or_else(|| {
        std::io::Error::other("could not resolve to any supported address")
    })))
}

fn verified_tls(host: &str, settings: &TransportSettings) -> Result<TlsParameters, SmtpError> {
    let mut builder = TlsParameters::builder(host.to_string());
    for pem in &settings.extra_root_certificates_pem {
        builder = builder.add_root_certificate(Certificate::from_pem(pem.as_bytes())?);
    }
    builder.build_rustls()
}

/// MAIL, RCPT…, DATA and the message on an open connection (the caller
/// closes or keeps the session as the returned [`After`] says). `None`
/// when `gate` closed before the target could accept the message.
async fn transact(
    conn: &mut AsyncSmtpConnection,
    target: &str,
    tx: &Transaction<'_>,
    settings: &TransportSettings,
    gate: &dyn SessionGate,
) -> (Option<Vec<RecipientResult>>, After) {
    let started = std::time::Instant::now();
    let result = |index: u32, result: Classified| RecipientResult {
        index,
        target: target.to_string(),
        result,
        session: None,
    };
    let mut results = Vec::with_capacity(tx.recipients.len());
    let mut recipients = Vec::with_capacity(tx.recipients.len());
    for &(index, address) in &tx.recipients {
        if is_sendable_path(address) {
            recipients.push((index, address));
        } else {
            results.push(result(
                index,
                Classified::permanent("501 5.1.3 recipient address cannot be sent over SMTP"),
            ));
        }
    }
    if recipients.is_empty() {
        return (Some(results), After::Quit);
    }
    if !is_sendable_path(tx.reverse_path) {
        let failure = Classified::permanent("501 5.1.7 sender address cannot be sent over SMTP");
        results.extend(recipients.iter().map(|&(i, _)| result(i, failure.clone())));
        return (Some(results), After::Quit);
    }

    let needs_utf8 =
        !tx.reverse_path.is_ascii() || recipients.iter().any(|(_, address)| !address.is_ascii());
    let info = conn.server_info();
    let utf8_ok = info.supports_feature(Extension::SmtpUtfEight);
    if needs_utf8 && !utf8_ok {
        let failure = Classified::permanent(format!(
            "550 5.6.7 {target} does not support SMTPUTF8, needed for a non-ASCII address"
        ));
        results.extend(recipients.iter().map(|&(i, _)| result(i, failure.clone())));
        return (Some(results), After::Quit);
    }
    let mut mail = format!("MAIL FROM:<{}>", tx.reverse_path);
    if tx.eight_bit && info.supports_feature(Extension::EightBitMime) {
        mail.push_str(" BODY=8BITMIME");
    }
    if (needs_utf8 || tx.smtputf8) && utf8_ok {
        mail.push_str(" SMTPUTF8");
    }
    mail.push_str("\r\n");

    if !gate.may_start() {
        return (None, After::Quit);
    }
    let timeout = settings.command_timeout;
    if let Err(failure) = within(timeout, "MAIL FROM", conn.command(Raw(mail))).await {
        results.extend(
            recipients
                .iter()
                .map(|&(i, _)| result(i, failure.result.clone())),
        );
        return (Some(results), after_failure(failure.lost));
    }

    let mut accepted = Vec::with_capacity(recipients.len());
    let mut lost: Option<Classified> = None;
    for &(index, address) in &recipients {
        if let Some(failure) = &lost {
            results.push(result(index, failure.clone()));
            continue;
        }
        let rcpt = Raw(format!("RCPT TO:<{address}>\r\n"));
        match within(timeout, "RCPT TO", conn.command(rcpt)).await {
            Ok(_) => accepted.push(index),
            Err(failure) => {
                if failure.lost {
                    lost = Some(failure.result.clone());
                }
                results.push(result(index, failure.result));
            }
        }
    }
    if lost.is_some() || accepted.is_empty() {
        return (Some(results), after_failure(lost.is_some()));
    }

    let outcome = match within(timeout, "DATA", conn.command(Raw("DATA\r\n".into()))).await {
        Err(failure) => Err(failure),
        // Last chance to stop: without the final dot the target discards
        // the transaction when the connection closes.
        // The target is in DATA mode: only closing the connection without
        // the final dot is safe now.
        Ok(_) if !gate.confirm_since(started).await => return (None, After::Drop),
        Ok(_) => {
            within(
                settings.data_timeout,
                FINAL_REPLY_STEP,
                conn.message(&outbound::data_payload(tx.body)),
            )
            .await
        }
    };
    let after = match outcome {
        Ok(response) => {
            let reply = Classified {
                class: ReplyClass::Success,
                reply: response_text(&response),
            };
            results.extend(accepted.iter().map(|&i| result(i, reply.clone())));
            After::Reusable
        }
        Err(failure) => {
            results.extend(accepted.iter().map(|&i| result(i, failure.result.clone())));
            after_failure(failure.lost)
        }
    };
    (Some(results), after)
}

/// A path we can put between `<` and `>`: no controls (CR, LF, NUL…) and
/// no angle brackets (validated on receipt; checked again so a stored
/// address can never inject a command).
fn is_sendable_path(path: &str) -> bool {
    !path.chars().any(|c| c.is_control() || c == '<' || c == '>')
}

/// After a refused step: QUIT when the target answered, silence when the
/// connection was lost or timed out.
fn after_failure(lost: bool) -> After {
    if lost { After::Drop } else { After::Quit }
}

async fn quit(conn: &mut AsyncSmtpConnection, settings: &TransportSettings) {
    let _ = tokio::time::timeout(settings.command_timeout, conn.quit()).await;
}

fn all(tx: &Transaction<'_>, target: &str, failure: &Classified) -> Vec<RecipientResult> {
    tx.recipients
        .iter()
        .map(|&(index, _)| RecipientResult {
            index,
            target: target.to_string(),
            result: failure.clone(),
            session: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_with_default_port_and_ipv6() {
        assert_eq!(
            parse_target("127.0.0.1:2600"),
            Ok(("127.0.0.1".into(), 2600))
        );
        assert_eq!(
            parse_target("mx.example.test"),
            Ok(("mx.example.test".into(), 25))
        );
        assert_eq!(parse_target("[::1]:2525"), Ok(("::1".into(), 2525)));
        assert_eq!(parse_target("[::1]"), Ok(("::1".into(), 25)));
        assert_eq!(parse_target("::1"), Ok(("::1".into(), 25)));
        assert!(parse_target("host:notaport").is_err());
        assert!(parse_target("host:0").is_err());
        assert!(parse_target(":25").is_err());
        // fuzz/artifacts/admin_request/target-bracket-min: the port was lost.
        assert!(parse_target("{2001:db8::1]:2525").is_err());
        assert!(parse_target("2001:db8::1]:2525").is_err());
        assert!(parse_target("[[x]:25").is_err());
        assert!(parse_target("[ a]:25").is_err());
        assert!(parse_target("a]:25").is_err());
        assert_eq!(parse_target("2001:db8::1"), Ok(("2001:db8::1".into(), 25)));
        assert!(parse_target("[::1]x").is_err());
    }

    #[tokio::test]
    async fn outbound_connections_have_nagle_off() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = format!("127.0.0.1:{port}");
        let stream = connect_tcp(&target, "127.0.0.1", port, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(stream.nodelay().unwrap(), "TCP_NODELAY must be set");
        drop(listener);
        let refused = connect_tcp(&target, "127.0.0.1", port, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(refused.class, ReplyClass::Temporary);
        assert!(
            refused
                .reply
                .starts_with(&format!("{target}: Connection error: ")),
            "{}",
            refused.reply
        );
    }

    #[test]
    fn paths_with_controls_or_brackets_are_not_sendable() {
        assert!(is_sendable_path("user@example.test"));
        assert!(is_sendable_path(""));
        assert!(is_sendable_path("\"john doe\"@example.test"));
        assert!(is_sendable_path("jöran@exämple.test"));
        assert!(!is_sendable_path("a@b\r\nRCPT TO:<c@d>"));
        assert!(!is_sendable_path("a>@b"));
    }
}
