//! Shared test pieces: a recording fake backend, an SMTP client that reads
//! whole replies, and session launchers over in-memory duplex streams.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use relay_smtp::{SessionBackend, SmtpConfig, Submission, SubmitError, run_session};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// An address outside the default authorized networks.
pub const OUTSIDER: &str = "192.0.2.10:40000";
/// An address inside them (127.0.0.0/8).
pub const INSIDER: &str = "127.0.0.1:40000";
/// The relay domain the fake backend knows.
pub const RELAY_DOMAIN: &str = "example.test";

/// Records submissions; can be told to fail the next submits, or to panic
/// when asked about `panic.test`.
#[derive(Debug, Default)]
pub struct FakeBackend {
    pub submissions: Mutex<Vec<Submission>>,
    pub failures: Mutex<VecDeque<SubmitError>>,
    /// Free octets the fake disk has; `None`: always room.
    pub free_space: Mutex<Option<u64>>,
}

impl FakeBackend {
    pub fn new() -> Arc<Self> {
        Arc::new(FakeBackend::default())
    }

    pub fn fail_next(&self, e: SubmitError) {
        self.failures.lock().unwrap().push_back(e);
    }

    pub fn submitted(&self) -> Vec<Submission> {
        self.submissions.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.submissions.lock().unwrap().len()
    }
}

impl SessionBackend for FakeBackend {
    fn is_relay_domain(&self, domain: &str) -> bool {
        if domain == "panic.test" {
            panic!("test backend panics on purpose");
        }
        domain == RELAY_DOMAIN
    }

    fn has_room_for(&self, declared_size: Option<u64>) -> bool {
        self.free_space
            .lock()
            .unwrap()
            .is_none_or(|free| declared_size.unwrap_or(1) <= free)
    }

    fn submit(
        &self,
        submission: Submission,
    ) -> impl Future<Output = Result<(), SubmitError>> + Send {
        let result = match self.failures.lock().unwrap().pop_front() {
            Some(e) => Err(e),
            None => {
                self.submissions.lock().unwrap().push(submission);
                Ok(())
            }
        };
        async move {
            tokio::task::yield_now().await;
            result
        }
    }
}

/// The default test configuration.
pub fn config() -> SmtpConfig {
    SmtpConfig {
        hostname: "mx.test".into(),
        ..SmtpConfig::default()
    }
}

/// The test configuration with one change.
pub fn config_with(change: impl FnOnce(&mut SmtpConfig)) -> SmtpConfig {
    let mut c = config();
    change(&mut c);
    c
}

/// One reply as read by the client.
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// All lines, joined by `\n`.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    /// Asserts the code and the enhanced status code of the first line.
    #[track_caller]
    pub fn expect(&self, code: u16, status: &str) -> &Self {
        let want = format!("{code} {status}");
        assert!(
            self.code == code && self.lines[0].starts_with(&want),
            "expected {want}, got {:?}",
            self.lines
        );
        self
    }
}

/// A line-oriented SMTP client that keeps its own read buffer.
pub struct Client<S> {
    stream: S,
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    pub fn new(stream: S) -> Self {
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.stream.write_all(bytes.as_ref()).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    /// Reads one complete (possibly multi-line) reply.
    pub async fn reply(&mut self) -> Reply {
        tokio::time::timeout(Duration::from_secs(60), self.read_reply())
            .await
            .expect("no reply within 60 s")
            .expect("connection closed before a reply")
    }

    async fn read_reply(&mut self) -> Option<Reply> {
        let mut lines = Vec::new();
        loop {
            let line = self.read_line().await?;
            let code: u16 = line.get(..3)?.parse().ok()?;
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return Some(Reply { code, lines });
            }
        }
    }

    async fn read_line(&mut self) -> Option<String> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..pos + 2).collect();
                return Some(String::from_utf8_lossy(&line[..pos]).into_owned());
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends a command line (CRLF added) and reads the reply.
    pub async fn cmd(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n")).await;
        self.reply().await
    }

    /// EHLO and check it was accepted.
    pub async fn ehlo(&mut self) -> Reply {
        let r = self.cmd("EHLO client.test").await;
        assert_eq!(r.code, 250, "{r:?}");
        r
    }

    /// True when the server closed the connection (after any replies left
    /// in the buffer, which are returned).
    pub async fn closed(&mut self) -> bool {
        let read = async {
            loop {
                let mut chunk = [0u8; 1024];
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return true,
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(60), read)
            .await
            .unwrap_or(false)
    }

    /// Unread octets the server sent.
    pub fn unread(&self) -> &[u8] {
        &self.buf
    }

    /// The raw stream, e.g. to start TLS on it. Nothing may be buffered.
    pub fn into_inner(self) -> S {
        assert!(self.buf.is_empty(), "unread data: {:?}", self.buf);
        self.stream
    }

    /// One full transaction with `body` sent through DATA; returns the
    /// final reply.
    pub async fn send_message(&mut self, from: &str, to: &[&str], body: &[u8]) -> Reply {
        self.cmd(&format!("MAIL FROM:<{from}>"))
            .await
            .expect(250, "2.1.0");
        for rcpt in to {
            self.cmd(&format!("RCPT TO:<{rcpt}>"))
                .await
                .expect(250, "2.1.5");
        }
        assert_eq!(self.cmd("DATA").await.code, 354);
        self.send(relay_smtp::data::dot_stuff(body)).await;
        self.reply().await
    }
}

/// A session over a duplex pipe, greeted already.
pub struct Harness {
    pub client: Client<DuplexStream>,
    pub backend: Arc<FakeBackend>,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<()>,
}

pub async fn start_with(config: SmtpConfig, peer: &str, backend: Arc<FakeBackend>) -> Harness {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let shutdown = CancellationToken::new();
    let peer: SocketAddr = peer.parse().unwrap();
    let task = tokio::spawn(run_session(
        server,
        peer,
        Arc::new(config),
        backend.clone(),
        shutdown.clone(),
    ));
    let mut client = Client::new(client);
    let greeting = client.reply().await;
    assert_eq!(greeting.lines, ["220 mx.test ESMTP quorum-relay"]);
    Harness {
        client,
        backend,
        shutdown,
        task,
    }
}

/// A greeted session from an outsider with the default test config.
pub async fn start() -> Harness {
    start_with(config(), OUTSIDER, FakeBackend::new()).await
}

/// A small valid message.
pub fn message(subject: &str) -> Vec<u8> {
    format!(
        "From: a@sender.test\r\nTo: bob@example.test\r\nSubject: {subject}\r\nMessage-ID: <{subject}@sender.test>\r\n\r\nHello.\r\n"
    )
    .into_bytes()
}

/// The client's part of a stored body (after our Received header).
pub fn client_part(body: &[u8]) -> &[u8] {
    assert!(
        body.starts_with(b"Received: from "),
        "no Received header first"
    );
    // The Received header is three lines; continuation lines start with TAB.
    let mut pos = 0;
    loop {
        let end = body[pos..].windows(2).position(|w| w == b"\r\n").unwrap() + pos + 2;
        pos = end;
        if body.get(pos) != Some(&b'\t') {
            return &body[pos..];
        }
    }
}
