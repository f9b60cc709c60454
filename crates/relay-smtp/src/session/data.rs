//! DATA: stream the body through the scanner until `CRLF.CRLF`.

use tokio::io::{AsyncRead, AsyncWrite};

use super::{Flow, Session};
use crate::SessionBackend;
use crate::data::{BodyBuffer, BodyVerdict, DataScanner};
use crate::reply;

impl<S, B> Session<S, B>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    B: SessionBackend,
{
    pub(super) async fn data(&mut self) -> Flow {
        if self.helo.is_none() {
            return self.respond(reply::bad_sequence("send HELO/EHLO first"));
        }
        let Some(tx) = &self.tx else {
            return self.respond(reply::bad_sequence("need MAIL command"));
        };
        if tx.bdat.is_some() {
            return self.respond(reply::bad_sequence("BDAT transfer in progress"));
        }
        if tx.envelope.recipients.is_empty() {
            return self.respond(reply::bad_sequence("need RCPT command"));
        }
        self.respond(reply::start_data());
        let mut scanner = DataScanner::new(self.config.max_text_line);
        let mut sink = BodyBuffer::new(self.config.max_message_usize());
        loop {
            let input = self.conn.buffered();
            if !input.is_empty() {
                let feed = scanner.feed(input, &mut sink);
                self.conn.consume(feed.consumed);
                if feed.ended {
                    break;
                }
                if scanner.flags().any() {
                    // Refused at the end anyway: keep reading, stop storing.
                    sink.discard();
                }
            }
            if let Err(e) = self.conn.fill_data(self.config.data_timeout).await {
                // The client vanished or stalled mid-message: nothing is
                // submitted.
                self.read_failed(e);
                return Flow::Close;
            }
        }
        let verdict = BodyVerdict::from_flags(scanner.flags(), sink.oversize());
        self.finish_message(verdict, sink).await
    }
}
