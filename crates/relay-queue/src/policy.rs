//! Queue policy: retry schedule, lifetime, DSN decisions.
//!
//! The owner uses these to fill in `next_attempt_at`, `expires_at` and the DSN
//! carried by an `Attempt`; `apply` only records what the entry says.

use relay_types::{AttemptOutcome, MessageRecord, RecipientOutcome};

/// Exponential backoff between attempts, Postfix-like by default
/// (`minimal_backoff_time = 300s`, `maximal_backoff_time = 4000s`,
/// `maximal_queue_lifetime = 5d`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay after the first deferral, in milliseconds.
    pub min_backoff_ms: u64,
    /// Upper bound on the delay, in milliseconds.
    pub max_backoff_ms: u64,
    /// How long a message may stay queued, in milliseconds.
    pub queue_lifetime_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            min_backoff_ms: 300_000,
            max_backoff_ms: 4_000_000,
            queue_lifetime_ms: 5 * 24 * 3_600_000,
        }
    }
}

impl RetryPolicy {
    /// Delay before the next attempt after `attempts` attempts (1-based):
    /// min, 2×min, 4×min, … capped at max.
    pub fn backoff_ms(&self, attempts: u32) -> u64 {
        let shift = attempts.saturating_sub(1).min(32);
        self.min_backoff_ms
            .saturating_mul(1u64 << shift)
            .min(self.max_backoff_ms)
            .max(1)
    }
}

/// Recipients that failed in `outcomes` and asked (or defaulted) to be told,
/// for a message whose sender can receive a DSN. Empty means no DSN.
pub fn failed_recipients_wanting_dsn(
    record: &MessageRecord,
    outcomes: &[RecipientOutcome],
) -> Vec<u32> {
    if record.envelope.is_null_sender() {
        return Vec::new();
    }
    outcomes
        .iter()
        .filter(|o| o.outcome == AttemptOutcome::Failed)
        .filter(|o| {
            record
                .envelope
                .recipients
                .get(o.index as usize)
                .is_some_and(|r| r.notify.wants_failure())
        })
        .map(|o| o.index)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff_ms(1), 300_000);
        assert_eq!(p.backoff_ms(2), 600_000);
        assert_eq!(p.backoff_ms(3), 1_200_000);
        assert_eq!(p.backoff_ms(10), 4_000_000);
        assert_eq!(p.backoff_ms(u32::MAX), 4_000_000);
    }
}
