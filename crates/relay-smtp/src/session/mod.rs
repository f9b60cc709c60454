//! One SMTP session over any async byte stream, one file per phase:
//! [`greeting`] (greeting, EHLO/HELO, small commands), [`mail`], [`rcpt`],
//! [`data`], [`bdat`], [`starttls`], [`auth`], [`submit`] (end of a message), with the
//! stream and its buffers in [`conn`].

mod auth;
mod bdat;
mod conn;
mod data;
mod greeting;
mod mail;
mod rcpt;
mod starttls;
mod submit;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use relay_types::Envelope;
use smtp_proto::Request;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::SessionBackend;
use crate::config::{ListenerRole, SmtpConfig, canonical};
use crate::data::{BodyBuffer, LineCheck};
use crate::reply::{self, Reply};
use conn::{CommandLine, Conn, ReadError};

/// Runs one SMTP session to its end: greeting, commands, messages, close.
///
/// Never panics on client input and never returns an error: every problem
/// is answered with an SMTP reply or ends the session. Answers
/// `421 4.3.2` and closes at the next command (or at once, if idle) after
/// `shutdown` fires; a message already streaming is finished first.
pub async fn run_session<S, B>(
    stream: S,
    peer: SocketAddr,
    config: Arc<SmtpConfig>,
    backend: Arc<B>,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    B: SessionBackend,
{
    let span = tracing::info_span!("smtp_session", peer = %peer);
    async move {
        tracing::debug!("session started");
        let mut session = Session {
            conn: Conn::new(stream),
            authorized: config.is_authorized(canonical(peer.ip())),
            config,
            backend,
            shutdown,
            peer,
            helo: None,
            login: None,
            tx: None,
            errors: 0,
            commands: 0,
        };
        session.run().await;
        tracing::debug!("session ended");
    }
    .instrument(span)
    .await
}

/// Whether the session goes on after a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Close,
}

/// The client's EHLO/HELO.
struct Helo {
    name: String,
    esmtp: bool,
}

/// One mail transaction (MAIL … end of data).
struct Transaction {
    envelope: Envelope,
    /// Set once the first BDAT chunk arrived.
    bdat: Option<BdatBody>,
}

/// A message arriving in BDAT chunks.
struct BdatBody {
    lines: LineCheck,
    sink: BodyBuffer,
}

impl BdatBody {
    fn push(&mut self, bytes: &[u8]) {
        self.lines.push(bytes);
        self.sink.put(bytes);
        if self.lines.flags().any() {
            // Refused at its end anyway: stop holding memory for it.
            self.sink.discard();
        }
    }
}

struct Session<S, B> {
    conn: Conn<S>,
    config: Arc<SmtpConfig>,
    backend: Arc<B>,
    shutdown: CancellationToken,
    peer: SocketAddr,
    /// In the authorized networks, or logged in with AUTH.
    authorized: bool,
    helo: Option<Helo>,
    /// The AUTH user, once logged in.
    login: Option<String>,
    tx: Option<Transaction>,
    errors: u32,
    /// Command lines read so far.
    commands: u64,
}

impl<S, B> Session<S, B>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    B: SessionBackend,
{
    async fn run(&mut self) {
        if self.config.role == ListenerRole::Smtps && !self.implicit_tls().await {
            return self.close().await;
        }
        if !self.shutdown.is_cancelled() {
            self.conn.queue(&reply::greeting(&self.config.hostname));
        } else {
            self.conn
                .queue(&reply::shutting_down(&self.config.hostname));
            return self.close().await;
        }
        loop {
            let line = match self
                .conn
                .read_command(
                    self.config.max_command_line,
                    self.config.command_timeout,
                    &self.shutdown,
                )
                .await
            {
                Ok(CommandLine::Line(line)) => line,
                Ok(CommandLine::TooLong) => {
                    if self.respond(reply::command_line_too_long()) == Flow::Close {
                        break;
                    }
                    continue;
                }
                Err(e) => {
                    self.read_failed(e);
                    break;
                }
            };
            if self.shutdown.is_cancelled() {
                self.respond(reply::shutting_down(&self.config.hostname));
                break;
            }
            self.commands += 1;
            if self.commands == 1 && self.unexpected_proxy_header(&line) {
                break;
            }
            if self.command(&line).await == Flow::Close {
                break;
            }
        }
        self.close().await;
    }

    /// Port 465: the TLS handshake before anything else. `false`: it
    /// failed (logged) and the connection is closed.
    async fn implicit_tls(&mut self) -> bool {
        let Some(tls) = self.config.tls.as_ref().map(|t| t.current()) else {
            tracing::error!("implicit TLS listener without a certificate; closing");
            return false;
        };
        match self
            .conn
            .start_tls(tls, self.config.tls_handshake_timeout)
            .await
        {
            Ok(_) => {
                tracing::debug!("implicit TLS established");
                true
            }
            Err(e) => {
                tracing::info!(error = %e, "TLS handshake failed");
                false
            }
        }
    }

    /// A PROXY header as the first command: this client is not a load
    /// balancer we take one from (those are read before the session).
    /// Refused with `421 4.7.0`, logged and counted.
    fn unexpected_proxy_header(&mut self, line: &[u8]) -> bool {
        let mut start = line.to_vec();
        start.extend_from_slice(&self.conn.buffered()[..self.conn.buffered().len().min(16)]);
        if !crate::proxy::looks_like_proxy(&start) {
            return false;
        }
        metrics::counter!(crate::metrics::CONNECTIONS_TOTAL, "result" => "refused_proxy_untrusted")
            .increment(1);
        tracing::warn!(
            listener = self.config.role.name(),
            "PROXY protocol header from an address not in smtp.proxy_protocol_from; refused"
        );
        self.respond(reply::proxy_refused(&self.config.hostname));
        true
    }

    async fn close(&mut self) {
        let limit = self.config.command_timeout.min(Duration::from_secs(30));
        self.conn.close(limit).await;
    }

    /// Queues a reply; counts 5xx replies and ends the session after
    /// `max_errors` of them or after any 421.
    fn respond(&mut self, reply: Reply) -> Flow {
        if reply.is_negative() {
            tracing::debug!(reply = %reply, "negative reply");
        }
        self.conn.queue(&reply);
        if reply.closes_session() {
            return Flow::Close;
        }
        if reply.is_permanent() {
            self.errors += 1;
            if self.errors >= self.config.max_errors {
                tracing::info!(errors = self.errors, "too many errors, closing session");
                self.conn
                    .queue(&reply::too_many_errors(&self.config.hostname));
                return Flow::Close;
            }
        }
        Flow::Continue
    }

    /// The connection cannot go on: say why if there is anyone to tell.
    fn read_failed(&mut self, e: ReadError) {
        match e {
            ReadError::Timeout => {
                tracing::info!("timeout, closing session");
                self.conn.queue(&reply::timeout(&self.config.hostname));
            }
            ReadError::Shutdown => {
                self.conn
                    .queue(&reply::shutting_down(&self.config.hostname));
            }
            ReadError::Eof => tracing::debug!("client closed the connection"),
            ReadError::Io(e) => tracing::debug!(error = %e, "connection failed"),
        }
    }

    /// Parses and runs one command line (LF included).
    async fn command(&mut self, line: &[u8]) -> Flow {
        // CRLF only, no bare CR/LF or NUL inside a command line.
        let body = &line[..line.len() - 1];
        let Some(body) = body.strip_suffix(b"\r") else {
            return self.respond(reply::bad_command_line());
        };
        if body.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
            return self.respond(reply::bad_command_line());
        }
        let utf8 = std::str::from_utf8(line).is_ok();
        let raw = String::from_utf8_lossy(line);
        // Address literals pass smtp-proto behind a placeholder domain; the
        // handlers read the real path from `raw`.
        let masked = crate::address::mask_address_literal(&raw);
        let mut bytes = masked.as_ref().map_or(line, |m| m.as_bytes()).iter();
        let request = match Request::parse(&mut bytes) {
            Ok(r) => r,
            Err(e) => return self.respond(parse_error_reply(e)),
        };
        match request {
            Request::Ehlo { host } => self.ehlo(&host, true),
            Request::Helo { host } => self.ehlo(&host, false),
            // Paths must be valid UTF-8 (ASCII unless SMTPUTF8).
            Request::Mail { .. } if !utf8 => self.respond(reply::bad_sender_syntax()),
            Request::Rcpt { .. } if !utf8 => self.respond(reply::bad_recipient_syntax()),
            Request::Mail { from } => self.mail(&from, &raw),
            Request::Rcpt { to } => self.rcpt(&to, &raw).await,
            Request::Data => self.data().await,
            Request::Bdat {
                chunk_size,
                is_last,
            } => self.bdat(chunk_size as u64, is_last).await,
            Request::StartTls => self.starttls().await,
            Request::Rset => {
                self.tx = None;
                self.respond(reply::ok())
            }
            Request::Noop { .. } => self.respond(reply::ok()),
            Request::Quit => {
                self.respond(reply::bye());
                Flow::Close
            }
            Request::Vrfy { .. } => self.respond(reply::vrfy()),
            Request::Help { .. } => self.respond(reply::help()),
            Request::Auth {
                mechanism,
                initial_response,
            } => self.auth(mechanism, initial_response.into_owned()).await,
            other @ (Request::Expn { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. }
            | Request::Lhlo { .. }) => self.respond(reply::not_implemented(other.name())),
        }
    }
}

/// smtp-proto's parse errors as replies.
fn parse_error_reply(e: smtp_proto::Error) -> Reply {
    use smtp_proto::Error;
    match e {
        Error::UnknownCommand => reply::unknown_command(),
        Error::InvalidSenderAddress => reply::bad_sender_syntax(),
        Error::InvalidRecipientAddress => reply::bad_recipient_syntax(),
        Error::SyntaxError { syntax } => reply::syntax(syntax),
        Error::InvalidParameter { param } => reply::invalid_parameter(param),
        Error::UnsupportedParameter { param } => reply::unsupported_parameter(&param),
        Error::NeedsMoreData { .. } | Error::ResponseTooLong | Error::InvalidResponse { .. } => {
            reply::unknown_command()
        }
    }
}

/// ESMTP parameter keys in a raw parameter string that are not in `allowed`.
fn first_unsupported_key<'a>(params: &'a str, allowed: &[&str]) -> Option<Cow<'a, str>> {
    params.split_ascii_whitespace().find_map(|p| {
        let key = p.split_once('=').map_or(p, |(k, _)| k);
        (!allowed.iter().any(|a| a.eq_ignore_ascii_case(key)))
            .then(|| Cow::Owned(key.to_ascii_uppercase()))
    })
}
