//! Adapters from the library crates' traits to the cluster and store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::recent::RecentResults;
use bytes::Bytes;
use relay_cluster::{Cluster, ProposeError};
use relay_queue::body_checksum;
use relay_store::{StateMachine, StoreError};
use relay_types::{
    Command, CommandResult, Enqueue, MessageId, MessageRecord, NodeId, Rejection, Route, UnixMillis,
};

/// The SMTP side's view of the cluster: relay domains from the replicated
/// routes, and `submit` = commit an `Enqueue` through Raft.
#[derive(Debug, Clone)]
pub struct SmtpBackend {
    cluster: Arc<Cluster>,
    queue_lifetime: Duration,
    accept_as_learner: bool,
    verifier: Option<Arc<crate::verify::RecipientVerifier>>,
    /// `(queue_minfree, max_message_size)`; `None`: no free-space check.
    queue_minfree: Option<(u64, u64)>,
}

impl SmtpBackend {
    /// A backend proposing through `cluster`; `accept_as_learner = false`
    /// takes no mail while this node is not a voter (a recovery replica).
    pub fn new(cluster: Arc<Cluster>, queue_lifetime: Duration, accept_as_learner: bool) -> Self {
        SmtpBackend {
            cluster,
            queue_lifetime,
            accept_as_learner,
            verifier: None,
            queue_minfree: None,
        }
    }

    /// Refuses MAIL with `452 4.3.1` while the store's file system has
    /// less than `min_free` plus 1.5 × the message size free: the declared
    /// SIZE, or `max_message_size` when the client declared none (Postfix's
    /// `queue_minfree` rule), plus room for the next snapshot. Without it a
    /// full disk is found by the store's next write, which stops the node
    /// (a store that cannot write must not vote or acknowledge); with it
    /// the node refuses new mail in time and keeps serving reads,
    /// deliveries and the cluster.
    pub fn with_queue_minfree(mut self, min_free: u64, max_message_size: u64) -> Self {
        self.queue_minfree = Some((min_free, max_message_size));
        self
    }

    /// Verifies recipients of routed domains with `verifier` at RCPT.
    pub fn with_verifier(mut self, verifier: Arc<crate::verify::RecipientVerifier>) -> Self {
        self.verifier = Some(verifier);
        self
    }
}

/// Why this node takes no mail now, if it does not (drained for
/// maintenance, or a recovery replica that is not a voter): for SMTP and
/// for readiness.
pub fn not_accepting_reason(cluster: &Cluster, accept_as_learner: bool) -> Option<&'static str> {
    if cluster.is_drained() {
        return Some("drained for maintenance");
    }
    if !accept_as_learner && !cluster.is_voter(cluster.node_id()) {
        return Some("a learner with smtp.accept_as_learner = false (recovery replica)");
    }
    None
}

/// Free octets a `MAIL` of `size` octets needs on the store's file system:
/// `queue_minfree` plus 1.5 × the message, as Postfix's smtpd reckons, and
/// the current snapshot's size once more. The next snapshot is written
/// beside the current one: without its room, a disk that admission let
/// fill would stop snapshots (and with them log purges) before it stopped
/// mail.
fn free_bytes_needed(min_free: u64, size: u64, snapshot_bytes: u64) -> u64 {
    min_free
        .saturating_add(size.saturating_add(size / 2))
        .saturating_add(snapshot_bytes)
}

impl relay_smtp::SessionBackend for SmtpBackend {
    fn is_relay_domain(&self, domain: &str) -> bool {
        matches!(self.cluster.store().route(domain), Ok(Some(_)))
    }

    fn accepting(&self) -> bool {
        not_accepting_reason(&self.cluster, self.accept_as_learner).is_none()
    }

    fn has_room_for(&self, declared_size: Option<u64>) -> bool {
        let Some((min_free, max_message_size)) = self.queue_minfree else {
            return true;
        };
        let size = declared_size.unwrap_or(max_message_size);
        let store = self.cluster.store();
        let needed = free_bytes_needed(min_free, size, store.snapshot_file_bytes());
        match store.free_bytes() {
            Ok(free) => free >= needed,
            Err(e) => {
                // Unknown is not full: the store's own writes still fail
                // safely if it is.
                tracing::warn!(error = %e, "cannot read the free space; MAIL accepted");
                true
            }
        }
    }

    async fn verify_recipient(&self, domain: &str, address: &str) -> relay_smtp::RecipientVerdict {
        let Some(verifier) = &self.verifier else {
            return relay_smtp::RecipientVerdict::Exists;
        };
        match self.cluster.store().route(domain) {
            Ok(Some(route)) => verifier.verify(&route, address).await,
            // Not a routed domain: relay control decided it already.
            Ok(None) => relay_smtp::RecipientVerdict::Exists,
            Err(e) => {
                tracing::warn!(error = %e, "recipient verification: cannot read the route");
                relay_smtp::RecipientVerdict::TryLater
            }
        }
    }

    async fn submit(
        &self,
        submission: relay_smtp::Submission,
    ) -> Result<(), relay_smtp::SubmitError> {
        use relay_smtp::SubmitError;
        let node = self.cluster.node_id();
        let enqueue = Enqueue {
            id: submission.id,
            received_at: submission.received_at,
            accepted_by: node,
            owner: node,
            envelope: submission.envelope,
            info: submission.info,
            checksum: body_checksum(&submission.body),
            expires_at: submission
                .received_at
                .plus_millis(self.queue_lifetime.as_millis() as u64),
            body: submission.body,
        };
        let started = Instant::now();
        let result = match self
            .cluster
            .propose(Command::Enqueue(Box::new(enqueue)))
            .await
        {
            Ok(CommandResult::Enqueued(_)) => Ok(()),
            // An earlier, timed-out proposal of this very id committed.
            Ok(CommandResult::Rejected(Rejection::Duplicate(_))) => Ok(()),
            Ok(other) => Err(SubmitError::Internal(format!(
                "enqueue not applied: {other:?}"
            ))),
            Err(ProposeError::NoLeader) => Err(SubmitError::NoQuorum("no leader is known".into())),
            Err(ProposeError::Timeout(_)) => Err(SubmitError::Timeout),
            Err(ProposeError::ShuttingDown) => Err(SubmitError::ShuttingDown),
            Err(ProposeError::Fatal(e)) => Err(SubmitError::Internal(e)),
        };
        match &result {
            Ok(()) => crate::metrics::submit_committed(started.elapsed()),
            Err(SubmitError::NoQuorum(_)) => crate::metrics::submit_failed("no_quorum"),
            Err(SubmitError::Timeout) => crate::metrics::submit_failed("timeout"),
            Err(SubmitError::ShuttingDown) => crate::metrics::submit_failed("shutting_down"),
            Err(SubmitError::Internal(_)) => crate::metrics::submit_failed("internal"),
        }
        result
    }
}

/// The delivery loop's view of the replicated state.
#[derive(Debug, Clone)]
pub struct DeliveryStoreAdapter {
    store: StateMachine,
}

impl DeliveryStoreAdapter {
    /// Reads from `store`.
    pub fn new(store: StateMachine) -> Self {
        DeliveryStoreAdapter { store }
    }
}

impl relay_delivery::DeliveryStore for DeliveryStoreAdapter {
    type Error = StoreError;

    fn due(
        &self,
        owner: NodeId,
        now: UnixMillis,
        limit: usize,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        self.store.due(owner, now, limit)
    }

    fn body(&self, id: &MessageId) -> Result<Option<Bytes>, StoreError> {
        self.store.body(id)
    }

    fn route(&self, domain: &str) -> Result<Option<Route>, StoreError> {
        self.store.route(domain)
    }

    fn save_pending_report(&self, id: &MessageId, report: &Command) -> Result<(), StoreError> {
        self.store.save_pending_report(id, report)
    }

    fn clear_pending_report(&self, id: &MessageId) -> Result<(), StoreError> {
        self.store.clear_pending_report(id)
    }

    fn pending_reports(&self) -> Result<Vec<(MessageId, Command)>, StoreError> {
        self.store.pending_reports()
    }
}

/// The delivery loop proposes `Attempt`/`Delivered` through the cluster,
/// and what committed becomes the status page's last result per target.
#[derive(Debug, Clone)]
pub struct ClusterProposer {
    cluster: Arc<Cluster>,
    recent: Arc<RecentResults>,
}

impl ClusterProposer {
    /// Proposes through `cluster`, recording committed results in `recent`;
    /// the cluster's delivery lease fences deliveries.
    pub fn new(cluster: Arc<Cluster>, recent: Arc<RecentResults>) -> Self {
        ClusterProposer { cluster, recent }
    }
}

impl relay_delivery::Proposer for ClusterProposer {
    async fn propose(
        &self,
        command: Command,
    ) -> Result<CommandResult, relay_delivery::ProposeError> {
        use relay_delivery::ProposeError as D;
        let result = self.cluster.propose(command.clone()).await;
        if let Ok(CommandResult::Applied { .. }) = &result {
            self.recent.record(&command);
        }
        result.map_err(|e| match e {
            ProposeError::NoLeader => D::NoLeader,
            ProposeError::Timeout(_) => D::Timeout,
            other => D::Other(other.to_string()),
        })
    }

    fn may_start_session(&self) -> bool {
        self.cluster.may_start_delivery()
    }

    fn voter_count(&self) -> usize {
        self.cluster.members().voters.len().max(1)
    }

    async fn confirm_lease_since(&self, since: std::time::Instant) -> bool {
        self.cluster.confirm_lease_since(since).await
    }

    async fn fetch_intact_body(&self, id: MessageId, checksum: [u8; 32]) -> Result<Bytes, String> {
        let (_, body) = self.cluster.fetch_body_from_peers(id, checksum).await?;
        Ok(body)
    }
}

/// What a drain waits for on this node: open SMTP sessions (counted by the
/// SMTP server) and unsettled deliveries (counted by the delivery loop).
#[derive(Debug, Clone)]
pub struct Activity {
    /// `SmtpConfig::open_sessions`.
    pub sessions: Arc<std::sync::atomic::AtomicU64>,
    /// `DeliveryLoop::busy`.
    pub deliveries: relay_delivery::BusyDeliveries,
}

impl relay_cluster::NodeActivity for Activity {
    fn smtp_sessions(&self) -> u64 {
        self.sessions.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn busy_deliveries(&self) -> u64 {
        self.deliveries.count()
    }
}

/// Drill SMTP connect tests (`relay_delivery::probe`) for the cluster's
/// `ProbeTargets` RPC.
#[derive(Debug, Clone)]
pub struct SmtpProber {
    hostname: String,
}

impl SmtpProber {
    /// Probes saying `EHLO hostname`.
    pub fn new(hostname: String) -> Self {
        SmtpProber { hostname }
    }
}

impl relay_cluster::TargetProber for SmtpProber {
    fn probe(
        &self,
        targets: Vec<String>,
        timeout: Duration,
    ) -> futures::future::BoxFuture<'_, Vec<relay_cluster::ProbeResult>> {
        Box::pin(async move {
            futures::future::join_all(targets.iter().map(|t| async {
                let o = relay_delivery::probe::probe(t, &self.hostname, timeout).await;
                relay_cluster::ProbeResult {
                    target: o.target,
                    ok: o.ok,
                    detail: o.detail,
                    millis: o.took.as_millis() as u64,
                }
            }))
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::free_bytes_needed;

    const MIB: u64 = 1 << 20;

    #[test]
    fn mail_needs_room_for_the_message_and_the_next_snapshot() {
        assert_eq!(free_bytes_needed(128 * MIB, 10 * MIB, 0), 143 * MIB);
        // An 85 MiB snapshot: a disk with 200 MiB free takes no more mail,
        // one with 230 MiB does.
        let needed = free_bytes_needed(128 * MIB, 10 * MIB, 85 * MIB);
        assert_eq!(needed, 228 * MIB);
        assert!(200 * MIB < needed && 230 * MIB >= needed);
        assert_eq!(free_bytes_needed(u64::MAX, 1, 1), u64::MAX);
    }
}
