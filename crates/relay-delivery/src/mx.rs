//! MX resolution: where mail for a recipient domain goes when the domain
//! has no route and there is no default route, found in DNS the way
//! Postfix's SMTP client finds it.
//!
//! For a domain (the lookups use it fully qualified, no search list, no
//! hosts file):
//! 1. its MX records, lowest preference first. Hosts of equal preference
//!    are shuffled once per lookup (Postfix shuffles them too, to spread
//!    the load); the order then holds for as long as the answer is cached,
//!    and each node shuffles on its own.
//! 2. A single MX with preference 0 and exchange `.` is a *null MX*
//!    (RFC 7505): the domain accepts no mail; its recipients bounce at
//!    once with `5.1.10`. A `.` exchange among other MX records is
//!    ignored.
//! 3. No MX records (the name exists): the domain itself is the only host,
//!    preference 0 (the implicit MX of RFC 5321 §5.1).
//! 4. Each host's A and AAAA records, in the resolver's order; every
//!    address becomes a target `ip:port`, at most [`MAX_ADDRESSES`] in all.
//!    The targets are tried in that order (see `transport`), so a host that
//!    is down falls through to the next, lower-preference one.
//!
//! Outcomes: the domain does not exist (NXDOMAIN) → permanent `5.1.2`; no
//! host has an address, and every lookup said so for sure → permanent
//! `5.4.4`; a lookup failed for now (SERVFAIL, timeout, no server) →
//! temporary `4.4.3`, the message is deferred and tried again by the retry
//! policy, never lost.
//!
//! Answers are cached per domain ([`MxResolver::cached`]) for their TTL
//! (the smallest TTL of the records used; a negative answer for the SOA's
//! negative TTL), clamped to [`MIN_TTL`]..[`MAX_TTL`]; a temporary failure
//! for [`TEMPORARY_TTL`]. The cache is bounded: when it is full, expired
//! answers go first, then the ones closest to expiry. Lookups run in the
//! background ([`MxResolver::try_begin`] + [`MxResolver::resolve`]), at
//! most [`MAX_PENDING`] at once, so the delivery loop never waits on DNS:
//! a message whose domain is not resolved yet waits for a later round.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData};
use rand::seq::SliceRandom;
use relay_types::{Route, TlsPolicy};
use tracing::{debug, info, warn};

use crate::classify::Classified;
use crate::metrics as m;

/// Addresses (targets) taken from one domain's MX hosts at most, like
/// Postfix's `smtp_mx_address_limit` (5 there: here more, since the
/// targets are tried within one attempt and an unreachable one costs only
/// its connect timeout).
pub const MAX_ADDRESSES: usize = 10;
/// Shortest time an answer is kept: a TTL of 0 would otherwise mean a
/// lookup per delivery round for a busy domain.
pub const MIN_TTL: Duration = Duration::from_secs(5);
/// Longest time an answer is kept, whatever its TTL says.
pub const MAX_TTL: Duration = Duration::from_secs(3600);
/// How long a temporary failure is kept: long enough for the loop to
/// defer every due message of the domain with it (instead of a new lookup
/// each), short enough that the next retry asks DNS again.
pub const TEMPORARY_TTL: Duration = Duration::from_secs(5);
/// Negative answers without an SOA (no negative TTL) are kept this long.
const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(60);
/// Domain lookups running at once; further domains wait for a later round.
pub const MAX_PENDING: usize = 64;

/// How domains without a route are resolved (`[delivery.dns]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsSettings {
    /// Name servers to ask (UDP, then TCP for truncated answers); empty:
    /// the system's (`/etc/resolv.conf`).
    pub nameservers: Vec<SocketAddr>,
    /// Timeout of one query to one server.
    pub timeout: Duration,
    /// Port of the SMTP servers found through MX (25; tests use a high one).
    pub port: u16,
    /// Domains whose answers are cached at most.
    pub cache_entries: usize,
}

impl Default for DnsSettings {
    fn default() -> Self {
        DnsSettings {
            nameservers: Vec::new(),
            timeout: Duration::from_secs(5),
            port: 25,
            cache_entries: 10_000,
        }
    }
}

/// The resolver could not be set up.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot set up the DNS resolver: {0}")]
pub struct DnsSetupError(String);

/// What DNS says about a domain's destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Deliver to this route: `ip:port` targets in MX preference order,
    /// opportunistic TLS (unauthenticated, like Postfix's default `may`).
    Route(Route),
    /// No delivery now: a temporary failure (deferred) or a permanent one
    /// (bounced), with the text that goes into the trace and the DSN.
    Failed(Classified),
}

/// One MX record as found: preference and exchange (`.` for a null MX).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MxRecord {
    /// Lower is preferred.
    pub preference: u16,
    /// Host name, lower case, without the trailing dot; `.` is the root.
    pub exchange: String,
}

/// The hosts to try, or the null MX.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MxHosts {
    /// The domain says it accepts no mail (RFC 7505).
    NullMx,
    /// Host names, most preferred first (empty: every record was a `.`
    /// among others).
    Hosts(Vec<String>),
}

/// Orders MX records into the hosts to try: by preference, lowest first,
/// equal preferences shuffled with `rng`; detects the null MX.
pub fn order_mx<R: rand::Rng + ?Sized>(mut records: Vec<MxRecord>, rng: &mut R) -> MxHosts {
    if let [only] = records.as_slice()
        && only.preference == 0
        && only.exchange == "."
    {
        return MxHosts::NullMx;
    }
    records.retain(|r| r.exchange != "." && !r.exchange.is_empty());
    // Shuffle first, then a stable sort: equal preferences keep the
    // shuffled order.
    records.shuffle(rng);
    records.sort_by_key(|r| r.preference);
    let mut hosts: Vec<String> = Vec::with_capacity(records.len());
    for r in records {
        // The same host twice (at two preferences): its best one counts.
        if !hosts.contains(&r.exchange) {
            hosts.push(r.exchange);
        }
    }
    MxHosts::Hosts(hosts)
}

/// `ip:port` as a route target (`[v6]:port` for IPv6).
pub fn target_of(ip: IpAddr, port: u16) -> String {
    SocketAddr::new(ip, port).to_string()
}

/// What a failed lookup means.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Negative {
    /// NXDOMAIN: the name does not exist.
    NoDomain(Duration),
    /// The name exists but has no record of the type asked for.
    NoData(Duration),
    /// SERVFAIL, timeout, no server answering…: ask again later.
    Temporary(String),
}

fn negative(error: &NetError) -> Negative {
    match error {
        NetError::Dns(DnsError::NoRecordsFound(none)) => {
            let ttl = none
                .negative_ttl
                .map_or(DEFAULT_NEGATIVE_TTL, |s| Duration::from_secs(s.into()));
            if none.response_code == ResponseCode::NXDomain {
                Negative::NoDomain(ttl)
            } else {
                Negative::NoData(ttl)
            }
        }
        NetError::Dns(DnsError::ResponseCode(code)) => Negative::Temporary(format!("{code}")),
        NetError::Timeout => Negative::Temporary("timed out".into()),
        other => Negative::Temporary(other.to_string()),
    }
}

/// The result label of [`m::DNS_LOOKUPS_TOTAL`] for a resolution.
fn label(resolution: &Resolution, implicit: bool) -> &'static str {
    match resolution {
        Resolution::Route(_) if implicit => "implicit_mx",
        Resolution::Route(_) => "mx",
        Resolution::Failed(f) if f.reply.starts_with("5.1.10") => "null_mx",
        Resolution::Failed(f) if f.reply.starts_with("5.1.2") => "nxdomain",
        Resolution::Failed(f) if f.reply.starts_with("5.") => "no_address",
        Resolution::Failed(_) => "temporary",
    }
}

/// Every `result` label of [`m::DNS_LOOKUPS_TOTAL`].
pub const LOOKUP_RESULTS: [&str; 6] = [
    "mx",
    "implicit_mx",
    "null_mx",
    "nxdomain",
    "no_address",
    "temporary",
];

struct Entry {
    resolution: Resolution,
    expires: Instant,
}

/// Answers per domain, bounded.
struct AnswerCache {
    entries: HashMap<String, Entry>,
    capacity: usize,
}

impl AnswerCache {
    fn get(&mut self, domain: &str, now: Instant) -> Option<Resolution> {
        match self.entries.get(domain) {
            Some(e) if e.expires > now => Some(e.resolution.clone()),
            Some(_) => {
                self.entries.remove(domain);
                None
            }
            None => None,
        }
    }

    fn insert(&mut self, domain: String, resolution: Resolution, expires: Instant, now: Instant) {
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&domain) {
            self.entries.retain(|_, e| e.expires > now);
            while self.entries.len() >= self.capacity {
                let Some(soonest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.expires)
                    .map(|(d, _)| d.clone())
                else {
                    break;
                };
                self.entries.remove(&soonest);
            }
        }
        self.entries.insert(
            domain,
            Entry {
                resolution,
                expires,
            },
        );
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Both maps stay consistent at every step; a panic elsewhere does not
    // make them unusable.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Resolves recipient domains to routes through DNS, with a bounded cache
/// of answers. See the module docs.
pub struct MxResolver {
    /// `Err`: the resolver could not be set up; every domain defers with
    /// the reason.
    resolver: Result<TokioResolver, String>,
    port: u16,
    /// Time for all the queries of one domain together.
    budget: Duration,
    cache: Mutex<AnswerCache>,
    pending: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for MxResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MxResolver")
            .field("port", &self.port)
            .field("ready", &self.resolver.is_ok())
            .finish_non_exhaustive()
    }
}

/// The hickory resolver for `settings`: the given servers, or the system's.
pub fn build_resolver(settings: &DnsSettings) -> Result<TokioResolver, DnsSetupError> {
    let fail = |e: &dyn std::fmt::Display| DnsSetupError(e.to_string());
    let mut builder = if settings.nameservers.is_empty() {
        TokioResolver::builder_tokio().map_err(|e| fail(&e))?
    } else {
        let servers = settings
            .nameservers
            .iter()
            .map(|addr| {
                let mut server = NameServerConfig::udp_and_tcp(addr.ip());
                for connection in &mut server.connections {
                    connection.port = addr.port();
                }
                server
            })
            .collect();
        TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        )
    };
    let options: &mut ResolverOpts = builder.options_mut();
    options.timeout = settings.timeout;
    // Our own cache keeps whole answers (MX and addresses together), with
    // TTLs and a bound of its own; a second cache underneath would keep a
    // stale part after ours expired.
    options.cache_size = 0;
    // Mail routing follows DNS only (Postfix's smtp_host_lookup = dns).
    options.use_hosts_file = ResolveHosts::Never;
    options.ndots = 0;
    builder.build().map_err(|e| fail(&e))
}

impl MxResolver {
    /// A resolver per `settings`. If it cannot be set up (no readable
    /// `resolv.conf`), the error is logged and every domain that needs DNS
    /// is deferred with it (`relayd` checks this when it loads its
    /// configuration, so it fails to start instead).
    pub fn new(settings: &DnsSettings) -> Self {
        let resolver = build_resolver(settings).map_err(|e| {
            warn!(error = %e, "MX resolution unavailable: domains without a route are deferred");
            e.to_string()
        });
        MxResolver {
            resolver,
            port: settings.port,
            // The MX query and a few hosts' address queries, each allowed
            // its two tries.
            budget: settings.timeout.saturating_mul(8),
            cache: Mutex::new(AnswerCache {
                entries: HashMap::new(),
                capacity: settings.cache_entries.max(1),
            }),
            pending: Mutex::new(HashSet::new()),
        }
    }

    /// The cached answer for `domain` (normalised), if one is still valid.
    pub fn cached(&self, domain: &str) -> Option<Resolution> {
        lock(&self.cache).get(domain, Instant::now())
    }

    /// Marks a lookup of `domain` as started; false if one already runs or
    /// [`MAX_PENDING`] do. The caller then runs [`MxResolver::resolve`].
    pub fn try_begin(&self, domain: &str) -> bool {
        let mut pending = lock(&self.pending);
        if pending.len() >= MAX_PENDING || pending.contains(domain) {
            return false;
        }
        pending.insert(domain.to_string())
    }

    /// Looks `domain` up, caches the answer and ends the lookup begun with
    /// [`MxResolver::try_begin`].
    pub async fn resolve(&self, domain: &str) -> Resolution {
        // Each query has its timeout, but a domain with many hosts that
        // all time out would take their sum: bounded as a whole, so a
        // shutdown (which waits for running lookups) is never held long.
        let (resolution, ttl, implicit) =
            match tokio::time::timeout(self.budget, self.lookup(domain)).await {
                Ok(answer) => answer,
                Err(_) => (
                    temporary(format!(
                        "DNS lookups for {domain} took longer than {}s",
                        self.budget.as_secs()
                    )),
                    TEMPORARY_TTL,
                    false,
                ),
            };
        let result = label(&resolution, implicit);
        metrics::counter!(m::DNS_LOOKUPS_TOTAL, "result" => result).increment(1);
        match &resolution {
            Resolution::Route(route) => {
                debug!(%domain, targets = ?route.targets, ttl_s = ttl.as_secs(), result, "MX resolved")
            }
            Resolution::Failed(f) => {
                info!(%domain, reply = %f.reply, result, "MX resolution failed")
            }
        }
        let now = Instant::now();
        lock(&self.cache).insert(domain.to_string(), resolution.clone(), now + ttl, now);
        lock(&self.pending).remove(domain);
        resolution
    }

    /// The resolution, how long it may be kept, and whether it came from
    /// the implicit MX.
    async fn lookup(&self, domain: &str) -> (Resolution, Duration, bool) {
        let resolver = match &self.resolver {
            Ok(r) => r,
            Err(e) => {
                return (
                    temporary(format!("no DNS resolver: {e}")),
                    TEMPORARY_TTL,
                    false,
                );
            }
        };
        // An address literal (`[192.0.2.1]`) or nothing at all is no name
        // to look up.
        let name = if domain.is_empty() || domain.starts_with('[') {
            Err(())
        } else {
            Name::from_ascii(format!("{domain}.")).map_err(|_| ())
        };
        let Ok(name) = name else {
            let failed = Classified::permanent(format!(
                "5.1.2 invalid recipient domain {domain:?} (not a DNS name)"
            ));
            return (Resolution::Failed(failed), MAX_TTL, false);
        };
        let (hosts, mx_ttl, implicit) = match resolver.mx_lookup(name).await {
            Ok(lookup) => {
                let records = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::MX(mx) => Some(MxRecord {
                            preference: mx.preference,
                            exchange: exchange_name(&mx.exchange),
                        }),
                        _ => None,
                    })
                    .collect::<Vec<_>>();
                let ttl = remaining(lookup.valid_until());
                if records.is_empty() {
                    // Only intermediate records (a CNAME chain ending in
                    // nothing): as if there were no MX.
                    (vec![domain.to_string()], ttl, true)
                } else {
                    match order_mx(records, &mut rand::thread_rng()) {
                        MxHosts::NullMx => {
                            let failed =
                                Classified::permanent("5.1.10 recipient address has null MX");
                            return (Resolution::Failed(failed), clamp(ttl), false);
                        }
                        MxHosts::Hosts(hosts) if hosts.is_empty() => {
                            let failed = Classified::permanent(format!(
                                "5.4.4 the MX records of {domain} name no host"
                            ));
                            return (Resolution::Failed(failed), clamp(ttl), false);
                        }
                        MxHosts::Hosts(hosts) => (hosts, ttl, false),
                    }
                }
            }
            Err(e) => match negative(&e) {
                Negative::NoDomain(ttl) => {
                    let failed = Classified::permanent(format!(
                        "5.1.2 recipient domain {domain} does not exist (NXDOMAIN)"
                    ));
                    return (Resolution::Failed(failed), clamp(ttl), false);
                }
                Negative::NoData(ttl) => (vec![domain.to_string()], ttl, true),
                Negative::Temporary(why) => {
                    return (
                        temporary(format!("MX lookup for {domain} failed: {why}")),
                        TEMPORARY_TTL,
                        false,
                    );
                }
            },
        };
        let (resolution, ttl) = self.addresses(resolver, domain, &hosts, implicit).await;
        let ttl = match resolution {
            Resolution::Failed(ref f) if f.class == crate::classify::ReplyClass::Temporary => {
                TEMPORARY_TTL
            }
            _ => clamp(ttl.min(mx_ttl)),
        };
        (resolution, ttl, implicit)
    }

    /// The addresses of `hosts`, in order, as a route.
    async fn addresses(
        &self,
        resolver: &TokioResolver,
        domain: &str,
        hosts: &[String],
        implicit: bool,
    ) -> (Resolution, Duration) {
        let mut targets: Vec<String> = Vec::new();
        let mut ttl = MAX_TTL;
        let mut temporary_why: Option<String> = None;
        let mut no_domain = false;
        for host in hosts {
            if targets.len() >= MAX_ADDRESSES {
                break;
            }
            let Ok(name) = Name::from_ascii(format!("{host}.")) else {
                continue;
            };
            match resolver.lookup_ip(name).await {
                Ok(ips) => {
                    ttl = ttl.min(remaining(ips.valid_until()));
                    for ip in ips.iter() {
                        let target = target_of(ip, self.port);
                        if targets.len() < MAX_ADDRESSES && !targets.contains(&target) {
                            targets.push(target);
                        }
                    }
                }
                Err(e) => match negative(&e) {
                    Negative::NoDomain(t) => {
                        no_domain = true;
                        ttl = ttl.min(t);
                    }
                    Negative::NoData(t) => ttl = ttl.min(t),
                    Negative::Temporary(why) => {
                        if temporary_why.is_none() {
                            temporary_why = Some(format!("address lookup for {host}: {why}"));
                        }
                    }
                },
            }
        }
        if !targets.is_empty() {
            // No shaping: an MX destination gets the node's
            // `per_target_concurrency`, as every unshaped route does.
            let route = Route {
                targets,
                tls: TlsPolicy::Opportunistic,
                shaping: Default::default(),
            };
            return (Resolution::Route(route), ttl);
        }
        let failed = match (temporary_why, implicit) {
            (Some(why), _) => return (temporary(format!("{domain}: {why}")), TEMPORARY_TTL),
            // The MX lookup said "no such type" but the A lookup "no such
            // name": an inconsistent server; the name is gone now.
            (None, true) if no_domain => format!("5.1.2 recipient domain {domain} does not exist"),
            (None, true) => format!("5.4.4 {domain} has no MX and no address record"),
            (None, false) => format!(
                "5.4.4 no MX host of {domain} has an address ({})",
                hosts.join(", ")
            ),
        };
        (Resolution::Failed(Classified::permanent(failed)), ttl)
    }
}

fn temporary(why: String) -> Resolution {
    Resolution::Failed(Classified::temporary(format!("4.4.3 {why}")))
}

/// An exchange as a host name: lower case, no trailing dot; the root is `.`.
fn exchange_name(name: &Name) -> String {
    if name.is_root() {
        return ".".into();
    }
    name.to_ascii().trim_end_matches('.').to_ascii_lowercase()
}

fn remaining(until: Instant) -> Duration {
    until.saturating_duration_since(Instant::now())
}

fn clamp(ttl: Duration) -> Duration {
    ttl.clamp(MIN_TTL, MAX_TTL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn mx(preference: u16, exchange: &str) -> MxRecord {
        MxRecord {
            preference,
            exchange: exchange.into(),
        }
    }

    #[test]
    fn lowest_preference_comes_first() {
        let mut rng = StdRng::seed_from_u64(1);
        let ordered = order_mx(
            vec![mx(20, "b.test"), mx(5, "c.test"), mx(10, "a.test")],
            &mut rng,
        );
        assert_eq!(
            ordered,
            MxHosts::Hosts(vec!["c.test".into(), "a.test".into(), "b.test".into()])
        );
    }

    #[test]
    fn equal_preferences_are_shuffled_but_stay_in_their_rank() {
        let records = vec![
            mx(10, "a.test"),
            mx(10, "b.test"),
            mx(10, "c.test"),
            mx(20, "z.test"),
        ];
        let mut firsts = HashSet::new();
        for seed in 0..64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let MxHosts::Hosts(hosts) = order_mx(records.clone(), &mut rng) else {
                panic!("not a null MX");
            };
            assert_eq!(hosts.len(), 4);
            assert_eq!(hosts[3], "z.test", "preference 20 always last");
            firsts.insert(hosts[0].clone());
            let mut top: Vec<&String> = hosts[..3].iter().collect();
            top.sort();
            assert_eq!(top, ["a.test", "b.test", "c.test"]);
        }
        assert_eq!(
            firsts.len(),
            3,
            "each equal-preference host comes first sometimes"
        );
    }

    #[test]
    fn a_single_dot_at_preference_zero_is_a_null_mx() {
        let mut rng = StdRng::seed_from_u64(0);
        assert_eq!(order_mx(vec![mx(0, ".")], &mut rng), MxHosts::NullMx);
        // Not the RFC 7505 form: no null MX, and no host either.
        assert_eq!(
            order_mx(vec![mx(10, ".")], &mut rng),
            MxHosts::Hosts(vec![])
        );
        // Among other records the `.` is ignored.
        assert_eq!(
            order_mx(vec![mx(0, "."), mx(10, "mx.test")], &mut rng),
            MxHosts::Hosts(vec!["mx.test".into()])
        );
    }

    #[test]
    fn a_host_listed_twice_keeps_its_best_preference() {
        let mut rng = StdRng::seed_from_u64(0);
        assert_eq!(
            order_mx(
                vec![mx(30, "a.test"), mx(20, "b.test"), mx(10, "a.test")],
                &mut rng
            ),
            MxHosts::Hosts(vec!["a.test".into(), "b.test".into()])
        );
    }

    #[test]
    fn targets_bracket_ipv6() {
        assert_eq!(target_of("192.0.2.1".parse().unwrap(), 25), "192.0.2.1:25");
        assert_eq!(
            target_of("2001:db8::1".parse().unwrap(), 2525),
            "[2001:db8::1]:2525"
        );
    }

    #[test]
    fn exchange_names_lose_the_trailing_dot_and_case() {
        assert_eq!(
            exchange_name(&Name::from_ascii("MX1.Example.TEST.").unwrap()),
            "mx1.example.test"
        );
        assert_eq!(exchange_name(&Name::root()), ".");
    }

    #[test]
    fn the_cache_is_bounded_and_drops_expired_then_soonest_first() {
        let now = Instant::now();
        let mut cache = AnswerCache {
            entries: HashMap::new(),
            capacity: 2,
        };
        let r = |s: &str| Resolution::Failed(Classified::temporary(s));
        cache.insert("a".into(), r("a"), now + Duration::from_secs(10), now);
        cache.insert("b".into(), r("b"), now + Duration::from_secs(5), now);
        cache.insert("c".into(), r("c"), now + Duration::from_secs(20), now);
        assert_eq!(cache.entries.len(), 2);
        assert!(cache.get("b", now).is_none(), "the soonest to expire went");
        assert_eq!(cache.get("a", now), Some(r("a")));
        assert!(
            cache.get("a", now + Duration::from_secs(11)).is_none(),
            "expired"
        );
        assert_eq!(cache.entries.len(), 1);
    }

    #[test]
    fn labels_follow_the_enhanced_codes() {
        let failed = |s: &str| Resolution::Failed(Classified::permanent(s));
        assert_eq!(
            label(&failed("5.1.10 recipient address has null MX"), false),
            "null_mx"
        );
        assert_eq!(
            label(&failed("5.1.2 recipient domain x does not exist"), false),
            "nxdomain"
        );
        assert_eq!(label(&failed("5.4.4 no MX host"), false), "no_address");
        assert_eq!(label(&temporary("SERVFAIL".into()), false), "temporary");
        let route = Resolution::Route(Route {
            targets: vec![],
            tls: TlsPolicy::Opportunistic,
            shaping: Default::default(),
        });
        assert_eq!(label(&route, true), "implicit_mx");
        assert_eq!(label(&route, false), "mx");
    }
}
