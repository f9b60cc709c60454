//! Three `relayd` processes, each on its own loopback address (the
//! `--net` prefix plus `.1`, `.2`, `.3`), listening there and dialling its
//! peers from there (`cluster.source_address`), so a firewall rule on `lo`
//! can cut one pair in one direction. Senders, the harness and the target
//! use other addresses and stay reachable unless a fault says otherwise.
//!
//! Settings are the shipped defaults except: snapshots and log purges every
//! few seconds (so installs and purges overlap faults), plaintext links
//! (mTLS changes nothing the nemesis can break), the power-loss failpoint
//! on every node (a kill -9 loses what a power cut would), and a short
//! history: [`HISTORY`] of trace events and finished ids instead of 7 days,
//! and retries every 30 s to 2 min instead of 5 min to about an hour.
//!
//! The history is part of the replicated state, so of every snapshot. At
//! full load (about 200 messages a second here) the shipped 7 days grow
//! the snapshot by about 70 MB every ten minutes, and a long run outgrows
//! the small data disks of the `disk` class: building the next snapshot
//! needs a second copy beside the current one. The queue lifetime must
//! not exceed the history (a late copy is recognised only while its id is
//! remembered), so it is [`HISTORY`] too, and the retries are shortened
//! so that a message deferred by several target faults in a row is still
//! retried many times within it (with 5 min doubling, three deferrals
//! would reach the lifetime and bounce mail the checker counts as lost).
//! Pruning the history every few minutes is itself exercised this way.

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

/// The cluster secret of nemesis nodes.
pub const SECRET: &str = "nemesis-cluster-secret-0123456789";
/// The admin token of nemesis nodes.
pub const TOKEN: &str = "nemesis-token";
/// The relay domain the load sends to.
pub const DOMAIN: &str = "dest.test";
/// Snapshot and purge interval: short, so they overlap faults.
pub const PURGE_INTERVAL_SECS: u64 = 3;
/// History retention and queue lifetime (see the module doc).
pub const HISTORY: &str = "15m";

/// One node: addresses, files, and the process when running.
#[derive(Debug)]
pub struct Node {
    /// Node id (1..=3).
    pub id: u64,
    /// Its own loopback address.
    pub ip: IpAddr,
    /// Ports (the same on every node: the addresses differ).
    pub ports: Ports,
    /// Config file.
    pub config: PathBuf,
    /// Log file (appended across restarts).
    pub log: PathBuf,
    /// Data dir (`data_dir`, relative to the config file).
    pub data: PathBuf,
    child: Option<Child>,
    paused: bool,
}

/// The ports every node listens on (at its own address).
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    /// SMTP.
    pub smtp: u16,
    /// Raft gRPC.
    pub raft: u16,
    /// Admin gRPC.
    pub admin: u16,
    /// HTTP (metrics).
    pub http: u16,
}

impl Node {
    /// SMTP address.
    pub fn smtp(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.ports.smtp)
    }
    /// Raft gRPC address.
    pub fn raft(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.ports.raft)
    }
    /// Admin gRPC address.
    pub fn admin(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.ports.admin)
    }
    /// HTTP address.
    pub fn http(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.ports.http)
    }
    /// Whether its process runs (paused or not).
    pub fn running(&self) -> bool {
        self.child.is_some()
    }
    /// Whether it runs and is not stopped with SIGSTOP.
    pub fn serving(&self) -> bool {
        self.child.is_some() && !self.paused
    }
    /// The PID of its process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// Picks ports free on every address in `ips`, below the ephemeral range
/// (an outgoing connection from a node address could otherwise take a
/// port a restarting node needs), from a window chosen by `salt`.
pub fn free_ports(ips: &[IpAddr], salt: u64) -> anyhow::Result<Ports> {
    for attempt in 0..2_000u64 {
        let base = 20_000 + ((salt.wrapping_add(attempt * 7919)) % 3_000) * 4;
        let candidates = [base, base + 1, base + 2, base + 3].map(|p| p as u16);
        let free = candidates
            .iter()
            .all(|&port| ips.iter().all(|&ip| TcpListener::bind((ip, port)).is_ok()));
        if free {
            let [smtp, raft, admin, http] = candidates;
            return Ok(Ports {
                smtp,
                raft,
                admin,
                http,
            });
        }
    }
    bail!("no four ports free on every node address")
}

/// The three nodes.
#[derive(Debug)]
pub struct Cluster {
    /// Nodes, index = id - 1.
    pub nodes: Vec<Node>,
    bin_dir: PathBuf,
    /// Environment every node gets (test-only switches included).
    base_env: Vec<(String, String)>,
}

impl Cluster {
    /// Writes the configs under `dir` for nodes at `ips` routing
    /// [`DOMAIN`] to `target`.
    pub fn create(
        dir: &Path,
        ips: &[IpAddr],
        ports: Ports,
        target: SocketAddr,
        bin_dir: &Path,
        base_env: Vec<(String, String)>,
    ) -> anyhow::Result<Cluster> {
        let mut members = String::new();
        for (i, ip) in ips.iter().enumerate() {
            members.push_str(&format!(
                "[[cluster.members]]\nid = {}\nraft = \"{}\"\n\n",
                i + 1,
                SocketAddr::new(*ip, ports.raft)
            ));
        }
        let mut nodes = Vec::new();
        for (i, ip) in ips.iter().enumerate() {
            let id = i as u64 + 1;
            let config = dir.join(format!("node{id}.toml"));
            let text = format!(
                r#"# Written by relay-nemesis: shipped settings, except snapshots and
# purges every {PURGE_INTERVAL_SECS} s, plaintext links, a {HISTORY} history
# and queue lifetime, and retries every 30 s to 2 min.
node_id = {id}
data_dir = "node{id}"
hostname = "relay{id}.test"

[listen]
smtp = "{ip}:{smtp}"
raft = "{ip}:{raft}"
admin = "{ip}:{admin}"
http = "{ip}:{http}"

[cluster]
secret = "{SECRET}"
bootstrap = {bootstrap}
source_address = "{ip}"
purge_interval = "{PURGE_INTERVAL_SECS}s"
snapshot_every = 2000
history_retention = "{HISTORY}"

{members}
[smtp]
tls = "off"

[delivery]
queue_lifetime = "{HISTORY}"
min_backoff = "30s"
max_backoff = "120s"

[[routes]]
domain = "{DOMAIN}"
targets = ["{target}"]
tls = "none"

[admin]
token = "{TOKEN}"
"#,
                smtp = ports.smtp,
                raft = ports.raft,
                admin = ports.admin,
                http = ports.http,
                bootstrap = id == 1,
            );
            std::fs::write(&config, text).with_context(|| format!("write {}", config.display()))?;
            nodes.push(Node {
                id,
                ip: *ip,
                ports,
                config,
                log: dir.join(format!("node{id}.log")),
                data: dir.join(format!("node{id}")),
                child: None,
                paused: false,
            });
        }
        Ok(Cluster {
            nodes,
            bin_dir: bin_dir.to_path_buf(),
            base_env,
        })
    }

    /// Node `id`.
    pub fn node(&self, id: u64) -> &Node {
        &self.nodes[id as usize - 1]
    }

    /// Rewrites every config with `bootstrap = false`: once the cluster
    /// exists, no node (not even one started on an emptied store) may
    /// found one.
    pub fn clear_bootstrap(&self) -> anyhow::Result<()> {
        for node in &self.nodes {
            let text = std::fs::read_to_string(&node.config)?;
            std::fs::write(
                &node.config,
                text.replace("bootstrap = true", "bootstrap = false"),
            )
            .with_context(|| format!("write {}", node.config.display()))?;
        }
        Ok(())
    }

    /// Deletes everything in node `id`'s data dir (the store and its voter
    /// guard), keeping the directory (it may be a mount point). The node
    /// must not run.
    pub fn wipe_data(&self, id: u64) -> anyhow::Result<()> {
        let node = self.node(id);
        if node.running() {
            bail!("node {id} runs; its data dir stays");
        }
        for entry in std::fs::read_dir(&node.data)? {
            let path = entry?.path();
            if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            }
            .with_context(|| format!("delete {}", path.display()))?;
        }
        Ok(())
    }

    /// Starts node `id` with the base environment plus `extra`.
    pub fn start(&mut self, id: u64, extra: &[(String, String)]) -> anyhow::Result<()> {
        let bin = self.bin_dir.join("relayd");
        let node = &mut self.nodes[id as usize - 1];
        if node.child.is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)?;
        use std::io::Write as _;
        let mut note = log.try_clone()?;
        let _ = writeln!(note, "=== relay-nemesis: start node {id} env {extra:?}");
        let child = Command::new(&bin)
            .arg("--config")
            .arg(&node.config)
            .env("RELAY_LOG", "info,openraft=warn")
            .env("QR_FAILPOINT_POWER_LOSS", "1")
            .envs(self.base_env.iter().map(|(k, v)| (k, v)))
            .envs(extra.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    /// SIGKILLs node `id` (if it runs) and reaps it.
    pub fn kill(&mut self, id: u64) {
        let node = &mut self.nodes[id as usize - 1];
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        node.paused = false;
    }

    /// SIGTERM, then waits up to `within` for the exit (SIGKILL after).
    pub fn stop(&mut self, id: u64, within: Duration) {
        if self.node(id).paused {
            self.signal(id, "CONT");
        }
        self.signal(id, "TERM");
        let node = &mut self.nodes[id as usize - 1];
        if let Some(child) = node.child.as_mut() {
            let deadline = std::time::Instant::now() + within;
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    node.child = None;
                    node.paused = false;
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.kill(id);
    }

    /// SIGSTOP.
    pub fn pause(&mut self, id: u64) {
        if self.node(id).running() {
            self.signal(id, "STOP");
            self.nodes[id as usize - 1].paused = true;
        }
    }

    /// SIGCONT.
    pub fn resume(&mut self, id: u64) {
        if self.node(id).paused {
            self.signal(id, "CONT");
            self.nodes[id as usize - 1].paused = false;
        }
    }

    /// Reaps node `id` if its process ended by itself; the exit status.
    pub fn reap(&mut self, id: u64) -> Option<std::process::ExitStatus> {
        let node = &mut self.nodes[id as usize - 1];
        let status = node.child.as_mut()?.try_wait().ok()??;
        node.child = None;
        node.paused = false;
        Some(status)
    }

    fn signal(&self, id: u64, signal: &str) {
        if let Some(pid) = self.node(id).pid() {
            // The PID is our own child, not yet reaped: it cannot be reused.
            let _ = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(pid.to_string())
                .status();
        }
    }

    /// Runs `relayctl` against node `id`'s admin port.
    pub fn relayctl(&self, id: u64, args: &[&str]) -> anyhow::Result<std::process::Output> {
        let bin = self.bin_dir.join("relayctl");
        Command::new(&bin)
            .arg("--addr")
            .arg(self.node(id).admin().to_string())
            .arg("--token")
            .arg(TOKEN)
            .args(args)
            .env_remove("RELAYCTL_ADDR")
            .env_remove("RELAYCTL_TOKEN")
            .env_remove("RELAYCTL_TOKEN_FILE")
            .env("RELAYCTL_OPERATOR", "nemesis")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("run {}", bin.display()))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for id in 1..=self.nodes.len() as u64 {
            self.resume(id);
            self.kill(id);
        }
    }
}
