//! Supervision of the consensus layer's own tasks.
//!
//! The Raft gRPC server, the group-commit batcher and the log purger run
//! as tasks beside openraft. If one of them ends before shutdown (an error,
//! or a panic), the node would keep answering SMTP while unable to take
//! part in the cluster (no Raft RPCs: 421 for ever; no batcher: every
//! write hangs). None of them can be restarted safely from here (the
//! listener is gone, proposers hold the old batcher's channel), so each
//! one's end is a [`Failure`] of the cluster, which the node turns into an
//! ordered stop and a non-zero exit for its supervisor to restart it.

use std::sync::{Arc, OnceLock};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::error;

/// "The consensus layer cannot go on": set once, with the first reason.
#[derive(Clone, Debug, Default)]
pub struct Failure {
    token: CancellationToken,
    reason: Arc<OnceLock<String>>,
}

impl Failure {
    /// Records `reason` (the first one wins) and wakes every waiter.
    pub fn fail(&self, reason: impl Into<String>) {
        let reason = reason.into();
        error!(%reason, "the consensus layer failed; the node must stop");
        let _ = self.reason.set(reason);
        self.token.cancel();
    }

    /// Waits for a failure and returns its reason.
    pub async fn wait(&self) -> String {
        self.token.cancelled().await;
        self.reason.get().cloned().unwrap_or_default()
    }

    /// The reason, once failed.
    pub fn reason(&self) -> Option<String> {
        self.reason.get().cloned()
    }
}

/// Watches `task` (named `name`): if it ends, returns or panics, before
/// `shutdown`, the cluster has failed.
pub(crate) fn critical(
    name: &'static str,
    task: JoinHandle<()>,
    shutdown: CancellationToken,
    failure: Failure,
) {
    tokio::spawn(async move {
        let ended = task.await;
        if shutdown.is_cancelled() {
            return;
        }
        match ended {
            Ok(()) => failure.fail(format!("{name} stopped")),
            Err(e) if e.is_panic() => failure.fail(format!("{name} panicked")),
            Err(e) => failure.fail(format!("{name} was cancelled: {e}")),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_critical_task_that_panics_fails_the_cluster() {
        let failure = Failure::default();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(async { panic!("boom") });
        critical("the test task", task, shutdown, failure.clone());
        assert_eq!(failure.wait().await, "the test task panicked");
    }

    #[tokio::test]
    async fn a_task_ending_at_shutdown_is_no_failure() {
        let failure = Failure::default();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let task = tokio::spawn(async move { stop.cancelled().await });
        let watcher_shutdown = shutdown.clone();
        critical("the test task", task, watcher_shutdown, failure.clone());
        shutdown.cancel();
        // Give the watcher every chance to (wrongly) report.
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(failure.reason(), None);
    }
}
