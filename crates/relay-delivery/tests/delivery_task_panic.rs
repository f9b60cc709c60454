//! A delivery task that panics gives its message back: the message is tried
//! again in a later round instead of staying "in flight" until the node
//! restarts.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use relay_delivery::{DeliveryLoop, ProposeError, Proposer};
use relay_testkit::{TestTarget, wait_until};
use relay_types::{Command, CommandResult, TlsPolicy};
use support::{BODY, FakeCluster, WAIT, config, message, reports_for};
use tokio_util::sync::CancellationToken;

/// Panics on its first proposal (a bug in the report path), then behaves.
struct PanicsOnce {
    cluster: Arc<FakeCluster>,
    panicked: AtomicBool,
}

impl Proposer for PanicsOnce {
    async fn propose(&self, command: Command) -> Result<CommandResult, ProposeError> {
        if !self.panicked.swap(true, Ordering::SeqCst) {
            panic!("a bug while proposing the report");
        }
        self.cluster.propose(command).await
    }

    fn may_start_session(&self) -> bool {
        self.cluster.may_start_session()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_delivery_task_releases_its_message() {
    let target = TestTarget::start().await.expect("target");
    let cluster = FakeCluster::new();
    cluster.set_route("example.test", vec![target.target()], TlsPolicy::None);
    let id = cluster.enqueue(message("s@sender.test", &["a@example.test"], BODY));
    let proposer = Arc::new(PanicsOnce {
        cluster: cluster.clone(),
        panicked: AtomicBool::new(false),
    });

    let delivery = DeliveryLoop::new(config(), cluster.clone(), proposer.clone());
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let wake = cluster.subscribe();
        let stop = stop.clone();
        async move { delivery.run(wake, stop).await }
    });

    wait_until(WAIT, || cluster.record(&id).is_none())
        .await
        .expect("the message is delivered and reported after the panic");
    stop.cancel();
    tokio::time::timeout(WAIT, task)
        .await
        .expect("the loop stops")
        .expect("the loop itself did not panic");

    assert!(proposer.panicked.load(Ordering::SeqCst));
    // The first attempt reached the target before its task panicked; the
    // retry delivers again (at least once) and its report commits.
    assert_eq!(target.accepted_count(), 2);
    let reports = reports_for(&cluster, id);
    assert_eq!(reports.len(), 1);
    assert!(matches!(reports[0], Command::Delivered { .. }));
}
