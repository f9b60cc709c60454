//! An in-process cluster of real nodes, for tests (feature `testing`).
//!
//! Each node is what `relayd` runs minus its SMTP, admin and HTTP
//! listeners: a real RocksDB store in a temporary directory, the real
//! consensus layer on a port-0 Raft listener, the real delivery loop
//! (through the same adapters as `relayd`), the takeover loop and the
//! history pruner. Messages are submitted through the same path as SMTP
//! (`SmtpBackend`), so their owner is the node they were submitted to.
//!
//! Links between nodes can be cut per direction ([`LinkFaults`]): every
//! node-to-node call (Raft, forwarded writes, probes) from a node to a cut
//! address fails like an unreachable peer, while SMTP to the targets stays
//! up. So cluster behaviour (leases, takeover, partitions) is tested in
//! seconds, without processes or kills; the process suites keep what needs
//! real kills and power loss.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use relay_cluster::channels::LinkFaults;
use relay_cluster::ownership::takeover;
use relay_cluster::{Cluster, ClusterConfig};
use relay_smtp::SessionBackend;
use relay_store::StateMachine;
use relay_types::{
    Command, Envelope, MessageId, MessageInfo, NodeId, Recipient, Route, Shaping, TlsPolicy,
    UnixMillis,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::adapters::{ClusterProposer, DeliveryStoreAdapter, SmtpBackend};
use crate::recent::RecentResults;

/// Settings of an in-process cluster.
#[derive(Clone, Debug)]
pub struct InProcessOptions {
    /// Number of voters.
    pub nodes: usize,
    /// `(domain, target host:port)` routes set once the cluster is up.
    pub routes: Vec<(String, String)>,
    /// The shaping of every route in `routes`.
    pub shaping: Shaping,
    /// `cluster.takeover_after`.
    pub takeover_after: Duration,
    /// Raft heartbeat.
    pub heartbeat: Duration,
    /// Election timeout range.
    pub election_timeout: (Duration, Duration),
    /// `cluster.submit_timeout`.
    pub submit_timeout: Duration,
    /// First and longest retry delay.
    pub backoff: (Duration, Duration),
    /// Reply timeout after the final dot.
    pub data_timeout: Duration,
    /// Concurrent deliveries per node.
    pub max_concurrent: usize,
}

impl Default for InProcessOptions {
    fn default() -> Self {
        InProcessOptions {
            nodes: 3,
            routes: Vec::new(),
            shaping: Shaping::default(),
            takeover_after: Duration::from_secs(3),
            heartbeat: Duration::from_millis(100),
            election_timeout: (Duration::from_millis(500), Duration::from_millis(1000)),
            submit_timeout: Duration::from_secs(3),
            backoff: (Duration::from_secs(1), Duration::from_secs(2)),
            data_timeout: Duration::from_secs(10),
            max_concurrent: 20,
        }
    }
}

/// One node of an [`InProcessCluster`].
#[derive(Debug)]
pub struct TestNode {
    /// Its id.
    pub id: NodeId,
    /// Its Raft address.
    pub raft_addr: String,
    /// Its consensus handle.
    pub cluster: Arc<Cluster>,
    /// Its replica.
    pub store: StateMachine,
    submit: SmtpBackend,
    stop: CancellationToken,
    raft_stop: CancellationToken,
    tasks: TaskTracker,
}

/// Real nodes in this process (see the module docs).
#[derive(Debug)]
pub struct InProcessCluster {
    /// The nodes, index = id - 1.
    pub nodes: Vec<TestNode>,
    /// The links the test cuts.
    pub faults: Arc<LinkFaults>,
    _dir: tempfile::TempDir,
}

impl InProcessCluster {
    /// Starts `options.nodes` voters, waits for a leader and sets the routes.
    pub async fn start(options: InProcessOptions) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("qr-inproc-").tempdir()?;
        let faults = Arc::new(LinkFaults::default());
        let mut listeners = Vec::new();
        let mut members = BTreeMap::new();
        for id in 1..=options.nodes as NodeId {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            members.insert(id, listener.local_addr()?.to_string());
            listeners.push(listener);
        }
        let mut nodes = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let id = i as NodeId + 1;
            let (log_store, store) = relay_store::open(&dir.path().join(format!("node{id}")))
                .with_context(|| format!("store of node {id}"))?;
            let config = ClusterConfig {
                node_id: id,
                listen: listener.local_addr()?,
                members: members.clone(),
                bootstrap: id == 1,
                heartbeat: options.heartbeat,
                election_timeout: options.election_timeout,
                snapshot_every: 10_000,
                keep_logs: 1_000,
                purge_interval: Duration::from_secs(300),
                delivery_lease: takeover::delivery_lease(options.takeover_after),
                start_lease: crate::node::start_lease(options.heartbeat, options.takeover_after),
                submit_timeout: options.submit_timeout,
                secret: relay_cluster::secret::ClusterSecret::new("in-process-test-secret"),
                config_digest: String::new(),
                source_address: None,
                tls: None,
            };
            let raft_stop = CancellationToken::new();
            let (cluster, _) = Cluster::start_with(
                listener,
                config,
                log_store,
                store.clone(),
                raft_stop.clone(),
                Some(faults.clone()),
            )
            .await
            .with_context(|| format!("consensus of node {id}"))?;
            let stop = CancellationToken::new();
            let tasks = TaskTracker::new();
            let delivery = relay_delivery::DeliveryLoop::new(
                relay_delivery::DeliveryConfig {
                    node_id: id,
                    hostname: format!("relay{id}.test"),
                    retry: relay_queue::RetryPolicy {
                        min_backoff_ms: options.backoff.0.as_millis() as u64,
                        max_backoff_ms: options.backoff.1.as_millis() as u64,
                        queue_lifetime_ms: 86_400_000,
                    },
                    poll_interval: Duration::from_millis(50),
                    max_concurrent_deliveries: options.max_concurrent,
                    per_target_concurrency: options.max_concurrent,
                    connect_timeout: Duration::from_secs(2),
                    command_timeout: Duration::from_secs(5),
                    data_timeout: options.data_timeout,
                    ..Default::default()
                },
                Arc::new(DeliveryStoreAdapter::new(store.clone())),
                Arc::new(ClusterProposer::new(
                    cluster.clone(),
                    Arc::new(RecentResults::default()),
                )),
            );
            tasks.spawn(delivery.run(store.subscribe_applied(), stop.clone()));
            tasks.spawn(takeover::run(
                cluster.clone(),
                options.takeover_after,
                stop.clone(),
            ));
            nodes.push(TestNode {
                id,
                raft_addr: members[&id].clone(),
                submit: SmtpBackend::new(cluster.clone(), Duration::from_secs(86_400), true),
                cluster,
                store,
                stop,
                raft_stop,
                tasks,
            });
        }
        let tier = InProcessCluster {
            nodes,
            faults,
            _dir: dir,
        };
        let leader = tier.wait_for_leader(Duration::from_secs(30)).await?;
        for (domain, target) in options.routes {
            tier.node(leader)
                .cluster
                .propose(Command::SetRoute {
                    domain,
                    route: Route {
                        shaping: options.shaping,
                        ..Route::new(vec![target], TlsPolicy::None)
                    },
                })
                .await
                .context("set route")?;
        }
        // Every replica has the routes before the test starts.
        let applied = tier.node(leader).cluster.view().last_applied;
        for node in &tier.nodes {
            let mut m = node.cluster.watch_view();
            tokio::time::timeout(
                Duration::from_secs(30),
                m.wait_for(|m| m.last_applied >= applied),
            )
            .await
            .context("routes applied everywhere")??;
        }
        Ok(tier)
    }

    /// The node with `id`.
    pub fn node(&self, id: NodeId) -> &TestNode {
        &self.nodes[id as usize - 1]
    }

    /// Waits until one node leads and a majority of nodes agree on it.
    pub async fn wait_for_leader(&self, within: Duration) -> anyhow::Result<NodeId> {
        let deadline = Instant::now() + within;
        loop {
            let mut votes: BTreeMap<NodeId, usize> = BTreeMap::new();
            for node in &self.nodes {
                if let Some(leader) = node.cluster.current_leader() {
                    *votes.entry(leader).or_default() += 1;
                }
            }
            let majority = self.nodes.len() / 2 + 1;
            if let Some((&leader, _)) = votes
                .iter()
                .find(|(id, n)| **n >= majority && self.node(**id).cluster.view().is_leader())
            {
                return Ok(leader);
            }
            if Instant::now() > deadline {
                bail!("no leader within {within:?}: {votes:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Cuts every link between `side` and the other nodes, both ways.
    pub fn partition(&self, side: &[NodeId]) {
        for a in &self.nodes {
            for b in &self.nodes {
                if side.contains(&a.id) != side.contains(&b.id) {
                    self.faults.cut(a.id, &b.raft_addr);
                }
            }
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.faults.heal();
    }

    /// Submits one message to node `node` (as SMTP does: committed through
    /// the leader, owned by `node`), `marker` as its subject; its id.
    pub async fn submit(
        &self,
        node: NodeId,
        marker: &str,
        to: &str,
    ) -> Result<MessageId, relay_smtp::SubmitError> {
        let body = Bytes::from(format!(
            "From: <s@sender.test>\r\nTo: <{to}>\r\nSubject: {marker}\r\n\r\n{marker}\r\n"
        ));
        let submission = relay_smtp::Submission {
            id: MessageId::generate(),
            received_at: UnixMillis::now(),
            envelope: Envelope {
                reverse_path: "s@sender.test".into(),
                recipients: vec![Recipient::new(to)],
                ..Default::default()
            },
            info: MessageInfo::default(),
            body,
        };
        let id = submission.id;
        self.node(node).submit.submit(submission).await?;
        Ok(id)
    }

    /// Waits until every node's replica has an empty queue, no bodies, and
    /// the same state checksum; the applied index.
    pub async fn wait_drained(&self, within: Duration) -> anyhow::Result<u64> {
        let deadline = Instant::now() + within;
        loop {
            let mut digests = Vec::new();
            for node in &self.nodes {
                let store = node.store.clone();
                let digest = tokio::task::spawn_blocking(move || store.digest()).await??;
                let counts = node.store.counts()?;
                digests.push((digest, counts));
            }
            let empty = digests
                .iter()
                .all(|(d, c)| d.bodies == 0 && c.queued + c.deferred + c.held == 0);
            let equal = digests
                .windows(2)
                .all(|w| w[0].0.checksum == w[1].0.checksum);
            if empty && equal {
                return Ok(digests[0].0.applied_index);
            }
            if Instant::now() > deadline {
                bail!("not drained within {within:?}: {digests:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Deliveries the relay itself recorded as known duplicates (trace
    /// events of `DuplicateDelivered` entries) among `ids`, per id.
    pub fn counted_duplicates(
        &self,
        ids: &[MessageId],
    ) -> anyhow::Result<BTreeMap<MessageId, usize>> {
        let store = &self.nodes[0].store;
        let mut out = BTreeMap::new();
        for id in ids {
            let n = store
                .trace(id)?
                .iter()
                .filter(|e| e.what.starts_with("duplicate delivery"))
                .count();
            if n > 0 {
                out.insert(*id, n);
            }
        }
        Ok(out)
    }

    /// Stops every node in order (delivery and takeover, then Raft).
    pub async fn shutdown(self) {
        for node in &self.nodes {
            node.stop.cancel();
            node.tasks.close();
        }
        for node in &self.nodes {
            let _ = tokio::time::timeout(Duration::from_secs(15), node.tasks.wait()).await;
            node.raft_stop.cancel();
            node.cluster.shutdown().await;
        }
    }
}
