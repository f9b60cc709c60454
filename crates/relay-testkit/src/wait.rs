//! Waiting on conditions with a deadline, never on bare sleeps.
//!
//! Both helpers re-check their condition every [`POLL_INTERVAL`] until it
//! holds or the timeout passes. Under `tokio::time::pause()` the polling
//! sleeps auto-advance, so the helpers also work with paused time.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How often a condition is re-checked.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// A condition did not hold before its deadline.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("timed out after {waited:?} waiting for {what}")]
pub struct WaitTimeout {
    /// What was awaited.
    pub what: String,
    /// How long it was awaited.
    pub waited: Duration,
}

impl WaitTimeout {
    /// A timeout for `what` after `waited`.
    pub fn new(what: impl Into<String>, waited: Duration) -> Self {
        WaitTimeout {
            what: what.into(),
            waited,
        }
    }
}

/// Waits until `condition()` returns true, checking it at once and then
/// every [`POLL_INTERVAL`], for at most `timeout`.
pub async fn wait_until<F>(timeout: Duration, mut condition: F) -> Result<(), WaitTimeout>
where
    F: FnMut() -> bool,
{
    wait_for(timeout, || std::future::ready(condition().then_some(()))).await
}

/// Waits until `probe()` yields `Some(value)` and returns the value; the
/// probe runs at once and then every [`POLL_INTERVAL`], for at most `timeout`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, mut probe: F) -> Result<T, WaitTimeout>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    let deadline = start + timeout;
    loop {
        if let Some(value) = probe().await {
            return Ok(value);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(WaitTimeout::new("condition", now - start));
        }
        tokio::time::sleep_until((now + POLL_INTERVAL).min(deadline)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn wait_until_returns_once_the_condition_holds() {
        let calls = AtomicU32::new(0);
        wait_until(Duration::from_secs(1), || {
            calls.fetch_add(1, Ordering::SeqCst) >= 3
        })
        .await
        .expect("condition holds on the fourth check");
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_until_times_out_when_the_condition_never_holds() {
        let err = wait_until(Duration::from_millis(100), || false)
            .await
            .expect_err("must time out");
        assert!(err.waited >= Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn wait_for_yields_the_probed_value() {
        let counter = Arc::new(AtomicU32::new(0));
        let value = wait_for(Duration::from_secs(1), || {
            let counter = counter.clone();
            async move {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                (n == 2).then_some(n * 10)
            }
        })
        .await
        .expect("third probe succeeds");
        assert_eq!(value, 20);
    }
}
