//! EHLO and HELO. (The `220` greeting itself is queued by `Session::run`.)

use tokio::io::{AsyncRead, AsyncWrite};

use super::{Flow, Helo, Session};
use crate::SessionBackend;
use crate::reply::{self, EhloOffer};

impl<S, B> Session<S, B>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    B: SessionBackend,
{
    /// EHLO (`esmtp`) or HELO: records the name and resets any transaction
    /// (RFC 5321 4.1.4).
    pub(super) fn ehlo(&mut self, host: &str, esmtp: bool) -> Flow {
        self.tx = None;
        self.helo = Some(Helo {
            name: host.to_string(),
            esmtp,
        });
        let reply = if esmtp {
            reply::ehlo(
                &self.config.hostname,
                EhloOffer {
                    size: self.config.max_message_size,
                    starttls: self.config.tls.is_some() && !self.conn.is_tls(),
                    auth: self.config.auth.is_some() && self.conn.is_tls() && self.login.is_none(),
                },
            )
        } else {
            reply::helo(&self.config.hostname)
        };
        self.respond(reply)
    }
}
