//! Harness for the Docker fault suite: the repository's own
//! `docker-compose.yml` brought up under a project name of the test's, with
//! host ports chosen free and the demo target's mail folder in a temporary
//! directory; faults are `docker kill`, `docker start` and `docker network
//! disconnect|connect` of the containers this harness started.
//!
//! The image is `quorum-relay:local`, built by `scripts/docker-image.sh
//! --no-build` from the binaries of this target dir (nothing is pulled).
//! The Compose tool is the v2 plugin (`docker compose`) when present, else
//! the classic `docker-compose`, as in `scripts/demo.sh`;
//! [`ComposeCluster::up_with`] picks one explicitly.
//!
//! The Raft and admin ports run mutual TLS with the development
//! certificates the project's one-shot `certs` service writes; the harness
//! copies them out of that container once after `up` and speaks to the
//! nodes as `node-1` of that CA.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, bail};
use relay_proto::raft::raft_service_client::RaftServiceClient;
use relay_proto::raft::{NodeStatusReply, NodeStatusRequest};
use tokio::time::Instant;
use tonic::transport::ClientTlsConfig;

use crate::free_ports;
use crate::load::subject;

/// The demo cluster secret the compose configs read
/// (`cluster-config/compose/secrets/cluster-secret`).
pub const COMPOSE_CLUSTER_SECRET: &str = "demo-cluster-secret-change-me";

/// The repository root (this crate lives in `tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_path_buf()
}

/// Whether a Docker engine and a Compose tool answer here.
pub fn docker_available() -> bool {
    Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success())
        && compose_command().is_some()
}

/// The Compose command: `docker compose` (the v2 plugin) when it answers,
/// else `docker-compose`.
pub fn compose_command() -> Option<Vec<&'static str>> {
    compose_commands().into_iter().next()
}

/// Every Compose tool that answers here, the v2 plugin first.
pub fn compose_commands() -> Vec<Vec<&'static str>> {
    let answers = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let mut tools = Vec::new();
    if answers("docker", &["compose", "version"]) {
        tools.push(vec!["docker", "compose"]);
    }
    if answers("docker-compose", &["version"]) {
        tools.push(vec!["docker-compose"]);
    }
    tools
}

/// Builds `quorum-relay:local` from the binaries next to the test.
pub fn build_image() -> anyhow::Result<()> {
    let bin_dir = crate::bin_path("relayd")
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/docker-image.sh"))
        .arg("--no-build")
        .env("QR_BIN_DIR", &bin_dir)
        .env("CARGO_TARGET_DIR", bin_dir.parent().expect("target dir"))
        .output()
        .context("run scripts/docker-image.sh")?;
    if !out.status.success() {
        bail!(
            "scripts/docker-image.sh failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Host ports of one node.
#[derive(Clone, Copy, Debug)]
pub struct HostPorts {
    /// SMTP.
    pub smtp: u16,
    /// Raft gRPC.
    pub raft: u16,
    /// Admin gRPC.
    pub admin: u16,
    /// HTTP (health, readiness, metrics).
    pub http: u16,
}

/// A running compose project, taken down (with its volumes) when dropped.
#[derive(Debug)]
pub struct ComposeCluster {
    project: String,
    command: Vec<&'static str>,
    env: Vec<(String, String)>,
    /// Host ports per node (index = id - 1).
    pub ports: Vec<HostPorts>,
    /// The demo target's mail folder (bind-mounted).
    pub mail_dir: tempfile::TempDir,
    /// The development CA and certificates of this project (copied out of
    /// the `certs` volume after `up`).
    pub certs: tempfile::TempDir,
    /// Container id per service, looked up once after `up` (so a fault is
    /// injected the moment the test says, not after a compose lookup).
    containers: std::collections::BTreeMap<String, String>,
}

impl ComposeCluster {
    /// `up -d` with the preferred Compose tool under a fresh project name.
    pub fn up() -> anyhow::Result<ComposeCluster> {
        Self::up_with(compose_command().context("no docker compose or docker-compose")?)
    }

    /// `up -d` with the given Compose tool (`["docker", "compose"]` or
    /// `["docker-compose"]`) under a fresh project name.
    pub fn up_with(command: Vec<&'static str>) -> anyhow::Result<ComposeCluster> {
        let mail_dir = tempfile::Builder::new().prefix("qr-mail-").tempdir()?;
        // The demo target runs as the image's unprivileged user (uid 10001).
        std::fs::set_permissions(
            mail_dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )?;
        // Per process and tool: one test may bring the tier up with each.
        let project = format!("qrfault{}{}", std::process::id(), command.len());
        let free = free_ports(12);
        let mut env = vec![
            (
                "QR_TARGET_MAIL".to_string(),
                mail_dir.path().display().to_string(),
            ),
            // Every docker kill is a power cut of that node.
            ("QR_FAILPOINT_POWER_LOSS".to_string(), "1".to_string()),
        ];
        let mut ports = Vec::new();
        for n in 0..3 {
            let p = &free[n * 4..n * 4 + 4];
            for (name, port) in ["SMTP", "RAFT", "ADMIN", "HTTP"].iter().zip(p) {
                env.push((format!("QR_{name}{}", n + 1), port.to_string()));
            }
            ports.push(HostPorts {
                smtp: p[0],
                raft: p[1],
                admin: p[2],
                http: p[3],
            });
        }
        let mut cluster = ComposeCluster {
            project,
            command,
            env,
            ports,
            mail_dir,
            certs: tempfile::Builder::new().prefix("qr-certs-").tempdir()?,
            containers: Default::default(),
        };
        cluster.compose(&["up", "-d"])?;
        // The one-shot certs service has exited 0 once `up` started the
        // relays (they depend on it); copy what it wrote.
        let out = cluster.compose(&["ps", "-a", "-q", "certs"])?;
        let certs_container = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if certs_container.is_empty() {
            bail!("no container for the certs service");
        }
        let from = format!("{certs_container}:/certs/.");
        cluster.docker(&["cp", &from, &cluster.certs.path().display().to_string()])?;
        for service in ["relay1", "relay2", "relay3", "demo-target"] {
            let out = cluster.compose(&["ps", "-q", service])?;
            let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if id.is_empty() {
                bail!("no container for {service}");
            }
            cluster.containers.insert(service.to_string(), id);
        }
        Ok(cluster)
    }

    fn compose(&self, args: &[&str]) -> anyhow::Result<Output> {
        let root = repo_root();
        let command = &self.command;
        let out = Command::new(command[0])
            .args(&command[1..])
            .arg("-f")
            .arg(root.join("docker-compose.yml"))
            .arg("-p")
            .arg(&self.project)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&root)
            .output()
            .with_context(|| format!("run {}", command.join(" ")))?;
        if !out.status.success() {
            bail!(
                "{} {args:?} failed: {}",
                command.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(out)
    }

    /// The Compose tool this project runs under, e.g. `docker compose`.
    pub fn tool(&self) -> String {
        self.command.join(" ")
    }

    /// The container id of `service`.
    pub fn container(&self, service: &str) -> anyhow::Result<String> {
        self.containers
            .get(service)
            .cloned()
            .with_context(|| format!("no container for {service}"))
    }

    fn docker(&self, args: &[&str]) -> anyhow::Result<()> {
        let out = Command::new("docker").args(args).output()?;
        if !out.status.success() {
            bail!(
                "docker {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Each long-running service's health as Docker reports it
    /// (`starting`, `healthy`, `unhealthy`), or its state when it has no
    /// health check.
    pub fn health(&self) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
        let mut out = std::collections::BTreeMap::new();
        for (service, id) in &self.containers {
            let o = Command::new("docker")
                .args([
                    "inspect",
                    "-f",
                    "{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}",
                    id,
                ])
                .output()?;
            if !o.status.success() {
                bail!(
                    "docker inspect {service}: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            out.insert(
                service.clone(),
                String::from_utf8_lossy(&o.stdout).trim().to_string(),
            );
        }
        Ok(out)
    }

    /// `docker kill` (SIGKILL) of a service's container.
    pub fn kill(&self, service: &str) -> anyhow::Result<()> {
        self.docker(&["kill", &self.container(service)?])
    }

    /// `docker start` of a stopped service's container (same volume).
    pub fn start(&self, service: &str) -> anyhow::Result<()> {
        self.docker(&["start", &self.container(service)?])
    }

    fn network(&self) -> String {
        format!("{}_relaynet", self.project)
    }

    /// Cuts a service's container off the cluster network.
    pub fn disconnect(&self, service: &str) -> anyhow::Result<()> {
        self.docker(&[
            "network",
            "disconnect",
            &self.network(),
            &self.container(service)?,
        ])
    }

    /// Reconnects it, under its service name again.
    pub fn connect(&self, service: &str) -> anyhow::Result<()> {
        self.docker(&[
            "network",
            "connect",
            "--alias",
            service,
            &self.network(),
            &self.container(service)?,
        ])
    }

    /// Node `id`'s SMTP address on the host.
    pub fn smtp_addr(&self, id: u64) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.ports[id as usize - 1].smtp))
    }

    /// Client TLS for node `id`'s Raft or admin port: trust the project's
    /// CA, present its certificate `<name>` (`node-1`, `relayctl`), expect
    /// the server to be `node-<id>`.
    pub fn client_tls(&self, name: &str, id: u64) -> anyhow::Result<ClientTlsConfig> {
        let ca = self.certs.path().join("ca.pem");
        crate::node_client_tls(self.certs.path(), &ca, name, id)
    }

    /// A channel to a published port on 127.0.0.1 (`None`: plaintext).
    pub async fn channel(
        &self,
        port: u16,
        tls: Option<ClientTlsConfig>,
    ) -> anyhow::Result<tonic::transport::Channel> {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut endpoint =
            tonic::transport::Endpoint::from_shared(format!("{scheme}://127.0.0.1:{port}"))?
                .connect_timeout(Duration::from_millis(500))
                .timeout(Duration::from_secs(5));
        if let Some(tls) = tls {
            endpoint = endpoint.tls_config(tls)?;
        }
        Ok(endpoint.connect().await?)
    }

    /// Node `id`'s status through its published Raft port (mTLS as node 1).
    pub async fn status(&self, id: u64, with_digest: bool) -> anyhow::Result<NodeStatusReply> {
        let tls = self.client_tls("node-1", id)?;
        let channel = self
            .channel(self.ports[id as usize - 1].raft, Some(tls))
            .await?;
        let secret = crate::SecretHeader(COMPOSE_CLUSTER_SECRET.to_string());
        Ok(RaftServiceClient::with_interceptor(channel, secret)
            .node_status(NodeStatusRequest { with_digest })
            .await?
            .into_inner())
    }

    /// Waits for a leader that calls itself leader, among `serving` nodes.
    pub async fn wait_for_leader(
        &self,
        within: Duration,
        serving: &[u64],
        not: Option<u64>,
    ) -> anyhow::Result<u64> {
        let deadline = Instant::now() + within;
        loop {
            for &id in serving {
                if let Ok(s) = self.status(id, false).await
                    && let Some(leader) = s.leader
                    && Some(leader) != not
                    && serving.contains(&leader)
                    && self
                        .status(leader, false)
                        .await
                        .is_ok_and(|l| l.role == "leader")
                {
                    return Ok(leader);
                }
            }
            if Instant::now() > deadline {
                bail!("no leader within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every node's state holds no message and no body and all
    /// three agree on the checksum.
    pub async fn wait_drained(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let mut seen = Vec::new();
            for id in 1..=3 {
                if let Ok(s) = self.status(id, true).await {
                    let q = s.queue.unwrap_or_default();
                    seen.push((
                        q.queued + q.deferred + q.held + s.stored_bodies,
                        s.state_checksum,
                    ));
                }
            }
            if seen.len() == 3 && seen.iter().all(|(n, c)| *n == 0 && *c == seen[0].1) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("not drained within {within:?}: {seen:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// What the demo target stored: (Subject, EHLO name of the relay) per
    /// message file.
    pub fn received(&self) -> anyhow::Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(self.mail_dir.path())? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "eml") {
                let data = std::fs::read(&path)?;
                let envelope = std::fs::read_to_string(path.with_extension("env"))
                    .with_context(|| format!("envelope of {}", path.display()))?;
                let helo = envelope
                    .lines()
                    .find_map(|l| l.strip_prefix("X-Helo: "))
                    .unwrap_or("")
                    .to_string();
                if let Some(subject) = subject(&data) {
                    out.push((subject, helo));
                }
            }
        }
        Ok(out)
    }

    /// The relay logs (for failure messages).
    pub fn logs(&self) -> String {
        self.compose(&["logs", "--no-color", "--tail", "50"])
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for ComposeCluster {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "-v", "--timeout", "5"]);
    }
}
