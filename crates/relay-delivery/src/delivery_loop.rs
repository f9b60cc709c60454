//! The owner-side delivery loop: scheduling, limits, in-flight tracking and
//! reporting.
//!
//! A *round* runs whenever the applied index changes (`wake`), a delivery
//! finishes, or `poll_interval` passes:
//! 1. reports that did not commit earlier are proposed again;
//! 2. unless the last proposals found no leader (then nothing new starts:
//!    a node that cannot commit cannot prove it still owns its messages),
//!    due messages are read, each pending recipient's domain is routed, and
//!    every message that gets a global slot and a start at each of its
//!    routes' destinations (concurrency and rate, see [`crate::shaping`])
//!    starts delivering in its own task.
//!
//! A domain with neither a route nor a default route goes where DNS says
//! (with `config.dns`, see [`crate::mx`]). The store scan only marks such
//! groups; their answers come from the resolver's cache afterwards, on the
//! async side. A message with a domain not in the cache does not start:
//! the lookup runs in a task of its own and wakes the loop when the answer
//! is cached, so neither the scan nor the round ever waits on DNS.
//!
//! A message is never attempted twice at once: it is *in flight* from the
//! moment it is picked until its report commits (or is rejected). After a
//! report commits it is *settled*: this node's replica may apply the entry
//! a little after the leader did, so a due record older than the report
//! (fewer attempts) is skipped for up to `settle_timeout`.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use relay_queue::body_checksum;
use relay_types::{
    BodyType, Command, CommandResult, MessageId, MessageRecord, RecipientStatus, Rejection, Route,
    UnixMillis,
};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::claim_guard::ReleaseOnUnwind;
use crate::classify::Classified;
use crate::config::DeliveryConfig;
use crate::connection_cache::ConnectionCache;
use crate::error::ProposeError;
use crate::metrics as m;
use crate::mx::{MxResolver, Resolution};
use crate::shaping::{self, Shaper};

use crate::report::{self, Report, ReportContext};

/// A report still not committed after this long pauses new deliveries: a
/// commit normally takes milliseconds, so the node may be cut off from the
/// cluster, and anything it delivered now might not be reportable.
const REPORT_STALL: std::time::Duration = std::time::Duration::from_millis(500);
use crate::transport::{self, RecipientResult, Transaction, TransportSettings};
use crate::{DeliveryStore, Proposer};

/// Delivers the messages this node owns. Build it with
/// [`DeliveryLoop::new`], then drive it with [`DeliveryLoop::run`].
pub struct DeliveryLoop<S, P> {
    inner: Arc<Inner<S, P>>,
}

impl<S, P> fmt::Debug for DeliveryLoop<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeliveryLoop")
            .field("node_id", &self.inner.config.node_id)
            .field("hostname", &self.inner.config.hostname)
            .finish_non_exhaustive()
    }
}

struct Inner<S, P> {
    config: DeliveryConfig,
    transport: TransportSettings,
    store: Arc<S>,
    proposer: Arc<P>,
    /// One permit per message being delivered.
    slots: Arc<Semaphore>,
    /// Per destination (a route's target list): concurrency with slow
    /// start and back-off, and rate.
    shaper: Arc<Shaper>,
    tracking: Mutex<Tracking>,
    /// A delivery or report finished: run a round soon.
    progress: Notify,
    /// Idle SMTP sessions per target, for the next message.
    cache: Arc<ConnectionCache>,
    /// Routes from DNS for domains without one (`config.dns`).
    mx: Option<Arc<MxResolver>>,
}

#[derive(Default)]
struct Tracking {
    /// Being delivered or proposed right now.
    in_flight: HashSet<MessageId>,
    /// Attempted, but the report has not committed yet. Proposed again each
    /// round; the message is not delivered again meanwhile.
    unreported: HashMap<MessageId, Unreported>,
    /// Report committed; skip stale due records until the replica catches up.
    settled: HashMap<MessageId, Settled>,
    /// Reports being proposed right now, since when.
    proposing: HashMap<MessageId, Instant>,
}

#[derive(Clone)]
struct Unreported {
    report: Report,
    /// The record's `attempts` once the report is applied (`u32::MAX` when
    /// the report removes the message).
    attempts_after: u32,
    /// The last proposal found no leader or timed out.
    cluster_unavailable: bool,
    /// When the message was accepted (for the accept-to-delivered latency).
    received_at: UnixMillis,
    /// An earlier attempt lost the reply to its final dot (the target may
    /// hold a copy already): a delivery now is a possible duplicate.
    after_lost_reply: bool,
}

struct Settled {
    attempts_after: u32,
    since: Instant,
}

/// Pending recipients that share a route (`None`: no route).
struct Group {
    route: Option<Route>,
    /// The domain was resolved through DNS (no route, no default route).
    mx: Option<MxGroup>,
    recipients: Vec<u32>,
}

/// A group whose route comes from DNS.
struct MxGroup {
    /// The recipients' (normalised) domain.
    domain: String,
    /// What DNS said when it gave no route: deferred or bounced with this.
    failure: Option<Classified>,
}

/// A due message with its recipients grouped by route.
struct Planned {
    record: MessageRecord,
    groups: Vec<Group>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The protected maps stay consistent at every await-free step, so a
    // panic elsewhere does not make them unusable.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<S: DeliveryStore, P: Proposer> DeliveryLoop<S, P> {
    /// A loop for `config.node_id`, reading `store` and proposing through
    /// `proposer`.
    pub fn new(config: DeliveryConfig, store: Arc<S>, proposer: Arc<P>) -> Self {
        let slots = Arc::new(Semaphore::new(config.max_concurrent_deliveries.max(1)));
        DeliveryLoop {
            inner: Arc::new(Inner {
                transport: TransportSettings::from_config(&config),
                store,
                proposer,
                slots,
                shaper: Arc::new(Shaper::default()),
                tracking: Mutex::new(Tracking::default()),
                progress: Notify::new(),
                cache: Arc::new(ConnectionCache::new(config.connection_cache)),
                mx: config
                    .dns
                    .as_ref()
                    .map(|dns| Arc::new(MxResolver::new(dns))),
                config,
            }),
        }
    }

    /// A handle counting this loop's deliveries that have not settled:
    /// running, or attempted with the report not committed yet. A drained
    /// node's queue moves only once it is 0 (see `relay_cluster::maintenance`).
    pub fn busy(&self) -> BusyDeliveries {
        let inner = self.inner.clone();
        BusyDeliveries(Arc::new(move || {
            let t = lock(&inner.tracking);
            let waiting = t
                .unreported
                .keys()
                .filter(|id| !t.in_flight.contains(*id))
                .count();
            (t.in_flight.len() + waiting) as u64
        }))
    }

    /// Runs until `shutdown` is cancelled, then waits for the deliveries and
    /// proposals already started (each is bounded by its timeouts).
    pub async fn run(self, mut wake: watch::Receiver<u64>, shutdown: CancellationToken) {
        let inner = self.inner;
        inner.load_pending_reports().await;
        let tasks = TaskTracker::new();
        let mut wake_open = true;
        info!(
            node = inner.config.node_id,
            max_concurrent = inner.config.max_concurrent_deliveries,
            "delivery loop started"
        );
        while !shutdown.is_cancelled() {
            inner.close_expired_sessions(&tasks);
            inner.round(&tasks).await;
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                changed = wake.changed(), if wake_open => {
                    // The state machine is gone: keep polling on the timer.
                    wake_open = changed.is_ok();
                }
                _ = inner.progress.notified() => {}
                _ = tokio::time::sleep(inner.next_round_in()) => {}
            }
        }
        tasks.close();
        info!(running = tasks.len(), "delivery loop stopping");
        tasks.wait().await;
        inner.cache.close_all(inner.transport.command_timeout).await;
        info!("delivery loop stopped");
    }
}

impl<S: DeliveryStore, P: Proposer> Inner<S, P> {
    /// Reports an earlier run saved but could not commit: they are proposed
    /// first, and their messages are not delivered again meanwhile.
    async fn load_pending_reports(self: &Arc<Self>) {
        let store = self.store.clone();
        let pending = match tokio::task::spawn_blocking(move || store.pending_reports()).await {
            Ok(Ok(pending)) => pending,
            Ok(Err(e)) => {
                error!(error = %e, "cannot read pending reports; their messages may be delivered again");
                return;
            }
            Err(e) => {
                error!(error = %e, "pending report task failed");
                return;
            }
        };
        if pending.is_empty() {
            return;
        }
        info!(
            count = pending.len(),
            "proposing the reports of deliveries finished before the restart"
        );
        // "Text sent" marks without a report: the last run died between
        // the message text and recording the reply. The target may hold a
        // copy and the message is delivered again: count it now and trace
        // it. The mark is cleared here, before the loop can start that
        // delivery: the next attempt writes its own mark (or its report)
        // under the same key, and clearing later could remove that one, so
        // a crash in the next attempt would go uncounted.
        let mut marks = Vec::new();
        for (id, command) in &pending {
            if let Command::DuplicateDelivered { .. } = command {
                let span = info_span!("report", id = %id);
                let _entered = span.enter();
                metrics::counter!(m::DUPLICATE_DELIVERIES_TOTAL, "reason" => "outcome_unknown")
                    .increment(1);
                warn!(
                    duplicate = true,
                    "this node stopped after sending the message text and before recording \
                     the reply: its next delivery is counted as a possible duplicate"
                );
                if let Err(e) = self.store.clear_pending_report(id) {
                    warn!(error = %e, "cannot clear a text-sent mark (counted again after a restart)");
                }
                marks.push(command.clone());
            }
        }
        if !marks.is_empty() {
            let this = self.clone();
            tokio::spawn(async move {
                for note in marks {
                    if let Err(e) = this.proposer.propose(note).await {
                        debug!(error = %e, "could not trace a possible duplicate");
                    }
                }
            });
        }
        let mut t = lock(&self.tracking);
        for (id, command) in pending {
            if let Command::DuplicateDelivered { .. } = &command {
                continue;
            }
            t.unreported.insert(
                id,
                Unreported {
                    report: Report {
                        command,
                        counts: crate::report::Counts {
                            delivered: 1,
                            ..Default::default()
                        },
                        bounced: false,
                        maillog: Vec::new(),
                    },
                    // The record's attempt count is unknown here: skip the
                    // message until it is gone or the settle timeout passes.
                    attempts_after: u32::MAX,
                    cluster_unavailable: false,
                    received_at: UnixMillis::now(),
                    after_lost_reply: false,
                },
            );
        }
    }

    /// Closes cached sessions past their idle or age limit, in a task so
    /// a slow target's QUIT does not hold up the round.
    fn close_expired_sessions(&self, tasks: &TaskTracker) {
        if self.cache.has_expired() {
            let cache = self.cache.clone();
            let timeout = self.transport.command_timeout;
            tasks.spawn(async move { cache.close_expired(timeout).await });
        }
    }

    async fn round(self: &Arc<Self>, tasks: &TaskTracker) {
        let (retries, paused) = {
            let mut guard = lock(&self.tracking);
            let t = &mut *guard;
            let now = Instant::now();
            let ttl = self.config.settle_timeout;
            t.settled
                .retain(|_, s| now.saturating_duration_since(s.since) < ttl);
            let retries: Vec<(MessageId, Unreported)> = t
                .unreported
                .iter()
                .filter(|(id, _)| !t.in_flight.contains(*id))
                .map(|(id, u)| (*id, u.clone()))
                .collect();
            for (id, _) in &retries {
                t.in_flight.insert(*id);
            }
            // A report that takes far longer than a commit normally does
            // means this node may be cut off: start nothing new until it
            // settles (a session started now might not be reportable).
            let paused = t.unreported.values().any(|u| u.cluster_unavailable)
                || t.proposing
                    .values()
                    .any(|since| since.elapsed() > REPORT_STALL);
            (retries, paused)
        };
        for (id, unreported) in retries {
            let this = self.clone();
            let span = info_span!("report", id = %id);
            let guard = self.release_on_unwind(id);
            tasks.spawn(
                async move {
                    this.propose_report(id, unreported).await;
                    guard.disarm();
                    this.progress.notify_one();
                }
                .instrument(span),
            );
        }
        if paused {
            debug!("reports are not committing: not starting deliveries");
            return;
        }
        if !self.proposer.may_start_session() {
            debug!("no fresh contact with a working cluster: not starting deliveries");
            return;
        }
        if self.slots.available_permits() == 0 {
            return;
        }
        let planned = match self.scan().await {
            Ok(planned) => self.resolve_mx(planned, tasks),
            Err(e) => {
                warn!(error = %e, "cannot read due messages");
                return;
            }
        };
        // Read once per round: the membership the routes' shares divide by.
        let voters = u32::try_from(self.proposer.voter_count()).unwrap_or(u32::MAX);
        for plan in planned {
            let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                break;
            };
            if !self.may_start(&plan.record) {
                continue;
            }
            let Some(destinations) = self.destination_permits(&plan, voters) else {
                continue;
            };
            if !self.claim(plan.record.id) {
                continue;
            }
            let this = self.clone();
            let span = info_span!(
                "delivery",
                id = %plan.record.id,
                attempt = plan.record.attempts.saturating_add(1)
            );
            let guard = self.release_on_unwind(plan.record.id);
            tasks.spawn(
                async move {
                    this.deliver(plan, slot, destinations).await;
                    guard.disarm();
                    this.progress.notify_one();
                }
                .instrument(span),
            );
        }
    }

    /// Reads due messages and routes their pending recipients, on the
    /// blocking pool.
    async fn scan(self: &Arc<Self>) -> Result<Vec<Planned>, String> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.plan_due().map_err(|e| e.to_string()))
            .await
            .map_err(|e| format!("scan task failed: {e}"))?
    }

    /// Fills in the destinations of DNS-routed groups from the resolver's
    /// cache. Messages with a domain not cached yet are left out of this
    /// round; their lookups start in the background (at most one per
    /// domain) and wake the loop when the answer is in.
    fn resolve_mx(self: &Arc<Self>, planned: Vec<Planned>, tasks: &TaskTracker) -> Vec<Planned> {
        let Some(mx) = &self.mx else {
            return planned;
        };
        planned
            .into_iter()
            .filter_map(|mut plan| {
                let mut ready = true;
                for group in &mut plan.groups {
                    let Some(dest) = &mut group.mx else {
                        continue;
                    };
                    match mx.cached(&dest.domain) {
                        Some(Resolution::Route(route)) => group.route = Some(route),
                        Some(Resolution::Failed(failure)) => dest.failure = Some(failure),
                        None => {
                            ready = false;
                            if mx.try_begin(&dest.domain) {
                                let this = self.clone();
                                let mx = mx.clone();
                                let domain = dest.domain.clone();
                                tasks.spawn(
                                    async move {
                                        mx.resolve(&domain).await;
                                        this.progress.notify_one();
                                    }
                                    .instrument(info_span!("mx", domain = %dest.domain)),
                                );
                            }
                        }
                    }
                }
                ready.then_some(plan)
            })
            .collect()
    }

    fn plan_due(&self) -> Result<Vec<Planned>, S::Error> {
        let node = self.config.node_id;
        let due = self
            .store
            .due(node, UnixMillis::now(), self.config.scan_limit.max(1))?;
        let mut routes: HashMap<String, Option<Route>> = HashMap::new();
        let mut planned = Vec::with_capacity(due.len());
        for record in due {
            if record.owner != node {
                continue;
            }
            let mut groups: Vec<Group> = Vec::new();
            for index in record.pending_indexes() {
                let Some(recipient) = record.envelope.recipients.get(index as usize) else {
                    continue;
                };
                let domain = recipient.domain();
                let route = match routes.get(&domain) {
                    Some(route) => route.clone(),
                    None => {
                        let route = self
                            .store
                            .route(&domain)?
                            .or_else(|| self.config.default_route.clone());
                        routes.insert(domain.clone(), route.clone());
                        route
                    }
                };
                // Without a route, DNS decides, per domain (the lookup
                // itself happens after the scan, see `resolve_mx`).
                let mx_domain = (route.is_none() && self.mx.is_some()).then_some(domain);
                match groups.iter_mut().find(|g| {
                    g.route == route && g.mx.as_ref().map(|m| &m.domain) == mx_domain.as_ref()
                }) {
                    Some(group) => group.recipients.push(index),
                    None => groups.push(Group {
                        route,
                        mx: mx_domain.map(|domain| MxGroup {
                            domain,
                            failure: None,
                        }),
                        recipients: vec![index],
                    }),
                }
            }
            if !groups.is_empty() {
                planned.push(Planned { record, groups });
            }
        }
        Ok(planned)
    }

    /// False while the message is in flight, waiting for its report, or
    /// settled and the record is older than the committed report.
    fn may_start(&self, record: &MessageRecord) -> bool {
        let mut guard = lock(&self.tracking);
        let t = &mut *guard;
        if t.in_flight.contains(&record.id) || t.unreported.contains_key(&record.id) {
            return false;
        }
        if let Some(settled) = t.settled.get(&record.id) {
            if record.attempts < settled.attempts_after {
                return false;
            }
            t.settled.remove(&record.id);
        }
        true
    }

    /// Marks the message in flight; false if it already was.
    fn claim(&self, id: MessageId) -> bool {
        let mut t = lock(&self.tracking);
        let claimed = t.in_flight.insert(id);
        set_in_flight_gauge(&t);
        claimed
    }

    fn release(&self, id: MessageId) {
        let mut t = lock(&self.tracking);
        t.in_flight.remove(&id);
        set_in_flight_gauge(&t);
    }

    /// Releases `id`'s claim if the task holding it unwinds (see
    /// `claim_guard`).
    fn release_on_unwind(
        self: &Arc<Self>,
        id: MessageId,
    ) -> ReleaseOnUnwind<impl FnOnce() + Send + use<S, P>> {
        let this = self.clone();
        ReleaseOnUnwind::new(move || this.release(id))
    }

    /// One start per distinct destination of the message's routes, or
    /// `None` if one is at its concurrency or rate limit (the message waits
    /// for a later round).
    fn destination_permits(&self, plan: &Planned, voters: u32) -> Option<Vec<shaping::Permit>> {
        let mut wanted: Vec<(String, shaping::Limits)> = Vec::new();
        for group in &plan.groups {
            let Some(route) = &group.route else {
                continue;
            };
            let key = route.targets.join(",");
            if wanted.iter().any(|(k, _)| *k == key) {
                continue;
            }
            let limits = shaping::Limits::of(route, self.config.per_target_concurrency, voters);
            wanted.push((key, limits));
        }
        self.shaper
            .try_start(&wanted, std::time::Instant::now())
            .ok()
    }

    /// How long the loop may sleep before the next round: the poll
    /// interval, or less when a rate-limited destination opens sooner.
    fn next_round_in(&self) -> std::time::Duration {
        let poll = self.config.poll_interval;
        match self.shaper.take_wake() {
            Some(at) => at
                .saturating_duration_since(std::time::Instant::now())
                .min(poll),
            None => poll,
        }
    }

    /// Delivers one message and proposes its report.
    async fn deliver(
        self: &Arc<Self>,
        plan: Planned,
        slot: OwnedSemaphorePermit,
        mut destinations: Vec<shaping::Permit>,
    ) {
        let id = plan.record.id;
        let started = Instant::now();
        let report = self.attempt(&plan, &mut destinations).await;
        // The SMTP work is done: free the slots before the proposal.
        drop(destinations);
        drop(slot);
        metrics::histogram!(m::ATTEMPT_SECONDS).record(started.elapsed().as_secs_f64());
        let Some(report) = report else {
            self.release(id);
            return;
        };
        info!(
            result = report.result_label(),
            delivered = report.counts.delivered,
            deferred = report.counts.deferred,
            failed = report.counts.failed,
            bounce = report.bounced,
            "attempt finished"
        );
        if report.counts.delivered > 0 {
            // The target has accepted: remember it durably before anything
            // else, so a crash before the commit does not deliver it twice.
            let store = self.store.clone();
            let command = report.command.clone();
            let saved =
                tokio::task::spawn_blocking(move || store.save_pending_report(&id, &command)).await;
            if !matches!(saved, Ok(Ok(()))) {
                warn!("cannot save the pending report; a crash now may deliver this message again");
            }
        }
        let attempts_after = match report.command {
            Command::Delivered { .. } => u32::MAX,
            _ => plan.record.attempts.saturating_add(1),
        };
        let unreported = Unreported {
            report,
            attempts_after,
            cluster_unavailable: false,
            received_at: plan.record.received_at,
            after_lost_reply: plan.record.recipients.iter().any(|r| {
                matches!(r, RecipientStatus::Pending { last_reply: Some(reply) }
                    if transport::is_lost_final_reply(reply))
            }),
        };
        self.propose_report(id, unreported).await;
    }

    /// Runs the SMTP transactions of one attempt, finishing each
    /// destination's permit with how its transaction went. `None`: nothing
    /// to report (the message is gone, or the store failed).
    async fn attempt(
        self: &Arc<Self>,
        plan: &Planned,
        destinations: &mut Vec<shaping::Permit>,
    ) -> Option<Report> {
        let record = &plan.record;
        let body = match self.read_body(record.id).await {
            Ok(None) => {
                debug!("message is no longer queued");
                return None;
            }
            Ok(Some(body)) if body_checksum(&body) == record.checksum => Some(body),
            Ok(Some(_)) => {
                error!("stored body does not match its checksum; fetching a copy from a peer");
                self.intact_copy(record, "checksum_mismatch").await
            }
            Err(e) => {
                error!(error = %e, "cannot read the stored body; fetching a copy from a peer");
                self.intact_copy(record, "read_error").await
            }
        };
        let mut results: Vec<RecipientResult> = Vec::new();
        let mut withheld = false;
        let local_failure = |index: u32, reply: String| RecipientResult {
            index,
            target: "-".into(),
            result: Classified::temporary(reply),
            session: None,
        };
        let Some(body) = body else {
            // No intact copy anywhere reachable now: a temporary failure,
            // tried again after the backoff (never bounced for it).
            for group in &plan.groups {
                results.extend(group.recipients.iter().map(|&i| {
                    local_failure(
                        i,
                        "local copy of the message is damaged and no peer sent an intact one"
                            .into(),
                    )
                }));
            }
            let ctx = ReportContext {
                node_id: self.config.node_id,
                hostname: &self.config.hostname,
                retry: &self.config.retry,
                now: UnixMillis::now(),
            };
            return Some(report::build(record, &Bytes::new(), &results, &ctx));
        };
        let envelope = &record.envelope;
        let eight_bit = envelope.body_type != BodyType::SevenBit || !body.is_ascii();
        for group in &plan.groups {
            let recipients: Vec<(u32, &str)> = group
                .recipients
                .iter()
                .filter_map(|&i| {
                    envelope
                        .recipients
                        .get(i as usize)
                        .map(|r| (i, r.address.as_str()))
                })
                .collect();
            match &group.route {
                None => results.extend(recipients.iter().map(|&(i, address)| {
                    match group.mx.as_ref().and_then(|m| m.failure.as_ref()) {
                        // DNS said where not to deliver: deferred (4.4.3)
                        // or bounced (null MX, no such domain, no address).
                        Some(failure) => RecipientResult {
                            index: i,
                            target: "-".into(),
                            result: failure.clone(),
                            session: None,
                        },
                        None => {
                            let domain = address.rsplit_once('@').map_or("", |(_, d)| d);
                            local_failure(i, format!("no route for domain {domain:?}"))
                        }
                    }
                })),
                Some(route) => {
                    let tx = Transaction {
                        reverse_path: &envelope.reverse_path,
                        recipients,
                        body: &body,
                        smtputf8: envelope.smtputf8,
                        eight_bit,
                    };
                    let gate = LeaseGate {
                        proposer: &*self.proposer,
                        store: &self.store,
                        id: record.id,
                        node: self.config.node_id,
                        targets: route.targets.join(","),
                    };
                    match transport::send_cached(route, &tx, &self.transport, &gate, &self.cache)
                        .await
                    {
                        Some(sent) => {
                            let key = route.targets.join(",");
                            if let Some(at) =
                                destinations.iter().position(|p| p.destination() == key)
                            {
                                let outcome =
                                    shaping::Outcome::of(sent.iter().map(|r| r.result.class));
                                destinations.swap_remove(at).finish(outcome);
                            }
                            results.extend(sent);
                        }
                        None => {
                            // Nothing reached this route's target. Earlier
                            // groups did: report them; these recipients
                            // stay pending.
                            info!("start lease ran out before the session: not sending");
                            withheld = true;
                            break;
                        }
                    }
                }
            }
        }
        if withheld && results.is_empty() {
            return None;
        }
        let ctx = ReportContext {
            node_id: self.config.node_id,
            hostname: &self.config.hostname,
            retry: &self.config.retry,
            now: UnixMillis::now(),
        };
        Some(report::build(record, &body, &results, &ctx))
    }

    /// This node's copy of `record`'s body is damaged (`kind`): an intact
    /// one from another replica, checked against the record's checksum, or
    /// `None` if none could be had now. Counted either way.
    async fn intact_copy(&self, record: &MessageRecord, kind: &'static str) -> Option<Bytes> {
        let fetched = self
            .proposer
            .fetch_intact_body(record.id, record.checksum)
            .await
            .and_then(|body| {
                if body_checksum(&body) == record.checksum {
                    Ok(body)
                } else {
                    Err("the copy received does not match the checksum".into())
                }
            });
        let result = if fetched.is_ok() {
            "fetched"
        } else {
            "unavailable"
        };
        metrics::counter!(m::DAMAGED_BODIES_TOTAL, "kind" => kind, "result" => result).increment(1);
        match fetched {
            Ok(body) => {
                warn!(kind, "delivering an intact copy of the body from a peer");
                Some(body)
            }
            Err(why) => {
                error!(kind, %why, "no intact copy of the body: deferring the message");
                None
            }
        }
    }

    async fn read_body(self: &Arc<Self>, id: MessageId) -> Result<Option<Bytes>, String> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.body(&id).map_err(|e| e.to_string()))
            .await
            .map_err(|e| format!("body read task failed: {e}"))?
    }

    /// Proposes a report and records what became of it. The message stays
    /// in flight until this returns.
    async fn propose_report(&self, id: MessageId, unreported: Unreported) {
        lock(&self.tracking).proposing.insert(id, Instant::now());
        let result = self
            .proposer
            .propose(unreported.report.command.clone())
            .await;
        if result.is_ok() {
            // Committed or refused: either way nothing is left to report,
            // and the attempt's "text sent" mark has done its work.
            if let Err(e) = self.store.clear_pending_report(&id) {
                warn!(error = %e, "cannot clear a pending report (it is refused if proposed again)");
            }
        }
        if let Some((report, why)) = self.settle(id, unreported, result) {
            self.record_duplicate(id, &report, why).await;
        }
    }

    /// Records what became of a proposed report; returns the report and why
    /// if that delivery is, or may be, a second copy at the target.
    fn settle(
        &self,
        id: MessageId,
        mut unreported: Unreported,
        result: Result<CommandResult, ProposeError>,
    ) -> Option<(Command, &'static str)> {
        let mut known_duplicate = None;
        let mut guard = lock(&self.tracking);
        let t = &mut *guard;
        t.in_flight.remove(&id);
        t.proposing.remove(&id);
        match result {
            Ok(CommandResult::Rejected(rejection)) => {
                t.unreported.remove(&id);
                // Our view is stale (taken over, finished, deleted): skip the
                // message until the replica catches up.
                t.settled.insert(
                    id,
                    Settled {
                        attempts_after: u32::MAX,
                        since: Instant::now(),
                    },
                );
                let reason = match &rejection {
                    Rejection::NotOwner { .. } => "not_owner",
                    Rejection::UnknownMessage(_) => "unknown_message",
                    _ => "other",
                };
                metrics::counter!(m::REPORTS_REJECTED_TOTAL, "reason" => reason).increment(1);
                if unreported.report.counts.delivered > 0 {
                    let (label, why) = match &rejection {
                        Rejection::NotOwner { .. } => (
                            "not_owner",
                            "ownership had moved; the new owner delivers it too",
                        ),
                        _ => ("already_finished", "another owner had already finished it"),
                    };
                    metrics::counter!(m::DUPLICATE_DELIVERIES_TOTAL, "reason" => label)
                        .increment(1);
                    warn!(
                        reason = label,
                        duplicate = true,
                        "the target accepted this message but its report was refused: \
                         counted as a duplicate delivery"
                    );
                    known_duplicate = Some((unreported.report.command.clone(), why));
                }
                match rejection {
                    Rejection::NotOwner { owner, .. } => warn!(
                        %owner,
                        result = unreported.report.result_label(),
                        "report rejected: another node owns the message now; \
                         if the target accepted it, the new owner may deliver it again"
                    ),
                    Rejection::UnknownMessage(_) => {
                        info!("report rejected: the message was already finished or deleted")
                    }
                    other => error!(rejection = %other, "report rejected"),
                }
            }
            Ok(_) => {
                t.unreported.remove(&id);
                t.settled.insert(
                    id,
                    Settled {
                        attempts_after: unreported.attempts_after,
                        since: Instant::now(),
                    },
                );
                record_committed(&unreported.report, unreported.received_at);
                if unreported.after_lost_reply && unreported.report.counts.delivered > 0 {
                    metrics::counter!(m::DUPLICATE_DELIVERIES_TOTAL, "reason" => "outcome_unknown")
                        .increment(1);
                    warn!(
                        duplicate = true,
                        "delivered after an attempt whose reply to the final dot was lost: \
                         counted as a possible duplicate"
                    );
                    known_duplicate = Some((
                        unreported.report.command.clone(),
                        "possible: an earlier attempt's reply to the final dot was lost",
                    ));
                }
                debug!(
                    result = unreported.report.result_label(),
                    "report committed"
                );
            }
            Err(e) => {
                let reason = match e {
                    ProposeError::NoLeader => "no_leader",
                    ProposeError::Timeout => "timeout",
                    ProposeError::Other(_) => "other",
                };
                metrics::counter!(m::REPORT_FAILURES_TOTAL, "reason" => reason).increment(1);
                warn!(error = %e, "report did not commit; it will be proposed again");
                unreported.cluster_unavailable =
                    matches!(e, ProposeError::NoLeader | ProposeError::Timeout);
                t.unreported.insert(id, unreported);
            }
        }
        set_in_flight_gauge(t);
        known_duplicate
    }

    /// Puts a (possible) duplicate into the message's replicated trace
    /// (`relayctl trace ID`), best effort: the metric already counted it.
    async fn record_duplicate(&self, id: MessageId, report: &Command, why: &str) {
        let (target, reply) = match report {
            Command::Delivered { target, reply, .. } => (target.clone(), reply.clone()),
            Command::Attempt { target, .. } => (target.clone(), String::new()),
            _ => return,
        };
        let note = Command::DuplicateDelivered {
            id,
            by: self.config.node_id,
            at: UnixMillis::now(),
            target,
            reply,
            why: why.to_string(),
        };
        if let Err(e) = self.proposer.propose(note).await {
            debug!(error = %e, "could not trace a known duplicate");
        }
    }
}

/// Counts a [`DeliveryLoop`]'s unsettled deliveries (see
/// [`DeliveryLoop::busy`]); cheap to clone, usable after the loop started.
#[derive(Clone)]
pub struct BusyDeliveries(Arc<dyn Fn() -> u64 + Send + Sync>);

impl BusyDeliveries {
    /// Deliveries running or with an uncommitted report, now.
    pub fn count(&self) -> u64 {
        (self.0)()
    }
}

impl std::fmt::Debug for BusyDeliveries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BusyDeliveries({})", self.count())
    }
}

/// Why a "text sent" mark found after a restart counts as a possible
/// duplicate.
const TEXT_SENT_WHY: &str =
    "possible: this node stopped after sending the message text, before it recorded the reply";

/// The proposer's lease as a transaction's [`transport::SessionGate`].
///
/// Once the lease is confirmed right before the message text, the gate
/// marks the message "text sent", durably, in this node's pending reports
/// (a `DuplicateDelivered` note that the real report replaces): a process
/// that dies after the target stored the message and before its reply was
/// recorded finds the mark when it starts again and counts the next copy
/// as a possible duplicate. If the mark cannot be written, the text is not
/// sent.
struct LeaseGate<'a, S, P> {
    proposer: &'a P,
    store: &'a Arc<S>,
    id: MessageId,
    node: u64,
    targets: String,
}

impl<S: DeliveryStore, P: Proposer> transport::SessionGate for LeaseGate<'_, S, P> {
    fn may_start(&self) -> bool {
        self.proposer.may_start_session()
    }

    fn confirm_since(&self, since: std::time::Instant) -> transport::BoxFuture<'_, bool> {
        Box::pin(async move {
            if !self.proposer.confirm_lease_since(since).await {
                return false;
            }
            let id = self.id;
            let note = Command::DuplicateDelivered {
                id,
                by: self.node,
                at: UnixMillis::now(),
                target: self.targets.clone(),
                reply: String::new(),
                why: TEXT_SENT_WHY.to_string(),
            };
            let store = self.store.clone();
            match tokio::task::spawn_blocking(move || store.save_pending_report(&id, &note)).await {
                Ok(Ok(())) => true,
                _ => {
                    warn!("cannot mark the message text as sent; not sending it now");
                    false
                }
            }
        })
    }
}

fn record_committed(report: &Report, received_at: UnixMillis) {
    crate::maillog::committed(report, received_at);
    metrics::counter!(m::DELIVERY_ATTEMPTS_TOTAL, "result" => report.result_label()).increment(1);
    if let Command::Attempt { target, .. } | Command::Delivered { target, .. } = &report.command {
        metrics::counter!(
            m::TARGET_ATTEMPTS_TOTAL,
            "target" => target.clone(),
            "result" => report.result_label()
        )
        .increment(1);
    }
    if let Command::Delivered { at, .. } = &report.command {
        // Both times travel in entries (accepting node's and owner's
        // clocks), so a skewed clock can make this negative: clamp to 0.
        let ms = at.0.saturating_sub(received_at.0);
        metrics::histogram!(m::MESSAGE_DELIVERY_SECONDS).record(ms as f64 / 1000.0);
    }
    let c = report.counts;
    for (outcome, n) in [
        ("delivered", c.delivered),
        ("deferred", c.deferred),
        ("failed", c.failed),
    ] {
        if n > 0 {
            metrics::counter!(m::RECIPIENTS_TOTAL, "outcome" => outcome).increment(n as u64);
        }
    }
    if matches!(report.command, Command::Delivered { .. }) {
        metrics::counter!(m::MESSAGES_DELIVERED_TOTAL).increment(1);
    }
    if report.bounced {
        metrics::counter!(m::BOUNCES_TOTAL).increment(1);
    }
}

fn set_in_flight_gauge(t: &Tracking) {
    let waiting = t
        .unreported
        .keys()
        .filter(|id| !t.in_flight.contains(*id))
        .count();
    metrics::gauge!(m::IN_FLIGHT).set((t.in_flight.len() + waiting) as f64);
}
