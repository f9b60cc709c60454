//! Harness for process-level tests: real `relayd` processes on loopback with
//! fresh data dirs, driven over their real gRPC and SMTP ports.
//!
//! Owns: writing node configs with free ports, starting/killing/restarting
//! processes (by the PIDs it started), and polling helpers with deadlines.
//! Must never: reach into a node's store; everything is observed through the
//! node's own interfaces.
//!
//! The binaries are taken from the same target dir as the test executable
//! (`scripts/test.sh` builds them first), or from `$QR_BIN_DIR`.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use relay_proto::raft::raft_service_client::RaftServiceClient;
use relay_proto::raft::{NodeStatusReply, NodeStatusRequest, SubmitRequest};
use relay_types::{CommandResult, NodeId};
use tokio::time::Instant;

pub mod compose;
pub mod debian;
pub mod load;
pub mod promql;
pub mod smtp;

/// The `cluster.secret` every test node is configured with.
pub const CLUSTER_SECRET: &str = "test-cluster-secret-0123456789";

/// A Raft-service client that sends the cluster secret.
pub type RaftClient = RaftServiceClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, SecretHeader>,
>;

/// Adds `authorization: Bearer <secret>` to every call.
#[derive(Clone, Debug)]
pub struct SecretHeader(pub String);

impl tonic::service::Interceptor for SecretHeader {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let value = format!("Bearer {}", self.0)
            .parse()
            .map_err(|_| tonic::Status::internal("secret is not a header value"))?;
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }
}

/// Path of a workspace binary next to the running test executable.
pub fn bin_path(name: &str) -> PathBuf {
    if let Ok(dir) = std::env::var("QR_BIN_DIR") {
        return Path::new(&dir).join(name);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: build the binaries first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Free loopback ports for nodes and targets.
///
/// Taken below the kernel's ephemeral range (32768 and up here), from a
/// window chosen by this process id and walked with a counter: port 0 would
/// hand out ephemeral ports, which the many client connections of a test
/// (SMTP, gRPC) also draw from, so a port released here could be taken by
/// an outgoing connection before the node binds it ("address in use").
pub fn free_ports(n: usize) -> Vec<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let window = (std::process::id() % 20) * (SPAN / 20);
    let mut ports = Vec::with_capacity(n);
    while ports.len() < n {
        let k = NEXT.fetch_add(1, Ordering::SeqCst);
        assert!(k < SPAN, "ran out of test ports");
        let port = (LOW + (window + k) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports.push(port);
        }
    }
    ports
}

/// Ports of one node.
#[derive(Clone, Copy, Debug)]
pub struct NodePorts {
    /// SMTP.
    pub smtp: u16,
    /// Raft gRPC.
    pub raft: u16,
    /// Admin gRPC.
    pub admin: u16,
    /// HTTP.
    pub http: u16,
    /// Submission (587 role); listened on only with
    /// [`ClusterOptions::submission_listeners`].
    pub submission: u16,
    /// Implicit TLS submission (465 role); likewise.
    pub smtps: u16,
}

/// Settings for a test cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Number of nodes.
    pub nodes: usize,
    /// Snapshot every N entries.
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot.
    pub keep_logs: u64,
    /// Routes: (domain, target host:port).
    pub routes: Vec<(String, String)>,
    /// Outbound TLS policy per route domain (`none` when not listed).
    pub route_tls: BTreeMap<String, String>,
    /// First retry delay (`[delivery] min_backoff`).
    pub min_backoff: String,
    /// `[cluster] submit_timeout`.
    pub submit_timeout: String,
    /// Extra TOML lines for `[cluster]`.
    pub cluster_extra: String,
    /// Extra TOML lines for `[smtp]` (e.g. `authorized_networks = []`).
    pub smtp_extra: String,
    /// Extra TOML lines for `[delivery]`.
    pub delivery_extra: String,
    /// Run every node with the store's power-loss failpoint: a kill -9 then
    /// loses everything not yet fsynced, like a power cut.
    pub power_loss: bool,
    /// mTLS on the Raft and admin ports (`[tls] mode = "on"`, client
    /// certificates required on the admin port too), with certificates
    /// from `relayd --dev-certs` in `<dir>/certs`. Off by default.
    pub tls: bool,
    /// Extra nodes (ids after `nodes`) configured as recovery replicas:
    /// not in the voters' member lists (the cluster is created without
    /// them; add them with `relayctl member add`), and
    /// `smtp.accept_as_learner = false`.
    pub learners: usize,
    /// Also listen on [`NodePorts::submission`] and [`NodePorts::smtps`]
    /// (these need `tls` and `[smtp.auth]` in `smtp_extra`).
    pub submission_listeners: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            nodes: 3,
            snapshot_every: 10_000,
            keep_logs: 1_000,
            routes: Vec::new(),
            route_tls: BTreeMap::new(),
            min_backoff: "300s".into(),
            submit_timeout: "5s".into(),
            cluster_extra: String::new(),
            smtp_extra: String::new(),
            delivery_extra: String::new(),
            power_loss: false,
            tls: false,
            learners: 0,
            submission_listeners: false,
        }
    }
}

/// A node process.
#[derive(Debug)]
pub struct NodeProcess {
    /// Node id.
    pub id: NodeId,
    /// Its ports.
    pub ports: NodePorts,
    /// Its config file.
    pub config: PathBuf,
    /// Its data dir.
    pub data_dir: PathBuf,
    child: Option<Child>,
}

/// Real `relayd` processes on loopback, killed when dropped.
#[derive(Debug)]
pub struct ProcessCluster {
    /// Holds configs, data dirs and logs.
    pub dir: tempfile::TempDir,
    /// The nodes, index = id - 1.
    pub nodes: Vec<NodeProcess>,
    /// Admin token.
    pub token: String,
    /// Nodes run with the power-loss failpoint.
    power_loss: bool,
    /// Nodes stopped with SIGSTOP.
    paused: std::collections::BTreeSet<NodeId>,
    /// With TLS on: where the development CA and certificates are.
    pub certs: Option<PathBuf>,
}

impl ProcessCluster {
    /// Writes configs and starts every node.
    pub fn start(options: ClusterOptions) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("qr-cluster-").tempdir()?;
        let total = options.nodes + options.learners;
        let ports = free_ports(total * 6);
        let node_ports: Vec<NodePorts> = (0..total)
            .map(|i| NodePorts {
                smtp: ports[i * 6],
                raft: ports[i * 6 + 1],
                admin: ports[i * 6 + 2],
                http: ports[i * 6 + 3],
                submission: ports[i * 6 + 4],
                smtps: ports[i * 6 + 5],
            })
            .collect();
        let token = "test-token".to_string();
        let mut members = String::new();
        for (i, p) in node_ports.iter().enumerate().take(options.nodes) {
            members.push_str(&format!(
                "[[cluster.members]]\nid = {}\nraft = \"127.0.0.1:{}\"\n\n",
                i + 1,
                p.raft
            ));
        }
        let mut routes = String::new();
        for (domain, target) in &options.routes {
            let tls = options.route_tls.get(domain).map_or("none", String::as_str);
            routes.push_str(&format!(
                "[[routes]]\ndomain = \"{domain}\"\ntargets = [\"{target}\"]\ntls = \"{tls}\"\n\n"
            ));
        }
        let certs = if options.tls {
            let certs = dir.path().join("certs");
            let ids: Vec<String> = (1..=total).map(|i| i.to_string()).collect();
            dev_certs(&certs, &ids.join(","))?;
            Some(certs)
        } else {
            None
        };
        let mut nodes = Vec::new();
        for (i, p) in node_ports.iter().enumerate() {
            let id = i as NodeId + 1;
            let learner = i >= options.nodes;
            // A replica lists the voters and itself.
            let members = if learner {
                format!(
                    "{members}[[cluster.members]]\nid = {id}\nraft = \"127.0.0.1:{}\"\n\n",
                    p.raft
                )
            } else {
                members.clone()
            };
            let learner_smtp = if learner {
                "accept_as_learner = false"
            } else {
                ""
            };
            let data_dir = dir.path().join(format!("node{id}"));
            let config = dir.path().join(format!("node{id}.toml"));
            let text = format!(
                r#"node_id = {id}
data_dir = "node{id}"
hostname = "relay{id}.test"

[listen]
smtp = "127.0.0.1:{smtp}"
raft = "127.0.0.1:{raft}"
admin = "127.0.0.1:{admin}"
http = "127.0.0.1:{http}"
{submission}
[cluster]
secret = "{CLUSTER_SECRET}"
bootstrap = {bootstrap}
submit_timeout = "{submit_timeout}"
heartbeat = "100ms"
election_timeout_min = "500ms"
election_timeout_max = "1000ms"
snapshot_every = {snapshot_every}
keep_logs = {keep_logs}
{cluster_extra}

{members}
[smtp]
{smtp_tls}
{learner_smtp}
{smtp_extra}

[delivery]
min_backoff = "{min_backoff}"
poll_interval = "200ms"
{dns_off}
{delivery_extra}

{routes}
[admin]
token = "{token}"
{tls}
"#,
                smtp = p.smtp,
                raft = p.raft,
                admin = p.admin,
                http = p.http,
                submission = if options.submission_listeners {
                    format!(
                        "submission = \"127.0.0.1:{}\"\nsmtps = \"127.0.0.1:{}\"\n",
                        p.submission, p.smtps
                    )
                } else {
                    String::new()
                },
                bootstrap = id == 1,
                snapshot_every = options.snapshot_every,
                keep_logs = options.keep_logs,
                min_backoff = options.min_backoff,
                submit_timeout = options.submit_timeout,
                cluster_extra = options.cluster_extra,
                smtp_extra = options.smtp_extra,
                // STARTTLS off unless the test sets `tls` itself.
                smtp_tls = if options
                    .smtp_extra
                    .lines()
                    .any(|l| l.trim_start().starts_with("tls "))
                {
                    ""
                } else {
                    "tls = \"off\""
                },
                // Never the machine's resolver: domains without a route
                // stay undeliverable unless the test sets `dns.*` itself
                // (pointing at a `TestDns`).
                dns_off = if options.delivery_extra.contains("dns.") {
                    ""
                } else {
                    "dns.enabled = false"
                },
                delivery_extra = options.delivery_extra,
                tls = if options.tls {
                    format!(
                        "[tls]\nmode = \"on\"\nca = \"certs/ca.pem\"\n\
                         cert = \"certs/node-{id}.pem\"\nkey = \"certs/node-{id}-key.pem\"\n\
                         admin_client_cert = true\n"
                    )
                } else {
                    String::new()
                },
            );
            std::fs::write(&config, text)?;
            nodes.push(NodeProcess {
                id,
                ports: *p,
                config,
                data_dir,
                child: None,
            });
        }
        let mut cluster = ProcessCluster {
            dir,
            nodes,
            token,
            power_loss: options.power_loss,
            paused: Default::default(),
            certs,
        };
        for id in 1..=total as NodeId {
            cluster.start_node(id)?;
        }
        Ok(cluster)
    }

    /// The node with `id`.
    pub fn node(&self, id: NodeId) -> &NodeProcess {
        &self.nodes[id as usize - 1]
    }

    /// Starts node `id` on its existing data dir.
    pub fn start_node(&mut self, id: NodeId) -> anyhow::Result<()> {
        self.start_node_with_args(id, &[])
    }

    /// Starts node `id` on its existing data dir with extra `relayd`
    /// arguments (e.g. `--log-format json`); output goes to the same log.
    pub fn start_node_with_args(&mut self, id: NodeId, args: &[&str]) -> anyhow::Result<()> {
        self.start_node_with_env(id, args, &[])
    }

    /// Starts node `id` with extra arguments and environment variables
    /// (failpoints such as `QR_FAILPOINT_FAIL_FSYNC_AFTER`).
    pub fn start_node_with_env(
        &mut self,
        id: NodeId,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let log_path = self.dir.path().join(format!("node{id}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let power_loss = if self.power_loss { "1" } else { "0" };
        let node = &mut self.nodes[id as usize - 1];
        let child = Command::new(bin_path("relayd"))
            .arg("--config")
            .arg(&node.config)
            .args(args)
            .env("RELAY_LOG", "info,openraft=warn")
            .env("QR_FAILPOINT_POWER_LOSS", power_loss)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn relayd")?;
        node.child = Some(child);
        Ok(())
    }

    /// Waits (at most `within`) for node `id`'s process to exit by itself
    /// and returns its status; the node counts as stopped afterwards.
    pub async fn wait_exit(
        &mut self,
        id: NodeId,
        within: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            let node = &mut self.nodes[id as usize - 1];
            let Some(child) = node.child.as_mut() else {
                bail!("node {id} is not running");
            };
            if let Some(status) = child.try_wait()? {
                node.child = None;
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("node {id} still running after {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILLs node `id` (the process this harness started) and reaps it.
    pub fn kill(&mut self, id: NodeId) {
        self.paused.remove(&id);
        if let Some(mut child) = self.nodes[id as usize - 1].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOPs node `id` (a hung or cut-off process: its sockets stay open
    /// but it answers nothing). [`resume`](Self::resume) undoes it.
    pub fn pause(&mut self, id: NodeId) {
        self.signal(id, "STOP");
        self.paused.insert(id);
    }

    /// SIGCONTs node `id` after [`pause`](Self::pause).
    pub fn resume(&mut self, id: NodeId) {
        self.signal(id, "CONT");
        self.paused.remove(&id);
    }

    /// Whether node `id` is running and not paused.
    pub fn is_serving(&self, id: NodeId) -> bool {
        self.node(id).child.is_some() && !self.paused.contains(&id)
    }

    fn signal(&self, id: NodeId, signal: &str) {
        if let Some(child) = &self.node(id).child {
            let status = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(child.id().to_string())
                .status()
                .expect("run kill");
            assert!(status.success(), "kill -{signal} node {id}");
        }
    }

    /// Deletes node `id`'s data dir (the node must be stopped).
    pub fn wipe(&mut self, id: NodeId) -> anyhow::Result<()> {
        let node = &self.nodes[id as usize - 1];
        assert!(node.child.is_none(), "wipe a stopped node only");
        if node.data_dir.exists() {
            std::fs::remove_dir_all(&node.data_dir)?;
        }
        Ok(())
    }

    /// The log output of node `id` so far (for failure messages).
    pub fn log(&self, id: NodeId) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node{id}.log"))).unwrap_or_default()
    }

    /// A Raft-service client for node `id`, with the cluster secret.
    pub async fn raft_client(&self, id: NodeId) -> anyhow::Result<RaftClient> {
        self.raft_client_with_secret(id, CLUSTER_SECRET).await
    }

    /// A Raft-service client for node `id` that sends `secret` (a wrong
    /// one, for tests of strangers).
    pub async fn raft_client_with_secret(
        &self,
        id: NodeId,
        secret: &str,
    ) -> anyhow::Result<RaftClient> {
        let tls = self.certs.as_ref().map(|certs| {
            // The harness dials as node 1 (a member) and expects node `id`.
            node_client_tls(certs, &certs.join("ca.pem"), "node-1", id)
        });
        let channel = raft_channel(self.node(id).ports.raft, tls.transpose()?).await?;
        Ok(
            RaftServiceClient::with_interceptor(channel, SecretHeader(secret.to_string()))
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(128 << 20),
        )
    }

    /// Raft-service client for node `id` with a chosen TLS setting (or
    /// plaintext with `None`), for tests of who is refused.
    pub async fn raft_client_with_tls(
        &self,
        id: NodeId,
        tls: Option<tonic::transport::ClientTlsConfig>,
    ) -> anyhow::Result<RaftClient> {
        let channel = raft_channel(self.node(id).ports.raft, tls).await?;
        Ok(RaftServiceClient::with_interceptor(
            channel,
            SecretHeader(CLUSTER_SECRET.to_string()),
        ))
    }

    /// The PID of node `id`'s process, if running.
    pub fn pid(&self, id: NodeId) -> Option<u32> {
        self.node(id).child.as_ref().map(Child::id)
    }

    /// Sends SIGHUP to node `id` (reload the STARTTLS and mTLS certificates).
    pub fn hangup(&self, id: NodeId) {
        self.signal(id, "HUP");
    }

    /// Node `id`'s own status, optionally with its state digest.
    pub async fn status(&self, id: NodeId, with_digest: bool) -> anyhow::Result<NodeStatusReply> {
        let mut client = self.raft_client(id).await?;
        Ok(client
            .node_status(NodeStatusRequest { with_digest })
            .await?
            .into_inner())
    }

    /// Waits until some running node reports a leader that the leader itself
    /// confirms, and returns its id.
    pub async fn wait_for_leader(
        &self,
        within: Duration,
        not: Option<NodeId>,
    ) -> anyhow::Result<NodeId> {
        let deadline = Instant::now() + within;
        loop {
            for node in self.nodes.iter().filter(|n| self.is_serving(n.id)) {
                if let Some(leader) = self.confirmed_leader(node.id, not).await {
                    return Ok(leader);
                }
            }
            if Instant::now() > deadline {
                bail!("no leader within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The leader node `asked` reports, if it is running, is not `not`, and
    /// calls itself leader.
    async fn confirmed_leader(&self, asked: NodeId, not: Option<NodeId>) -> Option<NodeId> {
        let leader = self.status(asked, false).await.ok()?.leader?;
        if Some(leader) == not || !self.is_serving(leader) {
            return None;
        }
        let own = self.status(leader, false).await.ok()?;
        (own.role == "leader").then_some(leader)
    }

    /// Commits `command` through node `id`'s Submit RPC (the leader's
    /// write path) and returns the apply result.
    pub async fn submit(
        &self,
        id: NodeId,
        command: &relay_types::Command,
    ) -> anyhow::Result<CommandResult> {
        let mut client = self.raft_client(id).await?;
        let reply = client
            .submit(SubmitRequest {
                command: relay_types::encode(command),
            })
            .await?
            .into_inner();
        Ok(relay_types::decode(&reply.result)?)
    }

    /// Waits until every running node reports the same applied index and the
    /// same state checksum, at least `min_index`; returns (index, checksum).
    pub async fn wait_converged(
        &self,
        within: Duration,
        min_index: u64,
    ) -> anyhow::Result<(u64, String)> {
        let deadline = Instant::now() + within;
        let mut last = BTreeMap::new();
        loop {
            last.clear();
            for node in self.nodes.iter().filter(|n| n.child.is_some()) {
                if let Ok(s) = self.status(node.id, true).await {
                    last.insert(node.id, (s.digest_index, s.state_checksum));
                }
            }
            let running = self.nodes.iter().filter(|n| n.child.is_some()).count();
            let first = last.values().next().cloned();
            if let Some(first) = first
                && last.len() == running
                && first.0 >= min_index
                && last.values().all(|v| *v == first)
            {
                return Ok(first);
            }
            if Instant::now() > deadline {
                bail!("nodes did not converge within {within:?}: {last:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Node `id`'s SMTP address.
    pub fn smtp_addr(&self, id: NodeId) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.node(id).ports.smtp))
    }

    /// Whether this harness has node `id` running.
    pub fn is_running(&self, id: NodeId) -> bool {
        self.node(id).child.is_some()
    }

    /// Waits until every running node's replicated state holds no message
    /// and no body (queue counts zero, no stored bodies) and all agree on
    /// the state checksum: delivery finished everywhere, checked through the
    /// state rather than by waiting. Returns the applied index.
    pub async fn wait_drained(&self, within: Duration) -> anyhow::Result<u64> {
        let deadline = Instant::now() + within;
        loop {
            let mut seen = Vec::new();
            let mut done = true;
            for node in self.nodes.iter().filter(|n| self.is_serving(n.id)) {
                match self.status(node.id, true).await {
                    Ok(s) => {
                        let q = s.queue.unwrap_or_default();
                        let empty = q.queued + q.deferred + q.held == 0 && s.stored_bodies == 0;
                        done &= empty;
                        seen.push((
                            node.id,
                            s.digest_index,
                            s.state_checksum,
                            q,
                            s.stored_bodies,
                        ));
                    }
                    Err(_) => done = false,
                }
            }
            if done && seen.windows(2).all(|w| w[0].2 == w[1].2) {
                return Ok(seen.iter().map(|s| s.1).max().unwrap_or(0));
            }
            if Instant::now() > deadline {
                bail!("queue not drained on every node within {within:?}: {seen:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Path of the binaries' directory.
    pub fn bin(name: &str) -> PathBuf {
        bin_path(name)
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        for id in 1..=self.nodes.len() as NodeId {
            self.kill(id);
        }
        // QR_KEEP_CLUSTER_DIR=1 keeps configs, data and logs for a post-mortem.
        if std::env::var_os("QR_KEEP_CLUSTER_DIR").is_some() {
            let kept = std::mem::replace(
                &mut self.dir,
                tempfile::Builder::new()
                    .prefix("qr-cluster-empty-")
                    .tempdir()
                    .expect("temp dir"),
            );
            eprintln!("kept cluster dir {}", kept.keep().display());
        }
    }
}

/// Runs `relayd --dev-certs DIR --nodes IDS` (a development CA, kept if
/// DIR has one, and new node and relayctl certificates).
pub fn dev_certs(dir: &Path, ids: &str) -> anyhow::Result<()> {
    let out = Command::new(bin_path("relayd"))
        .arg("--dev-certs")
        .arg(dir)
        .arg("--nodes")
        .arg(ids)
        .stdin(Stdio::null())
        .output()
        .context("run relayd --dev-certs")?;
    if !out.status.success() {
        bail!(
            "relayd --dev-certs failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Client TLS for the Raft port of node `server`: trust `ca`, present the
/// certificate `<certs>/<name>.pem`, expect the server to be
/// `node-<server>`.
pub fn node_client_tls(
    certs: &Path,
    ca: &Path,
    name: &str,
    server: NodeId,
) -> anyhow::Result<tonic::transport::ClientTlsConfig> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let read = |p: PathBuf| std::fs::read(&p).with_context(|| format!("read {}", p.display()));
    Ok(ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(ca.to_path_buf())?))
        .identity(Identity::from_pem(
            read(certs.join(format!("{name}.pem")))?,
            read(certs.join(format!("{name}-key.pem")))?,
        ))
        .domain_name(format!("node-{server}")))
}

async fn raft_channel(
    port: u16,
    tls: Option<tonic::transport::ClientTlsConfig>,
) -> anyhow::Result<tonic::transport::Channel> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint =
        tonic::transport::Endpoint::from_shared(format!("{scheme}://127.0.0.1:{port}"))?
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(10));
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls)?;
    }
    Ok(endpoint.connect().await?)
}

/// A message `Enqueue` command with a unique body, owned by `owner`.
pub fn test_enqueue(n: u32, owner: NodeId, domain: &str) -> relay_types::Command {
    use sha2::Digest;
    let body = bytes::Bytes::from(format!(
        "Subject: test {n}\r\nMessage-ID: <{n}@test>\r\n\r\nbody of message {n}\r\n{}\r\n",
        "x".repeat(200)
    ));
    let checksum: [u8; 32] = sha2::Sha256::digest(&body).into();
    relay_types::Command::Enqueue(Box::new(relay_types::Enqueue {
        id: relay_types::MessageId::generate(),
        received_at: relay_types::UnixMillis::now(),
        accepted_by: owner,
        owner,
        envelope: relay_types::Envelope {
            reverse_path: format!("sender{n}@sender.test"),
            recipients: vec![relay_types::Recipient::new(format!("rcpt{n}@{domain}"))],
            ..Default::default()
        },
        info: relay_types::MessageInfo::default(),
        checksum,
        expires_at: relay_types::UnixMillis::now().plus_millis(86_400_000),
        body,
    }))
}

/// Running `relayctl` against one node of a [`ProcessCluster`].
impl ProcessCluster {
    /// Runs `relayctl --addr <node id's admin port> --token <token> ARGS`
    /// and returns its output (exit status, stdout, stderr).
    pub fn relayctl(&self, id: NodeId, args: &[&str]) -> std::process::Output {
        let mut command = Command::new(bin_path("relayctl"));
        command
            .arg("--addr")
            .arg(format!("127.0.0.1:{}", self.node(id).ports.admin))
            .arg("--token")
            .arg(&self.token);
        if let Some(certs) = &self.certs {
            command
                .arg("--ca")
                .arg(certs.join("ca.pem"))
                .arg("--cert")
                .arg(certs.join("relayctl.pem"))
                .arg("--key")
                .arg(certs.join("relayctl-key.pem"));
        }
        command
            .args(args)
            .env_remove("RELAYCTL_ADDR")
            .env_remove("RELAYCTL_TOKEN")
            .env_remove("RELAYCTL_TOKEN_FILE")
            .env_remove("RELAYCTL_CA")
            .env_remove("RELAYCTL_CERT")
            .env_remove("RELAYCTL_KEY")
            .stdin(Stdio::null())
            .output()
            .expect("run relayctl")
    }

    /// Ids of the nodes this harness has running.
    pub fn running(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.id)
            .collect()
    }
}
