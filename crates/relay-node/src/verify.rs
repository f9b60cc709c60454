//! Recipient verification (Postfix `reject_unverified_recipient`): at RCPT,
//! ask the relay domain's route targets whether they take the recipient,
//! and remember the answer.
//!
//! - A 2xx to the probe's `RCPT TO` is cached for `positive_ttl`, a 5xx for
//!   `negative_ttl`; a recipient refused by the target gets `550 5.1.1`.
//! - No answer (unreachable targets, 4xx, timeout) is not cached and gives
//!   `450 4.1.1`: the client retries, the next RCPT probes again.
//! - Domains without a route are not probed (relay control decides them).
//! - The cache holds at most [`MAX_ENTRIES`] addresses; when full, expired
//!   entries are dropped, and if that is not enough, all of them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use relay_delivery::probe::{RcptProbe, verify_recipient};
use relay_smtp::RecipientVerdict;
use relay_types::Route;

/// Addresses remembered at most.
pub const MAX_ENTRIES: usize = 100_000;
/// One probe's limit per target (connect to RCPT reply).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The probe settings and the cache of answers.
#[derive(Debug)]
pub struct RecipientVerifier {
    hostname: String,
    positive_ttl: Duration,
    negative_ttl: Duration,
    cache: Mutex<HashMap<String, (bool, Instant)>>,
}

impl RecipientVerifier {
    /// Probes as `hostname`; answers kept for the given times.
    pub fn new(hostname: String, positive_ttl: Duration, negative_ttl: Duration) -> Self {
        RecipientVerifier {
            hostname,
            positive_ttl,
            negative_ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, key: &str, now: Instant) -> Option<bool> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(key)
            .filter(|(_, until)| *until > now)
            .map(|(exists, _)| *exists)
    }

    fn remember(&self, key: String, exists: bool, now: Instant) {
        let ttl = if exists {
            self.positive_ttl
        } else {
            self.negative_ttl
        };
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_ENTRIES {
            cache.retain(|_, (_, until)| *until > now);
            if cache.len() >= MAX_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(key, (exists, now + ttl));
    }

    /// The verdict for `address` of a domain routed by `route`.
    pub async fn verify(&self, route: &Route, address: &str) -> RecipientVerdict {
        let key = address.to_ascii_lowercase();
        if let Some(exists) = self.cached(&key, Instant::now()) {
            return verdict(exists);
        }
        match verify_recipient(&route.targets, &self.hostname, address, PROBE_TIMEOUT).await {
            RcptProbe::Accepted => {
                self.remember(key, true, Instant::now());
                RecipientVerdict::Exists
            }
            RcptProbe::Refused(reply) => {
                tracing::info!(%reply, "recipient verification: the target refused the recipient");
                self.remember(key, false, Instant::now());
                RecipientVerdict::Unknown
            }
            RcptProbe::Failed(why) => {
                tracing::info!(%why, "recipient verification: no answer; 450 for now");
                RecipientVerdict::TryLater
            }
        }
    }
}

fn verdict(exists: bool) -> RecipientVerdict {
    if exists {
        RecipientVerdict::Exists
    } else {
        RecipientVerdict::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_expire_after_their_ttl_and_the_cache_is_bounded() {
        let v = RecipientVerifier::new(
            "relay.test".into(),
            Duration::from_secs(60),
            Duration::from_secs(5),
        );
        let t0 = Instant::now();
        v.remember("a@x.test".into(), true, t0);
        v.remember("b@x.test".into(), false, t0);
        assert_eq!(
            v.cached("a@x.test", t0 + Duration::from_secs(30)),
            Some(true)
        );
        assert_eq!(
            v.cached("b@x.test", t0 + Duration::from_secs(4)),
            Some(false)
        );
        assert_eq!(v.cached("b@x.test", t0 + Duration::from_secs(6)), None);
        assert_eq!(v.cached("a@x.test", t0 + Duration::from_secs(61)), None);
        for i in 0..MAX_ENTRIES + 10 {
            v.remember(format!("{i}@y.test"), true, t0);
        }
        assert!(v.cache.lock().unwrap().len() <= MAX_ENTRIES);
    }
}
