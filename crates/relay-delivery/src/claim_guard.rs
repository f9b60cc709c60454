//! [`ReleaseOnUnwind`]: gives a message's in-flight claim back when the task
//! that holds it ends without finishing normally (a panic, or the task
//! dropped), so one bad delivery cannot keep its message from ever being
//! tried again until the node restarts.
//!
//! The normal paths release the claim themselves, at the point where the
//! tracking state says what became of the message; a task disarms the
//! guard once those paths have run. Only an armed guard (the task unwound
//! or was dropped before that) releases.

/// Runs its release action on drop unless [`disarmed`](Self::disarm).
pub(crate) struct ReleaseOnUnwind<F: FnOnce()> {
    release: Option<F>,
}

impl<F: FnOnce()> ReleaseOnUnwind<F> {
    /// Arms the guard with `release`.
    pub(crate) fn new(release: F) -> Self {
        ReleaseOnUnwind {
            release: Some(release),
        }
    }

    /// The task finished normally: its own paths released the claim.
    pub(crate) fn disarm(mut self) {
        self.release = None;
    }
}

impl<F: FnOnce()> Drop for ReleaseOnUnwind<F> {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            if std::thread::panicking() {
                tracing::error!(
                    "a delivery task panicked; its message is released for a later round"
                );
            }
            release();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::ReleaseOnUnwind;

    #[test]
    fn releases_on_panic_not_after_disarm() {
        let released = Arc::new(AtomicUsize::new(0));
        let counter = released.clone();
        let unwound = std::panic::catch_unwind(move || {
            let _guard = ReleaseOnUnwind::new(move || {
                counter.fetch_add(1, Ordering::SeqCst);
            });
            panic!("delivery bug");
        });
        assert!(unwound.is_err());
        assert_eq!(released.load(Ordering::SeqCst), 1);

        let counter = released.clone();
        ReleaseOnUnwind::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .disarm();
        assert_eq!(released.load(Ordering::SeqCst), 1);
    }
}
