//! The session's byte stream: plain or TLS, a bounded read buffer, a reply
//! buffer flushed before every read (so pipelined replies go out together),
//! and every wait bounded by a timeout.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::reply::Reply;

/// Read-buffer growth while waiting for commands: idle sessions stay small.
const COMMAND_READ: usize = 1024;
/// Read-buffer growth while message data streams in.
const DATA_READ: usize = 16 * 1024;
/// Reply buffers larger than this are released after a flush.
const KEEP_WRITE_CAPACITY: usize = 4096;

/// Plain or TLS.
pub(crate) enum Stream<S> {
    Plain(S),
    Tls(Box<TlsStream<S>>),
    /// Only while the TLS handshake owns the plain stream (or after it failed).
    Gone,
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Gone => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Gone => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Gone => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Gone => Poll::Ready(Ok(())),
        }
    }
}

/// Why no more input came.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The client closed the connection.
    Eof,
    /// Nothing (or not enough) arrived in time, or the client did not take
    /// our replies in time.
    Timeout,
    /// The node is shutting down (only while waiting for a command).
    Shutdown,
    /// The connection failed.
    Io(io::Error),
}

/// One command line, or a line that was too long (and was skipped).
#[derive(Debug)]
pub(crate) enum CommandLine {
    Line(BytesMut),
    TooLong,
}

pub(crate) struct Conn<S> {
    stream: Stream<S>,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    pub(crate) fn new(stream: S) -> Self {
        Conn {
            stream: Stream::Plain(stream),
            rbuf: BytesMut::new(),
            wbuf: Vec::new(),
        }
    }

    pub(crate) fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    /// Queues a reply; it is sent before the next read (or at close).
    pub(crate) fn queue(&mut self, reply: &Reply) {
        reply.write_to(&mut self.wbuf);
    }

    /// Input received but not yet consumed.
    pub(crate) fn buffered(&self) -> &[u8] {
        &self.rbuf
    }

    /// Drops `n` consumed octets from the read buffer.
    pub(crate) fn consume(&mut self, n: usize) {
        self.rbuf.advance(n);
    }

    /// Sends queued replies.
    pub(crate) async fn flush(&mut self, limit: Duration) -> Result<(), ReadError> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let write = async {
            self.stream.write_all(&self.wbuf).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(limit, write).await {
            Err(_) => return Err(ReadError::Timeout),
            Ok(Err(e)) => return Err(ReadError::Io(e)),
            Ok(Ok(())) => {}
        }
        self.wbuf.clear();
        if self.wbuf.capacity() > KEEP_WRITE_CAPACITY {
            self.wbuf = Vec::new();
        }
        Ok(())
    }

    /// Flushes replies, then reads more input within `limit` (and, if
    /// given, until `shutdown` fires).
    async fn fill(
        &mut self,
        limit: Duration,
        shutdown: Option<&CancellationToken>,
        grow: usize,
    ) -> Result<usize, ReadError> {
        let deadline = Instant::now() + limit;
        self.flush(limit).await?;
        if self.rbuf.capacity() - self.rbuf.len() < grow / 2 {
            self.rbuf.reserve(grow);
        }
        let read = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.rbuf));
        let result = match shutdown {
            Some(token) => tokio::select! {
                biased;
                _ = token.cancelled() => return Err(ReadError::Shutdown),
                r = read => r,
            },
            None => read.await,
        };
        match result {
            Err(_) => Err(ReadError::Timeout),
            Ok(Ok(0)) => Err(ReadError::Eof),
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => Err(ReadError::Io(e)),
        }
    }

    /// Reads more message data (no shutdown interruption: a message in
    /// flight is finished; `serve`'s grace period bounds it).
    pub(crate) async fn fill_data(&mut self, limit: Duration) -> Result<usize, ReadError> {
        self.fill(limit, None, DATA_READ).await
    }

    /// The next command line (up to and including LF). The whole line must
    /// arrive within `limit`. A line longer than `max_line` octets is read
    /// to its end and dropped, without ever buffering more than about
    /// `max_line` + one read.
    pub(crate) async fn read_command(
        &mut self,
        max_line: usize,
        limit: Duration,
        shutdown: &CancellationToken,
    ) -> Result<CommandLine, ReadError> {
        let deadline = Instant::now() + limit;
        let mut skipping = false;
        loop {
            if let Some(pos) = memchr::memchr(b'\n', &self.rbuf) {
                let line = self.rbuf.split_to(pos + 1);
                if skipping || line.len() > max_line {
                    return Ok(CommandLine::TooLong);
                }
                return Ok(CommandLine::Line(line));
            }
            if self.rbuf.len() >= max_line {
                skipping = true;
                self.rbuf.clear();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            self.fill(left, Some(shutdown), COMMAND_READ).await?;
        }
    }

    /// Reads exactly `n` octets (a BDAT chunk), handing them to `sink` in
    /// pieces as they arrive; `limit` bounds each silence.
    pub(crate) async fn read_exact_into(
        &mut self,
        mut n: u64,
        limit: Duration,
        mut sink: impl FnMut(&[u8]),
    ) -> Result<(), ReadError> {
        loop {
            let take = (self.rbuf.len() as u64).min(n) as usize;
            if take > 0 {
                sink(&self.rbuf[..take]);
                self.rbuf.advance(take);
                n -= take as u64;
            }
            if n == 0 {
                return Ok(());
            }
            self.fill_data(limit).await?;
        }
    }

    /// Switches to TLS after `220 Ready to start TLS` was queued: sends it,
    /// DISCARDS everything the client pipelined after STARTTLS (those bytes
    /// arrived in clear and must not be taken as protected commands,
    /// CVE-2011-0411), then runs the handshake within `limit`. Returns the
    /// number of octets discarded.
    pub(crate) async fn start_tls(
        &mut self,
        config: Arc<rustls::ServerConfig>,
        limit: Duration,
    ) -> io::Result<usize> {
        match self.flush(limit).await {
            Ok(()) => {}
            Err(ReadError::Io(e)) => return Err(e),
            Err(_) => return Err(io::ErrorKind::TimedOut.into()),
        }
        let discarded = self.rbuf.len();
        self.rbuf = BytesMut::new();
        let Stream::Plain(plain) = std::mem::replace(&mut self.stream, Stream::Gone) else {
            return Err(io::Error::other("TLS already active"));
        };
        let tls = tokio::time::timeout(limit, TlsAcceptor::from(config).accept(plain))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        self.stream = Stream::Tls(Box::new(tls));
        Ok(discarded)
    }

    /// Sends what is queued and closes the write side, both bounded.
    pub(crate) async fn close(&mut self, limit: Duration) {
        if self.flush(limit).await.is_ok() {
            let _ = tokio::time::timeout(limit, self.stream.shutdown()).await;
        }
    }
}
