//! SMTP AUTH (RFC 4954) material: who may submit from outside the
//! authorised networks, and the per-IP limit on failed attempts.
//!
//! - [`Credentials`]: user name → argon2 password hash (PHC string, as
//!   `relayd --hash-password` prints). Passwords are never stored or
//!   logged; an unknown user costs the same hash work as a wrong password,
//!   so timing does not tell which user names exist.
//! - [`AuthFailures`]: failed attempts per client IP in a sliding window;
//!   past the limit the client gets `421 4.7.0` and is disconnected until
//!   the window passes (Postfix: `smtpd_client_auth_rate_limit` plus
//!   anvil). The table is bounded, so a flood of addresses cannot grow it
//!   without limit.
//! - [`decode_plain`]/[`decode_base64_line`]: the SASL PLAIN and LOGIN
//!   payloads, pure (a fuzz target).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// A configured password hash that does not parse as a PHC string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "user {user:?}: not an argon2 password hash (make one with `relayd --hash-password`): {reason}"
)]
pub struct BadPasswordHash {
    /// The user whose entry is wrong.
    pub user: String,
    /// What the parser said.
    pub reason: String,
}

/// User names and their argon2 password hashes.
#[derive(Clone)]
pub struct Credentials {
    users: HashMap<String, String>,
    /// Verified against for unknown users, so they cost the same.
    decoy: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Hashes are secrets too (offline guessing): names only.
        let mut names: Vec<&String> = self.users.keys().collect();
        names.sort();
        f.debug_struct("Credentials")
            .field("users", &names)
            .finish()
    }
}

impl Credentials {
    /// Checks every hash parses; the error names the first bad user.
    pub fn new(users: HashMap<String, String>) -> Result<Self, BadPasswordHash> {
        for (user, hash) in &users {
            check_hash(user, hash)?;
        }
        let decoy = hash_password("decoy password for unknown users");
        Ok(Credentials { users, decoy })
    }

    /// Is this the user's password? Takes the hash's time either way.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        let (hash, known) = match self.users.get(user) {
            Some(h) => (h.as_str(), true),
            None => (self.decoy.as_str(), false),
        };
        let Ok(parsed) = PasswordHash::new(hash) else {
            return false;
        };
        let matches = Argon2::default().verify_password(password, &parsed).is_ok();
        known && matches
    }

    /// How many users are configured.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// No users configured.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// Does `hash` parse as an argon2 PHC string? (Config validation; cheap.)
pub fn check_hash(user: &str, hash: &str) -> Result<(), BadPasswordHash> {
    let bad = |reason: String| BadPasswordHash {
        user: user.to_string(),
        reason,
    };
    let parsed = PasswordHash::new(hash).map_err(|e| bad(e.to_string()))?;
    if !parsed.algorithm.as_str().starts_with("argon2") {
        return Err(bad(format!("algorithm {} is not argon2", parsed.algorithm)));
    }
    Ok(())
}

/// An argon2id PHC string for `password`, with a fresh random salt.
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters hashes any password")
        .to_string()
}

/// Failed AUTH attempts per client IP.
#[derive(Debug)]
pub struct AuthFailures {
    max_failures: u32,
    window: Duration,
    /// Most addresses tracked; when full, expired entries are dropped and,
    /// if still full, the oldest window goes.
    capacity: usize,
    table: Mutex<HashMap<IpAddr, Window>>,
}

#[derive(Clone, Copy, Debug)]
struct Window {
    started: Instant,
    failures: u32,
}

impl AuthFailures {
    /// At most `max_failures` failures per IP within `window`.
    pub fn new(max_failures: u32, window: Duration) -> Self {
        AuthFailures {
            max_failures,
            window,
            capacity: 100_000,
            table: Mutex::new(HashMap::new()),
        }
    }

    /// Has this client used up its failures?
    pub fn is_blocked(&self, ip: IpAddr) -> bool {
        let table = self.table.lock().expect("auth failure table poisoned");
        table
            .get(&ip)
            .is_some_and(|w| w.started.elapsed() < self.window && w.failures >= self.max_failures)
    }

    /// Records one failure; returns true if the client is now blocked.
    pub fn record_failure(&self, ip: IpAddr) -> bool {
        let mut table = self.table.lock().expect("auth failure table poisoned");
        if table.len() >= self.capacity && !table.contains_key(&ip) {
            let window = self.window;
            table.retain(|_, w| w.started.elapsed() < window);
            let oldest = table
                .iter()
                .min_by_key(|(_, w)| w.started)
                .map(|(ip, _)| *ip);
            if let Some(oldest) = oldest.filter(|_| table.len() >= self.capacity) {
                table.remove(&oldest);
            }
        }
        let now = Instant::now();
        let entry = table.entry(ip).or_insert(Window {
            started: now,
            failures: 0,
        });
        if now.duration_since(entry.started) >= self.window {
            *entry = Window {
                started: now,
                failures: 0,
            };
        }
        entry.failures = entry.failures.saturating_add(1);
        entry.failures >= self.max_failures
    }

    /// A successful login clears the client's failures.
    pub fn clear(&self, ip: IpAddr) {
        self.table
            .lock()
            .expect("auth failure table poisoned")
            .remove(&ip);
    }
}

/// Everything the session needs for AUTH.
#[derive(Debug)]
pub struct SmtpAuth {
    /// Who may log in.
    pub credentials: Credentials,
    /// Failed attempts per client IP.
    pub failures: AuthFailures,
}

/// Why a SASL response was not usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslDecodeError {
    /// Not base64.
    Base64,
    /// Decoded, but not `authzid NUL authcid NUL password`, or not UTF-8
    /// where a name is expected.
    Malformed,
}

/// One base64 line (a LOGIN user name or password, or a PLAIN response).
/// `=` alone is the empty string (RFC 4954 4).
pub fn decode_base64_line(line: &str) -> Result<Vec<u8>, SaslDecodeError> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line == "=" {
        return Ok(Vec::new());
    }
    STANDARD.decode(line).map_err(|_| SaslDecodeError::Base64)
}

/// A PLAIN response (RFC 4616): `[authzid] NUL authcid NUL password`.
/// Returns the user and password; an authzid other than empty or the user
/// itself is refused (no acting as someone else).
pub fn decode_plain(decoded: &[u8]) -> Result<(String, Vec<u8>), SaslDecodeError> {
    let mut parts = decoded.splitn(3, |&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslDecodeError::Malformed);
    };
    let user = std::str::from_utf8(authcid).map_err(|_| SaslDecodeError::Malformed)?;
    if user.is_empty() || (!authzid.is_empty() && authzid != authcid) {
        return Err(SaslDecodeError::Malformed);
    }
    Ok((user.to_string(), password.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_known_users_only() {
        let hash = hash_password("s3cret");
        let creds = Credentials::new(HashMap::from([("alice".to_string(), hash)])).unwrap();
        assert!(creds.verify("alice", b"s3cret"));
        assert!(!creds.verify("alice", b"wrong"));
        assert!(!creds.verify("bob", b"s3cret"));
        assert!(!format!("{creds:?}").contains("argon2"));
    }

    #[test]
    fn bad_hashes_name_the_user() {
        let err = Credentials::new(HashMap::from([("bob".to_string(), "plain".to_string())]))
            .unwrap_err();
        assert_eq!(err.user, "bob");
        assert!(err.to_string().contains("--hash-password"));
    }

    #[test]
    fn plain_responses_decode() {
        assert_eq!(
            decode_plain(b"\0alice\0pw"),
            Ok(("alice".into(), b"pw".to_vec()))
        );
        assert_eq!(
            decode_plain(b"alice\0alice\0pw\0x"),
            Ok(("alice".into(), b"pw\0x".to_vec()))
        );
        assert_eq!(
            decode_plain(b"bob\0alice\0pw"),
            Err(SaslDecodeError::Malformed)
        );
        assert_eq!(decode_plain(b"alice\0pw"), Err(SaslDecodeError::Malformed));
        assert_eq!(decode_plain(b"\0\0pw"), Err(SaslDecodeError::Malformed));
        assert_eq!(decode_base64_line("=\r\n"), Ok(vec![]));
        assert_eq!(decode_base64_line("!!"), Err(SaslDecodeError::Base64));
    }

    #[test]
    fn failures_block_within_the_window_and_clear_on_success() {
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let limits = AuthFailures::new(3, Duration::from_secs(60));
        assert!(!limits.record_failure(ip));
        assert!(!limits.record_failure(ip));
        assert!(!limits.is_blocked(ip));
        assert!(limits.record_failure(ip));
        assert!(limits.is_blocked(ip));
        assert!(!limits.is_blocked(other));
        limits.clear(ip);
        assert!(!limits.is_blocked(ip));

        let expired = AuthFailures::new(1, Duration::ZERO);
        expired.record_failure(ip);
        assert!(!expired.is_blocked(ip), "a zero window never blocks");
    }

    #[test]
    fn the_table_stays_bounded() {
        let mut limits = AuthFailures::new(5, Duration::from_secs(60));
        limits.capacity = 10;
        for i in 0..100u32 {
            limits.record_failure(IpAddr::from(std::net::Ipv4Addr::from(i)));
        }
        assert!(limits.table.lock().unwrap().len() <= 10);
    }
}
