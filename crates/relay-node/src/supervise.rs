//! Supervision of the node's long-running tasks, and why the node exits.
//!
//! Every task the node starts is watched. Each is either **critical**: if
//! it ends (error or panic) before shutdown, the node records a fatal
//! error, stops in order and exits non-zero so its service manager
//! restarts it (a node that lost its SMTP, admin or HTTP listener, its
//! delivery loop or its takeover duty must not keep looking healthy); or
//! **restartable**: a stateless helper loop (metrics upkeep, the Raft
//! gauges, the certificate reloader) that is started again after a pause.
//! `node.rs` says which per task.
//!
//! Exit statuses of `relayd` (README "Operating"): 0 stopped on request
//! (SIGTERM/SIGINT); 1 failed to start or stopped on a fatal error;
//! 2 invalid configuration; 3 the store needs an operator (rejoin the
//! node), so restarting would fail the same way.

use std::future::Future;
use std::time::Duration;

use relay_cluster::Failure;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, warn};

/// Pause before a restartable task is started again.
const RESTART_PAUSE: Duration = Duration::from_secs(1);

/// The node stopped because of this (not because it was asked to).
#[derive(Debug, thiserror::Error)]
#[error("stopped after a fatal error: {0}")]
pub struct Fatal(pub String);

/// Runs `task` (named `name`) on `tasks`; if it ends or panics before
/// `stop`, `failure` records why and the node stops.
pub(crate) fn critical<F>(
    tasks: &TaskTracker,
    name: &'static str,
    task: F,
    stop: CancellationToken,
    failure: Failure,
) where
    F: Future<Output = ()> + Send + 'static,
{
    let handle = tasks.spawn(task);
    tasks.spawn(async move {
        let ended = handle.await;
        if stop.is_cancelled() {
            return;
        }
        match ended {
            Ok(()) => failure.fail(format!("{name} stopped")),
            Err(e) if e.is_panic() => failure.fail(format!("{name} panicked")),
            Err(e) => failure.fail(format!("{name} was cancelled: {e}")),
        }
    });
}

/// Like [`critical`], for a task that may finish by itself (a one-shot
/// job): only a panic is fatal.
pub(crate) fn must_not_panic<F>(tasks: &TaskTracker, name: &'static str, task: F, failure: Failure)
where
    F: Future<Output = ()> + Send + 'static,
{
    let handle = tasks.spawn(task);
    tasks.spawn(async move {
        if let Err(e) = handle.await
            && e.is_panic()
        {
            failure.fail(format!("{name} panicked"));
        }
    });
}

/// Runs the task `make` builds until `stop`, building and starting it
/// again (after [`RESTART_PAUSE`]) whenever it ends or panics before.
pub(crate) fn restartable<M, F>(
    tasks: &TaskTracker,
    name: &'static str,
    make: M,
    stop: CancellationToken,
) where
    M: Fn() -> F + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    tasks.spawn(async move {
        loop {
            let ended = tokio::spawn(make()).await;
            if stop.is_cancelled() {
                return;
            }
            match ended {
                Ok(()) => warn!(task = name, "task stopped by itself; restarting it"),
                Err(e) => error!(task = name, error = %e, "task failed; restarting it"),
            }
            tokio::select! {
                _ = tokio::time::sleep(RESTART_PAUSE) => {}
                _ = stop.cancelled() => return,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_critical_task_that_panics_stops_the_node() {
        let tasks = TaskTracker::new();
        let failure = Failure::default();
        critical(
            &tasks,
            "the SMTP server",
            async { panic!("bug") },
            CancellationToken::new(),
            failure.clone(),
        );
        assert_eq!(failure.wait().await, "the SMTP server panicked");
    }

    #[tokio::test]
    async fn a_restartable_task_is_started_again_after_a_panic() {
        let tasks = TaskTracker::new();
        let stop = CancellationToken::new();
        let starts = Arc::new(AtomicUsize::new(0));
        let counter = starts.clone();
        let second_start = Arc::new(tokio::sync::Notify::new());
        let notify = second_start.clone();
        restartable(
            &tasks,
            "metrics upkeep",
            move || {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let notify = notify.clone();
                async move {
                    if n == 0 {
                        panic!("bug");
                    }
                    notify.notify_one();
                    std::future::pending::<()>().await;
                }
            },
            stop.clone(),
        );
        second_start.notified().await;
        assert_eq!(starts.load(Ordering::SeqCst), 2);
        stop.cancel();
        tasks.close();
    }
}
