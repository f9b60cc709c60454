//! A small SMTP client for process tests: it writes exactly the bytes a test
//! gives it (pipelining, smuggling attempts, odd line ends) and parses the
//! replies, so tests can assert on codes and enhanced status codes.
//!
//! Every read has a deadline: a node that stops answering fails the test
//! instead of hanging it.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// How long one reply may take (a commit through Raft included).
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// One SMTP reply, possibly multi-line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmtpReply {
    /// The three-digit code.
    pub code: u16,
    /// The text of each line, without code and separator.
    pub lines: Vec<String>,
}

impl SmtpReply {
    /// All lines joined with newlines.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    /// The queue id in `250 2.0.0 Ok: queued as <ID>`.
    pub fn queued_id(&self) -> Option<String> {
        let text = self.lines.last()?;
        let (_, id) = text.split_once("queued as ")?;
        Some(id.trim().to_string())
    }
}

impl std::fmt::Display for SmtpReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.text())
    }
}

/// A client connection.
#[derive(Debug)]
pub struct SmtpClient {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl SmtpClient {
    /// Connects and reads the greeting.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<(SmtpClient, SmtpReply)> {
        let stream = tokio::time::timeout(REPLY_TIMEOUT, TcpStream::connect(addr))
            .await
            .with_context(|| format!("connect to {addr} timed out"))?
            .with_context(|| format!("connect to {addr}"))?;
        let (read, write) = stream.into_split();
        let mut client = SmtpClient {
            reader: BufReader::new(read),
            writer: write,
        };
        let greeting = client.read_reply().await?;
        Ok((client, greeting))
    }

    /// Connects, checks the greeting and says EHLO.
    pub async fn connect_ehlo(addr: SocketAddr) -> anyhow::Result<SmtpClient> {
        let (mut client, greeting) = Self::connect(addr).await?;
        if greeting.code != 220 {
            bail!("greeting from {addr}: {greeting}");
        }
        let ehlo = client.command("EHLO client.test").await?;
        if ehlo.code != 250 {
            bail!("EHLO at {addr}: {ehlo}");
        }
        Ok(client)
    }

    /// Writes raw bytes.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.writer.write_all(bytes).await?;
        self.writer.flush().await?;
        Ok(())
    }

    /// Reads one (possibly multi-line) reply.
    pub async fn read_reply(&mut self) -> anyhow::Result<SmtpReply> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(REPLY_TIMEOUT, self.reader.read_line(&mut line))
                .await
                .context("no reply within the deadline")??;
            if n == 0 {
                bail!("connection closed before a reply (got {lines:?})");
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.len() < 3 {
                bail!("malformed reply line {line:?}");
            }
            let code: u16 = line[..3]
                .parse()
                .with_context(|| format!("malformed reply line {line:?}"))?;
            let more = line.as_bytes().get(3) == Some(&b'-');
            lines.push(line.get(4..).unwrap_or("").to_string());
            if !more {
                return Ok(SmtpReply { code, lines });
            }
        }
    }

    /// Sends one command line (CRLF added) and reads its reply.
    pub async fn command(&mut self, line: &str) -> anyhow::Result<SmtpReply> {
        self.send_raw(format!("{line}\r\n").as_bytes()).await?;
        self.read_reply().await
    }

    /// `DATA`, then the message dot-stuffed and terminated; returns the reply
    /// to `DATA` if it is not 354, else the reply to the final dot.
    pub async fn data(&mut self, message: &[u8]) -> anyhow::Result<SmtpReply> {
        let go = self.command("DATA").await?;
        if go.code != 354 {
            return Ok(go);
        }
        self.send_raw(&dot_stuff(message)).await?;
        self.send_raw(b".\r\n").await?;
        self.read_reply().await
    }
}

/// Dot-stuffs `message` (a leading `.` on a line is doubled) and makes sure
/// it ends with CRLF, ready to be followed by `.\r\n`.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 16);
    let mut at_line_start = true;
    for &b in message {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// One whole transaction in a fresh session: EHLO, MAIL, RCPT each, DATA.
/// Returns the first reply that is not positive, or the final reply.
pub async fn send_mail(
    addr: SocketAddr,
    from: &str,
    to: &[&str],
    message: &[u8],
) -> anyhow::Result<SmtpReply> {
    let mut client = SmtpClient::connect_ehlo(addr).await?;
    let reply = transaction(&mut client, from, to, message).await?;
    let _ = client.command("QUIT").await;
    Ok(reply)
}

/// One transaction on an open session (see [`send_mail`]).
pub async fn transaction(
    client: &mut SmtpClient,
    from: &str,
    to: &[&str],
    message: &[u8],
) -> anyhow::Result<SmtpReply> {
    let mail = client.command(&format!("MAIL FROM:<{from}>")).await?;
    if mail.code != 250 {
        return Ok(mail);
    }
    for rcpt in to {
        let reply = client.command(&format!("RCPT TO:<{rcpt}>")).await?;
        if reply.code != 250 {
            let _ = client.command("RSET").await;
            return Ok(reply);
        }
    }
    client.data(message).await
}

#[cfg(test)]
mod tests {
    use super::dot_stuff;

    #[test]
    fn dot_stuffing_doubles_leading_dots_only() {
        assert_eq!(dot_stuff(b".a\r\nb.c\r\n..\r\n"), b"..a\r\nb.c\r\n...\r\n");
        assert_eq!(dot_stuff(b"x"), b"x\r\n");
    }
}
