//! Delivery settings.

use std::time::Duration;

use relay_queue::RetryPolicy;
use relay_types::{NodeId, Route};

pub use crate::connection_cache::CacheSettings;
pub use crate::mx::DnsSettings;

/// How the delivery loop of one node behaves.
#[derive(Clone, Debug)]
pub struct DeliveryConfig {
    /// This node: only messages it owns are delivered, and reports carry it
    /// as `by` (the state machine's fencing check).
    pub node_id: NodeId,
    /// Our name: EHLO, `Reporting-MTA` and `From:` of DSNs.
    pub hostname: String,
    /// Backoff and queue lifetime (the same numbers on every node).
    pub retry: RetryPolicy,
    /// Queue scan interval when nothing wakes the loop.
    pub poll_interval: Duration,
    /// Messages delivered at once (0 counts as 1).
    pub max_concurrent_deliveries: usize,
    /// Messages delivered at once by this node to one route's targets
    /// (0 counts as 1), for routes without a concurrency of their own
    /// (see [`crate::shaping`]).
    pub per_target_concurrency: usize,
    /// Route for domains without their own route; `None`: such recipients
    /// go where DNS says (`dns`), or without DNS are deferred with "no
    /// route" until one is set or they expire.
    pub default_route: Option<Route>,
    /// MX resolution for domains with neither a route nor a default route
    /// (see [`crate::mx`]); `None`: no DNS, such recipients are deferred.
    pub dns: Option<DnsSettings>,
    /// TCP connect timeout per target address.
    pub connect_timeout: Duration,
    /// Wait for the greeting and for each reply to a command.
    pub command_timeout: Duration,
    /// Wait for the reply to the final dot (the target may be slow to
    /// queue a large message).
    pub data_timeout: Duration,
    /// Most due messages read per scan.
    pub scan_limit: usize,
    /// How long a reported message is skipped while this node's replica has
    /// not yet applied the report (a follower applies after the leader).
    pub settle_timeout: Duration,
    /// Extra trust anchors (PEM) for `TlsPolicy::Required` targets, besides
    /// the built-in Mozilla roots (e.g. a private CA).
    pub extra_root_certificates_pem: Vec<String>,
    /// Reuse of SMTP sessions per target: idle timeout, reuse time and
    /// transactions per session (see [`crate::connection_cache`]).
    pub connection_cache: CacheSettings,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            node_id: 0,
            hostname: "localhost".into(),
            retry: RetryPolicy::default(),
            poll_interval: Duration::from_secs(1),
            max_concurrent_deliveries: 20,
            per_target_concurrency: 5,
            default_route: None,
            dns: None,
            connect_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(60),
            data_timeout: Duration::from_secs(300),
            scan_limit: 500,
            settle_timeout: Duration::from_secs(120),
            extra_root_certificates_pem: Vec::new(),
            connection_cache: CacheSettings::default(),
        }
    }
}
