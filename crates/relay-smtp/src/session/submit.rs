//! End of a message (DATA `.` or BDAT LAST): checks, `Received:`, submit,
//! and the reply. Every path ends the transaction.

use relay_types::{MessageId, UnixMillis};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::Instrument;

use super::bdat::verdict_reply;
use super::{Flow, Session};
use crate::data::{BodyBuffer, BodyVerdict};
use crate::message::{HeaderProblem, check_header_section, message_info};
use crate::metrics as m;
use crate::received::{Trace, received_header};
use crate::reply;
use crate::{SessionBackend, Submission};

impl<S, B> Session<S, B>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    B: SessionBackend,
{
    pub(super) async fn finish_message(&mut self, verdict: BodyVerdict, sink: BodyBuffer) -> Flow {
        let Some(tx) = self.tx.take() else {
            return self.respond(reply::bad_sequence("need MAIL command"));
        };
        if verdict != BodyVerdict::Ok {
            tracing::info!(?verdict, "message refused");
            return self.refuse_message(verdict_reply(verdict));
        }
        let header_len = match check_header_section(sink.as_slice(), self.config.max_header_size) {
            Ok(len) => len,
            Err(HeaderProblem::Missing) => return self.refuse_message(reply::no_header_section()),
            Err(HeaderProblem::TooLarge) => {
                return self.refuse_message(reply::header_section_too_big());
            }
        };

        let id = MessageId::generate();
        let received_at = UnixMillis::now();
        let span = tracing::info_span!("message", id = %id);
        async move {
            let envelope = tx.envelope;
            // RFC 3848: ESMTPSA for an authenticated TLS session.
            let protocol = match (&self.helo, self.conn.is_tls()) {
                (_, true) if self.login.is_some() => "ESMTPSA",
                (_, true) => "ESMTPS",
                (Some(h), false) if h.esmtp => "ESMTP",
                _ => "SMTP",
            };
            let recipient = match envelope.recipients.as_slice() {
                [only] => Some(only.address.as_str()),
                _ => None,
            };
            let header = received_header(&Trace {
                helo: &envelope.helo,
                ip: self.peer.ip(),
                hostname: &self.config.hostname,
                protocol,
                id,
                recipient,
                at: received_at,
            });
            let size = header.len() + sink.as_slice().len();
            let info = message_info(&sink.as_slice()[..header_len], size as u64);
            // The header goes into the room the buffer kept in front of the
            // body: the body is not copied again on its way to the log.
            let stored = sink.into_stored(header.as_bytes());
            let recipients = envelope.recipients.len();
            let from = envelope.reverse_path.clone();
            let submission = Submission {
                id,
                received_at,
                envelope,
                info,
                body: stored,
            };
            match self.backend.submit(submission).await {
                Ok(()) => {
                    // The delivery log's acceptance line (Postfix's
                    // `from=<…>, size=…, nrcpt=…` and `client=`; no reverse
                    // DNS here, so the name is `unknown` as in Postfix).
                    tracing::info!(
                        target: "maillog",
                        queue_id = %id,
                        from = %format_args!("<{from}>"),
                        size,
                        nrcpt = recipients,
                        client = %format_args!("unknown[{}]", self.peer.ip()),
                        "message accepted"
                    );
                    metrics::counter!(m::MESSAGES_ACCEPTED_TOTAL).increment(1);
                    metrics::counter!(m::ACCEPTED_BYTES_TOTAL).increment(size as u64);
                    self.respond(reply::queued(id))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "submit failed, message not accepted");
                    self.refuse_message(reply::submit_error_reply(&e, &self.config.hostname))
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Answers a refusal at end of data and counts it by reply code.
    fn refuse_message(&mut self, reply: reply::Reply) -> Flow {
        m::message_rejected(reply.code);
        self.respond(reply)
    }
}
