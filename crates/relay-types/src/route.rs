//! Per-domain routes: where the owner forwards a domain's mail.

use serde::{Deserialize, Serialize};

/// TLS to the target, per route.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TlsPolicy {
    /// Plain SMTP, never STARTTLS.
    None,
    /// STARTTLS when the target offers it; plain otherwise.
    #[default]
    Opportunistic,
    /// STARTTLS with certificate verification, or no delivery (4xx, retried).
    Required,
}

impl std::str::FromStr for TlsPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(TlsPolicy::None),
            "opportunistic" => Ok(TlsPolicy::Opportunistic),
            "required" => Ok(TlsPolicy::Required),
            other => Err(format!(
                "unknown TLS policy {other:?} (expected none, opportunistic or required)"
            )),
        }
    }
}

impl std::fmt::Display for TlsPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TlsPolicy::None => "none",
            TlsPolicy::Opportunistic => "opportunistic",
            TlsPolicy::Required => "required",
        })
    }
}

/// Where a domain's mail goes: targets (`host:port`) tried in order.
///
/// Encoded per format version (see [`crate::codec`]): format 1 holds
/// `targets` and `tls`; format 2 adds `shaping`. A route whose shaping is
/// the default is written in format 1, byte for byte what releases before
/// shaping wrote, so only a shaped route needs a reader of format 2; a
/// format-1 route reads back with the default shaping.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Route {
    /// `host:port` targets, tried in order until one answers.
    pub targets: Vec<String>,
    /// TLS policy towards the targets.
    pub tls: TlsPolicy,
    /// Cluster-wide limits on deliveries to the targets (format 2).
    pub shaping: Shaping,
}

impl Route {
    /// A route to `targets` with `tls` and no shaping of its own.
    pub fn new(targets: Vec<String>, tls: TlsPolicy) -> Self {
        Route {
            targets,
            tls,
            shaping: Shaping::default(),
        }
    }
}

/// How hard the cluster may push a route's targets, shared by every owner
/// (see the delivery crate's `shaping` module for how nodes split it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Shaping {
    /// Most deliveries at once to the targets, cluster-wide. `None`: each
    /// node's own `per_target_concurrency`, without slow start.
    pub concurrency: Option<u32>,
    /// Most messages started towards the targets per period, cluster-wide.
    /// `None`: no rate limit.
    pub rate: Option<Rate>,
}

impl Shaping {
    /// True when nothing is set (the route behaves as before shaping).
    pub fn is_default(&self) -> bool {
        *self == Shaping::default()
    }
}

/// A message rate: at most `messages` per `per_secs` seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rate {
    /// Messages per period (at least 1).
    pub messages: u32,
    /// The period in seconds (at least 1).
    pub per_secs: u32,
}

impl Rate {
    /// The time between two message starts that keeps to this rate, in
    /// milliseconds, when `shares` nodes each get an equal part of it.
    pub fn spacing_ms(&self, shares: u32) -> u64 {
        let period = u64::from(self.per_secs.max(1)) * 1000 * u64::from(shares.max(1));
        period.div_ceil(u64::from(self.messages.max(1)))
    }
}

impl std::str::FromStr for Rate {
    type Err = String;
    /// `N/s`, `N/m` or `N/h` (N messages per second, minute or hour).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("invalid rate {s:?} (expected N/s, N/m or N/h with N >= 1)");
        let (n, unit) = s.trim().split_once('/').ok_or_else(bad)?;
        let messages: u32 = n.trim().parse().map_err(|_| bad())?;
        let per_secs = match unit.trim() {
            "s" | "sec" => 1,
            "m" | "min" => 60,
            "h" => 3600,
            _ => return Err(bad()),
        };
        if messages == 0 {
            return Err(bad());
        }
        Ok(Rate { messages, per_secs })
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.per_secs {
            1 => write!(f, "{}/s", self.messages),
            60 => write!(f, "{}/m", self.messages),
            3600 => write!(f, "{}/h", self.messages),
            other => write!(f, "{}/{}s", self.messages, other),
        }
    }
}

/// The shape of [`Route`] in format 1.
#[derive(Serialize, Deserialize)]
#[serde(rename = "Route")]
struct RouteV1<T> {
    targets: T,
    tls: TlsPolicy,
}

/// The shape of [`Route`] in format 2.
#[derive(Serialize, Deserialize)]
#[serde(rename = "Route")]
struct RouteV2<T> {
    targets: T,
    tls: TlsPolicy,
    #[serde(default)]
    shaping: Shaping,
}

impl Serialize for Route {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if crate::codec::encoding_version() >= crate::codec::SHAPING_FORMAT {
            return RouteV2 {
                targets: &self.targets,
                tls: self.tls,
                shaping: self.shaping,
            }
            .serialize(serializer);
        }
        if !self.shaping.is_default() {
            // Format 1 cannot hold it: the codec encodes the whole value
            // again in format 2.
            crate::codec::needs_version(crate::codec::SHAPING_FORMAT);
        }
        RouteV1 {
            targets: &self.targets,
            tls: self.tls,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Route {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if crate::codec::decoding_version() >= crate::codec::SHAPING_FORMAT {
            let v = RouteV2::<Vec<String>>::deserialize(deserializer)?;
            Ok(Route {
                targets: v.targets,
                tls: v.tls,
                shaping: v.shaping,
            })
        } else {
            let v = RouteV1::<Vec<String>>::deserialize(deserializer)?;
            Ok(Route::new(v.targets, v.tls))
        }
    }
}

/// Lower-cases a domain and drops one trailing dot, so `Example.TEST.` and
/// `example.test` name the same route.
pub fn normalize_domain(domain: &str) -> String {
    domain.trim().trim_end_matches('.').to_ascii_lowercase()
}
