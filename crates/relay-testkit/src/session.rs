//! One hand-written ESMTP server session for the test target.
//!
//! Deliberately small and lenient: enough of RFC 5321 for real clients
//! (lettre, swaks, relayd) to deliver, with the behaviour switches tests
//! need. Lines may end in CRLF or LF; DATA ends at a line that is exactly
//! `.`; a leading dot on any other data line is removed.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
};
use tokio::net::TcpStream;

use crate::target::{Behaviour, OpenTransaction, ReceivedMessage, Shared};

/// Longest command line read (RFC 5321 allows 512; be generous).
const MAX_COMMAND_LINE: usize = 4096;
/// Data is read in pieces of at most this many octets.
const MAX_DATA_CHUNK: usize = 1024 * 1024;

/// Why a session loop ended.
enum End {
    /// The client quit or vanished, or the behaviour said to drop.
    Closed,
    /// The client asked for STARTTLS and got `220`.
    StartTls,
}

/// Serves one connection until it ends or the target shuts down.
///
/// Shutting down is graceful, like a real MTA's: a session waiting for a
/// command ends at once, but a transaction already in DATA finishes and gets
/// its reply, so a message the target stored is never left unacknowledged
/// by the shutdown itself (that case is [`Behaviour::DropAfterData`]'s).
/// Bounded by [`SHUTDOWN_GRACE`] for peers that stall.
pub(crate) async fn serve(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let shutdown = shared.shutdown.clone();
    let session = serve_connection(stream, peer, &shared);
    tokio::pin!(session);
    tokio::select! {
        _ = &mut session => {}
        _ = shutdown.cancelled() => {
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, session).await;
        }
    }
    shared.connection_closed();
}

/// How long a session may take to finish its transaction at shutdown.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

async fn serve_connection(mut stream: TcpStream, peer: SocketAddr, shared: &Shared) {
    // The idle-close generation when this connection arrived.
    let opened_at = *shared.close_idle.borrow();
    match shared.behaviour() {
        Behaviour::DropConnection => return,
        Behaviour::Stall => return std::future::pending().await,
        Behaviour::RejectGreeting(reply) => {
            let _ = send(&mut stream, &reply.line()).await;
            return;
        }
        _ => {}
    }
    let greeting = format!("220 {} ESMTP quorum-relay test target\r\n", shared.hostname);
    if send(&mut stream, &greeting).await.is_err() {
        return;
    }
    let mut reader = BufReader::new(stream);
    if let End::StartTls = session(&mut reader, peer, shared, false, opened_at).await {
        // RFC 3207: nothing may follow STARTTLS in the same packet; a
        // client that pipelined past it is dropped.
        if !reader.buffer().is_empty() {
            return;
        }
        let Some(acceptor) = shared.tls.clone() else {
            return;
        };
        let Ok(tls) = acceptor.accept(reader.into_inner()).await else {
            return;
        };
        let mut reader = BufReader::new(tls);
        let _ = session(&mut reader, peer, shared, true, opened_at).await;
    }
}

/// The transaction being built.
#[derive(Default)]
struct Transaction {
    mail_from: String,
    mail_params: String,
    rcpt_to: Vec<String>,
    mail_at: Option<std::time::Instant>,
}

/// The command loop over any stream (plain or TLS).
async fn session<S>(
    io: &mut BufReader<S>,
    peer: SocketAddr,
    shared: &Shared,
    tls: bool,
    opened_at: u64,
) -> End
where
    S: tokio::io::AsyncRead + AsyncWrite + Unpin,
{
    let mut helo = String::new();
    let mut txn: Option<Transaction> = None;
    // Counted as open from MAIL FROM to the reply to the final dot.
    let mut open = None;
    let mut line = Vec::new();
    let mut close_idle = shared.close_idle.subscribe();
    loop {
        let read = tokio::select! {
            read = read_line(io, &mut line, MAX_COMMAND_LINE) => read,
            // Shutting down: end between commands, never inside one.
            _ = shared.shutdown.cancelled() => return End::Closed,
            // Like a server's idle timeout: close between commands.
            _ = close_idle.wait_for(|g| *g > opened_at) => return End::Closed,
        };
        match read {
            Ok(Line::Complete) => {}
            Ok(Line::TooLong) => {
                if skip_rest_of_line(io).await.is_err()
                    || send(io, "500 5.5.2 line too long\r\n").await.is_err()
                {
                    return End::Closed;
                }
                continue;
            }
            Ok(Line::Eof) | Err(_) => return End::Closed,
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        let (verb, rest) = match text.split_once(' ') {
            Some((verb, rest)) => (verb.to_ascii_uppercase(), rest.trim()),
            None => (text.to_ascii_uppercase(), ""),
        };
        if !matches!(verb.as_str(), "MAIL" | "RCPT" | "DATA")
            && open
                .as_ref()
                .is_some_and(|t: &OpenTransaction<'_>| !t.mail_accepted())
        {
            // The command after a rejected MAIL FROM ends that transaction.
            drop(open.take());
        }
        let reply = match verb.as_str() {
            "EHLO" => {
                helo = rest.to_string();
                txn = None;
                drop(open.take());
                let mut lines = vec![
                    shared.hostname.clone(),
                    "PIPELINING".into(),
                    "8BITMIME".into(),
                    "SMTPUTF8".into(),
                    "ENHANCEDSTATUSCODES".into(),
                    format!("SIZE {}", shared.max_message_size),
                ];
                if shared.tls.is_some() && !tls {
                    lines.push("STARTTLS".into());
                }
                multiline(250, &lines)
            }
            "HELO" => {
                helo = rest.to_string();
                txn = None;
                drop(open.take());
                format!("250 {}\r\n", shared.hostname)
            }
            "MAIL" => match parse_path(rest, "FROM:") {
                None => "501 5.5.4 syntax: MAIL FROM:<address>\r\n".into(),
                Some((from, params)) => match shared.behaviour() {
                    Behaviour::RejectMail(reply) => {
                        // Open until the client's next command (RSET or
                        // QUIT) or the end of the connection: the client
                        // is still busy with this delivery until then.
                        drop(open.take());
                        open = Some(shared.transaction_started(false));
                        reply.line()
                    }
                    _ => {
                        drop(open.take());
                        open = Some(shared.transaction_started(true));
                        txn = Some(Transaction {
                            mail_from: from,
                            mail_params: params,
                            rcpt_to: Vec::new(),
                            mail_at: Some(std::time::Instant::now()),
                        });
                        "250 2.1.0 Ok\r\n".into()
                    }
                },
            },
            "RCPT" => match (txn.as_mut(), parse_path(rest, "TO:")) {
                (None, _) => "503 5.5.1 need MAIL first\r\n".into(),
                (Some(_), None) => "501 5.5.4 syntax: RCPT TO:<address>\r\n".into(),
                (Some(t), Some((to, _))) => match shared.behaviour() {
                    Behaviour::RejectRcpt(reply) => reply.line(),
                    Behaviour::RejectRcptMatching { matching, reply }
                        if to
                            .to_ascii_lowercase()
                            .contains(&matching.to_ascii_lowercase()) =>
                    {
                        reply.line()
                    }
                    _ => {
                        t.rcpt_to.push(to);
                        "250 2.1.5 Ok\r\n".into()
                    }
                },
            },
            "DATA" => match txn.take() {
                None => "503 5.5.1 need MAIL first\r\n".into(),
                Some(t) if t.rcpt_to.is_empty() => {
                    txn = Some(t);
                    "554 5.5.1 no valid recipients\r\n".into()
                }
                Some(t) => {
                    if send(io, "354 End data with <CR><LF>.<CR><LF>\r\n")
                        .await
                        .is_err()
                    {
                        return End::Closed;
                    }
                    if shared.behaviour() == Behaviour::DropDuringData {
                        return End::Closed;
                    }
                    let Ok(Some(data)) = read_data(io, shared.max_message_size).await else {
                        return End::Closed;
                    };
                    let Some(reply) = finish_data(shared, t, data, &helo, tls, peer).await else {
                        return End::Closed;
                    };
                    reply
                }
            },
            "RSET" => {
                txn = None;
                drop(open.take());
                "250 2.0.0 Ok\r\n".into()
            }
            "NOOP" => "250 2.0.0 Ok\r\n".into(),
            "VRFY" => "252 2.1.5 cannot verify, will accept\r\n".into(),
            "QUIT" => {
                let _ = send(io, "221 2.0.0 Bye\r\n").await;
                return End::Closed;
            }
            "STARTTLS" if shared.tls.is_none() || tls => {
                "502 5.5.1 STARTTLS not available\r\n".into()
            }
            "STARTTLS" => {
                if send(io, "220 2.0.0 Ready to start TLS\r\n").await.is_err() {
                    return End::Closed;
                }
                return End::StartTls;
            }
            _ => "500 5.5.2 command not recognized\r\n".into(),
        };
        if send(io, &reply).await.is_err() {
            return End::Closed;
        }
        if verb == "DATA" && txn.is_none() {
            // The final dot is answered: the transaction is over.
            drop(open.take());
        }
    }
}

/// Decides the answer to the final dot. `None`: close without answering.
async fn finish_data(
    shared: &Shared,
    txn: Transaction,
    data: Option<Vec<u8>>,
    helo: &str,
    tls: bool,
    peer: SocketAddr,
) -> Option<String> {
    let behaviour = shared.behaviour();
    if let Behaviour::RejectData(reply) = &behaviour {
        return Some(reply.line());
    }
    let Some(data) = data else {
        return Some("552 5.3.4 message too big\r\n".into());
    };
    let message = ReceivedMessage {
        seq: 0,
        helo: helo.to_string(),
        mail_from: txn.mail_from,
        mail_params: txn.mail_params,
        rcpt_to: txn.rcpt_to,
        data: Bytes::from(data),
        tls,
        peer,
        mail_at: txn.mail_at.unwrap_or_else(std::time::Instant::now),
        received_at: std::time::Instant::now(),
    };
    if behaviour == Behaviour::DropAfterData {
        let message = ReceivedMessage {
            seq: shared.next_seq(),
            ..message
        };
        // Stored like any accepted message (the client cannot tell it was
        // kept); a sink error changes nothing, no reply is sent anyway.
        if let Some(sink) = shared.sink.clone() {
            let for_sink = message.clone();
            let _ = tokio::task::spawn_blocking(move || sink.store(&for_sink)).await;
        }
        shared.record(message);
        return None;
    }
    if let Some(sink) = shared.sink.clone() {
        let for_sink = message.clone();
        let stored = tokio::task::spawn_blocking(move || sink.store(&for_sink))
            .await
            .unwrap_or_else(|e| Err(format!("sink task failed: {e}")));
        if let Err(e) = stored {
            return Some(format!("451 4.3.0 {e}\r\n"));
        }
    }
    let seq = shared.next_seq();
    shared.record(ReceivedMessage { seq, ..message });
    if let Behaviour::DelayDataReply(delay) = behaviour {
        tokio::time::sleep(delay).await;
    }
    Some(format!("250 2.0.0 Ok: queued as {seq}\r\n"))
}

/// `FROM:<path> params` → (path, params). Accepts a space after the colon.
fn parse_path(rest: &str, keyword: &str) -> Option<(String, String)> {
    let head = rest.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = rest[keyword.len()..].trim_start();
    let rest = rest.strip_prefix('<')?;
    let (path, params) = rest.split_once('>')?;
    Some((path.to_string(), params.trim().to_string()))
}

fn multiline(code: u16, lines: &[String]) -> String {
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        let sep = if i + 1 == lines.len() { ' ' } else { '-' };
        out.push_str(&format!("{code}{sep}{line}\r\n"));
    }
    out
}

enum Line {
    Complete,
    TooLong,
    Eof,
}

/// Reads one line (with its line end) into `buf`, at most `max` octets.
async fn read_line<R>(reader: &mut R, buf: &mut Vec<u8>, max: usize) -> std::io::Result<Line>
where
    R: AsyncBufRead + Unpin,
{
    buf.clear();
    let n = (&mut *reader)
        .take(max as u64)
        .read_until(b'\n', buf)
        .await?;
    Ok(if n == 0 {
        Line::Eof
    } else if buf.ends_with(b"\n") {
        Line::Complete
    } else if n == max {
        Line::TooLong
    } else {
        // The peer closed in the middle of a line.
        Line::Eof
    })
}

async fn skip_rest_of_line<R>(reader: &mut R) -> std::io::Result<()>
where
    R: AsyncBufRead + Unpin,
{
    let mut scratch = Vec::new();
    loop {
        match read_line(reader, &mut scratch, MAX_COMMAND_LINE).await? {
            Line::Complete | Line::Eof => return Ok(()),
            Line::TooLong => {}
        }
    }
}

/// Reads DATA up to the terminating `.` line. `Ok(None)`: the connection
/// ended first. `Ok(Some(None))`: the message was larger than `max_size`
/// (read to its end and dropped).
async fn read_data<R>(reader: &mut R, max_size: usize) -> std::io::Result<Option<Option<Vec<u8>>>>
where
    R: AsyncBufRead + Unpin,
{
    let mut data = Vec::new();
    let mut too_big = false;
    let mut at_line_start = true;
    let mut chunk = Vec::new();
    loop {
        match read_line(reader, &mut chunk, MAX_DATA_CHUNK).await? {
            Line::Eof => return Ok(None),
            Line::Complete | Line::TooLong => {}
        }
        let starts_line = at_line_start;
        at_line_start = chunk.ends_with(b"\n");
        if starts_line && (chunk == b".\r\n" || chunk == b".\n") {
            return Ok(Some((!too_big).then_some(data)));
        }
        let content = if starts_line && chunk.starts_with(b".") {
            &chunk[1..]
        } else {
            &chunk[..]
        };
        if !too_big {
            data.extend_from_slice(content);
            if data.len() > max_size {
                too_big = true;
                data = Vec::new();
            }
        }
    }
}

async fn send<W: AsyncWrite + Unpin>(writer: &mut W, text: &str) -> std::io::Result<()> {
    writer.write_all(text.as_bytes()).await?;
    writer.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_path_handles_case_spaces_params_and_null_sender() {
        assert_eq!(
            parse_path("FROM:<a@b.test> BODY=8BITMIME", "FROM:"),
            Some(("a@b.test".into(), "BODY=8BITMIME".into()))
        );
        assert_eq!(
            parse_path("from: <>", "FROM:"),
            Some((String::new(), String::new()))
        );
        assert_eq!(parse_path("TO:<x@y>", "FROM:"), None);
        assert_eq!(parse_path("FROM:a@b", "FROM:"), None);
    }

    #[tokio::test]
    async fn data_is_dot_unstuffed_and_ends_at_the_dot_line() {
        let input: &[u8] = b"Subject: x\r\n\r\n..leading dot\r\n.\r\nQUIT\r\n";
        let mut reader = BufReader::new(input);
        let data = read_data(&mut reader, 1024)
            .await
            .expect("read")
            .expect("terminated")
            .expect("not too big");
        assert_eq!(data, b"Subject: x\r\n\r\n.leading dot\r\n".to_vec());
        let mut rest = String::new();
        reader.read_to_string(&mut rest).await.expect("rest");
        assert_eq!(rest, "QUIT\r\n");
    }

    #[tokio::test]
    async fn oversized_data_is_read_to_its_end_and_dropped() {
        let input: &[u8] = b"0123456789\r\n0123456789\r\n.\r\n";
        let mut reader = BufReader::new(input);
        let data = read_data(&mut reader, 15)
            .await
            .expect("read")
            .expect("terminated");
        assert_eq!(data, None);
    }

    #[tokio::test]
    async fn eof_inside_data_is_not_a_message() {
        let input: &[u8] = b"Subject: x\r\n\r\nno end";
        let mut reader = BufReader::new(input);
        assert_eq!(read_data(&mut reader, 1024).await.expect("read"), None);
    }
}
