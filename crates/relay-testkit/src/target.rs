//! `TestTarget`: a real SMTP server on loopback whose answers tests control.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::TestkitError;
use crate::session;
use crate::sink::MessageSink;
use crate::wait::WaitTimeout;

/// One SMTP reply the target sends instead of its usual answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code, e.g. 451 or 550.
    pub code: u16,
    /// The text after the code, e.g. `4.3.0 try again later`.
    pub text: String,
}

impl Reply {
    /// A reply `code text`.
    pub fn new(code: u16, text: impl Into<String>) -> Self {
        Reply {
            code,
            text: text.into(),
        }
    }

    /// `451 4.3.0 temporary failure (test target)`.
    pub fn temporary() -> Self {
        Reply::new(451, "4.3.0 temporary failure (test target)")
    }

    /// `550 5.1.1 rejected (test target)`.
    pub fn permanent() -> Self {
        Reply::new(550, "5.1.1 rejected (test target)")
    }

    pub(crate) fn line(&self) -> String {
        format!("{} {}\r\n", self.code, self.text)
    }
}

/// How the target answers; changeable at any time with
/// [`TestTarget::set_behaviour`]. Each decision reads the behaviour at the
/// moment it is made, so a change affects the next command of open sessions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Behaviour {
    /// A well-behaved server: accept everything.
    #[default]
    AcceptAll,
    /// Close new connections at once, without a greeting.
    DropConnection,
    /// Accept connections and never send anything (for timeouts).
    Stall,
    /// Greet with this reply (e.g. `421` or `554`) and close.
    RejectGreeting(Reply),
    /// Answer `MAIL FROM` with this reply.
    RejectMail(Reply),
    /// Answer every `RCPT TO` with this reply.
    RejectRcpt(Reply),
    /// Answer `RCPT TO` with `reply` for recipients whose address contains
    /// `matching` (case-insensitive); accept the others.
    RejectRcptMatching {
        /// Substring of the address, e.g. `bad@` or `@other.test`.
        matching: String,
        /// The reply for matching recipients.
        reply: Reply,
    },
    /// Read the whole message, then answer the final dot with this reply
    /// (nothing is stored).
    RejectData(Reply),
    /// Read and store the whole message (in the sink too), then close
    /// without answering the final dot: the "delivered but never
    /// acknowledged" case.
    DropAfterData,
    /// Answer `DATA` with `354`, then close at once without reading the
    /// message: a connection lost in the middle of the transfer (nothing
    /// is stored).
    DropDuringData,
    /// Store the whole message (it counts as accepted at once), then wait
    /// this long before answering the final dot with `250`: a window in
    /// which a test can break the relay's cluster after the target has the
    /// message and before the relay records it.
    DelayDataReply(std::time::Duration),
}

/// A message the target accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// 1-based order of acceptance across all sessions.
    pub seq: u64,
    /// The EHLO/HELO name the client gave.
    pub helo: String,
    /// The reverse path without angle brackets (empty for `<>`).
    pub mail_from: String,
    /// The MAIL FROM parameters as sent (`BODY=8BITMIME SMTPUTF8`).
    pub mail_params: String,
    /// The forward paths, without angle brackets, in RCPT order.
    pub rcpt_to: Vec<String>,
    /// The message exactly as transmitted, dot-unstuffed, up to and
    /// including the CRLF before the terminating `.`.
    pub data: Bytes,
    /// Whether the session had switched to TLS with STARTTLS.
    pub tls: bool,
    /// The client's address.
    pub peer: SocketAddr,
    /// When its `MAIL FROM` arrived.
    pub mail_at: Instant,
    /// When its final dot arrived (the target stored it then).
    pub received_at: Instant,
}

/// A transaction as the target saw it start: from an accepted `MAIL FROM`
/// until the reply to its final dot is sent (or `RSET`, a new `EHLO`, or
/// the connection ends); a rejected `MAIL FROM` is a transaction that ends
/// with its reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransactionStart {
    /// When its `MAIL FROM` arrived.
    pub at: Instant,
    /// Transactions open at that moment, itself included.
    pub concurrent: usize,
    /// Whether `MAIL FROM` was accepted.
    pub mail_accepted: bool,
}

/// How to start a target.
#[derive(Clone)]
pub struct TargetOptions {
    /// Where to listen; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The name in the greeting and EHLO reply.
    pub hostname: String,
    /// The behaviour at start.
    pub behaviour: Behaviour,
    /// Keep accepted messages in memory for [`TestTarget::messages`]
    /// (turn off for long-running demo targets).
    pub keep_messages: bool,
    /// Offer STARTTLS with a fresh self-signed certificate.
    pub starttls: bool,
    /// Largest message accepted, in octets (`552` above it).
    pub max_message_size: usize,
    /// Also hand every accepted message to this sink before answering `250`.
    pub sink: Option<Arc<dyn MessageSink>>,
}

impl fmt::Debug for TargetOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TargetOptions")
            .field("listen", &self.listen)
            .field("hostname", &self.hostname)
            .field("behaviour", &self.behaviour)
            .field("keep_messages", &self.keep_messages)
            .field("starttls", &self.starttls)
            .field("max_message_size", &self.max_message_size)
            .field("sink", &self.sink.as_ref().map(|_| "<sink>"))
            .finish()
    }
}

impl Default for TargetOptions {
    fn default() -> Self {
        TargetOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            hostname: "target.test".into(),
            behaviour: Behaviour::AcceptAll,
            keep_messages: true,
            starttls: false,
            max_message_size: 64 * 1024 * 1024,
            sink: None,
        }
    }
}

/// State shared by the accept loop, the sessions and the handle.
pub(crate) struct Shared {
    pub(crate) hostname: String,
    pub(crate) keep_messages: bool,
    pub(crate) max_message_size: usize,
    pub(crate) sink: Option<Arc<dyn MessageSink>>,
    pub(crate) tls: Option<TlsAcceptor>,
    pub(crate) shutdown: CancellationToken,
    behaviour: Mutex<Behaviour>,
    messages: Mutex<Vec<ReceivedMessage>>,
    accepted: watch::Sender<u64>,
    seq: AtomicU64,
    connections: AtomicUsize,
    /// Sessions being served right now.
    open: AtomicUsize,
    /// Transactions open right now, and every start.
    transactions: Mutex<Transactions>,
    /// Bumped by [`TestTarget::close_idle_connections`]: sessions opened
    /// before the bump close when they next wait for a command.
    pub(crate) close_idle: watch::Sender<u64>,
}

#[derive(Default)]
struct Transactions {
    open: usize,
    starts: Vec<TransactionStart>,
}

/// An open transaction; it ends when dropped.
pub(crate) struct OpenTransaction<'a>(&'a Shared, bool);

impl OpenTransaction<'_> {
    /// Whether its `MAIL FROM` was accepted.
    pub(crate) fn mail_accepted(&self) -> bool {
        self.1
    }
}

impl Drop for OpenTransaction<'_> {
    fn drop(&mut self) {
        let mut t = lock(&self.0.transactions);
        t.open = t.open.saturating_sub(1);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not hide what the target received.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn behaviour(&self) -> Behaviour {
        lock(&self.behaviour).clone()
    }

    pub(crate) fn connection_opened(&self) {
        self.connections.fetch_add(1, Ordering::SeqCst);
        self.open.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn connection_closed(&self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
    }

    /// Records a transaction starting now; it stays open until the
    /// returned guard is dropped.
    pub(crate) fn transaction_started(&self, mail_accepted: bool) -> OpenTransaction<'_> {
        let mut t = lock(&self.transactions);
        t.open += 1;
        let start = TransactionStart {
            at: Instant::now(),
            concurrent: t.open,
            mail_accepted,
        };
        t.starts.push(start);
        OpenTransaction(self, mail_accepted)
    }

    pub(crate) fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Records an accepted message and wakes waiters.
    pub(crate) fn record(&self, message: ReceivedMessage) {
        if self.keep_messages {
            lock(&self.messages).push(message);
        }
        self.accepted.send_modify(|n| *n += 1);
    }
}

/// A real SMTP server on loopback for tests. Stops when dropped (or with
/// [`TestTarget::shutdown`], which also waits for open sessions to end).
pub struct TestTarget {
    addr: SocketAddr,
    certificate_pem: Option<String>,
    shared: Arc<Shared>,
    accept_task: Option<JoinHandle<()>>,
    sessions: TaskTracker,
}

impl fmt::Debug for TestTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestTarget")
            .field("addr", &self.addr)
            .field("behaviour", &self.behaviour())
            .field("accepted", &self.accepted_count())
            .finish()
    }
}

impl TestTarget {
    /// Starts an accept-all target on `127.0.0.1:0`.
    pub async fn start() -> Result<TestTarget, TestkitError> {
        TestTarget::start_with(TargetOptions::default()).await
    }

    /// Starts a target with `options`.
    pub async fn start_with(options: TargetOptions) -> Result<TestTarget, TestkitError> {
        let listener =
            TcpListener::bind(options.listen)
                .await
                .map_err(|source| TestkitError::Bind {
                    addr: options.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| TestkitError::Bind {
            addr: options.listen,
            source,
        })?;
        let (tls, certificate_pem) = if options.starttls {
            let (acceptor, pem) = crate::tls::self_signed_acceptor(&options.hostname)?;
            (Some(acceptor), Some(pem))
        } else {
            (None, None)
        };
        let shared = Arc::new(Shared {
            hostname: options.hostname,
            keep_messages: options.keep_messages,
            max_message_size: options.max_message_size,
            sink: options.sink,
            tls,
            shutdown: CancellationToken::new(),
            behaviour: Mutex::new(options.behaviour),
            messages: Mutex::new(Vec::new()),
            accepted: watch::Sender::new(0),
            seq: AtomicU64::new(0),
            connections: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            transactions: Mutex::new(Transactions::default()),
            close_idle: watch::Sender::new(0),
        });
        let sessions = TaskTracker::new();
        let accept_task = tokio::spawn(accept_loop(listener, shared.clone(), sessions.clone()));
        Ok(TestTarget {
            addr,
            certificate_pem,
            shared,
            accept_task: Some(accept_task),
            sessions,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address as a route target (`127.0.0.1:PORT`).
    pub fn target(&self) -> String {
        self.addr.to_string()
    }

    /// The STARTTLS certificate in PEM, when `starttls` is on. It names
    /// the hostname, `localhost`, `127.0.0.1` and `::1`.
    pub fn certificate_pem(&self) -> Option<&str> {
        self.certificate_pem.as_deref()
    }

    /// Changes how the target answers from the next decision on.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *lock(&self.shared.behaviour) = behaviour;
    }

    /// The current behaviour.
    pub fn behaviour(&self) -> Behaviour {
        self.shared.behaviour()
    }

    /// Every message accepted so far (empty when `keep_messages` is off).
    pub fn messages(&self) -> Vec<ReceivedMessage> {
        lock(&self.shared.messages).clone()
    }

    /// How many messages were accepted (also counted when not kept).
    pub fn accepted_count(&self) -> u64 {
        *self.shared.accepted.borrow()
    }

    /// How many TCP connections were accepted.
    pub fn connection_count(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// How many connections are open right now.
    pub fn open_connection_count(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Every transaction start so far, in order, with how many
    /// transactions were open at that moment (for concurrency limits).
    pub fn transaction_starts(&self) -> Vec<TransactionStart> {
        lock(&self.shared.transactions).starts.clone()
    }

    /// The most transactions that were ever open at once.
    pub fn max_concurrent_transactions(&self) -> usize {
        lock(&self.shared.transactions)
            .starts
            .iter()
            .map(|s| s.concurrent)
            .max()
            .unwrap_or(0)
    }

    /// How many `MAIL FROM` commands were rejected so far.
    pub fn rejected_mail_count(&self) -> usize {
        lock(&self.shared.transactions)
            .starts
            .iter()
            .filter(|s| !s.mail_accepted)
            .count()
    }

    /// Closes, as a server's idle timeout would, every connection open
    /// now: at once if it is waiting for a command, otherwise as soon as
    /// its current command is answered. Later connections are not touched.
    pub fn close_idle_connections(&self) {
        self.shared.close_idle.send_modify(|g| *g += 1);
    }

    /// Forgets the messages kept so far (the accepted count stays).
    pub fn clear_messages(&self) {
        lock(&self.shared.messages).clear();
    }

    /// Waits until at least `n` messages were accepted in total and returns
    /// the kept messages.
    pub async fn wait_for_messages(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<ReceivedMessage>, WaitTimeout> {
        let mut accepted = self.shared.accepted.subscribe();
        let wanted = n as u64;
        match tokio::time::timeout(timeout, accepted.wait_for(|count| *count >= wanted)).await {
            Ok(Ok(_)) => Ok(self.messages()),
            // The sender lives in `shared`, which we hold: it cannot close.
            Ok(Err(_)) | Err(_) => Err(WaitTimeout::new(
                format!(
                    "{n} message(s) at {} (have {})",
                    self.addr,
                    self.accepted_count()
                ),
                timeout,
            )),
        }
    }

    /// Stops listening, ends open sessions and waits for them.
    ///
    /// Returns every message kept, read after the last session ended: a
    /// message accepted while the target was shutting down is in it.
    pub async fn shutdown(mut self) -> Vec<ReceivedMessage> {
        self.shared.shutdown.cancel();
        if let Some(task) = self.accept_task.take() {
            let _ = task.await;
        }
        self.sessions.close();
        self.sessions.wait().await;
        self.messages()
    }
}

impl Drop for TestTarget {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, sessions: TaskTracker) {
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                shared.connection_opened();
                sessions.spawn(session::serve(stream, peer, shared.clone()));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off briefly
                // instead of spinning; the target keeps serving.
                eprintln!("test target: accept failed: {e}");
                tokio::select! {
                    _ = shared.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        }
    }
}
