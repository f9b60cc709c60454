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

    /// `Thu, 01 Jan 1970 00:00:00 +0000`: the RFC 5322 date-time (section
    /// 3.3) in UTC, whole seconds; the one formatter for `Received:`
    /// headers and DSNs. A time past 9999 (which the format cannot write)
    /// is written as the last second of 9999.
    pub fn rfc5322(self) -> String {
        use time::format_description::well_known::Rfc2822;
        let secs = i64::try_from(self.0 / 1000).unwrap_or(i64::MAX);
        let at = time::OffsetDateTime::from_unix_timestamp(secs)
            .unwrap_or_else(|_| time::PrimitiveDateTime::MAX.assume_utc());
        // Years 1970..=9999 in UTC are always formattable.
        at.format(&Rfc2822)
            .unwrap_or_else(|e| format!("(unformattable date: {e})"))
    }
}

#[cfg(test)]
mod tests {
    use super::UnixMillis;

    #[test]
    fn rfc5322_dates() {
        assert_eq!(UnixMillis(0).rfc5322(), "Thu, 01 Jan 1970 00:00:00 +0000");
        // 2024-02-29T23:59:59.999Z, a leap day: milliseconds are dropped.
        assert_eq!(
            UnixMillis(1_709_251_199_999).rfc5322(),
            "Thu, 29 Feb 2024 23:59:59 +0000"
        );
        // 2000-02-29 (a leap year divisible by 400).
        assert_eq!(
            UnixMillis(951_782_400_000).rfc5322(),
            "Tue, 29 Feb 2000 00:00:00 +0000"
        );
        assert_eq!(
            UnixMillis(1_751_367_157_123).rfc5322(),
            "Tue, 01 Jul 2025 10:52:37 +0000"
        );
        assert_eq!(
            UnixMillis(u64::MAX).rfc5322(),
            "Fri, 31 Dec 9999 23:59:59 +0000"
        );
    }
}
