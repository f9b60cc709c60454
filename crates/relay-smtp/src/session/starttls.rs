//! STARTTLS (RFC 3207): discard pipelined plaintext, handshake, forget
//! everything learnt in clear (the client must EHLO again).

use tokio::io::{AsyncRead, AsyncWrite};

use super::{Flow, Session};
use crate::SessionBackend;
use crate::reply;

impl<S, B> Session<S, B>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    B: SessionBackend,
{
    pub(super) async fn starttls(&mut self) -> Flow {
        let Some(tls) = self.config.tls.as_ref().map(|t| t.current()) else {
            return self.respond(reply::tls_not_available());
        };
        if self.conn.is_tls() {
            return self.respond(reply::bad_sequence("TLS already active"));
        }
        if self.tx.is_some() {
            return self.respond(reply::bad_sequence("MAIL transaction in progress"));
        }
        self.conn.queue(&reply::tls_ready());
        match self
            .conn
            .start_tls(tls, self.config.tls_handshake_timeout)
            .await
        {
            Ok(discarded) => {
                if discarded > 0 {
                    tracing::info!(
                        octets = discarded,
                        "discarded plaintext pipelined after STARTTLS"
                    );
                }
                tracing::debug!("TLS established");
                // RFC 3207 4.2: discard all knowledge obtained in clear.
                // (AUTH is never offered in clear, so there is no login
                // to forget.)
                self.helo = None;
                self.tx = None;
                Flow::Continue
            }
            Err(e) => {
                tracing::info!(error = %e, "TLS handshake failed");
                Flow::Close
            }
        }
    }
}
