//! `Cluster`: one node's Raft, started, bootstrapped and used to propose.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, RaftMetrics, ServerState};
use relay_proto::raft::raft_service_server::RaftServiceServer;
use relay_proto::raft::{NodeStatusReply, NodeStatusRequest, QueueCounts, SubmitRequest};
use relay_store::{LogStore, StateMachine, StoreError};
use relay_types::{Command, CommandResult, NodeId, decode, encode};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::Raft;
use crate::batcher::{BatchWriteError, WriteBatcher};
use crate::channels::{Channels, LinkFaults, MAX_GRPC_MESSAGE};
use crate::config::ClusterConfig;
use crate::error::{ClusterError, ProposeError};
use crate::maintenance::NodeActivity;
use crate::network::GrpcNetworkFactory;
use crate::ownership::{LeaderContact, QuorumAcks};
use crate::probe::TargetProber;
use crate::service::RaftGrpc;
use crate::supervise::Failure;
use crate::view::{RaftView, Role, ViewWatch};

/// How long a status query waits for a peer.
const PEER_STATUS_TIMEOUT: Duration = Duration::from_millis(800);

/// One node's consensus handle.
pub struct Cluster {
    pub(crate) config: ClusterConfig,
    raft: Raft,
    /// Group commit of message commands on the leader.
    batcher: WriteBatcher,
    store: StateMachine,
    channels: Channels,
    shutdown: CancellationToken,
    contact: LeaderContact,
    /// Accepted AppendEntries send times: the leader's quorum lease.
    acks: Arc<QuorumAcks>,
    /// SMTP connect tests for drills, provided by the node after start
    /// (this crate never speaks SMTP itself).
    prober: OnceLock<Arc<dyn TargetProber>>,
    /// Open SMTP sessions and busy deliveries, provided by the node (see
    /// `maintenance`).
    activity: OnceLock<Arc<dyn NodeActivity>>,
    /// When the leader's log grew, for lag in seconds (see `lag`).
    pub(crate) log_clock: Arc<crate::lag::LogClock>,
    /// Bumped by every leadership pause/resume, so only the latest pause's
    /// timer resumes elections (see `leadership`).
    pub(crate) election_pause: AtomicU64,
    /// True while a leadership transfer pauses this node: as leader it
    /// holds new writes, so its followers stop hearing from it and can
    /// vote for the transfer's target (see `leadership`).
    pub(crate) writes_paused: watch::Sender<bool>,
    /// The tasks this cluster spawned.
    tasks: TaskTracker,
    /// Set when one of this crate's tasks ends early (see `supervise`).
    failure: Failure,
}

// Manual: `openraft::Raft` is not `Debug`.
impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.config.node_id)
            .finish_non_exhaustive()
    }
}

/// One member as seen by a status query.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberStatus {
    /// Node id.
    pub id: NodeId,
    /// Raft gRPC address.
    pub addr: String,
    /// Voter (true) or learner.
    pub voter: bool,
    /// Answered the status query.
    pub reachable: bool,
    /// Its own view of its role (`unreachable` if it did not answer).
    pub role: String,
    /// Its last applied index.
    pub applied: u64,
    /// Leader's last log index minus `applied` (0 when unknown).
    pub lag: u64,
    /// Age of the oldest entry it lacks, as the leader measures it (see
    /// `lag`); `None` when the leader did not answer.
    pub lag_millis: Option<u64>,
    /// Its reply, when it answered.
    pub reply: Option<NodeStatusReply>,
}

/// The cluster as seen from this node.
#[derive(Clone, Debug)]
pub struct ClusterStatus {
    /// The leader this node knows of.
    pub leader: Option<NodeId>,
    /// This node's current term.
    pub term: u64,
    /// Every member, voters first, by id.
    pub members: Vec<MemberStatus>,
    /// Queue counts from this node's replica.
    pub queue: relay_types::QueueCounts,
}

impl Cluster {
    /// Starts Raft on the store, serves the Raft gRPC service on
    /// `config.listen`, and initialises a new cluster if this is the
    /// bootstrap node of a cluster that does not exist yet. Returns the
    /// handle and whether this call initialised the cluster (the caller
    /// seeds initial state then).
    pub async fn start(
        config: ClusterConfig,
        log_store: LogStore,
        state_machine: StateMachine,
        shutdown: CancellationToken,
    ) -> Result<(Arc<Cluster>, bool), ClusterError> {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| ClusterError::Bind {
                addr: config.listen,
                source,
            })?;
        Self::start_with(listener, config, log_store, state_machine, shutdown, None).await
    }

    /// [`Cluster::start`] on a listener the caller bound (port 0 in tests),
    /// with optional [`LinkFaults`] (in-process cluster tests cut links with
    /// it). Every task it spawns is tracked; [`Cluster::shutdown`] waits
    /// for them. A failing Raft gRPC server cancels `shutdown`, which stops
    /// the node: a node its peers cannot reach must not keep serving SMTP.
    pub async fn start_with(
        listener: tokio::net::TcpListener,
        config: ClusterConfig,
        log_store: LogStore,
        state_machine: StateMachine,
        shutdown: CancellationToken,
        faults: Option<Arc<LinkFaults>>,
    ) -> Result<(Arc<Cluster>, bool), ClusterError> {
        let raft_config = Arc::new(config.raft_config()?);
        let secret = config.secret.clone();
        let channels = Channels::new(config.node_id, secret.clone(), config.tls.clone(), faults)
            .with_source_address(config.source_address);
        let acks = Arc::new(QuorumAcks::default());
        let network = GrpcNetworkFactory::new(config.node_id, channels.clone(), acks.clone());
        let raft = Raft::new(
            config.node_id,
            raft_config,
            network,
            log_store,
            state_machine.clone(),
        )
        .await
        .map_err(|e| ClusterError::Start(e.to_string()))?;

        let writes_paused = watch::Sender::new(false);
        let (batcher, batcher_task) = WriteBatcher::start(
            raft.clone(),
            config.submit_timeout + crate::batcher::STRANDED_MARGIN,
            writes_paused.subscribe(),
            shutdown.clone(),
        );
        let cluster = Arc::new(Cluster {
            config,
            raft,
            batcher,
            store: state_machine,
            channels,
            shutdown: shutdown.clone(),
            contact: LeaderContact::default(),
            acks,
            prober: OnceLock::new(),
            activity: OnceLock::new(),
            log_clock: Arc::default(),
            election_pause: AtomicU64::new(0),
            writes_paused,
            tasks: TaskTracker::new(),
            failure: Failure::default(),
        });
        crate::supervise::critical(
            "the group-commit batcher",
            batcher_task,
            shutdown.clone(),
            cluster.failure.clone(),
        );

        let service = tonic::service::interceptor::InterceptedService::new(
            RaftServiceServer::new(RaftGrpc::new(cluster.clone()))
                .max_decoding_message_size(MAX_GRPC_MESSAGE)
                .max_encoding_message_size(MAX_GRPC_MESSAGE),
            crate::secret::RequireClusterSecret {
                secret,
                peers: cluster.config.tls.is_some().then(|| cluster.clone()),
            },
        );
        let server_shutdown = shutdown.clone();
        let server_failure = cluster.failure.clone();
        let tls = cluster.config.tls.clone();
        let server = tokio::spawn(async move {
            let server = tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .add_service(service);
            let result = match tls {
                // mTLS: the handshake happens in `tls_incoming`; plaintext
                // and foreign certificates never reach the service.
                Some(tls) => {
                    let incoming = crate::tls::tls_incoming(
                        listener,
                        tls.server().clone(),
                        server_shutdown.clone(),
                        "raft",
                    );
                    server
                        .serve_with_incoming_shutdown(incoming, server_shutdown.cancelled())
                        .await
                }
                None => {
                    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                    server
                        .serve_with_incoming_shutdown(incoming, server_shutdown.cancelled())
                        .await
                }
            };
            if let Err(e) = result {
                server_failure.fail(format!("the raft gRPC server failed: {e}"));
            }
        });
        crate::supervise::critical(
            "the raft gRPC server",
            server,
            shutdown.clone(),
            cluster.failure.clone(),
        );

        // A drained node stands for no election and hands leadership on.
        cluster.tasks.spawn(crate::maintenance::run_drain_watch(
            cluster.clone(),
            shutdown.clone(),
        ));

        cluster
            .tasks
            .spawn(crate::lag::run_log_clock(cluster.clone(), shutdown.clone()));

        cluster.tasks.spawn(publish_voters(
            cluster.raft.metrics(),
            cluster.acks.clone(),
            shutdown.clone(),
        ));

        let purger = tokio::spawn(crate::purge::run_log_purger(
            cluster.raft.clone(),
            cluster.config.purge_interval,
            shutdown.clone(),
        ));
        crate::supervise::critical(
            "the log purger",
            purger,
            shutdown.clone(),
            cluster.failure.clone(),
        );

        let initialised = cluster.bootstrap_if_needed().await?;
        Ok((cluster, initialised))
    }

    /// Exactly one node (config `bootstrap = true`) initialises, and only a
    /// node whose store has never been part of a cluster, and only if no peer
    /// reports an existing cluster: a bootstrap node whose disk was wiped
    /// must join the existing cluster, not found a second one.
    async fn bootstrap_if_needed(&self) -> Result<bool, ClusterError> {
        if !self.config.bootstrap {
            return Ok(false);
        }
        let initialised = self
            .raft
            .is_initialized()
            .await
            .map_err(|e| ClusterError::Bootstrap(e.to_string()))?;
        if initialised {
            return Ok(false);
        }
        for (id, addr) in &self.config.members {
            if *id == self.config.node_id {
                continue;
            }
            if let Ok(reply) = self.peer_status(addr, false).await
                && reply.initialized
            {
                info!(
                    peer = id,
                    "a peer is already in a cluster; joining it instead of initialising"
                );
                return Ok(false);
            }
        }
        let members: BTreeMap<NodeId, BasicNode> = self
            .config
            .members
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr.clone())))
            .collect();
        match self.raft.initialize(members).await {
            Ok(()) => {
                info!(node = self.config.node_id, "initialised a new cluster");
                Ok(true)
            }
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(false),
            Err(e) => Err(ClusterError::Bootstrap(e.to_string())),
        }
    }

    /// Set when one of this crate's own tasks (Raft gRPC server, batcher,
    /// purger) ended before shutdown: the node must stop (see
    /// [`crate::supervise`]).
    pub fn failure(&self) -> &Failure {
        &self.failure
    }

    /// Installs the SMTP connect test used by `ProbeTargets` (once; later
    /// calls are ignored).
    pub fn set_prober(&self, prober: Arc<dyn TargetProber>) {
        let _ = self.prober.set(prober);
    }

    /// Installs the activity counters reported in the node status (once;
    /// later calls are ignored).
    pub fn set_activity(&self, activity: Arc<dyn NodeActivity>) {
        let _ = self.activity.set(activity);
    }

    /// The installed activity counters, if any.
    pub fn activity(&self) -> Option<&Arc<dyn NodeActivity>> {
        self.activity.get()
    }

    /// The installed SMTP connect test, if any.
    pub fn prober(&self) -> Option<&Arc<dyn TargetProber>> {
        self.prober.get()
    }

    /// The Raft-service client for the member at `addr` (shared channels).
    pub(crate) fn peer_client(
        &self,
        addr: &str,
    ) -> Result<crate::channels::PeerClient, tonic::Status> {
        let id = self.member_at(addr).ok_or_else(|| {
            tonic::Status::unavailable(format!("no member has the address {addr}"))
        })?;
        self.channels
            .client(id, addr)
            .map_err(|e| tonic::Status::unavailable(e.to_string()))
    }

    /// The id of the member (current membership first, then the configured
    /// initial members) whose Raft address is `addr`. With TLS on, the
    /// server there must prove to be that node.
    fn member_at(&self, addr: &str) -> Option<NodeId> {
        let metrics = self.raft.metrics();
        let found = metrics
            .borrow()
            .membership_config
            .nodes()
            .find(|(_, node)| node.addr == addr)
            .map(|(id, _)| *id);
        found.or_else(|| {
            self.config
                .members
                .iter()
                .find(|(_, a)| a.as_str() == addr)
                .map(|(id, _)| *id)
        })
    }

    /// The ids a client certificate may name on this node's Raft port:
    /// every member of the current membership and every configured initial
    /// member (a node that has not joined yet knows only those).
    pub(crate) fn known_node_ids(&self) -> Vec<NodeId> {
        let metrics = self.raft.metrics();
        let mut ids: Vec<NodeId> = metrics
            .borrow()
            .membership_config
            .nodes()
            .map(|(id, _)| *id)
            .collect();
        ids.extend(self.config.members.keys().copied());
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// May `sender` send Raft RPCs to this node? Only members (voters and
    /// learners) of the current configuration may; a node that has no
    /// membership yet (joining, or never initialised) accepts the cluster
    /// secret alone, since its future leader is not known to it.
    pub(crate) fn is_member_or_uninitialised(&self, sender: NodeId) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        let mut nodes = membership.nodes().peekable();
        nodes.peek().is_none() || membership.nodes().any(|(id, _)| *id == sender)
    }

    /// Is `id` a voter in this node's current configuration?
    pub fn is_voter(&self, id: NodeId) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics
            .membership_config
            .membership()
            .voter_ids()
            .any(|n| n == id)
    }

    /// Is `id` a member (voter or learner) of this node's current
    /// configuration? `false` on a node that has none yet.
    pub fn is_member(&self, id: NodeId) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics
            .membership_config
            .membership()
            .nodes()
            .any(|(n, _)| *n == id)
    }

    /// The openraft handle (membership changes, leadership, metrics).
    pub(crate) fn raft(&self) -> &Raft {
        &self.raft
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.config.node_id
    }

    /// The state machine (queries).
    pub fn store(&self) -> &StateMachine {
        &self.store
    }

    /// Latest Raft metrics (openraft's own; inside this crate only).
    pub(crate) fn metrics(&self) -> RaftMetrics<NodeId, BasicNode> {
        self.raft.metrics().borrow().clone()
    }

    /// Watch Raft metrics (openraft's own; inside this crate only).
    pub(crate) fn watch_metrics(&self) -> watch::Receiver<RaftMetrics<NodeId, BasicNode>> {
        self.raft.metrics()
    }

    /// This node's Raft state now, with the leader's quorum-ack age from
    /// this crate's own proof.
    pub fn view(&self) -> RaftView {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        RaftView::from_metrics(&m, self.quorum_ack_age(&m))
    }

    /// Follows [`Cluster::view`] as Raft publishes changes.
    pub fn watch_view(self: &Arc<Self>) -> ViewWatch {
        ViewWatch {
            metrics: self.raft.metrics(),
            cluster: Arc::clone(self),
        }
    }

    /// Asks Raft to build a snapshot now; it is built in the background
    /// (watch [`RaftView::snapshot_index`] for it).
    pub async fn trigger_snapshot(&self) -> Result<(), ClusterError> {
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| ClusterError::Stopped(e.to_string()))
    }

    pub(crate) fn quorum_ack_age(&self, m: &RaftMetrics<NodeId, BasicNode>) -> Option<Duration> {
        if m.state != ServerState::Leader {
            return None;
        }
        let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
        if voters == [self.config.node_id] {
            return Some(Duration::ZERO);
        }
        self.acks
            .quorum_age(self.config.node_id, m.current_term, &voters)
    }

    /// How long ago this node last had proof that it is part of a working
    /// cluster: on the leader, since a quorum last acknowledged an
    /// AppendEntries it sent (its own clock, read now); on a follower, since
    /// the leader's last AppendEntries arrived, plus the age of the leader's
    /// own quorum proof it carried. `None`: never, or no leader is known.
    pub fn leader_contact_age(&self) -> Option<Duration> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        self.contact_age(&m)
    }

    fn contact_age(&self, m: &RaftMetrics<NodeId, BasicNode>) -> Option<Duration> {
        if m.state == ServerState::Leader {
            let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
            return self
                .acks
                .quorum_age(self.config.node_id, m.current_term, &voters);
        }
        let leader = m.current_leader?;
        let contact = self.contact.last().filter(|c| c.leader == leader)?;
        Some(contact.at.elapsed() + contact.leader_quorum_age)
    }

    /// The start lease (fencing, see [`crate::ownership`]): whether this
    /// node may start handing a message it owns to a target now. It needs
    /// proof of a working cluster younger than `start_lease` and, after a
    /// gap in contact, to have applied what the leader had committed
    /// meanwhile. The leader gives an unreachable node's mail away only
    /// after `takeover_after`, far longer than the start lease, so a
    /// cut-off owner stops starting sessions long before anyone else owns
    /// its mail, and on its return it sees the takeover before it acts.
    pub fn may_start_delivery(&self) -> bool {
        // A drained node starts nothing: its queue is about to move.
        if self.is_drained() {
            return false;
        }
        // Called per round and before each session step: read the metrics
        // once, without cloning them.
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let fresh = self
            .contact_age(&m)
            .is_some_and(|age| age < self.config.start_lease);
        if !fresh {
            return false;
        }
        m.state == ServerState::Leader
            || self.contact.caught_up(
                m.last_applied.map_or(0, |l| l.index),
                self.config.election_timeout.1,
            )
    }

    /// When this node's newest proof of a working cluster was made: on the
    /// leader, the send time of the newest AppendEntries a quorum accepted;
    /// on a follower, when the leader's last AppendEntries arrived, less the
    /// age of the leader's own proof it carried.
    pub fn lease_proof(&self) -> Option<std::time::Instant> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let age = self.contact_age(&m)?;
        std::time::Instant::now().checked_sub(age)
    }

    /// Waits (at most one start lease) until this node holds proof of a
    /// working cluster made after `since` and may still start deliveries;
    /// false if none comes. The delivery loop asks this right before a
    /// transaction's message text, with `since` = the transaction's start:
    /// an owner cut off after it began never sends the text. A heartbeat
    /// interval at most when idle; under load AppendEntries flow all the
    /// time and the proof is already there.
    pub async fn confirm_lease_since(&self, since: std::time::Instant) -> bool {
        let deadline = Instant::now() + self.config.start_lease;
        loop {
            if self.lease_proof().is_some_and(|proof| proof > since) && self.may_start_delivery() {
                return true;
            }
            if Instant::now() >= deadline || self.shutdown.is_cancelled() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The hold lease (`takeover_after / 2`): after this long without
    /// contact a node treats its leader as gone (the gap after which it
    /// must catch up before delivering again).
    pub fn delivery_lease(&self) -> Duration {
        self.config.delivery_lease
    }

    /// When this node last accepted an AppendEntries (heartbeat or
    /// entries) from a leader: a follower's "heard from the leader".
    pub fn contact(&self) -> &LeaderContact {
        &self.contact
    }

    /// The configured election timeout range (readiness derives its
    /// "recently" from it).
    pub fn election_timeout(&self) -> (Duration, Duration) {
        self.config.election_timeout
    }

    /// The leader this node currently knows of.
    pub fn current_leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// Commits `command` through the leader and returns what applying it
    /// did. Forwards to the leader when this node is a follower and follows
    /// leadership changes until the submit timeout.
    pub async fn propose(&self, command: Command) -> Result<CommandResult, ProposeError> {
        let timeout = self.config.submit_timeout;
        let deadline = Instant::now() + timeout;
        tokio::select! {
            result = self.propose_until(command, deadline) => result,
            _ = tokio::time::sleep_until(deadline) => Err(ProposeError::Timeout(timeout)),
            _ = self.shutdown.cancelled() => Err(ProposeError::ShuttingDown),
        }
    }

    async fn propose_until(
        &self,
        command: Command,
        deadline: Instant,
    ) -> Result<CommandResult, ProposeError> {
        let mut metrics = self.raft.metrics();
        let mut encoded: Option<Vec<u8>> = None;
        loop {
            let (leader, leader_addr) = {
                let m = metrics.borrow_and_update();
                let leader = m.current_leader;
                let addr = leader.and_then(|id| {
                    m.membership_config
                        .nodes()
                        .find(|(n, _)| **n == id)
                        .map(|(_, node)| node.addr.clone())
                });
                (leader, addr)
            };
            match (leader, leader_addr) {
                (Some(leader), _) if leader == self.config.node_id => {
                    match self.write_as_leader(command.clone()).await {
                        Ok(result) => return Ok(result),
                        Err(BatchWriteError::ForwardToLeader(_)) => {}
                        Err(BatchWriteError::Fatal(e)) => return Err(ProposeError::Fatal(e)),
                        Err(BatchWriteError::ShuttingDown) => {
                            return Err(ProposeError::ShuttingDown);
                        }
                        // Outcome unknown: the client retries (SMTP 451).
                        Err(BatchWriteError::Stranded(_)) => {
                            return Err(ProposeError::Timeout(self.config.submit_timeout));
                        }
                    }
                }
                (Some(_), Some(addr)) => {
                    let bytes = encoded.get_or_insert_with(|| encode(&command)).clone();
                    // A hung leader (frozen process, cut-off link) never
                    // answers: when another leader is elected meanwhile,
                    // propose again there instead of waiting out the submit
                    // timeout. A second copy of the entry is harmless: the
                    // state machine rejects a repeated message id.
                    let mut watch = self.raft.metrics();
                    tokio::select! {
                        result = self.forward(&addr, bytes, deadline) => match result {
                            Ok(result) => return Ok(result),
                            Err(status) => {
                                tracing::debug!(%addr, code = ?status.code(), "forwarded write not committed; retrying");
                            }
                        },
                        _ = watch.wait_for(|m| m.current_leader.is_some_and(|l| Some(l) != leader)) => {
                            tracing::debug!(old = ?leader, "leader changed during a forwarded write; proposing again");
                            continue;
                        }
                    }
                }
                _ => {}
            }
            // Wait for news about the leader, briefly.
            tokio::select! {
                _ = metrics.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
            if Instant::now() >= deadline {
                return Err(if leader.is_none() {
                    ProposeError::NoLeader
                } else {
                    ProposeError::Timeout(self.config.submit_timeout)
                });
            }
        }
    }

    /// Writes `command` through this node's Raft as the leader: message
    /// commands through the group-commit batcher, anything else as an
    /// entry of its own. Fails with `ForwardToLeader` on a follower.
    pub(crate) async fn write_as_leader(
        &self,
        command: Command,
    ) -> Result<CommandResult, BatchWriteError> {
        // During a leadership transfer new writes wait (bounded by the
        // caller's submit deadline): replicating them would keep renewing
        // the followers' leader lease, and they would refuse to vote for
        // the target. After the transfer they go to whoever leads.
        let mut paused = self.writes_paused.subscribe();
        if *paused.borrow() {
            let _ = paused.wait_for(|p| !*p).await;
            return Err(BatchWriteError::ForwardToLeader(None));
        }
        if command.batchable() {
            return self.batcher.write(command).await;
        }
        match self.raft.client_write(command).await {
            Ok(written) => Ok(written.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(BatchWriteError::ForwardToLeader(f.leader_id))
            }
            Err(RaftError::APIError(e)) => Err(BatchWriteError::Fatal(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(BatchWriteError::Fatal(e.to_string())),
        }
    }

    async fn forward(
        &self,
        addr: &str,
        command: Vec<u8>,
        deadline: Instant,
    ) -> Result<CommandResult, tonic::Status> {
        let mut client = self.peer_client(addr)?;
        let mut request = tonic::Request::new(SubmitRequest { command });
        request.set_timeout(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        );
        let reply = client.submit(request).await?.into_inner();
        decode(&reply.result).map_err(|e| tonic::Status::internal(e.to_string()))
    }

    /// This node's own status. `with_digest` also hashes the whole state
    /// (blocking: call from a blocking task).
    pub fn local_status(&self, with_digest: bool) -> Result<NodeStatusReply, StoreError> {
        local_status_from(
            self.config.node_id,
            &self.config.config_digest,
            &self.metrics(),
            &self.store,
            self.activity.get(),
            &self.replication_lag(),
            with_digest,
        )
    }

    /// Asks the node at `addr` for its status.
    pub async fn peer_status(
        &self,
        addr: &str,
        with_digest: bool,
    ) -> Result<NodeStatusReply, tonic::Status> {
        let mut client = self.peer_client(addr)?;
        let mut request = tonic::Request::new(NodeStatusRequest { with_digest });
        request.set_timeout(PEER_STATUS_TIMEOUT);
        Ok(client.node_status(request).await?.into_inner())
    }

    /// Every member's status, asked directly (this node answers locally).
    pub async fn status(&self, with_digest: bool) -> ClusterStatus {
        let m = self.metrics();
        let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
        let members: Vec<(NodeId, String)> = m
            .membership_config
            .nodes()
            .map(|(id, node)| (*id, node.addr.clone()))
            .collect();
        let replies = futures::future::join_all(members.iter().map(|(id, addr)| async move {
            if *id == self.config.node_id {
                let store = self.clone_for_blocking();
                tokio::task::spawn_blocking(move || store.local_status(with_digest))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()))
            } else {
                self.peer_status(addr, with_digest)
                    .await
                    .map_err(|e| e.message().to_string())
            }
        }))
        .await;
        let leader_reply = m.current_leader.and_then(|leader| {
            members
                .iter()
                .zip(&replies)
                .find(|((id, _), _)| *id == leader)
                .and_then(|(_, r)| r.as_ref().ok().cloned())
        });
        let lag_millis = |id: NodeId| -> Option<u64> {
            let leader = leader_reply.as_ref()?;
            if leader.id == id {
                return Some(0);
            }
            leader
                .replication
                .iter()
                .find(|p| p.id == id)
                .map(|p| p.millis)
        };
        let leader_last_log = m.current_leader.and_then(|leader| {
            members
                .iter()
                .zip(&replies)
                .find(|((id, _), _)| *id == leader)
                .and_then(|(_, r)| r.as_ref().ok().map(|r| r.last_log_index))
        });
        let mut out: Vec<MemberStatus> = members
            .into_iter()
            .zip(replies)
            .map(|((id, addr), reply)| {
                let reply = reply.ok();
                let applied = reply.as_ref().map(|r| r.applied_index).unwrap_or(0);
                MemberStatus {
                    id,
                    addr,
                    voter: voters.contains(&id),
                    reachable: reply.is_some(),
                    role: reply
                        .as_ref()
                        .map(|r| r.role.clone())
                        .unwrap_or_else(|| "unreachable".into()),
                    applied,
                    lag: match (&reply, leader_last_log) {
                        (Some(_), Some(last)) => last.saturating_sub(applied),
                        _ => 0,
                    },
                    lag_millis: lag_millis(id),
                    reply,
                }
            })
            .collect();
        out.sort_by_key(|s| (!s.voter, s.id));
        ClusterStatus {
            leader: m.current_leader,
            term: m.current_term,
            members: out,
            queue: self.store.counts().unwrap_or_default(),
        }
    }

    fn clone_for_blocking(&self) -> LocalStatusSource {
        LocalStatusSource {
            node_id: self.config.node_id,
            config_digest: self.config.config_digest.clone(),
            metrics: self.raft.metrics(),
            store: self.store.clone(),
            activity: self.activity.get().cloned(),
            replication: self.replication_lag(),
        }
    }

    /// Stops Raft. The store stays open until dropped.
    /// Shuts Raft down and waits for this cluster's own tasks (gRPC
    /// server, purger), which end once the `shutdown` token given to
    /// [`Cluster::start`] is cancelled.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            warn!(error = %e, "raft shutdown failed");
        }
        self.tasks.close();
        if self.shutdown.is_cancelled() {
            self.tasks.wait().await;
        }
    }
}

/// What `local_status` needs, owned, for a blocking task.
struct LocalStatusSource {
    node_id: NodeId,
    config_digest: String,
    metrics: watch::Receiver<RaftMetrics<NodeId, BasicNode>>,
    store: StateMachine,
    activity: Option<Arc<dyn NodeActivity>>,
    replication: BTreeMap<NodeId, crate::lag::PeerLag>,
}

impl LocalStatusSource {
    fn local_status(&self, with_digest: bool) -> Result<NodeStatusReply, StoreError> {
        let m = self.metrics.borrow().clone();
        local_status_from(
            self.node_id,
            &self.config_digest,
            &m,
            &self.store,
            self.activity.as_ref(),
            &self.replication,
            with_digest,
        )
    }
}

fn local_status_from(
    node_id: NodeId,
    config_digest: &str,
    m: &RaftMetrics<NodeId, BasicNode>,
    store: &StateMachine,
    activity: Option<&Arc<dyn NodeActivity>>,
    replication: &BTreeMap<NodeId, crate::lag::PeerLag>,
    with_digest: bool,
) -> Result<NodeStatusReply, StoreError> {
    let counts = store.counts()?;
    let mut reply = NodeStatusReply {
        id: node_id,
        role: role_name(m.state).to_string(),
        term: m.current_term,
        leader: m.current_leader,
        last_log_index: m.last_log_index.unwrap_or(0),
        applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
        initialized: m
            .membership_config
            .membership()
            .voter_ids()
            .next()
            .is_some(),
        digest_index: 0,
        state_checksum: String::new(),
        queue: Some(QueueCounts {
            queued: counts.queued,
            deferred: counts.deferred,
            held: counts.held,
        }),
        snapshot_index: m.snapshot.map(|l| l.index).unwrap_or(0),
        purged_index: m.purged.map(|l| l.index).unwrap_or(0),
        format_version: u32::from(relay_types::FORMAT_VERSION),
        stored_bodies: 0,
        stored_body_bytes: 0,
        config_digest: config_digest.to_string(),
        drained: store.is_drained(node_id),
        busy_deliveries: activity.map_or(0, |a| a.busy_deliveries()),
        smtp_sessions: activity.map_or(0, |a| a.smtp_sessions()),
        replication: replication
            .iter()
            .map(|(id, lag)| relay_proto::raft::PeerLag {
                id: *id,
                entries: lag.entries,
                millis: lag.age.as_millis() as u64,
            })
            .collect(),
    };
    if with_digest {
        let digest = store.digest()?;
        reply.digest_index = digest.applied_index;
        reply.state_checksum = digest.checksum;
        reply.stored_bodies = digest.bodies;
        reply.stored_body_bytes = digest.body_bytes;
    }
    Ok(reply)
}

/// Keeps `acks` told of the current term and voter set, for the quorum
/// age the leader sends its followers.
async fn publish_voters(
    mut metrics: watch::Receiver<RaftMetrics<NodeId, BasicNode>>,
    acks: Arc<QuorumAcks>,
    shutdown: CancellationToken,
) {
    loop {
        {
            let m = metrics.borrow_and_update();
            let voters = m.membership_config.membership().voter_ids().collect();
            acks.set_voters(m.current_term, voters);
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Lower-case role name.
fn role_name(state: ServerState) -> &'static str {
    Role::from_state(state).name()
}
