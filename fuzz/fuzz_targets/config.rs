//! relayd's configuration loader (`NodeConfig::parse`,
//! crates/relay-node/src/config.rs) on arbitrary text, as if read from
//! `/nonexistent/fuzz/relayd.toml` (so relative `*_file` paths never exist).
//!
//! Properties: parsing never panics; a rejected file always says which file
//! and key (every problem line starts with the path); and a file that is
//! accepted keeps the promises the rest of the node relies on: the node is a
//! member, ids are unique, election timeouts are ordered above the
//! heartbeat, durations are non-zero and usable as deadlines (adding them to
//! "now" cannot overflow, which would panic every session or timer), every
//! route has a non-empty normalised domain (lower case, no trailing dot;
//! unique) and `host:port` targets, the admin token is not empty, the
//! cluster secret has at least 16 octets, and AUTH users have parseable
//! argon2 hashes.
//!
//! Inputs naming device or proc files are skipped: reading `/dev/zero` as a
//! `ca_file` would only measure memory, not the parser.
#![no_main]

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use libfuzzer_sys::fuzz_target;
use relay_node::{ConfigError, NodeConfig};

const PATH: &str = "/nonexistent/fuzz/relayd.toml";

fn usable(what: &str, d: Duration) {
    assert!(!d.is_zero(), "{what} is zero");
    assert!(
        Instant::now().checked_add(d).is_some(),
        "{what} = {d:?} overflows a deadline"
    );
    assert!(
        SystemTime::now().checked_add(d).is_some(),
        "{what} = {d:?} overflows a wall-clock time"
    );
    assert!(
        u64::try_from(d.as_millis()).is_ok(),
        "{what} = {d:?} overflows u64 millis"
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if ["/dev", "/proc", "/sys"].iter().any(|p| text.contains(p)) {
        return;
    }
    match NodeConfig::parse(Path::new(PATH), text) {
        Err(ConfigError::Invalid(problems)) => {
            assert!(!problems.is_empty());
            for p in problems {
                assert!(p.starts_with(PATH), "problem without the file: {p}");
            }
        }
        Err(e) => assert!(e.to_string().contains(PATH), "error without the file: {e}"),
        Ok(c) => {
            assert!(c.members.contains_key(&c.node_id));
            assert!(c.heartbeat < c.election_timeout.0);
            assert!(c.election_timeout.0 < c.election_timeout.1);
            for (what, d) in [
                ("submit_timeout", c.submit_timeout),
                ("takeover_after", c.takeover_after),
                ("heartbeat", c.heartbeat),
                ("election_timeout_max", c.election_timeout.1),
                ("purge_interval", c.purge_interval),
                ("smtp.command_timeout", c.smtp.command_timeout),
                ("smtp.data_timeout", c.smtp.data_timeout),
                ("delivery.min_backoff", c.delivery.min_backoff),
                ("delivery.max_backoff", c.delivery.max_backoff),
                ("delivery.queue_lifetime", c.delivery.queue_lifetime),
                ("delivery.poll_interval", c.delivery.poll_interval),
                ("delivery.connect_timeout", c.delivery.connect_timeout),
                ("delivery.command_timeout", c.delivery.command_timeout),
                ("delivery.data_timeout", c.delivery.data_timeout),
            ] {
                usable(what, d);
            }
            let mut seen = std::collections::BTreeSet::new();
            for (domain, route) in &c.initial_routes {
                assert!(!domain.is_empty());
                assert!(!domain.ends_with('.') && !domain.bytes().any(|b| b.is_ascii_uppercase()));
                assert!(seen.insert(domain.clone()), "duplicate route {domain}");
                assert!(!route.targets.is_empty());
                for t in &route.targets {
                    let port = t.rsplit_once(':').map(|(_, p)| p.parse::<u16>());
                    assert!(matches!(port, Some(Ok(_))), "target {t:?}");
                }
            }
            assert!(!c.admin_token.is_empty());
            assert!(c.cluster_secret.len() >= 16, "short cluster secret");
            if let Some(auth) = &c.smtp.auth {
                assert!(auth.max_failures >= 1);
                usable("smtp.auth.failure_window", auth.failure_window);
                for (user, hash) in &auth.users {
                    assert!(relay_smtp::auth::check_hash(user, hash).is_ok());
                }
            }
            // The digest peers compare must be computable for any valid file.
            assert_eq!(c.shared_settings_digest().len(), 64);
        }
    }
});
