//! This node's copy of a body is damaged (it no longer matches the
//! checksum in its record) or unreadable: the loop delivers an intact copy
//! from another replica instead, and never sends or bounces the damaged
//! one. Without any intact copy, the attempt is deferred, not bounced.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use relay_delivery::DeliveryConfig;
use relay_delivery::{DeliveryStore, ProposeError, Proposer};
use relay_testkit::{TestTarget, wait_until};
use relay_types::{
    AttemptOutcome, Command, CommandResult, MessageId, MessageRecord, NodeId, Route, TlsPolicy,
    UnixMillis,
};
use support::{BODY, FakeCluster, WAIT, config, message, reports_for};

/// How this replica's copy went bad.
#[derive(Clone, Copy)]
enum Damage {
    /// One bit flipped: the bytes read do not match the checksum.
    Mismatch,
    /// The store cannot read it (RocksDB reports corruption).
    ReadError,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ReadFailed(String);

/// The one-node fake cluster, with this replica's body damaged and the
/// intact copy (the queue's own) on "peers" when `peers_have_it`.
struct DamagedReplica {
    cluster: Arc<FakeCluster>,
    damage: Damage,
    peers_have_it: AtomicBool,
    fetches: AtomicUsize,
}

impl DeliveryStore for DamagedReplica {
    type Error = ReadFailed;

    fn due(
        &self,
        owner: NodeId,
        now: UnixMillis,
        limit: usize,
    ) -> Result<Vec<MessageRecord>, ReadFailed> {
        Ok(self.cluster.due(owner, now, limit).unwrap())
    }

    fn body(&self, id: &MessageId) -> Result<Option<Bytes>, ReadFailed> {
        let Some(body) = self.cluster.body(id).unwrap() else {
            return Ok(None);
        };
        match self.damage {
            Damage::Mismatch => {
                let mut bad = body.to_vec();
                bad[10] ^= 0x01;
                Ok(Some(Bytes::from(bad)))
            }
            Damage::ReadError => Err(ReadFailed("Corruption: block checksum mismatch".into())),
        }
    }

    fn route(&self, domain: &str) -> Result<Option<Route>, ReadFailed> {
        Ok(self.cluster.route(domain).unwrap())
    }
}

impl Proposer for DamagedReplica {
    async fn propose(&self, command: Command) -> Result<CommandResult, ProposeError> {
        self.cluster.propose(command).await
    }

    async fn fetch_intact_body(&self, id: MessageId, _checksum: [u8; 32]) -> Result<Bytes, String> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        if !self.peers_have_it.load(Ordering::SeqCst) {
            return Err("no peer answered".into());
        }
        self.cluster
            .body(&id)
            .unwrap()
            .ok_or_else(|| "gone".to_string())
    }
}

async fn setup(
    damage: Damage,
    peers_have_it: bool,
) -> (TestTarget, Arc<FakeCluster>, Arc<DamagedReplica>, MessageId) {
    let target = TestTarget::start().await.expect("target");
    let cluster = FakeCluster::new();
    cluster.set_route("example.test", vec![target.target()], TlsPolicy::None);
    let id = cluster.enqueue(message("s@sender.test", &["a@example.test"], BODY));
    let replica = Arc::new(DamagedReplica {
        cluster: cluster.clone(),
        damage,
        peers_have_it: AtomicBool::new(peers_have_it),
        fetches: AtomicUsize::new(0),
    });
    (target, cluster, replica, id)
}

/// Runs the delivery loop over `replica`; its stop token and task.
fn start(
    replica: &Arc<DamagedReplica>,
    config: DeliveryConfig,
) -> (
    tokio_util::sync::CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let delivery = relay_delivery::DeliveryLoop::new(config, replica.clone(), replica.clone());
    let wake = replica.cluster.subscribe();
    let stop = tokio_util::sync::CancellationToken::new();
    let token = stop.clone();
    (
        stop,
        tokio::spawn(async move { delivery.run(wake, token).await }),
    )
}

async fn delivered_intact_from_a_peer(damage: Damage) {
    let (target, cluster, replica, id) = setup(damage, true).await;
    let (stop, task) = start(&replica, config());
    wait_until(WAIT, || cluster.record(&id).is_none())
        .await
        .expect("delivered and reported");
    stop.cancel();
    task.await.unwrap();

    let messages = target.messages();
    assert_eq!(messages.len(), 1, "exactly one copy");
    assert_eq!(&messages[0].data[..], BODY.as_bytes(), "the intact bytes");
    assert_eq!(replica.fetches.load(Ordering::SeqCst), 1);
    let reports = reports_for(&cluster, id);
    assert_eq!(reports.len(), 1);
    assert!(
        matches!(reports[0], Command::Delivered { .. }),
        "{reports:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_fails_its_checksum_is_delivered_from_a_peer_copy() {
    delivered_intact_from_a_peer(Damage::Mismatch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_body_is_delivered_from_a_peer_copy() {
    delivered_intact_from_a_peer(Damage::ReadError).await;
}

/// No replica can send an intact copy now: the attempt is deferred (a
/// temporary failure with the reason), nothing goes to the target and
/// nothing bounces; once a peer answers, the message is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_intact_copy_anywhere_the_message_is_deferred_not_bounced() {
    let (target, cluster, replica, id) = setup(Damage::Mismatch, false).await;
    let mut config = config();
    config.retry.min_backoff_ms = 200;
    config.retry.max_backoff_ms = 200;
    let (stop, task) = start(&replica, config);
    wait_until(WAIT, || !reports_for(&cluster, id).is_empty())
        .await
        .expect("an attempt is reported");
    let reports = reports_for(&cluster, id);
    match &reports[0] {
        Command::Attempt { outcomes, dsn, .. } => {
            assert!(dsn.is_none(), "no bounce");
            assert_eq!(outcomes.len(), 1);
            assert_eq!(outcomes[0].outcome, AttemptOutcome::Deferred);
            assert!(
                outcomes[0].reply.contains("damaged"),
                "{}",
                outcomes[0].reply
            );
        }
        other => panic!("expected a deferral, got {other:?}"),
    }
    assert_eq!(target.messages().len(), 0, "the damaged copy never left");
    assert!(cluster.record(&id).is_some(), "still queued");

    replica.peers_have_it.store(true, Ordering::SeqCst);
    wait_until(WAIT, || cluster.record(&id).is_none())
        .await
        .expect("delivered once a peer has the copy");
    stop.cancel();
    task.await.unwrap();
    let messages = target.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(&messages[0].data[..], BODY.as_bytes());
}
