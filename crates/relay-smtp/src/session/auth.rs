//! AUTH PLAIN and LOGIN (RFC 4954, 4616), offered only over TLS and only
//! when credentials are configured. A login makes the session authorized
//! to relay (Postfix `permit_sasl_authenticated`). Failures count per
//! client IP ([`AuthFailures`](crate::auth::AuthFailures)); past the limit
//! the client gets `421 4.7.0`. Passwords are never logged.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use super::conn::CommandLine;
use super::{Flow, Session};
use crate::SessionBackend;
use crate::auth::{SmtpAuth, decode_base64_line, decode_plain};
use crate::config::canonical;
use crate::reply;

/// RFC 4954 4: a server must accept AUTH lines of at least 12288 octets.
const MAX_AUTH_LINE: usize = 12_288;

/// `Username:` and `Password:` in base64 (the LOGIN challenges).
const LOGIN_USER: &str = "VXNlcm5hbWU6";
const LOGIN_PASSWORD: &str = "UGFzc3dvcmQ6";

/// One client answer to a challenge.
enum Answer {
    Line(String),
    /// `*`: the client gave up.
    Cancelled,
    /// Reading failed or the line was unusable; the reply says why (or
    /// the session is over).
    Stop(Flow),
}

impl<S, B> Session<S, B>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    B: SessionBackend,
{
    /// `AUTH <mechanism> [initial-response]`.
    pub(super) async fn auth(&mut self, mechanism: u64, initial: String) -> Flow {
        let Some(auth) = self.config.auth.clone() else {
            return self.respond(reply::auth_not_enabled());
        };
        if !self.conn.is_tls() {
            if self.config.role.requires_auth() {
                return self.respond(reply::starttls_first());
            }
            return self.respond(reply::auth_needs_tls());
        }
        if self.login.is_some() {
            return self.respond(reply::auth_bad_sequence("already authenticated"));
        }
        if self.tx.is_some() {
            return self.respond(reply::auth_bad_sequence("MAIL transaction in progress"));
        }
        if self.helo.is_none() {
            return self.respond(reply::auth_bad_sequence("send EHLO first"));
        }
        let ip = canonical(self.peer.ip());
        if auth.failures.is_blocked(ip) {
            return self.respond(reply::auth_too_many_failures(&self.config.hostname));
        }
        let credentials = match mechanism {
            smtp_proto::AUTH_PLAIN => self.plain(initial).await,
            smtp_proto::AUTH_LOGIN => self.login_mechanism(initial).await,
            _ => return self.respond(reply::auth_mechanism_unsupported()),
        };
        let (user, password) = match credentials {
            Ok(c) => c,
            Err(flow) => return flow,
        };
        self.check(&auth, user, password).await
    }

    async fn check(&mut self, auth: &Arc<SmtpAuth>, user: String, password: Vec<u8>) -> Flow {
        let ip = canonical(self.peer.ip());
        // argon2 takes tens of milliseconds of CPU: off the async threads.
        let verifier = Arc::clone(auth);
        let name = user.clone();
        let ok = tokio::task::spawn_blocking(move || verifier.credentials.verify(&name, &password))
            .await
            .unwrap_or(false);
        if ok {
            auth.failures.clear(ip);
            tracing::info!(user = %user, "authenticated");
            self.login = Some(user);
            self.authorized = true;
            return self.respond(reply::auth_succeeded());
        }
        tracing::info!(user = %user, "authentication failed");
        metrics::counter!(crate::metrics::AUTH_FAILURES).increment(1);
        if auth.failures.record_failure(ip) {
            self.conn.queue(&reply::auth_failed());
            return self.respond(reply::auth_too_many_failures(&self.config.hostname));
        }
        self.respond(reply::auth_failed())
    }

    /// PLAIN: the response comes with the command or after an empty `334`.
    async fn plain(&mut self, initial: String) -> Result<(String, Vec<u8>), Flow> {
        let response = if initial.is_empty() {
            match self.challenge("").await {
                Answer::Line(l) => l,
                Answer::Cancelled => return Err(self.respond(reply::auth_cancelled())),
                Answer::Stop(flow) => return Err(flow),
            }
        } else {
            initial
        };
        decode_base64_line(&response)
            .ok()
            .and_then(|d| decode_plain(&d).ok())
            .ok_or_else(|| self.respond(reply::auth_malformed()))
    }

    /// LOGIN: user name, then password, each base64 after a `334`.
    async fn login_mechanism(&mut self, initial: String) -> Result<(String, Vec<u8>), Flow> {
        let user_line = if initial.is_empty() {
            match self.challenge(LOGIN_USER).await {
                Answer::Line(l) => l,
                Answer::Cancelled => return Err(self.respond(reply::auth_cancelled())),
                Answer::Stop(flow) => return Err(flow),
            }
        } else {
            initial
        };
        let Some(user) = decode_base64_line(&user_line)
            .ok()
            .and_then(|u| String::from_utf8(u).ok())
            .filter(|u| !u.is_empty())
        else {
            return Err(self.respond(reply::auth_malformed()));
        };
        let password = match self.challenge(LOGIN_PASSWORD).await {
            Answer::Line(l) => l,
            Answer::Cancelled => return Err(self.respond(reply::auth_cancelled())),
            Answer::Stop(flow) => return Err(flow),
        };
        let password =
            decode_base64_line(&password).map_err(|_| self.respond(reply::auth_malformed()))?;
        Ok((user, password))
    }

    /// Sends a `334` and reads the client's one-line answer.
    async fn challenge(&mut self, text: &'static str) -> Answer {
        self.conn.queue(&reply::auth_challenge(text));
        let line = match self
            .conn
            .read_command(MAX_AUTH_LINE, self.config.command_timeout, &self.shutdown)
            .await
        {
            Ok(CommandLine::Line(line)) => line,
            Ok(CommandLine::TooLong) => {
                return Answer::Stop(self.respond(reply::auth_malformed()));
            }
            Err(e) => {
                self.read_failed(e);
                return Answer::Stop(Flow::Close);
            }
        };
        let Some(text) = line
            .strip_suffix(b"\r\n")
            .and_then(|l| std::str::from_utf8(l).ok())
        else {
            return Answer::Stop(self.respond(reply::auth_malformed()));
        };
        if text == "*" {
            return Answer::Cancelled;
        }
        Answer::Line(text.to_string())
    }
}
