//! BDAT (CHUNKING, RFC 3030): exactly `n` octets follow each BDAT command,
//! whatever we answer, so they are always read, and stored only when the
//! chunk is acceptable. The same CRLF-only, NUL, line-length and size rules
//! as DATA apply (BINARYMIME is not offered).

use tokio::io::{AsyncRead, AsyncWrite};

use super::{BdatBody, Flow, Session};
use crate::SessionBackend;
use crate::data::{BodyBuffer, BodyVerdict, LineCheck};
use crate::reply::{self, Reply};

impl<S, B> Session<S, B>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    B: SessionBackend,
{
    pub(super) async fn bdat(&mut self, size: u64, last: bool) -> Flow {
        let refusal = if self.helo.is_none() {
            Some(reply::bad_sequence("send HELO/EHLO first"))
        } else {
            match &self.tx {
                None => Some(reply::bad_sequence("need MAIL command")),
                Some(tx) if tx.envelope.recipients.is_empty() => {
                    Some(reply::bad_sequence("need RCPT command"))
                }
                Some(_) => None,
            }
        };
        if let Some(refusal) = refusal {
            if let Err(e) = self
                .conn
                .read_exact_into(size, self.config.data_timeout, |_| {})
                .await
            {
                self.read_failed(e);
                return Flow::Close;
            }
            return self.respond(refusal);
        }

        let max_line = self.config.max_text_line;
        let max_size = self.config.max_message_usize();
        let Some(tx) = self.tx.as_mut() else {
            return Flow::Continue;
        };
        let body = tx.bdat.get_or_insert_with(|| BdatBody {
            lines: LineCheck::new(max_line),
            sink: BodyBuffer::new(max_size),
        });
        if body.sink.would_overflow(size) {
            // Do not even try to store a chunk that cannot fit.
            body.sink.discard();
        }
        let read = self
            .conn
            .read_exact_into(size, self.config.data_timeout, |bytes| body.push(bytes))
            .await;
        if let Err(e) = read {
            self.read_failed(e);
            return Flow::Close;
        }

        if !last {
            let verdict = BodyVerdict::from_flags(body.lines.flags(), body.sink.oversize());
            if verdict != BodyVerdict::Ok {
                // RFC 3030: after a failed chunk the client sends no more;
                // the transaction is over.
                self.tx = None;
                return self.respond(verdict_reply(verdict));
            }
            return self.respond(reply::chunk_received(size));
        }

        let Some(tx) = self.tx.as_mut() else {
            return Flow::Continue;
        };
        let Some(mut body) = tx.bdat.take() else {
            return Flow::Continue;
        };
        if !body.lines.ends_with_line_end() && !body.lines.flags().any() {
            // An unterminated last line gets its CRLF (as if sent by DATA),
            // so every stored body ends with CRLF.
            body.push(b"\r\n");
        }
        let flags = body.lines.finish();
        let oversize = body.sink.oversize();
        self.finish_message(BodyVerdict::from_flags(flags, oversize), body.sink)
            .await
    }
}

/// The reply for a refused body (shared with the end of a message).
pub(super) fn verdict_reply(verdict: BodyVerdict) -> Reply {
    match verdict {
        BodyVerdict::BareCrOrLf => reply::bare_cr_or_lf(),
        BodyVerdict::Nul => reply::nul_in_message(),
        BodyVerdict::TooBig => reply::message_too_big(),
        BodyVerdict::LineTooLong => reply::text_line_too_long(),
        // Not a refusal; never asked for.
        BodyVerdict::Ok => reply::ok(),
    }
}
