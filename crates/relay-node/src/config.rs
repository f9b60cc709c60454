//! The node's TOML configuration: the file shape (strict: unknown keys are
//! errors) and its validation into [`NodeConfig`]. Every problem is reported
//! at once, each naming the file and the key.
//!
//! Defaults live in one place: the [`Default`] of each file section below.
//! [`keys`] documents every key (the reference in `docs/configuration.md`
//! is generated from it and checked against what this parser accepts),
//! prints the effective configuration (`relayd --print-config`) and derives
//! the settings digest the drill compares across nodes.

mod keys;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use relay_types::{NodeId, Route, TlsPolicy, normalize_domain};
use serde::{Deserialize, Serialize};

pub use keys::{KEYS, Key, Scope, print_effective, reference_markdown};

/// The file as written, every default filled in. Durations are strings
/// like `"5s"`, `"250ms"`. Keys without a default and without a value are
/// `None` (and absent from `--print-config`).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    node_id: NodeId,
    data_dir: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    hostname: Option<String>,
    listen: FileListen,
    cluster: FileCluster,
    #[serde(default)]
    smtp: FileSmtp,
    #[serde(default)]
    delivery: FileDelivery,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    routes: Vec<FileRoute>,
    admin: FileAdmin,
    #[serde(default)]
    tls: FileTls,
}

/// `[tls]`: mutual TLS on the Raft and admin gRPC ports.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct FileTls {
    /// `"off"` (plaintext) or `"on"` (mTLS required; plaintext refused).
    mode: String,
    /// The cluster CA certificate (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    ca: Option<PathBuf>,
    /// This node's certificate (PEM, DNS name `node-<id>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    cert: Option<PathBuf>,
    /// This node's private key (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<PathBuf>,
    /// Require a client certificate from the CA on the admin port as well
    /// as the token.
    admin_client_cert: bool,
}

impl Default for FileTls {
    fn default() -> Self {
        FileTls {
            mode: "off".into(),
            ca: None,
            cert: None,
            key: None,
            admin_client_cert: false,
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct FileListen {
    smtp: String,
    raft: String,
    admin: String,
    http: String,
    /// Submission listener (587 role); off when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    submission: Option<String>,
    /// Implicit-TLS submission listener (465 role); off when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    smtps: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct FileCluster {
    bootstrap: bool,
    /// Required (at least one); the empty default is reported by the
    /// validator with the key's name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    members: Vec<FileMember>,
    submit_timeout: String,
    takeover_after: String,
    heartbeat: String,
    election_timeout_min: String,
    election_timeout_max: String,
    snapshot_every: u64,
    keep_logs: u64,
    purge_interval: String,
    history_retention: String,
    /// Source IP of connections to peers (default: chosen by the kernel).
    #[serde(skip_serializing_if = "Option::is_none")]
    source_address: Option<String>,
    /// Shared secret on the node-to-node port; exactly one of the two.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret_file: Option<PathBuf>,
}

impl Default for FileCluster {
    fn default() -> Self {
        FileCluster {
            bootstrap: false,
            members: Vec::new(),
            submit_timeout: "5s".into(),
            takeover_after: "10s".into(),
            heartbeat: "100ms".into(),
            election_timeout_min: "500ms".into(),
            election_timeout_max: "1000ms".into(),
            snapshot_every: 10_000,
            keep_logs: 1_000,
            purge_interval: "5m".into(),
            history_retention: "7d".into(),
            source_address: None,
            secret: None,
            secret_file: None,
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct FileMember {
    id: NodeId,
    raft: String,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct FileSmtp {
    max_message_size: u64,
    /// Octets of the data dir's file system kept free: MAIL is refused
    /// with 452 4.3.1 below this plus 1.5 × the message size.
    queue_minfree: u64,
    max_recipients: usize,
    max_connections: usize,
    max_connections_per_ip: usize,
    command_timeout: String,
    data_timeout: String,
    authorized_networks: Vec<String>,
    /// `"auto"` (self-signed development certificate in the data dir),
    /// `"off"`, or `"files"` with `tls_cert`/`tls_key`.
    tls: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_key: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth: Option<FileSmtpAuth>,
    /// Whether this node takes SMTP while it is a learner (default true);
    /// `false` for a recovery-site replica, which takes mail only once it
    /// is a voter (promoted, or recovered).
    accept_as_learner: bool,
    /// Load balancers (CIDRs) whose connections start with a PROXY
    /// protocol header; empty: PROXY protocol off.
    proxy_protocol_from: Vec<String>,
    /// How long a load balancer has to send its header.
    proxy_protocol_timeout: String,
    /// Directory of recipient lists, one file per relay domain.
    #[serde(skip_serializing_if = "Option::is_none")]
    recipient_lists_dir: Option<PathBuf>,
    /// Probe the route's target at RCPT.
    recipient_verification: bool,
    /// Keep a target's "exists" this long.
    recipient_verification_positive_ttl: String,
    /// Keep a target's "unknown" this long.
    recipient_verification_negative_ttl: String,
}

impl Default for FileSmtp {
    fn default() -> Self {
        FileSmtp {
            max_message_size: 10 * 1024 * 1024,
            queue_minfree: 128 * 1024 * 1024,
            max_recipients: 1000,
            max_connections: 1000,
            max_connections_per_ip: 200,
            command_timeout: "300s".into(),
            data_timeout: "300s".into(),
            authorized_networks: vec!["127.0.0.0/8".into(), "::1/128".into()],
            tls: "auto".into(),
            tls_cert: None,
            tls_key: None,
            auth: None,
            accept_as_learner: true,
            proxy_protocol_from: Vec::new(),
            proxy_protocol_timeout: "5s".into(),
            recipient_lists_dir: None,
            recipient_verification: false,
            recipient_verification_positive_ttl: "7d".into(),
            recipient_verification_negative_ttl: "3h".into(),
        }
    }
}

/// `[smtp.auth]`: SMTP AUTH over TLS for submitters outside the
/// authorized networks.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct FileSmtpAuth {
    /// user name → argon2 hash (`relayd --hash-password`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    users: BTreeMap<String, String>,
    /// More users, one `name:hash` per line (`#` starts a comment).
    #[serde(skip_serializing_if = "Option::is_none")]
    users_file: Option<PathBuf>,
    max_failures: u32,
    failure_window: String,
}

impl Default for FileSmtpAuth {
    fn default() -> Self {
        FileSmtpAuth {
            users: BTreeMap::new(),
            users_file: None,
            max_failures: 5,
            failure_window: "5m".into(),
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct FileDelivery {
    min_backoff: String,
    max_backoff: String,
    queue_lifetime: String,
    max_concurrent: usize,
    per_target_concurrency: usize,
    poll_interval: String,
    connect_timeout: String,
    command_timeout: String,
    data_timeout: String,
    /// Close a cached idle session to a target after this long (Postfix's
    /// `smtp_connection_cache_time_limit`).
    connection_cache_time_limit: String,
    /// Do not reuse a session opened longer ago than this (Postfix's
    /// `smtp_connection_reuse_time_limit`).
    connection_reuse_time_limit: String,
    /// Transactions per session at most; 1 turns reuse off.
    connection_reuse_count_limit: u32,
    /// Targets for recipient domains without a route of their own (like
    /// Postfix's `relayhost`); none: such recipients are not deliverable.
    #[serde(skip_serializing_if = "Option::is_none")]
    default_route: Option<Vec<String>>,
    default_route_tls: String,
    /// Extra trust anchors (PEM) for `tls = "required"` targets.
    #[serde(skip_serializing_if = "Option::is_none")]
    ca_file: Option<PathBuf>,
    /// `[delivery.dns]`: MX resolution for domains without a route.
    dns: FileDns,
}

/// `[delivery.dns]`: where recipients of domains without a route (and
/// without `default_route`) go, from DNS.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct FileDns {
    /// Resolve such domains through DNS (MX, then A/AAAA); `false`: they
    /// are deferred with "no route", as before MX support.
    enabled: bool,
    /// Name servers, `IP` or `IP:port`; empty: the system's resolv.conf.
    nameservers: Vec<String>,
    /// Timeout of one query to one server.
    timeout: String,
    /// SMTP port of the hosts found through MX.
    mx_port: u16,
    /// Domains whose answers are cached at most.
    cache_entries: usize,
}

impl Default for FileDns {
    fn default() -> Self {
        let d = relay_delivery::config::DnsSettings::default();
        FileDns {
            enabled: true,
            nameservers: Vec::new(),
            timeout: humantime::format_duration(d.timeout).to_string(),
            mx_port: d.port,
            cache_entries: d.cache_entries,
        }
    }
}

impl Default for FileDelivery {
    fn default() -> Self {
        FileDelivery {
            min_backoff: "300s".into(),
            max_backoff: "4000s".into(),
            queue_lifetime: "5d".into(),
            max_concurrent: 20,
            per_target_concurrency: 10,
            poll_interval: "1s".into(),
            connect_timeout: "30s".into(),
            command_timeout: "300s".into(),
            data_timeout: "600s".into(),
            connection_cache_time_limit: "2s".into(),
            connection_reuse_time_limit: "300s".into(),
            connection_reuse_count_limit: 100,
            default_route: None,
            default_route_tls: default_route_tls(),
            ca_file: None,
            dns: FileDns::default(),
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct FileRoute {
    domain: String,
    targets: Vec<String>,
    #[serde(default = "default_route_tls")]
    tls: String,
}

fn default_route_tls() -> String {
    TlsPolicy::default().to_string()
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct FileAdmin {
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_file: Option<PathBuf>,
}

/// TLS for inbound SMTP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SmtpTls {
    /// No STARTTLS.
    Off,
    /// A self-signed development certificate, created in the data dir at
    /// first start.
    SelfSigned,
    /// Certificate and key PEM files.
    Files {
        /// Certificate chain.
        cert: PathBuf,
        /// Private key.
        key: PathBuf,
    },
}

/// Validated `[tls]` with `mode = "on"`: mTLS on the Raft and admin ports.
#[derive(Clone, Debug)]
pub struct PeerTlsSettings {
    /// CA, certificate and key files (read again on SIGHUP).
    pub files: relay_cluster::tls::TlsFiles,
    /// Require a client certificate on the admin port.
    pub admin_client_cert: bool,
}

/// Validated SMTP settings.
#[derive(Clone, Debug)]
pub struct SmtpSettings {
    /// Octets.
    pub max_message_size: u64,
    /// Octets kept free in the data dir's file system (see
    /// `SmtpBackend::with_queue_minfree`).
    pub queue_minfree: u64,
    /// Per transaction.
    pub max_recipients: usize,
    /// Global.
    pub max_connections: usize,
    /// Per client IP.
    pub max_connections_per_ip: usize,
    /// Per command.
    pub command_timeout: Duration,
    /// Whole DATA phase.
    pub data_timeout: Duration,
    /// Clients that may relay to any domain.
    pub authorized_networks: Vec<relay_smtp::Cidr>,
    /// STARTTLS.
    pub tls: SmtpTls,
    /// SMTP AUTH; `None` when no users are configured.
    pub auth: Option<SmtpAuthSettings>,
    /// Take SMTP while a learner (`false`: a recovery-site replica answers
    /// `421 4.3.2` until it is a voter).
    pub accept_as_learner: bool,
    /// Load balancers that send a PROXY protocol header.
    pub proxy_protocol_from: Vec<relay_smtp::Cidr>,
    /// Wait for that header.
    pub proxy_protocol_timeout: Duration,
    /// Recipient lists of relay domains (checked to load at start).
    pub recipient_lists_dir: Option<PathBuf>,
    /// Recipient verification: `Some((positive_ttl, negative_ttl))` when on.
    pub recipient_verification: Option<(Duration, Duration)>,
}

/// Validated `[smtp.auth]`.
#[derive(Clone, Debug)]
pub struct SmtpAuthSettings {
    /// user → argon2 hash (checked to parse).
    pub users: std::collections::HashMap<String, String>,
    /// Failed logins per client IP before `421`.
    pub max_failures: u32,
    /// The window those failures are counted in.
    pub failure_window: Duration,
}

/// Validated delivery settings.
#[derive(Clone, Debug)]
pub struct DeliverySettings {
    /// First retry delay.
    pub min_backoff: Duration,
    /// Retry delay cap.
    pub max_backoff: Duration,
    /// Bounce after this long in the queue.
    pub queue_lifetime: Duration,
    /// Deliveries at once.
    pub max_concurrent: usize,
    /// Deliveries at once per target.
    pub per_target_concurrency: usize,
    /// Queue scan interval when nothing wakes the loop.
    pub poll_interval: Duration,
    /// TCP connect timeout per target.
    pub connect_timeout: Duration,
    /// Wait for the greeting and each reply.
    pub command_timeout: Duration,
    /// Wait for the reply to the final dot.
    pub data_timeout: Duration,
    /// Reuse of SMTP sessions per target (idle time, reuse time, count).
    pub connection_cache: relay_delivery::config::CacheSettings,
    /// Route for domains without their own.
    pub default_route: Option<Route>,
    /// Extra trust anchors (PEM text of `delivery.ca_file`).
    pub extra_root_certificates_pem: Vec<String>,
    /// MX resolution for domains without a route (`[delivery.dns]`);
    /// `None`: off.
    pub dns: Option<relay_delivery::config::DnsSettings>,
}

/// The whole validated configuration of one node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The file it came from.
    pub path: PathBuf,
    /// This node.
    pub node_id: NodeId,
    /// RocksDB and TLS material live here.
    pub data_dir: PathBuf,
    /// Our SMTP name (greeting, Received, HELO, DSN).
    pub hostname: String,
    /// SMTP listener.
    pub smtp_listen: SocketAddr,
    /// Submission listener (STARTTLS, then AUTH, before MAIL), if any.
    pub submission_listen: Option<SocketAddr>,
    /// Implicit-TLS submission listener, if any.
    pub smtps_listen: Option<SocketAddr>,
    /// Raft gRPC listener.
    pub raft_listen: SocketAddr,
    /// Admin gRPC listener.
    pub admin_listen: SocketAddr,
    /// Metrics / health / status HTTP listener.
    pub http_listen: SocketAddr,
    /// Initialise a new cluster if none exists.
    pub bootstrap: bool,
    /// Initial voters: id → Raft address.
    pub members: BTreeMap<NodeId, String>,
    /// Proposal commit deadline (SMTP 451 after it).
    pub submit_timeout: Duration,
    /// A node unreachable this long loses its messages to the others.
    pub takeover_after: Duration,
    /// Raft heartbeat.
    pub heartbeat: Duration,
    /// Raft election timeout range.
    pub election_timeout: (Duration, Duration),
    /// Snapshot after this many entries.
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot.
    pub keep_logs: u64,
    /// Snapshot and purge the Raft log this often (bodies leave the log).
    pub purge_interval: Duration,
    /// How long trace events and finished-message ids are kept (by the
    /// message's acceptance time); at least `delivery.queue_lifetime`.
    pub history_retention: Duration,
    /// Source IP of outgoing connections to peers (`cluster.source_address`),
    /// so a host with several addresses dials from the one its peers (and
    /// their firewalls) know; `None`: the kernel chooses.
    pub source_address: Option<std::net::IpAddr>,
    /// SMTP settings.
    pub smtp: SmtpSettings,
    /// Delivery settings.
    pub delivery: DeliverySettings,
    /// Routes seeded into the replicated state when the cluster is created.
    pub initial_routes: Vec<(String, Route)>,
    /// Bearer token for the admin API.
    pub admin_token: String,
    /// The shared secret on the node-to-node port (`cluster.secret`).
    pub cluster_secret: String,
    /// mTLS on the Raft and admin ports; `None` when `tls.mode = "off"`.
    pub tls: Option<PeerTlsSettings>,
    /// See [`NodeConfig::shared_settings_digest`].
    settings_digest: String,
}

/// Everything wrong with a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not have the expected shape.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (names the key and line).
        message: String,
    },
    /// Values are invalid; one line per problem, each `file: key: problem`.
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

impl NodeConfig {
    /// Hex SHA-256 of the settings that must be the same on every node:
    /// every key the reference marks [`Scope::Shared`] (limits, retry
    /// policy, timings, members, seeded routes, relay policy), with its
    /// effective value, and nothing node-specific (id, addresses, paths,
    /// secrets). `relayctl drill` compares it across nodes.
    pub fn shared_settings_digest(&self) -> String {
        self.settings_digest.clone()
    }
}

impl NodeConfig {
    /// Reads and validates `path`. Relative paths inside the file are taken
    /// relative to the file's directory.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Validates `text` as if read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<NodeConfig, ConfigError> {
        let file = read_shape(path, text)?;
        let settings_digest = keys::shared_digest(&keys::effective_table(&file));
        let mut v = Validator {
            path: path.display().to_string(),
            problems: Vec::new(),
        };
        let base = path.parent().unwrap_or(Path::new("."));

        let smtp_listen = v.addr("listen.smtp", &file.listen.smtp);
        let raft_listen = v.addr("listen.raft", &file.listen.raft);
        let admin_listen = v.addr("listen.admin", &file.listen.admin);
        let http_listen = v.addr("listen.http", &file.listen.http);
        let submission_listen = file
            .listen
            .submission
            .as_deref()
            .and_then(|a| v.addr("listen.submission", a));
        let smtps_listen = file
            .listen
            .smtps
            .as_deref()
            .and_then(|a| v.addr("listen.smtps", a));

        let mut members = BTreeMap::new();
        for (i, m) in file.cluster.members.iter().enumerate() {
            let key = format!("cluster.members[{i}]");
            if members.insert(m.id, m.raft.clone()).is_some() {
                v.problem(&format!("{key}.id"), format!("duplicate node id {}", m.id));
            }
            if m.raft
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                v.problem(
                    &format!("{key}.raft"),
                    format!("{:?} is not host:port", m.raft),
                );
            }
        }
        if file.cluster.members.is_empty() {
            v.problem("cluster.members", "at least one member is required".into());
        } else if !members.contains_key(&file.node_id) {
            v.problem(
                "node_id",
                format!("node {} is not listed in cluster.members", file.node_id),
            );
        }

        let c = &file.cluster;
        let submit_timeout = v.duration("cluster.submit_timeout", &c.submit_timeout);
        let purge_interval = v.duration("cluster.purge_interval", &c.purge_interval);
        let takeover_after = v.duration("cluster.takeover_after", &c.takeover_after);
        let history_retention = v.duration("cluster.history_retention", &c.history_retention);
        let heartbeat = v.duration("cluster.heartbeat", &c.heartbeat);
        let election_min = v.duration("cluster.election_timeout_min", &c.election_timeout_min);
        let election_max = v.duration("cluster.election_timeout_max", &c.election_timeout_max);
        let source_address = c.source_address.as_deref().and_then(|text| {
            text.parse::<std::net::IpAddr>()
                .map_err(|e| {
                    v.problem(
                        "cluster.source_address",
                        format!("{text:?} is not an IP address ({e})"),
                    )
                })
                .ok()
        });
        if election_min <= heartbeat || election_max <= election_min {
            v.problem(
                "cluster.election_timeout_min",
                "need heartbeat < election_timeout_min < election_timeout_max".into(),
            );
        }

        let s = &file.smtp;
        let mut authorized_networks = Vec::new();
        for (i, n) in s.authorized_networks.iter().enumerate() {
            match n.parse::<relay_smtp::Cidr>() {
                Ok(net) => authorized_networks.push(net),
                Err(e) => v.problem(&format!("smtp.authorized_networks[{i}]"), e.to_string()),
            }
        }
        let tls = match s.tls.as_str() {
            "auto" => SmtpTls::SelfSigned,
            "off" => SmtpTls::Off,
            "files" => match (&s.tls_cert, &s.tls_key) {
                (Some(cert), Some(key)) => SmtpTls::Files {
                    cert: base.join(cert),
                    key: base.join(key),
                },
                _ => {
                    v.problem(
                        "smtp.tls",
                        "\"files\" needs smtp.tls_cert and smtp.tls_key".into(),
                    );
                    SmtpTls::Off
                }
            },
            other => {
                v.problem(
                    "smtp.tls",
                    format!("{other:?}: expected \"auto\", \"off\" or \"files\""),
                );
                SmtpTls::Off
            }
        };
        let auth = s.auth.as_ref().map(|a| smtp_auth(&mut v, base, a));
        for (key, set) in [
            ("listen.submission", file.listen.submission.is_some()),
            ("listen.smtps", file.listen.smtps.is_some()),
        ] {
            if set && tls == SmtpTls::Off {
                v.problem(key, "needs TLS: smtp.tls must not be \"off\"".into());
            }
            if set && auth.is_none() {
                v.problem(key, "needs SMTP AUTH users ([smtp.auth])".into());
            }
        }
        let mut proxy_protocol_from = Vec::new();
        for (i, n) in s.proxy_protocol_from.iter().enumerate() {
            match n.parse::<relay_smtp::Cidr>() {
                Ok(net) => proxy_protocol_from.push(net),
                Err(e) => v.problem(&format!("smtp.proxy_protocol_from[{i}]"), e.to_string()),
            }
        }
        let recipient_lists_dir = s.recipient_lists_dir.as_ref().map(|d| {
            let dir = base.join(d);
            if let Err(e) = relay_smtp::recipients::RecipientLists::load(&dir) {
                v.problem("smtp.recipient_lists_dir", e.to_string());
            }
            dir
        });
        let verify_positive = v.duration(
            "smtp.recipient_verification_positive_ttl",
            &s.recipient_verification_positive_ttl,
        );
        let verify_negative = v.duration(
            "smtp.recipient_verification_negative_ttl",
            &s.recipient_verification_negative_ttl,
        );
        let smtp = SmtpSettings {
            max_message_size: s.max_message_size,
            queue_minfree: s.queue_minfree,
            max_recipients: s.max_recipients,
            max_connections: s.max_connections,
            max_connections_per_ip: s.max_connections_per_ip,
            command_timeout: v.duration("smtp.command_timeout", &s.command_timeout),
            data_timeout: v.duration("smtp.data_timeout", &s.data_timeout),
            authorized_networks,
            tls,
            auth,
            accept_as_learner: s.accept_as_learner,
            proxy_protocol_from,
            proxy_protocol_timeout: v
                .duration("smtp.proxy_protocol_timeout", &s.proxy_protocol_timeout),
            recipient_lists_dir,
            recipient_verification: s
                .recipient_verification
                .then_some((verify_positive, verify_negative)),
        };

        let d = &file.delivery;
        let delivery = DeliverySettings {
            min_backoff: v.duration("delivery.min_backoff", &d.min_backoff),
            max_backoff: v.duration("delivery.max_backoff", &d.max_backoff),
            queue_lifetime: v.duration("delivery.queue_lifetime", &d.queue_lifetime),
            max_concurrent: d.max_concurrent,
            per_target_concurrency: d.per_target_concurrency,
            poll_interval: v.duration("delivery.poll_interval", &d.poll_interval),
            connect_timeout: v.duration("delivery.connect_timeout", &d.connect_timeout),
            command_timeout: v.duration("delivery.command_timeout", &d.command_timeout),
            data_timeout: v.duration("delivery.data_timeout", &d.data_timeout),
            connection_cache: relay_delivery::config::CacheSettings {
                idle_timeout: v.duration(
                    "delivery.connection_cache_time_limit",
                    &d.connection_cache_time_limit,
                ),
                reuse_time_limit: v.duration(
                    "delivery.connection_reuse_time_limit",
                    &d.connection_reuse_time_limit,
                ),
                max_messages: if d.connection_reuse_count_limit == 0 {
                    v.problem(
                        "delivery.connection_reuse_count_limit",
                        "must be at least 1 (1 turns connection reuse off)".into(),
                    );
                    1
                } else {
                    d.connection_reuse_count_limit
                },
            },
            default_route: d.default_route.as_ref().map(|targets| {
                v.route(
                    "delivery.default_route",
                    "delivery.default_route_tls",
                    targets,
                    &d.default_route_tls,
                )
            }),
            extra_root_certificates_pem: match &d.ca_file {
                None => Vec::new(),
                Some(f) => match std::fs::read_to_string(base.join(f)) {
                    Ok(pem) if pem.contains("-----BEGIN CERTIFICATE-----") => vec![pem],
                    Ok(_) => {
                        v.problem(
                            "delivery.ca_file",
                            format!("{} holds no PEM certificate", base.join(f).display()),
                        );
                        Vec::new()
                    }
                    Err(e) => {
                        v.problem(
                            "delivery.ca_file",
                            format!("cannot read {}: {e}", base.join(f).display()),
                        );
                        Vec::new()
                    }
                },
            },
            dns: dns_settings(&mut v, &d.dns),
        };

        let mut initial_routes = Vec::new();
        let mut domains = BTreeSet::new();
        for (i, r) in file.routes.iter().enumerate() {
            let key = format!("routes[{i}]");
            let domain = normalize_domain(&r.domain);
            if domain.is_empty() {
                v.problem(&format!("{key}.domain"), "empty domain".into());
            } else if !domains.insert(domain.clone()) {
                v.problem(
                    &format!("{key}.domain"),
                    format!("duplicate route for {domain}"),
                );
            }
            let route = v.route(
                &format!("{key}.targets"),
                &format!("{key}.tls"),
                &r.targets,
                &r.tls,
            );
            initial_routes.push((domain, route));
        }

        let admin_token = match (&file.admin.token, &file.admin.token_file) {
            (Some(t), None) => t.clone(),
            (None, Some(f)) => match std::fs::read_to_string(base.join(f)) {
                Ok(t) => t.trim().to_string(),
                Err(e) => {
                    v.problem(
                        "admin.token_file",
                        format!("cannot read {}: {e}", base.join(f).display()),
                    );
                    String::new()
                }
            },
            _ => {
                v.problem(
                    "admin",
                    "set exactly one of admin.token and admin.token_file".into(),
                );
                String::new()
            }
        };
        if admin_token.is_empty() && v.problems.is_empty() {
            v.problem("admin.token", "the admin token must not be empty".into());
        }

        let cluster_secret = v.secret(
            "cluster.secret",
            "cluster.secret_file",
            base,
            c.secret.as_deref(),
            c.secret_file.as_deref(),
        );

        if history_retention < delivery.queue_lifetime {
            // A late copy of a finished message is recognised only while its
            // id is remembered, and copies can arrive as long as it could be
            // queued.
            v.problem(
                "cluster.history_retention",
                format!(
                    "must be at least delivery.queue_lifetime ({})",
                    humantime::format_duration(delivery.queue_lifetime)
                ),
            );
        }
        let tls = peer_tls(&mut v, base, &file.tls);

        if !v.problems.is_empty() {
            return Err(ConfigError::Invalid(v.problems));
        }
        let hostname = file.hostname.clone().unwrap_or_else(|| {
            hostname::get()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".into())
        });
        Ok(NodeConfig {
            path: path.to_path_buf(),
            node_id: file.node_id,
            data_dir: base.join(&file.data_dir),
            hostname,
            smtp_listen: smtp_listen.expect("checked"),
            submission_listen,
            smtps_listen,
            raft_listen: raft_listen.expect("checked"),
            admin_listen: admin_listen.expect("checked"),
            http_listen: http_listen.expect("checked"),
            bootstrap: c.bootstrap,
            members,
            submit_timeout,
            takeover_after,
            heartbeat,
            election_timeout: (election_min, election_max),
            snapshot_every: c.snapshot_every,
            keep_logs: c.keep_logs,
            purge_interval,
            history_retention,
            source_address,
            smtp,
            delivery,
            initial_routes,
            admin_token,
            cluster_secret,
            tls,
            settings_digest,
        })
    }
}

/// Reads `text` into the file shape (TOML syntax, known keys, value
/// types); no value is checked beyond its type.
fn read_shape(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().replace('\n', "\n  "),
    })
}

struct Validator {
    path: String,
    problems: Vec<String>,
}

/// Shortest cluster secret accepted.
const MIN_SECRET_LEN: usize = 16;

/// The longest duration any setting accepts (ten years): far beyond any
/// sensible timeout or lifetime, far below what overflows a deadline.
const MAX_DURATION: Duration = Duration::from_secs(3650 * 24 * 3600);

/// `[delivery.dns]` → settings (`None` when off); problems name the key
/// and, for a name server, its index.
fn dns_settings(v: &mut Validator, d: &FileDns) -> Option<relay_delivery::config::DnsSettings> {
    let mut nameservers = Vec::new();
    for (i, text) in d.nameservers.iter().enumerate() {
        // `IP:port`, `[v6]:port`, or a bare address on port 53.
        let parsed = text.parse::<SocketAddr>().or_else(|_| {
            text.parse::<std::net::IpAddr>()
                .map(|ip| SocketAddr::new(ip, 53))
        });
        match parsed {
            Ok(addr) if addr.port() != 0 => nameservers.push(addr),
            Ok(_) => v.problem(
                &format!("delivery.dns.nameservers[{i}]"),
                format!("{text:?}: port 0"),
            ),
            Err(_) => v.problem(
                &format!("delivery.dns.nameservers[{i}]"),
                format!(
                    "{text:?} is not an IP address or IP:port (name servers are given by address)"
                ),
            ),
        }
    }
    let timeout = v.duration("delivery.dns.timeout", &d.timeout);
    if d.mx_port == 0 {
        v.problem(
            "delivery.dns.mx_port",
            "must be a port number (1-65535)".into(),
        );
    }
    if d.cache_entries == 0 {
        v.problem("delivery.dns.cache_entries", "must be at least 1".into());
    }
    d.enabled.then_some(relay_delivery::config::DnsSettings {
        nameservers,
        timeout,
        port: d.mx_port,
        cache_entries: d.cache_entries,
    })
}

/// `[smtp.auth]` → settings; problems name `smtp.auth.users.<name>` or
/// the users file and line.
fn smtp_auth(v: &mut Validator, base: &Path, a: &FileSmtpAuth) -> SmtpAuthSettings {
    let mut users = std::collections::HashMap::new();
    for (name, hash) in &a.users {
        match relay_smtp::auth::check_hash(name, hash) {
            Ok(()) => {
                users.insert(name.clone(), hash.clone());
            }
            Err(e) => v.problem(&format!("smtp.auth.users.{name}"), e.to_string()),
        }
    }
    if let Some(file) = &a.users_file {
        let path = base.join(file);
        match std::fs::read_to_string(&path) {
            Err(e) => v.problem(
                "smtp.auth.users_file",
                format!("cannot read {}: {e}", path.display()),
            ),
            Ok(text) => {
                for (i, line) in text.lines().enumerate() {
                    let line = line.trim();
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    let at = format!("smtp.auth.users_file ({}:{})", path.display(), i + 1);
                    match line.split_once(':') {
                        Some((name, hash)) if !name.is_empty() => {
                            match relay_smtp::auth::check_hash(name, hash) {
                                Ok(()) => {
                                    users.insert(name.to_string(), hash.to_string());
                                }
                                Err(e) => v.problem(&at, e.to_string()),
                            }
                        }
                        _ => v.problem(&at, "expected name:argon2-hash".into()),
                    }
                }
            }
        }
    }
    let max_failures = a.max_failures;
    if max_failures == 0 {
        v.problem("smtp.auth.max_failures", "must be at least 1".into());
    }
    SmtpAuthSettings {
        users,
        max_failures,
        failure_window: v.duration("smtp.auth.failure_window", &a.failure_window),
    }
}

/// `[tls]` → settings. With `mode = "on"` the three files must be given
/// and must load (the key matching the certificate), each problem named by
/// its key.
fn peer_tls(v: &mut Validator, base: &Path, t: &FileTls) -> Option<PeerTlsSettings> {
    match t.mode.as_str() {
        "off" => return None,
        "on" => {}
        other => {
            v.problem("tls.mode", format!("{other:?}: expected \"off\" or \"on\""));
            return None;
        }
    }
    let mut path = |key: &str, value: &Option<PathBuf>| match value {
        Some(p) => Some(base.join(p)),
        None => {
            v.problem(
                key,
                "required with tls.mode = \"on\" (a PEM file; `relayd dev-certs` makes \
                 development ones)"
                    .into(),
            );
            None
        }
    };
    let (ca, cert, key) = (
        path("tls.ca", &t.ca),
        path("tls.cert", &t.cert),
        path("tls.key", &t.key),
    );
    let files = relay_cluster::tls::TlsFiles {
        ca: ca?,
        cert: cert?,
        key: key?,
    };
    if let Err(e) = relay_cluster::tls::TlsMaterial::load(&files) {
        let key = match &e {
            relay_cluster::tls::TlsError::File { path, .. } if *path == files.ca => "tls.ca",
            relay_cluster::tls::TlsError::File { path, .. } if *path == files.cert => "tls.cert",
            _ => "tls.key",
        };
        v.problem(key, e.to_string());
    }
    Some(PeerTlsSettings {
        files,
        admin_client_cert: t.admin_client_cert,
    })
}

impl Validator {
    /// A secret given inline or in a file (exactly one), at least
    /// [`MIN_SECRET_LEN`] visible ASCII characters.
    fn secret(
        &mut self,
        key: &str,
        file_key: &str,
        base: &Path,
        inline: Option<&str>,
        file: Option<&Path>,
    ) -> String {
        let secret = match (inline, file) {
            (Some(s), None) => s.to_string(),
            (None, Some(f)) => match std::fs::read_to_string(base.join(f)) {
                Ok(s) => s.trim().to_string(),
                Err(e) => {
                    self.problem(
                        file_key,
                        format!("cannot read {}: {e}", base.join(f).display()),
                    );
                    return String::new();
                }
            },
            _ => {
                self.problem(
                    key,
                    format!(
                        "set exactly one of {key} and {file_key} (the same on every node; \
                         e.g. `openssl rand -hex 32`)"
                    ),
                );
                return String::new();
            }
        };
        if secret.len() < MIN_SECRET_LEN || !secret.bytes().all(|b| b.is_ascii_graphic()) {
            self.problem(
                key,
                format!(
                    "must be at least {MIN_SECRET_LEN} visible ASCII characters without spaces \
                     (got {} characters)",
                    secret.chars().count()
                ),
            );
        }
        secret
    }

    fn problem(&mut self, key: &str, message: String) {
        self.problems
            .push(format!("{}: {key}: {message}", self.path));
    }

    fn addr(&mut self, key: &str, value: &str) -> Option<SocketAddr> {
        match value.parse() {
            Ok(a) => Some(a),
            Err(e) => {
                self.problem(
                    key,
                    format!("{value:?} is not an IP:port socket address ({e})"),
                );
                None
            }
        }
    }

    /// A route from `host:port` targets and a TLS policy name.
    fn route(&mut self, targets_key: &str, tls_key: &str, targets: &[String], tls: &str) -> Route {
        if targets.is_empty() {
            self.problem(
                targets_key,
                "at least one host:port target is required".into(),
            );
        }
        for (j, t) in targets.iter().enumerate() {
            if t.rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                self.problem(
                    &format!("{targets_key}[{j}]"),
                    format!("{t:?} is not host:port"),
                );
            }
        }
        let tls = match tls.parse::<TlsPolicy>() {
            Ok(p) => p,
            Err(e) => {
                self.problem(tls_key, e);
                TlsPolicy::default()
            }
        };
        Route::new(targets.to_vec(), tls)
    }

    fn duration(&mut self, key: &str, text: &str) -> Duration {
        match humantime::parse_duration(text) {
            // A deadline is `Instant::now() + d`, which panics on overflow:
            // "10000000000000000000s" validated, and then every SMTP session
            // panicked at its first read (found by fuzz/config).
            Ok(d) if d > MAX_DURATION => {
                self.problem(key, "must be at most 3650 days".into());
                Duration::from_secs(1)
            }
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                self.problem(key, "must be greater than zero".into());
                Duration::from_secs(1)
            }
            Err(e) => {
                self.problem(key, format!("{text:?} is not a duration like \"5s\" ({e})"));
                Duration::from_secs(1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(n: u32) -> (PathBuf, String) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("../../cluster-config/local/node{n}.toml"));
        let text = std::fs::read_to_string(&path).expect("shipped local config");
        // The shipped files point at development certificates that
        // scripts/local-cluster.sh creates; these tests do not need them.
        let text = text.replace("mode = \"on\"", "mode = \"off\"");
        (path, text)
    }

    #[test]
    fn source_address_is_an_ip_or_a_problem_naming_the_key() {
        let (path, text) = local(1);
        let config = NodeConfig::parse(&path, &text).expect("shipped config");
        assert_eq!(config.source_address, None, "the kernel chooses by default");
        let with = text.replace(
            "[cluster]\n",
            "[cluster]\nsource_address = \"127.77.0.1\"\n",
        );
        let config = NodeConfig::parse(&path, &with).expect("valid");
        assert_eq!(config.source_address, Some("127.77.0.1".parse().unwrap()));
        let bad = text.replace(
            "[cluster]\n",
            "[cluster]\nsource_address = \"127.77.0.1:7101\"\n",
        );
        let p = problems(&path, &bad);
        assert!(
            p.contains("cluster.source_address") && p.contains("is not an IP address"),
            "{p}"
        );
    }

    #[test]
    fn tls_on_needs_three_loadable_files_named_by_key() {
        let (path, text) = local(1);
        let on = text.replace("mode = \"off\"", "mode = \"on\"");
        let missing = problems(&path, &on);
        assert!(
            missing.contains("node1.toml: tls.ca: ") && missing.contains("ca.pem: cannot read"),
            "{missing}"
        );
        let unset = problems(
            &path,
            &on.replace("ca = \"../../data/local/certs/ca.pem\"\n", ""),
        );
        assert!(unset.contains("node1.toml: tls.ca: required"), "{unset}");
        let bad_mode = problems(&path, &text.replace("mode = \"off\"", "mode = \"yes\""));
        assert!(bad_mode.contains("tls.mode"), "{bad_mode}");

        let dir = tempfile::tempdir().unwrap();
        crate::dev_certs::write(dir.path(), &[1], &[]).unwrap();
        let certs = dir.path().display().to_string();
        let good = on.replace("../../data/local/certs", &certs);
        let config = NodeConfig::parse(&path, &good).expect("development certificates load");
        let tls = config.tls.expect("tls on");
        assert!(tls.admin_client_cert);
        // A key that does not belong to the certificate.
        let swapped = good.replace("node-1-key.pem", "relayctl-key.pem");
        let mismatch = problems(&path, &swapped);
        assert!(mismatch.contains("tls.key"), "{mismatch}");
    }

    #[test]
    fn durations_that_would_overflow_a_deadline_are_refused() {
        // fuzz/artifacts/config/huge-duration: accepted before, then every
        // SMTP session panicked computing `Instant::now() + timeout`.
        let (path, text) = local(1);
        let text = text.replace(
            "[smtp]\n",
            "[smtp]\ncommand_timeout = \"10000000000000000000s\"\n",
        );
        let Err(ConfigError::Invalid(problems)) = NodeConfig::parse(&path, &text) else {
            panic!("a 3e11-year timeout must not validate");
        };
        assert!(
            problems
                .iter()
                .any(|p| p.contains("smtp.command_timeout: must be at most")),
            "{problems:?}"
        );
        let ok = text.replace("10000000000000000000s", "3650d");
        assert!(NodeConfig::parse(&path, &ok).is_ok());
    }

    #[test]
    fn shared_settings_digest_ignores_node_specifics_and_sees_drift() {
        let digests: Vec<String> = (1..=3)
            .map(|n| {
                let (path, text) = local(n);
                NodeConfig::parse(&path, &text)
                    .expect("shipped config parses")
                    .shared_settings_digest()
            })
            .collect();
        assert_eq!(digests[0], digests[1], "ids, ports, paths differ only");
        assert_eq!(digests[1], digests[2]);
        assert_eq!(digests[0].len(), 64);

        let (path, text) = local(2);
        let drifted = text.replace("min_backoff = \"10s\"", "min_backoff = \"11s\"");
        assert_ne!(drifted, text);
        let drifted = NodeConfig::parse(&path, &drifted)
            .expect("still valid")
            .shared_settings_digest();
        assert_ne!(drifted, digests[1], "a different retry policy must show");
    }

    fn problems(path: &Path, text: &str) -> String {
        match NodeConfig::parse(path, text) {
            Err(ConfigError::Invalid(p)) => p.join("\n"),
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn connection_reuse_limits_have_postfix_defaults_and_are_checked() {
        let (path, text) = local(1);
        let config = NodeConfig::parse(&path, &text).unwrap();
        let cache = config.delivery.connection_cache;
        assert_eq!(cache.idle_timeout, Duration::from_secs(2));
        assert_eq!(cache.reuse_time_limit, Duration::from_secs(300));
        assert_eq!(cache.max_messages, 100);

        let line = "min_backoff = \"10s\"\n";
        assert!(text.contains(line));
        let set = text.replace(
            line,
            &format!(
                "{line}connection_cache_time_limit = \"5s\"\n\
                 connection_reuse_time_limit = \"1m\"\n\
                 connection_reuse_count_limit = 20\n"
            ),
        );
        let cache = NodeConfig::parse(&path, &set)
            .unwrap()
            .delivery
            .connection_cache;
        assert_eq!(cache.idle_timeout, Duration::from_secs(5));
        assert_eq!(cache.reuse_time_limit, Duration::from_secs(60));
        assert_eq!(cache.max_messages, 20);

        let bad = text.replace(
            line,
            &format!(
                "{line}connection_cache_time_limit = \"0s\"\n\
                 connection_reuse_count_limit = 0\n"
            ),
        );
        let bad = problems(&path, &bad);
        assert!(
            bad.contains("delivery.connection_cache_time_limit: must be greater than zero"),
            "{bad}"
        );
        assert!(
            bad.contains("delivery.connection_reuse_count_limit: must be at least 1"),
            "{bad}"
        );
    }

    #[test]
    fn dns_resolution_is_on_by_default_and_its_keys_are_checked() {
        let (path, text) = local(1);
        let dns = NodeConfig::parse(&path, &text)
            .unwrap()
            .delivery
            .dns
            .expect("MX resolution on by default");
        assert!(dns.nameservers.is_empty(), "the system's resolv.conf");
        assert_eq!(dns.port, 25);
        assert_eq!(dns.timeout, Duration::from_secs(5));

        let line = "min_backoff = \"10s\"\n";
        assert!(text.contains(line));
        let with = |extra: &str| text.replace(line, &format!("{line}{extra}"));
        let set = with(
            "dns.nameservers = [\"127.0.0.1:5353\", \"::1\"]\n\
             dns.timeout = \"2s\"\n\
             dns.mx_port = 2525\n",
        );
        let dns = NodeConfig::parse(&path, &set)
            .unwrap()
            .delivery
            .dns
            .unwrap();
        assert_eq!(
            dns.nameservers,
            vec![
                "127.0.0.1:5353".parse::<SocketAddr>().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
        assert_eq!(dns.timeout, Duration::from_secs(2));
        assert_eq!(dns.port, 2525);

        let off = NodeConfig::parse(&path, &with("dns.enabled = false\n")).unwrap();
        assert!(off.delivery.dns.is_none());

        let bad = problems(
            &path,
            &with(
                "dns.nameservers = [\"ns1.example.test\"]\n\
                 dns.timeout = \"soon\"\n\
                 dns.mx_port = 0\n\
                 dns.cache_entries = 0\n",
            ),
        );
        let file = path.display().to_string();
        for key in [
            "delivery.dns.nameservers[0]: \"ns1.example.test\" is not an IP address",
            "delivery.dns.timeout:",
            "delivery.dns.mx_port: must be a port number",
            "delivery.dns.cache_entries: must be at least 1",
        ] {
            assert!(bad.contains(&format!("{file}: {key}")), "{key} in {bad}");
        }
        let unknown = NodeConfig::parse(&path, &with("dns.servers = []\n"));
        assert!(
            format!("{unknown:?}").contains("servers"),
            "an unknown key is named: {unknown:?}"
        );
    }

    #[test]
    fn ingress_keys_are_off_by_default_and_checked() {
        let (path, text) = local(1);
        let config = NodeConfig::parse(&path, &text).unwrap();
        assert_eq!(config.submission_listen, None);
        assert_eq!(config.smtps_listen, None);
        assert!(config.smtp.proxy_protocol_from.is_empty());
        assert_eq!(config.smtp.proxy_protocol_timeout, Duration::from_secs(5));
        assert_eq!(config.smtp.recipient_lists_dir, None);

        // Submission listeners without AUTH users, a bad balancer network,
        // a recipient list directory that does not exist.
        let listen = "http = \"127.0.0.1:9101\"\n";
        let smtp = "tls = \"auto\"\n";
        assert!(text.contains(listen) && text.contains(smtp));
        let bad = text
            .replace(
                listen,
                &format!("{listen}submission = \"127.0.0.1:2587\"\nsmtps = \"127.0.0.1:2465\"\n"),
            )
            .replace(
                smtp,
                &format!(
                    "{smtp}proxy_protocol_from = [\"10.0.0.5/32\", \"nonsense\"]\n\
                     recipient_lists_dir = \"no-such-dir\"\n"
                ),
            );
        let bad = problems(&path, &bad);
        for want in [
            "listen.submission: needs SMTP AUTH users",
            "listen.smtps: needs SMTP AUTH users",
            "smtp.proxy_protocol_from[1]: not a network",
            "smtp.recipient_lists_dir: ",
        ] {
            assert!(bad.contains(want), "{want} missing in:\n{bad}");
        }
        let no_tls = text
            .replace(listen, &format!("{listen}smtps = \"127.0.0.1:2465\"\n"))
            .replace(smtp, "tls = \"off\"\n");
        let no_tls = problems(&path, &no_tls);
        assert!(no_tls.contains("listen.smtps: needs TLS"), "{no_tls}");

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("example.test"), "alice\n").unwrap();
        let hash = relay_smtp::auth::hash_password("pw");
        let good = text
            .replace(
                listen,
                &format!("{listen}submission = \"127.0.0.1:2587\"\nsmtps = \"127.0.0.1:2465\"\n"),
            )
            .replace(
                smtp,
                &format!(
                    "{smtp}proxy_protocol_from = [\"10.0.0.5/32\"]\n\
                     proxy_protocol_timeout = \"2s\"\n\
                     recipient_lists_dir = {:?}\n\
                     [smtp.auth]\nusers = {{ alice = \"{hash}\" }}\n",
                    dir.path().display().to_string()
                ),
            );
        let config = NodeConfig::parse(&path, &good).unwrap();
        assert_eq!(
            config.submission_listen,
            Some("127.0.0.1:2587".parse().unwrap())
        );
        assert_eq!(config.smtps_listen, Some("127.0.0.1:2465".parse().unwrap()));
        assert_eq!(config.smtp.proxy_protocol_from.len(), 1);
        assert_eq!(config.smtp.proxy_protocol_timeout, Duration::from_secs(2));
        assert_eq!(config.smtp.recipient_lists_dir.as_deref(), Some(dir.path()));
    }

    #[test]
    fn the_cluster_secret_is_required_and_checked() {
        let (path, text) = local(1);
        let secret_line = "secret = \"dev-cluster-secret-change-me\"\n";
        assert!(text.contains(secret_line));
        let missing = problems(&path, &text.replace(secret_line, ""));
        assert!(
            missing.contains("node1.toml: cluster.secret: set exactly one"),
            "{missing}"
        );
        let short = problems(&path, &text.replace(secret_line, "secret = \"short\"\n"));
        assert!(short.contains("at least 16"), "{short}");
        let config = NodeConfig::parse(&path, &text).unwrap();
        assert_eq!(config.cluster_secret, "dev-cluster-secret-change-me");
    }

    #[test]
    fn smtp_auth_users_are_validated_by_name() {
        let (path, text) = local(1);
        let hash = relay_smtp::auth::hash_password("pw");
        let with_auth = format!(
            "{text}\n[smtp.auth]\nmax_failures = 3\nusers = {{ alice = \"{hash}\", bob = \"plain\" }}\n"
        );
        let bad = problems(&path, &with_auth);
        assert!(bad.contains("smtp.auth.users.bob"), "{bad}");
        assert!(!bad.contains("alice"), "{bad}");
        let good = with_auth.replace(", bob = \"plain\"", "");
        let config = NodeConfig::parse(&path, &good).unwrap();
        let auth = config.smtp.auth.expect("auth configured");
        assert_eq!(auth.users.len(), 1);
        assert_eq!(auth.max_failures, 3);
        assert_eq!(auth.failure_window, Duration::from_secs(300));
    }
}
