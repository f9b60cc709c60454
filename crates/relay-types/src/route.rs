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
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Route {
    /// `host:port` targets, tried in order until one answers.
    pub targets: Vec<String>,
    /// TLS policy towards the targets.
    pub tls: TlsPolicy,
}

/// Lower-cases a domain and drops one trailing dot, so `Example.TEST.` and
/// `example.test` name the same route.
pub fn normalize_domain(domain: &str) -> String {
    domain.trim().trim_end_matches('.').to_ascii_lowercase()
}
