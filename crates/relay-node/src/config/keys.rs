//! Every configuration key, documented once: the reference in
//! `docs/configuration.md` ([`reference_markdown`], `relayd
//! --config-reference`), the effective configuration (`relayd
//! --print-config`, like Postfix's `postconf`), and the digest of the
//! settings every node must share.
//!
//! Defaults are not written here: they come from the file shape's
//! [`Default`] impls in `config.rs`, read back by filling in a minimal file.
//! A test walks the shape's `Deserialize` impl (the parser itself) and
//! fails when a key it accepts is missing from [`KEYS`] or the other way
//! round, and another compares `docs/configuration.md` with
//! [`reference_markdown`].

use std::path::Path;

use super::{ConfigError, FileConfig, read_shape};

/// Whose value a key is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Differs from node to node (ids, addresses, paths).
    Node,
    /// Must be the same on every node; part of the settings digest
    /// `relayctl drill` compares.
    Shared,
    /// Masked by `--print-config`, never in the digest.
    Secret,
}

impl Scope {
    fn name(self) -> &'static str {
        match self {
            Scope::Node => "node",
            Scope::Shared => "shared",
            Scope::Secret => "secret",
        }
    }
}

/// One key of the file. `[]` stands for every entry of an array of tables
/// (`[[routes]]`), `<name>` for any name in a map.
#[derive(Clone, Copy, Debug)]
pub struct Key {
    /// Dotted path, as an error message names it.
    pub key: &'static str,
    /// Node, shared or secret.
    pub scope: Scope,
    /// What it does, and what its absence means when it has no default.
    pub doc: &'static str,
}

const fn key(key: &'static str, scope: Scope, doc: &'static str) -> Key {
    Key { key, scope, doc }
}

use Scope::{Node, Secret, Shared};

/// Every key the parser accepts, in the order of the reference.
pub const KEYS: &[Key] = &[
    key(
        "node_id",
        Node,
        "This node's id; must be one of `cluster.members`.",
    ),
    key(
        "data_dir",
        Node,
        "RocksDB, the SMTP development certificate and other state live here. Never share it between nodes.",
    ),
    key(
        "hostname",
        Node,
        "Our SMTP name: greeting, `Received:` headers, HELO to targets, DSNs. Not set: the machine's host name.",
    ),
    key("listen.smtp", Node, "SMTP listener, `IP:port`."),
    key(
        "listen.submission",
        Node,
        "Submission listener (the port 587 role), `IP:port`: STARTTLS, then AUTH, before MAIL (530 5.7.0 otherwise); same limits and pipeline as `listen.smtp`. Needs `smtp.tls` and `[smtp.auth]`. Not set: off.",
    ),
    key(
        "listen.smtps",
        Node,
        "Implicit-TLS submission listener (the port 465 role), `IP:port`: TLS from the first octet, then AUTH before MAIL. Needs `smtp.tls` and `[smtp.auth]`. Not set: off.",
    ),
    key(
        "listen.raft",
        Node,
        "Raft gRPC listener (node-to-node), `IP:port`.",
    ),
    key(
        "listen.admin",
        Node,
        "Admin gRPC listener (relayctl), `IP:port`. Keep it on loopback or a management network.",
    ),
    key(
        "listen.http",
        Node,
        "HTTP listener: `/metrics`, `/healthz`, `/readyz`, status page.",
    ),
    key(
        "cluster.bootstrap",
        Node,
        "Create the cluster if none exists. Exactly one node may have it; it acts only when its store is empty and no peer is in a cluster.",
    ),
    key(
        "cluster.members[].id",
        Shared,
        "A voter's node id (at least one member, ids unique).",
    ),
    key(
        "cluster.members[].raft",
        Shared,
        "That voter's Raft address, `host:port`.",
    ),
    key(
        "cluster.submit_timeout",
        Shared,
        "How long an accepted message may wait for its commit before the client gets 451.",
    ),
    key(
        "cluster.takeover_after",
        Shared,
        "A node unreachable this long has its queued messages reassigned to the others.",
    ),
    key(
        "cluster.heartbeat",
        Shared,
        "Raft heartbeat interval; below `election_timeout_min`.",
    ),
    key(
        "cluster.election_timeout_min",
        Shared,
        "Raft election timeout, lower bound.",
    ),
    key(
        "cluster.election_timeout_max",
        Shared,
        "Raft election timeout, upper bound; above `election_timeout_min`.",
    ),
    key(
        "cluster.snapshot_every",
        Shared,
        "Build a snapshot after this many log entries.",
    ),
    key(
        "cluster.keep_logs",
        Shared,
        "Log entries kept behind a snapshot (for followers that lag a little).",
    ),
    key(
        "cluster.purge_interval",
        Shared,
        "Snapshot and purge the Raft log this often, so delivered bodies leave it.",
    ),
    key(
        "cluster.history_retention",
        Shared,
        "How long trace events and finished message ids are kept; at least `delivery.queue_lifetime`.",
    ),
    key(
        "cluster.source_address",
        Node,
        "IP address that connections to peers are made from (default: the kernel chooses).",
    ),
    key(
        "cluster.secret",
        Secret,
        "Shared secret every node-to-node call carries (16+ visible ASCII characters, the same on every node). Exactly one of `secret` and `secret_file`.",
    ),
    key(
        "cluster.secret_file",
        Node,
        "File holding `cluster.secret` (first line).",
    ),
    key(
        "smtp.max_message_size",
        Shared,
        "Largest message accepted, in octets (SIZE, enforced while streaming).",
    ),
    key(
        "smtp.queue_minfree",
        Node,
        "Octets of the data dir's file system that mail must leave free, like Postfix's `queue_minfree`: a MAIL is refused with `452 4.3.1` when less than this plus 1.5 × the message's size (its SIZE parameter, else `max_message_size`) plus the current snapshot file's size (the next snapshot is written beside it) is free. The session stays open. Leaves room for the store's own work (WAL, flushes, compactions) and for mail accepted by other nodes.",
    ),
    key(
        "smtp.max_recipients",
        Shared,
        "Recipients per transaction; more get 452.",
    ),
    key(
        "smtp.max_connections",
        Shared,
        "SMTP connections at once; more are refused with 421.",
    ),
    key(
        "smtp.max_connections_per_ip",
        Shared,
        "SMTP connections at once from one client IP.",
    ),
    key(
        "smtp.command_timeout",
        Shared,
        "Wait for each SMTP command.",
    ),
    key(
        "smtp.data_timeout",
        Shared,
        "Wait for the whole DATA phase.",
    ),
    key(
        "smtp.authorized_networks",
        Shared,
        "Clients (CIDRs) that may relay to any domain; others only to routed domains, or after AUTH.",
    ),
    key(
        "smtp.tls",
        Shared,
        "STARTTLS: `auto` (self-signed certificate in the data dir), `off`, or `files` (`tls_cert`, `tls_key`).",
    ),
    key(
        "smtp.tls_cert",
        Node,
        "Certificate chain (PEM) for `tls = \"files\"`; reloaded on SIGHUP.",
    ),
    key(
        "smtp.tls_key",
        Node,
        "Private key (PEM) for `tls = \"files\"`.",
    ),
    key(
        "smtp.accept_as_learner",
        Node,
        "Whether this node takes SMTP while it is a learner; `false` for a recovery-site replica, which answers 421 4.3.2 until it is a voter.",
    ),
    key(
        "smtp.proxy_protocol_from",
        Shared,
        "Load balancers (CIDRs) whose connections to every SMTP listener start with a PROXY protocol v1 or v2 header; the session then sees the client the header names (relay control, per-IP limits, AUTH failure counts, `Received:`, logs). A connection from them without a valid header, or a header from any other address, gets 421 4.7.0. Empty: PROXY protocol off.",
    ),
    key(
        "smtp.proxy_protocol_timeout",
        Shared,
        "How long a load balancer has to send its PROXY header before 421 4.7.0.",
    ),
    key(
        "smtp.recipient_lists_dir",
        Node,
        "Directory of recipient lists, one file per relay domain named after it (one local part or address a line, `#` comments). A recipient of a listed domain that is not on its list gets 550 5.1.1 at RCPT. Reloaded on SIGHUP (a bad file keeps the old lists). Not set: every local part is accepted.",
    ),
    key(
        "smtp.recipient_verification",
        Shared,
        "Verify recipients of routed domains at RCPT by asking the route's targets (`MAIL FROM:<>`, `RCPT TO`, no message, no TLS): a 5xx gives 550 5.1.1, no answer 450 4.1.1. Answers are cached per node. Recipient lists, when present, are checked first.",
    ),
    key(
        "smtp.recipient_verification_positive_ttl",
        Shared,
        "How long a target's acceptance of a recipient is remembered.",
    ),
    key(
        "smtp.recipient_verification_negative_ttl",
        Shared,
        "How long a target's refusal of a recipient is remembered.",
    ),
    key(
        "smtp.auth.users.<name>",
        Secret,
        "SMTP AUTH user and its argon2 hash (`relayd --hash-password`). AUTH is offered over TLS only, and only when users exist.",
    ),
    key(
        "smtp.auth.users_file",
        Node,
        "More users, one `name:hash` per line (`#` comments).",
    ),
    key(
        "smtp.auth.max_failures",
        Shared,
        "Failed logins per client IP within `failure_window` before 421.",
    ),
    key(
        "smtp.auth.failure_window",
        Shared,
        "The window failed logins are counted in.",
    ),
    key(
        "delivery.min_backoff",
        Shared,
        "First retry delay after a deferral; doubles per attempt.",
    ),
    key("delivery.max_backoff", Shared, "Retry delay cap."),
    key(
        "delivery.queue_lifetime",
        Shared,
        "Bounce (DSN to the sender) after this long in the queue.",
    ),
    key(
        "delivery.max_concurrent",
        Shared,
        "Deliveries at once on a node.",
    ),
    key(
        "delivery.per_target_concurrency",
        Shared,
        "Deliveries at once from this node to one route's targets, for routes without a concurrency of their own (`relayctl route set --concurrency` sets a cluster-wide one with slow start: `docs/delivery.md`, \"Destination shaping\").",
    ),
    key(
        "delivery.poll_interval",
        Shared,
        "Queue scan interval when nothing wakes the delivery loop.",
    ),
    key(
        "delivery.connect_timeout",
        Shared,
        "TCP connect timeout per target.",
    ),
    key(
        "delivery.command_timeout",
        Shared,
        "Wait for the target's greeting and each reply.",
    ),
    key(
        "delivery.data_timeout",
        Shared,
        "Wait for the target's reply to the final dot.",
    ),
    key(
        "delivery.connection_cache_time_limit",
        Shared,
        "Close a cached idle session to a target after this long (like Postfix's smtp_connection_cache_time_limit).",
    ),
    key(
        "delivery.connection_reuse_time_limit",
        Shared,
        "Do not reuse a session opened longer ago than this (like Postfix's smtp_connection_reuse_time_limit).",
    ),
    key(
        "delivery.connection_reuse_count_limit",
        Shared,
        "Transactions per session at most; 1 turns connection reuse off.",
    ),
    key(
        "delivery.default_route",
        Shared,
        "Targets (`host:port`) for domains without a route, like Postfix's relayhost. Not set: such domains go where DNS says (`delivery.dns`), or without it are not deliverable.",
    ),
    key(
        "delivery.default_route_tls",
        Shared,
        "TLS to the default route: `none`, `opportunistic` or `required`.",
    ),
    key(
        "delivery.ca_file",
        Node,
        "Extra trust anchors (PEM) for targets with `tls = \"required\"`.",
    ),
    key(
        "delivery.dns.enabled",
        Shared,
        "Deliver recipients of a domain with no route (and no `default_route`) where DNS says, like Postfix: MX hosts by preference, the domain's own A/AAAA without MX; a null MX bounces (5.1.10), a domain that does not exist bounces (5.1.2), a DNS failure defers (4.4.3). `false`: such recipients are deferred with \"no route\". See docs/delivery.md.",
    ),
    key(
        "delivery.dns.nameservers",
        Node,
        "Name servers to ask, `IP` (port 53) or `IP:port`, in order. Empty: the system's (`/etc/resolv.conf`).",
    ),
    key(
        "delivery.dns.timeout",
        Shared,
        "Timeout of one DNS query to one name server (each is tried twice).",
    ),
    key(
        "delivery.dns.mx_port",
        Shared,
        "SMTP port of the hosts found through DNS.",
    ),
    key(
        "delivery.dns.cache_entries",
        Shared,
        "Domains whose DNS answers are cached at most (each for its TTL, 5 s to 1 h).",
    ),
    key(
        "routes[].domain",
        Shared,
        "Recipient domain of a route seeded into the replicated state when the cluster is created (later: `relayctl route`, which also sets a route's concurrency and rate).",
    ),
    key(
        "routes[].targets",
        Shared,
        "Its targets, `host:port`, tried in order.",
    ),
    key(
        "routes[].tls",
        Shared,
        "TLS to those targets: `none`, `opportunistic` or `required`.",
    ),
    key(
        "admin.token",
        Secret,
        "Bearer token relayctl must send. Exactly one of `token` and `token_file`.",
    ),
    key(
        "admin.token_file",
        Node,
        "File holding `admin.token` (first line).",
    ),
    key(
        "tls.mode",
        Shared,
        "Mutual TLS on the Raft and admin ports: `off` or `on` (plaintext refused).",
    ),
    key(
        "tls.ca",
        Node,
        "The cluster CA (PEM); required with `mode = \"on\"`.",
    ),
    key(
        "tls.cert",
        Node,
        "This node's certificate (PEM, name `node-<id>`); required with `mode = \"on\"`. Reloaded on SIGHUP.",
    ),
    key(
        "tls.key",
        Node,
        "This node's private key (PEM); required with `mode = \"on\"`.",
    ),
    key(
        "tls.admin_client_cert",
        Shared,
        "Require a client certificate from the CA on the admin port too (besides the token).",
    ),
];

/// A file with only what has no default (and one entry of each list and
/// map section), to read the defaults back from the file shape. The keys
/// it sets are "required" in the reference.
const MINIMAL: &str = r#"
node_id = 1
data_dir = "data"
[listen]
smtp = "127.0.0.1:25"
raft = "127.0.0.1:7101"
admin = "127.0.0.1:7201"
http = "127.0.0.1:9101"
[[cluster.members]]
id = 1
raft = "127.0.0.1:7101"
[[routes]]
domain = "example.test"
targets = ["127.0.0.1:25"]
[admin]
[smtp.auth]
"#;

/// What `--print-config` shows instead of a secret.
const MASK: &str = "\"********\"";

fn find(key: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.key == key).or_else(|| {
        // A map entry: `smtp.auth.users.alice` → `smtp.auth.users.<name>`.
        let (parent, _) = key.rsplit_once('.')?;
        let pattern = format!("{parent}.<name>");
        KEYS.iter().find(|k| k.key == pattern)
    })
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// The file with every default filled in, as a TOML table.
pub(super) fn effective_table(file: &FileConfig) -> toml::Table {
    match toml::Table::try_from(file) {
        Ok(table) => table,
        // The shape is plain strings, numbers, lists and tables.
        Err(e) => unreachable!("the config file shape always serializes: {e}"),
    }
}

fn is_table_list(value: &toml::Value) -> bool {
    value
        .as_array()
        .is_some_and(|a| !a.is_empty() && a.iter().all(toml::Value::is_table))
}

/// Calls `leaf(key, path, value)` for every value that is not a table:
/// `key` as in [`KEYS`] (`routes[].tls`), `path` with indexes
/// (`routes[1].tls`).
fn walk(
    table: &toml::Table,
    key: &str,
    path: &str,
    leaf: &mut dyn FnMut(&str, &str, &toml::Value),
) {
    for (name, value) in table {
        let (k, p) = (join(key, name), join(path, name));
        if let Some(inner) = value.as_table() {
            walk(inner, &k, &p, leaf);
        } else if is_table_list(value) {
            for (i, item) in value.as_array().into_iter().flatten().enumerate() {
                if let Some(inner) = item.as_table() {
                    walk(inner, &format!("{k}[]"), &format!("{p}[{i}]"), leaf);
                }
            }
        } else {
            leaf(&k, &p, value);
        }
    }
}

/// Hex SHA-256 over `path=value` of every shared key.
pub(super) fn shared_digest(effective: &toml::Table) -> String {
    use sha2::Digest;
    let mut text = String::new();
    walk(effective, "", "", &mut |key, path, value| {
        if find(key).is_some_and(|k| k.scope == Scope::Shared) {
            text.push_str(&format!("{path}={value}\n"));
        }
    });
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// `relayd --print-config`: the configuration in `text` (read from `path`)
/// with every default filled in, as TOML that parses again: one `key =
/// value` per line, `# default` after values the file does not set,
/// secrets masked, and a `# key (not set)` line for each optional key
/// without a value. With `explicit`, only what the file sets (like
/// `postconf -n`). Checks the file's shape (syntax, known keys, types),
/// not its values: `--check-config` does that.
pub fn print_effective(path: &Path, text: &str, explicit: bool) -> Result<String, ConfigError> {
    let file = read_shape(path, text)?;
    let raw: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut out = format!("# {} (effective)\n", path.display());
    print_table(
        &mut out,
        "",
        "",
        &effective_table(&file),
        Some(&raw),
        explicit,
    );
    Ok(out)
}

fn print_table(
    out: &mut String,
    section: &str,
    key: &str,
    table: &toml::Table,
    raw: Option<&toml::Table>,
    explicit: bool,
) {
    for (name, value) in table {
        if value.is_table() || is_table_list(value) {
            continue;
        }
        let k = join(key, name);
        let set = raw.is_some_and(|r| r.contains_key(name));
        if explicit && !set {
            continue;
        }
        let secret = find(&k).is_some_and(|d| d.scope == Scope::Secret);
        let shown = if secret {
            MASK.to_string()
        } else {
            value.to_string()
        };
        let bare = name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        let name = if bare {
            name.clone()
        } else {
            format!("{name:?}")
        };
        out.push_str(&format!("{name} = {shown}"));
        match (set, secret) {
            (false, _) => out.push_str("  # default"),
            (true, true) => out.push_str("  # masked"),
            (true, false) => {}
        }
        out.push('\n');
    }
    if !explicit {
        // Optional keys of this section without a value.
        let prefix = if key.is_empty() {
            String::new()
        } else {
            format!("{key}.")
        };
        for doc in KEYS {
            let Some(name) = doc.key.strip_prefix(&prefix) else {
                continue;
            };
            if !name.contains(['.', '[', '<']) && !table.contains_key(name) {
                out.push_str(&format!("# {name} (not set)\n"));
            }
        }
    }
    for (name, value) in table {
        let (k, s) = (join(key, name), join(section, name));
        let raw_value = raw.and_then(|r| r.get(name));
        if let Some(inner) = value.as_table() {
            if explicit && raw_value.is_none() {
                continue;
            }
            out.push_str(&format!("\n[{s}]\n"));
            print_table(
                out,
                &s,
                &k,
                inner,
                raw_value.and_then(toml::Value::as_table),
                explicit,
            );
        } else if is_table_list(value) {
            for (i, item) in value.as_array().into_iter().flatten().enumerate() {
                let raw_item = raw_value
                    .and_then(toml::Value::as_array)
                    .and_then(|a| a.get(i))
                    .and_then(toml::Value::as_table);
                out.push_str(&format!("\n[[{s}]]\n"));
                if let Some(inner) = item.as_table() {
                    print_table(out, &s, &format!("{k}[]"), inner, raw_item, explicit);
                }
            }
        }
    }
}

/// The reference (`docs/configuration.md`): every key with its default,
/// scope and meaning.
pub fn reference_markdown() -> String {
    let file = match read_shape(Path::new("minimal.toml"), MINIMAL) {
        Ok(file) => file,
        Err(e) => unreachable!("the minimal file fits the shape: {e}"),
    };
    let mut defaults = std::collections::BTreeMap::new();
    walk(&effective_table(&file), "", "", &mut |key, _, value| {
        defaults.insert(key.to_string(), value.to_string());
    });
    let mut required = std::collections::BTreeSet::new();
    let minimal: toml::Table = toml::from_str(MINIMAL).unwrap_or_default();
    walk(&minimal, "", "", &mut |key, _, _| {
        required.insert(key.to_string());
    });

    let mut out = String::from(
        "# Configuration reference\n\n\
         <!-- Generated by `relayd --config-reference` from \
         crates/relay-node/src/config/keys.rs; a test fails when this file, \
         the key list and the parser disagree. -->\n\n\
         Every key `relayd` reads from its TOML file (`--config FILE`). An \
         unknown key is an error naming the file and the key, and so is a \
         bad value (`relayd --check-config --config FILE` checks a file \
         without starting). `relayd --print-config --config FILE` prints the \
         effective configuration, defaults included and secrets masked \
         (`--explicit`: only what the file sets).\n\n\
         - Durations are strings: `\"250ms\"`, `\"5s\"`, `\"10m\"`, `\"7d\"`.\n\
         - Paths are relative to the configuration file's directory.\n\
         - `[]` is each entry of a list of tables (`[[routes]]`), `<name>` \
         any name in a table.\n\
         - *required*: must be set (in each entry, for a list of tables); \
         *not set*: optional, without a value unless given.\n\
         - Scope: **node** differs from node to node; **shared** must be the \
         same on every node (`relayctl drill` compares a digest of these); \
         **secret** is masked by `--print-config` and kept out of the \
         digest. Secrets can be given as files (`*_file`) instead.\n",
    );
    let mut section = None;
    for k in KEYS {
        let this = match k.key.split_once('.') {
            Some((first, _)) => first.trim_end_matches("[]"),
            None => "",
        };
        if section != Some(this) {
            section = Some(this);
            let title = match this {
                "" => "Top level".to_string(),
                "routes" => "`[[routes]]`".to_string(),
                other => format!("`[{other}]`"),
            };
            out.push_str(&format!(
                "\n## {title}\n\n| key | default | scope | meaning |\n|---|---|---|---|\n"
            ));
        }
        let default = if required.contains(k.key) {
            "*required*".to_string()
        } else if let Some(value) = defaults.get(k.key) {
            format!("`{value}`")
        } else {
            "*not set*".to_string()
        };
        out.push_str(&format!(
            "| `{}` | {default} | {} | {} |\n",
            k.key,
            k.scope.name(),
            k.doc
        ));
    }
    out
}

#[cfg(test)]
mod trace;

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(path: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(path)
    }

    #[test]
    fn every_key_the_parser_accepts_is_documented_and_no_other() {
        let accepted = trace::accepted_keys::<FileConfig>();
        let documented: Vec<String> = KEYS.iter().map(|k| k.key.to_string()).collect();
        let undocumented: Vec<&String> = accepted
            .iter()
            .filter(|k| !documented.contains(k))
            .collect();
        let unknown: Vec<&String> = documented
            .iter()
            .filter(|k| !accepted.contains(k))
            .collect();
        assert!(
            undocumented.is_empty() && unknown.is_empty(),
            "keys the parser accepts without an entry in KEYS: {undocumented:?}; \
             entries in KEYS the parser does not accept: {unknown:?}"
        );
        assert_eq!(accepted.len(), KEYS.len(), "{accepted:?}");
    }

    #[test]
    fn the_reference_in_docs_is_the_generated_one() {
        let path = repo("docs/configuration.md");
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == reference_markdown(),
            "{} is stale: regenerate it with\n  relayd --config-reference > docs/configuration.md",
            path.display()
        );
    }

    #[test]
    fn defaults_come_from_the_file_shape() {
        let reference = reference_markdown();
        for row in [
            "| `cluster.submit_timeout` | `\"5s\"` | shared |",
            "| `smtp.max_message_size` | `10485760` | shared |",
            "| `smtp.authorized_networks` | `[\"127.0.0.0/8\", \"::1/128\"]` | shared |",
            "| `smtp.auth.max_failures` | `5` | shared |",
            "| `routes[].tls` | `\"opportunistic\"` | shared |",
            "| `routes[].domain` | *required* | shared |",
            "| `hostname` | *not set* | node |",
            "| `cluster.secret` | *not set* | secret |",
        ] {
            assert!(reference.contains(row), "{row} missing from\n{reference}");
        }
    }

    #[test]
    fn printed_config_masks_secrets_marks_defaults_and_parses_again() {
        let path = repo("cluster-config/local/node1.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let text =
            format!("{text}\n[smtp.auth]\nusers = {{ alice = \"$argon2id$secret-hash\" }}\n");
        let printed = print_effective(&path, &text, false).unwrap();
        assert!(
            !printed.contains("dev-cluster-secret-change-me"),
            "{printed}"
        );
        assert!(!printed.contains("dev-token"), "{printed}");
        assert!(!printed.contains("secret-hash"), "{printed}");
        assert!(
            printed.contains("secret = \"********\"  # masked\n"),
            "{printed}"
        );
        assert!(
            printed.contains("alice = \"********\"  # masked\n"),
            "{printed}"
        );
        assert!(printed.contains("submit_timeout = \"5s\"\n"), "{printed}");
        assert!(
            printed.contains("snapshot_every = 10000  # default\n"),
            "{printed}"
        );
        assert!(printed.contains("# secret_file (not set)\n"), "{printed}");
        assert!(
            printed.contains("\n[[routes]]\ndomain = \"example.test\"\n"),
            "{printed}"
        );
        // The output is a configuration file again, with the same shape.
        let again: toml::Table = toml::from_str(&printed).expect("printed TOML parses");
        assert!(read_shape(&path, &printed).is_ok(), "{again:?}");

        let explicit = print_effective(&path, &text, true).unwrap();
        assert!(!explicit.contains("# default"), "{explicit}");
        assert!(!explicit.contains("snapshot_every"), "{explicit}");
        assert!(explicit.contains("purge_interval = \"1m\"\n"), "{explicit}");
    }
}
