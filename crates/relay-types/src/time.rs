//! Time as it travels inside entries.

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch.
///
/// The state machine never reads a clock: every timestamp it needs (received,
/// attempted, next attempt, expiry) is decided by the proposing node and
/// carried in the entry, so replay gives the same state on every replica.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct UnixMillis(pub u64);

impl UnixMillis {
    /// The wall clock now. For proposers only, never for `apply`.
    pub fn now() -> Self {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        UnixMillis(d.as_millis() as u64)
    }

    /// `self + ms`, saturating.
    pub fn plus_millis(self, ms: u64) -> Self {
        UnixMillis(self.0.saturating_add(ms))
    }

    /// Milliseconds from `earlier` to `self`, 0 if `earlier` is later.
    pub fn millis_since(self, earlier: UnixMillis) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}
