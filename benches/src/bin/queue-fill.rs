//! `queue-fill`: fills a running cluster's queue with N deferred messages,
//! fast, through the real Raft path, for the "1 M queued" benchmark.
//!
//! Each gRPC `Submit` to the leader carries one `Command::Batch`: per
//! message an `Enqueue` (a ~`--size` octet message with a `Received:`
//! header, as a node would store it; UUIDv7 id from
//! `MessageId::generate`, like relayd; owner = accepting node, round robin
//! over the members) followed by that owner's `Attempt` deferring it
//! ("451 4.3.0 bench: target down", next attempt in `--defer`). Both apply
//! in the same atomic write, so the queue looks like N messages whose
//! target is down: held by their owners, nothing due during a measurement,
//! the due index full of future entries. `--in-flight` Submits run at
//! once; a follower's "not the leader" answer is followed to the leader.
//!
//! Entry size and flow control: the leader may run ahead of one follower
//! (a quorum needs only the other), and with openraft 0.9 a follower far
//! behind may never catch up: its AppendEntries carry up to
//! `max_payload_entries` (256) entries and time out at the 100 ms
//! heartbeat (openraft's replication TTL), again and again, until the next
//! snapshot; meanwhile it hears no heartbeats and calls elections. Seen
//! with 512-message batches (~0.7 MB entries). `--max-lag` holds new
//! Submits while any member's log is more than that many entries behind
//! the leader's (0: no limit), and a smaller `--batch` keeps entries near
//! what the write batcher builds (benches/relay-vs-postfix.sh uses 32).
//!
//! Every command's result is checked (`Enqueued` / `Applied`; on a
//! resubmitted batch an Enqueue may also come back `Duplicate`); anything
//! else stops the fill with an error. Progress goes to stderr; the last
//! line on stdout is `filled=N seconds=S msgs_per_s=R all_applied_s=A
//! waited_s=W`: S is until the leader answered the last Submit (committed
//! and applied there), A until every member had applied the whole log, W
//! the time spent waiting for followers (flow control).
//!
//! Example, against the local cluster (its secret by default):
//! `queue-fill --count 1000000`

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use relay_proto::raft::raft_service_client::RaftServiceClient;
use relay_proto::raft::{NodeStatusRequest, SubmitRequest};
use relay_smtp::received::{Trace, received_header};
use relay_types::{
    AttemptOutcome, Command, CommandResult, Enqueue, Envelope, MAX_BATCH_COMMANDS, MessageId,
    MessageInfo, NodeId, Recipient, RecipientOutcome, Rejection, UnixMillis,
};
use tokio::task::JoinSet;
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::transport::Channel;

#[derive(Debug, Parser)]
#[command(name = "queue-fill")]
struct Args {
    /// The members' Raft gRPC addresses (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103"
    )]
    raft: Vec<String>,
    /// Messages to queue.
    #[arg(long, default_value_t = 1_000_000)]
    count: usize,
    /// Messages per Submit (two commands each: Enqueue + Attempt).
    #[arg(long, default_value_t = MAX_BATCH_COMMANDS / 2)]
    batch: usize,
    /// Submits in flight at once.
    #[arg(long, default_value_t = 4)]
    in_flight: usize,
    /// Send no more while a member's log is this many entries behind the
    /// leader's (0: no limit). See the crate doc: a follower far behind
    /// may never catch up by AppendEntries.
    #[arg(long, default_value_t = 8)]
    max_lag: u64,
    /// Stored message size in octets, `Received:` header included.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Envelope recipient (the local cluster's default route is the sink).
    #[arg(long, default_value = "rcpt@dest.test")]
    to: String,
    /// Next attempt this far from now, in seconds.
    #[arg(long, default_value_t = 2 * 3600)]
    defer: u64,
    /// Queue lifetime (expires_at = now + this), in seconds.
    #[arg(long, default_value_t = 5 * 86_400)]
    lifetime: u64,
    /// The cluster's `cluster.secret` (the local development cluster's by
    /// default).
    #[arg(
        long,
        env = "QR_CLUSTER_SECRET",
        default_value = "dev-cluster-secret-change-me"
    )]
    secret: String,
}

/// Adds `authorization: Bearer <secret>` to every call.
#[derive(Clone)]
struct Bearer(MetadataValue<tonic::metadata::Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        r.metadata_mut().insert("authorization", self.0.clone());
        Ok(r)
    }
}

type Client = RaftServiceClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>>;

/// Largest request the nodes accept (relay_cluster's `MAX_GRPC_MESSAGE`).
const MAX_GRPC_MESSAGE: usize = 64 * 1024 * 1024;
/// How long one Submit may take before it counts as failed.
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(60);
/// Tries per batch (leader changes, restarts) before giving up.
const TRIES: usize = 10;

/// The members by node id, and which one leads.
struct Cluster {
    clients: BTreeMap<NodeId, Client>,
    /// The leader last seen (0 before the first look).
    leader: AtomicU64,
}

impl Cluster {
    async fn connect(addrs: &[String], bearer: Bearer) -> anyhow::Result<Cluster> {
        let mut clients = BTreeMap::new();
        for addr in addrs {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
                .connect_timeout(Duration::from_secs(5))
                .connect()
                .await
                .with_context(|| format!("cannot connect to {addr}"))?;
            let mut client = RaftServiceClient::with_interceptor(channel, bearer.clone())
                .max_decoding_message_size(MAX_GRPC_MESSAGE)
                .max_encoding_message_size(MAX_GRPC_MESSAGE);
            let status = client
                .node_status(NodeStatusRequest { with_digest: false })
                .await
                .with_context(|| format!("NodeStatus from {addr}"))?
                .into_inner();
            clients.insert(status.id, client);
        }
        Ok(Cluster {
            clients,
            leader: AtomicU64::new(0),
        })
    }

    /// The leader last seen, asking the members when none is known yet.
    async fn leader(&self) -> anyhow::Result<NodeId> {
        match self.leader.load(Ordering::Relaxed) {
            0 => self.find_leader().await,
            known => Ok(known),
        }
    }

    fn set_leader(&self, leader: NodeId) {
        self.leader.store(leader, Ordering::Relaxed);
    }

    /// The leader as the members see it now, waiting up to 30 s for one.
    async fn find_leader(&self) -> anyhow::Result<NodeId> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            for client in self.clients.values() {
                let mut client = client.clone();
                if let Ok(reply) = client
                    .node_status(NodeStatusRequest { with_digest: false })
                    .await
                    && let Some(leader) = reply.into_inner().leader
                    && self.clients.contains_key(&leader)
                {
                    self.set_leader(leader);
                    return Ok(leader);
                }
            }
            if Instant::now() > deadline {
                bail!("no leader among nodes {:?} within 30 s", self.node_ids());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until every member has applied its whole log up to the
    /// leader's last index (followers apply after the leader answers);
    /// a member that does not answer is reported and skipped.
    async fn wait_applied(&self, deadline: Duration) -> anyhow::Result<()> {
        let leader = self.find_leader().await?;
        let target = self.clients[&leader]
            .clone()
            .node_status(NodeStatusRequest { with_digest: false })
            .await?
            .into_inner()
            .last_log_index;
        let give_up = Instant::now() + deadline;
        for (id, client) in &self.clients {
            loop {
                let applied = match client
                    .clone()
                    .node_status(NodeStatusRequest { with_digest: false })
                    .await
                {
                    Ok(status) => status.into_inner().applied_index,
                    Err(e) => {
                        eprintln!(
                            "queue-fill: node {id} does not answer ({}); not waiting for it",
                            e.message()
                        );
                        break;
                    }
                };
                if applied >= target {
                    break;
                }
                if Instant::now() > give_up {
                    bail!("node {id} applied {applied} of {target} within {deadline:?}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// Waits while the slowest reachable member's log is more than
    /// `max_lag` entries behind the leader's; returns how long it waited.
    /// A member that does not answer is left out (it catches up, or not,
    /// after the fill; a quorum is what the Submits need).
    async fn wait_for_followers(&self, max_lag: u64) -> anyhow::Result<Duration> {
        let started = Instant::now();
        loop {
            let mut last = Vec::with_capacity(self.clients.len());
            for client in self.clients.values() {
                let mut request = tonic::Request::new(NodeStatusRequest { with_digest: false });
                request.set_timeout(Duration::from_secs(1));
                if let Ok(status) = client.clone().node_status(request).await {
                    last.push(status.into_inner().last_log_index);
                }
            }
            let (lo, hi) = (last.iter().min(), last.iter().max());
            if let (Some(lo), Some(hi)) = (lo, hi)
                && hi - lo <= max_lag
            {
                return Ok(started.elapsed());
            }
            if started.elapsed() > Duration::from_secs(300) {
                bail!(
                    "a member stayed more than {max_lag} entries behind for 300 s (logs: {last:?})"
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn node_ids(&self) -> Vec<NodeId> {
        self.clients.keys().copied().collect()
    }
}

/// Builds the encoded batches, one per Submit.
struct Generator {
    owners: Vec<NodeId>,
    size: usize,
    to: String,
    defer_ms: u64,
    lifetime_ms: u64,
    made: usize,
}

impl Generator {
    /// One message: its `Enqueue` and the owner's deferring `Attempt`.
    fn message(&mut self, now: UnixMillis) -> [Command; 2] {
        let owner = self.owners[self.made % self.owners.len()];
        self.made += 1;
        let id = MessageId::generate();
        let hostname = format!("relay{owner}.local");
        let mut body = received_header(&Trace {
            helo: "bench.test",
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            hostname: &hostname,
            protocol: "ESMTP",
            id,
            recipient: Some(&self.to),
            at: now,
        });
        let message_id = format!("<{id}@queue-fill.bench.test>");
        let subject = format!("queue-fill {}", self.made);
        body.push_str(&format!(
            "From: <bench@load.test>\r\nTo: <{}>\r\nSubject: {subject}\r\nMessage-ID: {message_id}\r\nDate: {}\r\n\r\n",
            self.to,
            now.rfc5322()
        ));
        while body.len() < self.size {
            body.push_str("0123456789012345678901234567890123456789012345678901234567890123\r\n");
        }
        let body = Bytes::from(body);
        let enqueue = Enqueue {
            id,
            received_at: now,
            accepted_by: owner,
            owner,
            envelope: Envelope {
                reverse_path: "bench@load.test".into(),
                recipients: vec![Recipient::new(self.to.clone())],
                helo: "bench.test".into(),
                client_addr: "127.0.0.1:40000".into(),
                ..Envelope::default()
            },
            info: MessageInfo {
                message_id_header: Some(message_id),
                subject: Some(subject),
                size: body.len() as u64,
            },
            checksum: relay_queue::body_checksum(&body),
            expires_at: now.plus_millis(self.lifetime_ms),
            body,
        };
        let attempt = Command::Attempt {
            id,
            by: owner,
            at: now,
            target: "127.0.0.1:2600".into(),
            outcomes: vec![RecipientOutcome {
                index: 0,
                outcome: AttemptOutcome::Deferred,
                reply: "451 4.3.0 bench: target down".into(),
            }],
            next_attempt_at: now.plus_millis(self.defer_ms),
            dsn: None,
        };
        [Command::Enqueue(Box::new(enqueue)), attempt]
    }

    /// The next batch of up to `n` messages, encoded, with its message count.
    fn batch(&mut self, n: usize) -> (Vec<u8>, usize) {
        let now = UnixMillis::now();
        let commands: Vec<Command> = (0..n).flat_map(|_| self.message(now)).collect();
        (relay_types::encode(&Command::Batch(commands)), n)
    }
}

/// Submits one batch to the leader, following leader changes; returns how
/// many Enqueues came back `Duplicate` on a resubmission.
async fn submit(cluster: &Cluster, bytes: Vec<u8>, messages: usize) -> anyhow::Result<usize> {
    let mut leader = cluster.leader().await?;
    let mut last_error = String::new();
    for attempt in 0..TRIES {
        let mut client = cluster.clients[&leader].clone();
        let mut request = tonic::Request::new(SubmitRequest {
            command: bytes.clone(),
        });
        request.set_timeout(SUBMIT_TIMEOUT);
        match client.submit(request).await {
            Ok(reply) => {
                let result: CommandResult = relay_types::decode(&reply.into_inner().result)
                    .context("cannot decode the SubmitReply")?;
                return check(&result, messages, attempt > 0);
            }
            Err(status) => {
                last_error = format!("node {leader}: {:?} {}", status.code(), status.message());
                let named = status
                    .metadata()
                    .get("x-leader-id")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<NodeId>().ok())
                    .filter(|id| cluster.clients.contains_key(id));
                match (status.code(), named) {
                    (Code::FailedPrecondition, Some(named)) => {
                        leader = named;
                        cluster.set_leader(named);
                    }
                    (
                        Code::FailedPrecondition
                        | Code::Unavailable
                        | Code::DeadlineExceeded
                        | Code::Unknown
                        | Code::Cancelled,
                        _,
                    ) => {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        leader = cluster.find_leader().await?;
                    }
                    _ => bail!("Submit refused: {last_error}"),
                }
            }
        }
    }
    bail!("Submit failed {TRIES} times; last: {last_error}")
}

/// Every command must have applied: Enqueued then Applied per message.
fn check(result: &CommandResult, messages: usize, resubmitted: bool) -> anyhow::Result<usize> {
    let CommandResult::Batch(items) = result else {
        bail!("expected a batch result, got {result:?}");
    };
    if items.len() != 2 * messages {
        bail!(
            "batch of {} commands got {} results",
            2 * messages,
            items.len()
        );
    }
    let mut duplicates = 0;
    for pair in items.chunks(2) {
        match &pair[0] {
            CommandResult::Enqueued(_) => {}
            CommandResult::Rejected(Rejection::Duplicate(_)) if resubmitted => duplicates += 1,
            other => bail!("Enqueue not applied: {other:?}"),
        }
        match &pair[1] {
            CommandResult::Applied { .. } => {}
            other => bail!("Attempt not applied: {other:?}"),
        }
    }
    Ok(duplicates)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.batch == 0 || 2 * args.batch > MAX_BATCH_COMMANDS {
        bail!(
            "--batch must be 1..={} (two commands per message, at most {MAX_BATCH_COMMANDS} per batch)",
            MAX_BATCH_COMMANDS / 2
        );
    }
    if args.in_flight == 0 || args.raft.is_empty() {
        bail!("need --raft addresses and --in-flight >= 1");
    }
    let bearer = Bearer(
        format!("Bearer {}", args.secret)
            .parse()
            .context("the secret is not a valid header value")?,
    );
    let cluster = Cluster::connect(&args.raft, bearer).await?;
    let leader = cluster.leader().await?;
    eprintln!(
        "queue-fill: {} messages of {} octets to nodes {:?} (leader {leader}), {} per Submit, {} in flight",
        args.count,
        args.size,
        cluster.node_ids(),
        args.batch,
        args.in_flight
    );
    let cluster = Arc::new(cluster);

    // Batches are built on a blocking thread (SHA-256 and encoding are the
    // CPU work here) a few ahead of the Submits.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Vec<u8>, usize)>(args.in_flight);
    let mut generator = Generator {
        owners: cluster.node_ids(),
        size: args.size,
        to: args.to.clone(),
        defer_ms: args.defer * 1000,
        lifetime_ms: args.lifetime * 1000,
        made: 0,
    };
    let (count, batch) = (args.count, args.batch);
    let producer = tokio::task::spawn_blocking(move || {
        let mut left = count;
        while left > 0 {
            let n = left.min(batch);
            left -= n;
            if tx.blocking_send(generator.batch(n)).is_err() {
                break;
            }
        }
    });

    let started = Instant::now();
    let mut tasks: JoinSet<anyhow::Result<(usize, usize)>> = JoinSet::new();
    let (mut filled, mut duplicates, mut reported) = (0usize, 0usize, 0usize);
    let mut held_back = Duration::ZERO;
    let step = (args.count / 20).max(1);
    let mut more = true;
    while more || !tasks.is_empty() {
        while more && tasks.len() < args.in_flight {
            if args.max_lag > 0 {
                held_back += cluster.wait_for_followers(args.max_lag).await?;
            }
            match rx.recv().await {
                Some((bytes, n)) => {
                    let cluster = cluster.clone();
                    tasks.spawn(async move { Ok((n, submit(&cluster, bytes, n).await?)) });
                }
                None => more = false,
            }
        }
        if let Some(done) = tasks.join_next().await {
            let (n, d) = done.context("a submit task panicked")??;
            filled += n;
            duplicates += d;
            if filled >= reported + step || filled == args.count {
                reported = filled;
                let secs = started.elapsed().as_secs_f64();
                eprintln!(
                    "queue-fill: {filled}/{} after {secs:.1} s ({:.0} msgs/s; {:.1} s waiting for followers)",
                    args.count,
                    filled as f64 / secs,
                    held_back.as_secs_f64()
                );
            }
        }
    }
    producer.await.context("the batch builder panicked")?;
    let secs = started.elapsed().as_secs_f64();
    if duplicates > 0 {
        eprintln!("queue-fill: {duplicates} enqueues were already committed by an earlier try");
    }
    cluster.wait_applied(Duration::from_secs(600)).await?;
    let all_applied = started.elapsed().as_secs_f64();
    println!(
        "filled={filled} seconds={secs:.1} msgs_per_s={:.0} all_applied_s={all_applied:.1} waited_s={:.1}",
        filled as f64 / secs,
        held_back.as_secs_f64()
    );
    Ok(())
}
