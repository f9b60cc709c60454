//! The admin gRPC service (`relayctl`), behind a bearer-token check.
//!
//! Reads (queue list/show, routes, trace) answer from this node's replica:
//! a follower may be a few entries behind the leader. Writes go through
//! `Cluster::propose` (forwarded to the leader) as audited log entries, so
//! every replica applies them identically.
//!
//! # Layout
//! - this file: the token check and the service methods.
//! - `convert`: records ↔ API messages, filters, trace kinds.
//! - `drill`: the `Drill` checks.
//! - `summary`: `QueueSummary` (counts by domain and age, like qshape).

pub mod convert;
mod drill;
mod summary;

use std::sync::Arc;
use std::time::Duration;

use relay_cluster::{AdminError, Cluster, MemberChange, ProposeError};
use relay_proto::admin as pb;
use relay_proto::admin::admin_server::Admin;
use relay_proto::admin::{NodeInfo, QueueCounts, StatusReply, StatusRequest};
use relay_store::StoreError;
use relay_types::codec::SHAPING_FORMAT;
use relay_types::{
    AdminAction, Command, CommandResult, MessageFilter, MessageState, Rate, Route, Selector,
    Shaping, TlsPolicy, UnixMillis, normalize_domain,
};
use subtle::ConstantTimeEq;
use tonic::{Request, Response, Status};

/// Default and largest `queue list` page.
const DEFAULT_LIST_LIMIT: usize = 1_000;
const MAX_LIST_LIMIT: usize = 100_000;
/// How long a snapshot may take before the request says it is still running.
const SNAPSHOT_WITHIN: Duration = Duration::from_secs(10);
/// How long a failover may take before it is reported failed.
const FAILOVER_WITHIN: Duration = Duration::from_secs(15);

/// Checks `authorization: Bearer <token>` in constant time.
#[derive(Clone)]
pub struct TokenCheck {
    token: Arc<[u8]>,
}

impl std::fmt::Debug for TokenCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenCheck(<redacted>)")
    }
}

impl TokenCheck {
    /// A check for `token`.
    pub fn new(token: &str) -> Self {
        TokenCheck {
            token: token.as_bytes().into(),
        }
    }
}

impl tonic::service::Interceptor for TokenCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let given = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if bool::from(given.as_bytes().ct_eq(&self.token)) {
            Ok(request)
        } else {
            Err(Status::unauthenticated("missing or wrong admin token"))
        }
    }
}

/// The admin service of one node.
#[derive(Debug, Clone)]
pub struct AdminService {
    cluster: Arc<Cluster>,
}

impl AdminService {
    /// Serves admin requests from `cluster`.
    pub fn new(cluster: Arc<Cluster>) -> Self {
        AdminService { cluster }
    }

    /// Runs a store read on the blocking pool (queue scans can be long).
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&relay_store::StateMachine) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, Status> {
        let cluster = self.cluster.clone();
        tokio::task::spawn_blocking(move || f(cluster.store()))
            .await
            .map_err(|e| Status::internal(format!("read task failed: {e}")))?
            .map_err(|e| Status::internal(format!("cannot read the state: {e}")))
    }

    /// Commits `command`; its result or UNAVAILABLE.
    async fn propose(&self, command: Command) -> Result<CommandResult, Status> {
        self.cluster.propose(command).await.map_err(propose_status)
    }

    /// The rolling-upgrade rule (docs/design.md, "Formats and upgrades"):
    /// an entry in format `version` is proposed only once every voter
    /// reports (in its status) that it reads that format; otherwise
    /// FAILED_PRECONDITION naming the nodes that do not, or did not answer.
    async fn require_format_everywhere(&self, version: u8, what: &str) -> Result<(), Status> {
        let status = self.cluster.status(false).await;
        let behind: Vec<String> = status
            .members
            .iter()
            .filter(|m| m.voter)
            .filter_map(|m| match &m.reply {
                Some(r) if r.format_version >= u32::from(version) => None,
                Some(r) => Some(format!(
                    "node {} reads up to format {}",
                    m.id, r.format_version
                )),
                None => Some(format!("node {} did not answer", m.id)),
            })
            .collect();
        if behind.is_empty() {
            return Ok(());
        }
        Err(Status::failed_precondition(format!(
            "{what} is written in format version {version}, which every voter must read \
             first: {}; upgrade (or start) those nodes and try again",
            behind.join("; ")
        )))
    }
}

/// One mapping from proposal failures to gRPC codes.
fn propose_status(e: ProposeError) -> Status {
    match e {
        ProposeError::NoLeader | ProposeError::Timeout(_) | ProposeError::ShuttingDown => {
            Status::unavailable(format!("not committed: {e}"))
        }
        ProposeError::Fatal(_) => Status::internal(e.to_string()),
    }
}

fn admin_status(e: AdminError) -> Status {
    relay_cluster::service::admin_status(e)
}

fn affected(result: CommandResult) -> Result<u32, Status> {
    match result {
        CommandResult::Applied { affected } => Ok(affected),
        CommandResult::Rejected(r) => Err(Status::failed_precondition(r.to_string())),
        CommandResult::Enqueued(_) | CommandResult::Batch(_) => {
            Err(Status::internal("unexpected result for an admin command"))
        }
    }
}

/// Keeps records of `state` (the part of a state filter `MessageFilter`
/// cannot express: queued vs deferred).
fn state_matches(state: Option<MessageState>, record: &relay_types::MessageRecord) -> bool {
    state.is_none_or(|s| record.state() == s)
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusReply>, Status> {
        let status = self.cluster.status(false).await;
        Ok(Response::new(StatusReply {
            leader: status.leader,
            term: status.term,
            nodes: status
                .members
                .into_iter()
                .map(|m| NodeInfo {
                    id: m.id,
                    role: m.role,
                    addr: m.addr,
                    reachable: m.reachable,
                    applied: m.applied,
                    lag: m.lag,
                    voter: m.voter,
                    drained: self.cluster.store().is_drained(m.id),
                    lag_millis: m.lag_millis,
                })
                .collect(),
            queue: Some(QueueCounts {
                queued: status.queue.queued,
                deferred: status.queue.deferred,
                held: status.queue.held,
            }),
            answered_by: self.cluster.node_id(),
        }))
    }

    async fn list_queue(
        &self,
        request: Request<pb::ListQueueRequest>,
    ) -> Result<Response<pb::ListQueueReply>, Status> {
        let request = request.into_inner();
        let now = UnixMillis::now();
        let (filter, state) = convert::filter(request.filter.as_ref(), now)?;
        let limit = match request.limit as usize {
            0 => DEFAULT_LIST_LIMIT,
            n => n.min(MAX_LIST_LIMIT),
        };
        let mut records = self
            .read(move |store| {
                // One more than asked, to tell the caller it was cut.
                if state.is_none() {
                    return store.list(&filter, limit + 1);
                }
                let mut all = store.list(&filter, usize::MAX)?;
                all.retain(|r| state_matches(state, r));
                all.truncate(limit + 1);
                Ok(all)
            })
            .await?;
        let truncated = records.len() > limit;
        records.truncate(limit);
        Ok(Response::new(pb::ListQueueReply {
            messages: records.iter().map(convert::summary).collect(),
            truncated,
            answered_by: self.cluster.node_id(),
            now_ms: now.0,
        }))
    }

    async fn queue_summary(
        &self,
        request: Request<pb::QueueSummaryRequest>,
    ) -> Result<Response<pb::QueueSummaryReply>, Status> {
        let request = request.into_inner();
        let now = UnixMillis::now();
        let (filter, state) = convert::filter(request.filter.as_ref(), now)?;
        let (domains, total) = self
            .read(move |store| {
                let mut all = store.list(&filter, usize::MAX)?;
                all.retain(|r| state_matches(state, r));
                Ok(summary::summarize(&all, now))
            })
            .await?;
        Ok(Response::new(pb::QueueSummaryReply {
            buckets: summary::labels(),
            domains,
            total: Some(total),
            answered_by: self.cluster.node_id(),
            now_ms: now.0,
        }))
    }

    async fn show_message(
        &self,
        request: Request<pb::MessageRequest>,
    ) -> Result<Response<pb::MessageDetail>, Status> {
        let request = request.into_inner();
        let content = request.content();
        let id = convert::parse_id(&request.id)?;
        let (record, history, body) = self
            .read(move |store| {
                let body = match content {
                    pb::MessageContent::None => None,
                    _ => store.body(&id)?,
                };
                Ok((store.message(&id)?, store.trace(&id)?, body))
            })
            .await?;
        let Some(record) = record else {
            return Err(Status::not_found(format!(
                "message {id} is not queued{}",
                if history.is_empty() {
                    ""
                } else {
                    " (it was; see relayctl trace)"
                }
            )));
        };
        let mut detail = convert::detail(&record, &history);
        detail.content = body.map(|b| match content {
            pb::MessageContent::Headers => convert::header_section(&b).to_vec(),
            _ => b.to_vec(),
        });
        detail.answered_by = self.cluster.node_id();
        detail.now_ms = UnixMillis::now().0;
        Ok(Response::new(detail))
    }

    async fn queue_action(
        &self,
        request: Request<pb::QueueActionRequest>,
    ) -> Result<Response<pb::QueueActionReply>, Status> {
        let request = request.into_inner();
        let action = match request.action.as_str() {
            "hold" => AdminAction::Hold,
            "release" => AdminAction::Release,
            "delete" => AdminAction::Delete,
            "flush" => AdminAction::RetryNow,
            other => {
                return Err(Status::invalid_argument(format!(
                    "unknown queue action {other:?} (expected hold, release, delete or flush)"
                )));
            }
        };
        let now = UnixMillis::now();
        let selector = if !request.ids.is_empty() {
            let ids = request
                .ids
                .iter()
                .map(|id| convert::parse_id(id))
                .collect::<Result<Vec<_>, _>>()?;
            Selector::Ids(ids)
        } else if request.all {
            let (filter, state) = convert::filter(request.filter.as_ref(), now)?;
            match state {
                // queued vs deferred is not part of the replicated filter:
                // pick the ids here (the entry then names exactly them).
                Some(MessageState::Queued | MessageState::Deferred) => {
                    let ids = self
                        .read(move |store| {
                            let all = store.list(&filter, usize::MAX)?;
                            Ok(all
                                .into_iter()
                                .filter(|r| state_matches(state, r))
                                .map(|r| r.id)
                                .collect::<Vec<_>>())
                        })
                        .await?;
                    if ids.is_empty() {
                        return Ok(Response::new(pb::QueueActionReply {
                            affected: 0,
                            answered_by: self.cluster.node_id(),
                        }));
                    }
                    Selector::Ids(ids)
                }
                _ => Selector::Filter(filter),
            }
        } else {
            return Err(Status::invalid_argument(
                "name message ids, or select with --all (and optional filters)",
            ));
        };
        let by = if request.by.trim().is_empty() {
            "unknown operator".to_string()
        } else {
            request.by.trim().to_string()
        };
        let reason = if request.reason.trim().is_empty() {
            "no reason given".to_string()
        } else {
            request.reason.trim().to_string()
        };
        let result = self
            .propose(Command::Admin {
                action,
                selector,
                by,
                reason,
                at: now,
            })
            .await?;
        Ok(Response::new(pb::QueueActionReply {
            affected: affected(result)?,
            answered_by: self.cluster.node_id(),
        }))
    }

    async fn list_routes(
        &self,
        _request: Request<pb::ListRoutesRequest>,
    ) -> Result<Response<pb::ListRoutesReply>, Status> {
        let routes = self.read(|store| store.routes()).await?;
        Ok(Response::new(pb::ListRoutesReply {
            routes: routes.iter().map(|(d, r)| convert::route(d, r)).collect(),
            answered_by: self.cluster.node_id(),
        }))
    }

    async fn set_route(
        &self,
        request: Request<pb::SetRouteRequest>,
    ) -> Result<Response<pb::RouteChangeReply>, Status> {
        let request = request.into_inner();
        let info = request
            .route
            .ok_or_else(|| Status::invalid_argument("a route is required"))?;
        let domain = normalize_domain(&info.domain);
        if domain.is_empty() || domain.contains(char::is_whitespace) {
            return Err(Status::invalid_argument(format!(
                "invalid domain {:?}",
                info.domain
            )));
        }
        if info.targets.is_empty() {
            return Err(Status::invalid_argument(
                "a route needs at least one target",
            ));
        }
        for target in &info.targets {
            relay_delivery::transport::parse_target(target).map_err(Status::invalid_argument)?;
        }
        let tls: TlsPolicy = if info.tls.is_empty() {
            TlsPolicy::default()
        } else {
            info.tls.parse().map_err(Status::invalid_argument)?
        };
        let rate = if info.rate.trim().is_empty() {
            None
        } else {
            Some(
                info.rate
                    .parse::<Rate>()
                    .map_err(Status::invalid_argument)?,
            )
        };
        let shaping = Shaping {
            concurrency: (info.concurrency > 0).then_some(info.concurrency),
            rate,
        };
        if !shaping.is_default() {
            self.require_format_everywhere(SHAPING_FORMAT, "route shaping")
                .await?;
        }
        self.propose(Command::SetRoute {
            domain: domain.clone(),
            route: Route {
                shaping,
                ..Route::new(info.targets, tls)
            },
        })
        .await
        .and_then(affected)?;
        // The backlog waits for its next retry otherwise (up to the maximum
        // backoff): make it due now, so it goes to the new targets.
        let by = if request.by.trim().is_empty() {
            "unknown operator".to_string()
        } else {
            request.by.trim().to_string()
        };
        let flushed = self
            .propose(Command::Admin {
                action: AdminAction::RetryNow,
                selector: Selector::Filter(MessageFilter {
                    to_domain: Some(domain.clone()),
                    held: Some(false),
                    ..Default::default()
                }),
                by,
                reason: format!("route for {domain} changed"),
                at: UnixMillis::now(),
            })
            .await
            .and_then(affected)
            .map_err(|e| {
                // The route itself is committed: say so, and how to finish.
                Status::unavailable(format!(
                    "route for {domain} set, but retrying its backlog now failed ({}); \
                     run: relayctl queue flush --all --yes --to-domain {domain}",
                    e.message()
                ))
            })?;
        Ok(Response::new(pb::RouteChangeReply { domain, flushed }))
    }

    async fn remove_route(
        &self,
        request: Request<pb::RemoveRouteRequest>,
    ) -> Result<Response<pb::RouteChangeReply>, Status> {
        let domain = normalize_domain(&request.into_inner().domain);
        let removed = self
            .propose(Command::RemoveRoute {
                domain: domain.clone(),
            })
            .await
            .and_then(affected)?;
        if removed == 0 {
            return Err(Status::not_found(format!("no route for {domain}")));
        }
        Ok(Response::new(pb::RouteChangeReply { domain, flushed: 0 }))
    }

    async fn failover(
        &self,
        request: Request<pb::FailoverRequest>,
    ) -> Result<Response<pb::FailoverReply>, Status> {
        let to = request.into_inner().to;
        let transfer = self
            .cluster
            .transfer_leadership(to, FAILOVER_WITHIN)
            .await
            .map_err(admin_status)?;
        Ok(Response::new(pb::FailoverReply {
            previous_leader: transfer.previous,
            leader: transfer.leader,
            term: transfer.term,
            millis: transfer.took.as_millis() as u64,
            leaderless_millis: transfer.leaderless.as_millis() as u64,
        }))
    }

    async fn change_membership(
        &self,
        request: Request<pb::MembershipRequest>,
    ) -> Result<Response<pb::MembershipReply>, Status> {
        let request = request.into_inner();
        let change = MemberChange::from_wire(&relay_proto::raft::MembershipChange {
            action: request.action,
            id: request.id,
            addr: request.addr,
        })
        .map_err(admin_status)?;
        let members = self
            .cluster
            .change_membership(change)
            .await
            .map_err(admin_status)?;
        Ok(Response::new(pb::MembershipReply {
            voters: members.voters,
            learners: members.learners,
        }))
    }

    async fn trace(
        &self,
        request: Request<pb::MessageRequest>,
    ) -> Result<Response<pb::TraceReply>, Status> {
        let id = convert::parse_id(&request.into_inner().id)?;
        let (queued, events) = self
            .read(move |store| Ok((store.message(&id)?.is_some(), store.trace(&id)?)))
            .await?;
        if events.is_empty() && !queued {
            return Err(Status::not_found(format!(
                "node {} has no trace of message {id}",
                self.cluster.node_id()
            )));
        }
        Ok(Response::new(pb::TraceReply {
            id: id.to_string(),
            queued,
            events: events.iter().map(convert::trace_event).collect(),
            answered_by: self.cluster.node_id(),
        }))
    }

    async fn drill(
        &self,
        _request: Request<pb::DrillRequest>,
    ) -> Result<Response<pb::DrillReply>, Status> {
        let checks = drill::run(&self.cluster).await;
        Ok(Response::new(pb::DrillReply {
            ok: checks.iter().all(|c| c.ok),
            checks,
            answered_by: self.cluster.node_id(),
        }))
    }

    async fn snapshot(
        &self,
        _request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<pb::SnapshotReply>, Status> {
        let mut view = self.cluster.watch_view();
        let previous = view.current().snapshot_index.unwrap_or(0);
        self.cluster
            .trigger_snapshot()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        // openraft builds in the background; answer once the snapshot moved.
        let built = tokio::time::timeout(
            SNAPSHOT_WITHIN,
            view.wait_for(|m| m.snapshot_index.unwrap_or(0) > previous),
        )
        .await;
        let index = match built {
            Ok(Ok(m)) => m.snapshot_index.unwrap_or(0),
            Ok(Err(_)) => return Err(Status::unavailable("raft stopped")),
            // Nothing new to snapshot (no entry applied since the last one),
            // still building, or the new file could not be written (the
            // store keeps the current snapshot and logs why): report what
            // there is.
            Err(_) => {
                let current = self.cluster.view().snapshot_index.unwrap_or(0);
                if current == previous {
                    return Err(Status::failed_precondition(format!(
                        "no new snapshot within {SNAPSHOT_WITHIN:?} (last at index {previous}; \
                         nothing applied since, still building, or the file could not be \
                         written: see the node's log)"
                    )));
                }
                current
            }
        };
        Ok(Response::new(pb::SnapshotReply {
            index,
            previous_index: previous,
            node: self.cluster.node_id(),
        }))
    }

    async fn drain(
        &self,
        request: Request<pb::DrainRequest>,
    ) -> Result<Response<pb::DrainReply>, Status> {
        let request = request.into_inner();
        let node = request.id;
        let m = self.cluster.view();
        if !m.members.contains(&node) {
            return Err(Status::not_found(format!("node {node} is not a member")));
        }
        if !request.undrain {
            let drained = self.cluster.store().drained();
            let others_in_service = m
                .voters
                .iter()
                .filter(|id| **id != node && !drained.contains(id))
                .count();
            if others_in_service == 0 {
                return Err(Status::failed_precondition(format!(
                    "draining node {node} would leave no voter in service to take its mail"
                )));
            }
        }
        let command = Command::Drain {
            node,
            drained: !request.undrain,
            by: request.by,
            at: UnixMillis::now(),
        };
        affected(self.propose(command).await?)?;
        // The entry is committed; the report reads this node's own applied
        // state, which may trail the leader by a moment: wait (bounded) for
        // it, so the reply never says "not drained" right after a drain.
        let want = !request.undrain;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.cluster.store().drained().contains(&node) != want
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let report = self.cluster.drain_report(node).await;
        Ok(Response::new(drain_reply(report, self.cluster.node_id())))
    }

    async fn drain_status(
        &self,
        request: Request<pb::DrainStatusRequest>,
    ) -> Result<Response<pb::DrainReply>, Status> {
        let node = request.into_inner().id;
        if !self.cluster.is_member(node) {
            return Err(Status::not_found(format!("node {node} is not a member")));
        }
        let report = self.cluster.drain_report(node).await;
        Ok(Response::new(drain_reply(report, self.cluster.node_id())))
    }
}

fn drain_reply(r: relay_cluster::DrainReport, answered_by: u64) -> pb::DrainReply {
    pb::DrainReply {
        node: r.node,
        drained: r.drained,
        reachable: r.reachable,
        applied_by_node: r.applied_by_node,
        leader: r.leader,
        owned: r.owned,
        smtp_sessions: r.smtp_sessions,
        busy_deliveries: r.busy_deliveries,
        safe_to_stop: r.safe_to_stop,
        waiting_for: r.waiting_for,
        answered_by,
    }
}
