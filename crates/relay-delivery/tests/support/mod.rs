//! A one-node "cluster" for delivery tests: the real state machine
//! (`MemQueue`) behind the `DeliveryStore` and `Proposer` traits, with
//! switches for proposal failures, slow proposals and replica lag.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use relay_delivery::{DeliveryConfig, DeliveryLoop, DeliveryStore, ProposeError, Proposer};
use relay_queue::{MemQueue, QueueRead, RetryPolicy, body_checksum};
use relay_types::{
    Command, CommandResult, Enqueue, Envelope, MessageId, MessageInfo, MessageRecord, NodeId,
    Recipient, Route, TlsPolicy, UnixMillis,
};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const NODE: NodeId = 1;
pub const WAIT: Duration = Duration::from_secs(20);

pub struct FakeCluster {
    queue: Mutex<MemQueue>,
    index: Mutex<u64>,
    applied: watch::Sender<u64>,
    /// Every command that committed, in order.
    committed: Mutex<Vec<(Command, CommandResult)>>,
    /// Calls to `propose`, committed or not.
    pub propose_calls: AtomicUsize,
    /// Calls to `due`.
    pub due_calls: AtomicUsize,
    /// Errors returned by the next proposals.
    failures: Mutex<VecDeque<ProposeError>>,
    /// When set, proposals wait for a permit (slow commit).
    gate: Mutex<Option<Arc<Semaphore>>>,
    /// When set, committed entries reach the local replica only on
    /// `catch_up` (a follower behind the leader).
    lagging: Mutex<Option<Vec<Command>>>,
    /// The start lease `may_start_session` answers.
    lease: AtomicBool,
    /// This node's pending reports (kept across delivery loops, as the
    /// store keeps them across restarts).
    pending: Mutex<std::collections::BTreeMap<MessageId, Command>>,
}

impl FakeCluster {
    pub fn new() -> Arc<Self> {
        Arc::new(FakeCluster {
            queue: Mutex::new(MemQueue::default()),
            index: Mutex::new(0),
            applied: watch::Sender::new(0),
            committed: Mutex::new(Vec::new()),
            propose_calls: AtomicUsize::new(0),
            due_calls: AtomicUsize::new(0),
            failures: Mutex::new(VecDeque::new()),
            gate: Mutex::new(None),
            lagging: Mutex::new(None),
            lease: AtomicBool::new(true),
            pending: Mutex::new(Default::default()),
        })
    }

    fn apply_local(&self, command: &Command) -> CommandResult {
        let mut index = self.index.lock().unwrap();
        *index += 1;
        let result = self.queue.lock().unwrap().apply(*index, command);
        self.applied.send_replace(*index);
        result
    }

    /// Applies a command directly (setup: routes, enqueues).
    pub fn setup(&self, command: Command) -> CommandResult {
        let result = self.apply_local(&command);
        assert!(
            !matches!(result, CommandResult::Rejected(_)),
            "setup command rejected: {result:?}"
        );
        result
    }

    pub fn set_route(&self, domain: &str, targets: Vec<String>, tls: TlsPolicy) {
        self.setup(Command::SetRoute {
            domain: domain.into(),
            route: Route::new(targets, tls),
        });
    }

    pub fn enqueue(&self, enqueue: Enqueue) -> MessageId {
        let id = enqueue.id;
        self.setup(Command::Enqueue(Box::new(enqueue)));
        id
    }

    pub fn fail_next(&self, errors: impl IntoIterator<Item = ProposeError>) {
        self.failures.lock().unwrap().extend(errors);
    }

    pub fn hold_proposals(&self) -> Arc<Semaphore> {
        let gate = Arc::new(Semaphore::new(0));
        *self.gate.lock().unwrap() = Some(gate.clone());
        gate
    }

    /// Grants or withdraws this node's start lease.
    pub fn set_lease(&self, held: bool) {
        self.lease.store(held, Ordering::SeqCst);
    }

    /// Applies a command as if another node had proposed it (a takeover,
    /// an admin action), with its own log index.
    pub fn commit_from_elsewhere(&self, command: Command) -> CommandResult {
        self.apply_local(&command)
    }

    pub fn start_lagging(&self) {
        *self.lagging.lock().unwrap() = Some(Vec::new());
    }

    /// Applies the entries the lagging replica missed and stops lagging.
    pub fn catch_up(&self) {
        let missed = self.lagging.lock().unwrap().take().unwrap_or_default();
        for command in missed {
            self.apply_local(&command);
        }
    }

    pub fn committed(&self) -> Vec<(Command, CommandResult)> {
        self.committed.lock().unwrap().clone()
    }

    pub fn committed_commands(&self) -> Vec<Command> {
        self.committed().into_iter().map(|(c, _)| c).collect()
    }

    pub fn record(&self, id: &MessageId) -> Option<MessageRecord> {
        self.queue.lock().unwrap().message(id).unwrap()
    }

    /// A message's replicated trace.
    pub fn trace(&self, id: &MessageId) -> Vec<relay_types::TraceEvent> {
        self.queue.lock().unwrap().trace(id)
    }

    pub fn queued(&self) -> Vec<MessageRecord> {
        self.queue
            .lock()
            .unwrap()
            .select(&Default::default())
            .unwrap()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }
}

impl DeliveryStore for FakeCluster {
    type Error = Infallible;

    fn due(
        &self,
        owner: NodeId,
        now: UnixMillis,
        limit: usize,
    ) -> Result<Vec<MessageRecord>, Infallible> {
        self.due_calls.fetch_add(1, Ordering::SeqCst);
        Ok(self.queue.lock().unwrap().due(owner, now, limit))
    }

    fn body(&self, id: &MessageId) -> Result<Option<Bytes>, Infallible> {
        Ok(self.queue.lock().unwrap().body(id).cloned())
    }

    fn route(&self, domain: &str) -> Result<Option<Route>, Infallible> {
        self.queue.lock().unwrap().route(domain)
    }

    fn save_pending_report(&self, id: &MessageId, report: &Command) -> Result<(), Infallible> {
        self.pending.lock().unwrap().insert(*id, report.clone());
        Ok(())
    }

    fn clear_pending_report(&self, id: &MessageId) -> Result<(), Infallible> {
        self.pending.lock().unwrap().remove(id);
        Ok(())
    }

    fn pending_reports(&self) -> Result<Vec<(MessageId, Command)>, Infallible> {
        Ok(self
            .pending
            .lock()
            .unwrap()
            .iter()
            .map(|(id, c)| (*id, c.clone()))
            .collect())
    }
}

impl Proposer for FakeCluster {
    async fn propose(&self, command: Command) -> Result<CommandResult, ProposeError> {
        self.propose_calls.fetch_add(1, Ordering::SeqCst);
        let gate = self.gate.lock().unwrap().clone();
        if let Some(gate) = gate {
            gate.acquire().await.expect("gate open").forget();
        }
        if let Some(error) = self.failures.lock().unwrap().pop_front() {
            return Err(error);
        }
        let lagging = self.lagging.lock().unwrap().is_some();
        let result = if lagging {
            // What the leader's replica answers; ours applies it later.
            let mut leader_view = self.queue.lock().unwrap().clone();
            let result = leader_view.apply(u64::MAX, &command);
            if let Some(missed) = self.lagging.lock().unwrap().as_mut() {
                missed.push(command.clone());
            }
            result
        } else {
            self.apply_local(&command)
        };
        self.committed
            .lock()
            .unwrap()
            .push((command, result.clone()));
        Ok(result)
    }

    fn may_start_session(&self) -> bool {
        self.lease.load(Ordering::SeqCst)
    }
}

/// A message from `sender` to `recipients` with `body`, owned by `NODE`.
pub fn message(sender: &str, recipients: &[&str], body: &str) -> Enqueue {
    let body = Bytes::from(body.to_string());
    let now = UnixMillis::now();
    Enqueue {
        id: MessageId::generate(),
        received_at: now,
        accepted_by: NODE,
        owner: NODE,
        envelope: Envelope {
            reverse_path: sender.into(),
            recipients: recipients.iter().map(|r| Recipient::new(*r)).collect(),
            ..Default::default()
        },
        info: MessageInfo::default(),
        checksum: body_checksum(&body),
        expires_at: now.plus_millis(86_400_000),
        body,
    }
}

pub const BODY: &str = "Received: from client.test by relay1.test\r\n\
Subject: hello\r\n\
Message-ID: <1@client.test>\r\n\
\r\n\
line one\r\n\
.leading dot stays\r\n\
\r\n\
last line\r\n";

pub fn config() -> DeliveryConfig {
    DeliveryConfig {
        node_id: NODE,
        hostname: "relay1.test".into(),
        retry: RetryPolicy {
            min_backoff_ms: 600_000,
            max_backoff_ms: 3_600_000,
            queue_lifetime_ms: 86_400_000,
        },
        poll_interval: Duration::from_millis(20),
        connect_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(5),
        data_timeout: Duration::from_secs(5),
        ..DeliveryConfig::default()
    }
}

/// A running delivery loop.
pub struct Running {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    pub fn start(cluster: &Arc<FakeCluster>, config: DeliveryConfig) -> Running {
        let delivery = DeliveryLoop::new(config, cluster.clone(), cluster.clone());
        let wake = cluster.subscribe();
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move { delivery.run(wake, token).await });
        Running { stop, task }
    }

    /// The process dies: the loop's task is aborted, nothing more is
    /// written (what the store holds stays, as on a disk).
    pub async fn crash(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// Cancels and waits for the loop to return.
    pub async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("delivery loop stops")
            .expect("delivery loop did not panic");
    }
}

/// The single committed report for `id`.
pub fn reports_for(cluster: &FakeCluster, id: MessageId) -> Vec<Command> {
    cluster
        .committed_commands()
        .into_iter()
        .filter(|c| match c {
            Command::Attempt { id: a, .. } | Command::Delivered { id: a, .. } => *a == id,
            _ => false,
        })
        .collect()
}
