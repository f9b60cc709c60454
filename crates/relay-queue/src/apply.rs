//! `apply(state, index, command)`: the whole replicated state transition.

use std::collections::HashMap;

use relay_types::{
    AdminAction, AttemptOutcome, Command, CommandResult, Enqueue, MAX_BATCH_COMMANDS,
    MessageFilter, MessageId, MessageRecord, RecipientStatus, Rejection, Route, Selector,
    TraceEvent, UnixMillis, node_name,
};
use sha2::{Digest, Sha256};

use crate::change::Change;

/// Read access to the replicated state, as of just before the entry.
///
/// Implementations must see every change of earlier entries.
pub trait QueueRead {
    /// The store's error (I/O, corruption).
    type Error;

    /// A message's record, if queued.
    fn message(&self, id: &MessageId) -> Result<Option<MessageRecord>, Self::Error>;

    /// Every queued message matching `filter`, in id order.
    fn select(&self, filter: &MessageFilter) -> Result<Vec<MessageRecord>, Self::Error>;

    /// A domain's route.
    fn route(&self, domain: &str) -> Result<Option<Route>, Self::Error>;

    /// Whether a message with this id finished (or was deleted) and its
    /// history has not been pruned yet.
    fn finished(&self, id: &MessageId) -> Result<bool, Self::Error>;
}

/// The outcome of applying one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The writes to make, atomically with the applied index.
    pub changes: Vec<Change>,
    /// The answer for the proposer.
    pub result: CommandResult,
}

impl Applied {
    fn rejected(rejection: Rejection) -> Self {
        Applied {
            changes: Vec::new(),
            result: CommandResult::Rejected(rejection),
        }
    }
}

/// SHA-256 of a body, as carried in `Enqueue::checksum`.
pub fn body_checksum(body: &[u8]) -> [u8; 32] {
    Sha256::digest(body).into()
}

/// Applies one committed entry at log `index`. Pure: the result depends only
/// on the state `state` shows, `index` and `command`.
pub fn apply<R: QueueRead>(state: &R, index: u64, command: &Command) -> Result<Applied, R::Error> {
    match command {
        Command::Batch(commands) => apply_batch(state, index, commands),
        single => apply_command(state, index, single),
    }
}

/// Applies one command that is not a batch.
fn apply_command<R: QueueRead>(
    state: &R,
    index: u64,
    command: &Command,
) -> Result<Applied, R::Error> {
    match command {
        Command::Enqueue(enqueue) => {
            let mut changes = Vec::new();
            match enqueue_changes(state, index, enqueue, &mut changes)? {
                Ok(id) => Ok(Applied {
                    changes,
                    result: CommandResult::Enqueued(id),
                }),
                Err(rejection) => Ok(Applied::rejected(rejection)),
            }
        }
        Command::Attempt {
            id,
            by,
            at,
            target,
            outcomes,
            next_attempt_at,
            dsn,
        } => {
            let record = match owned_message(state, id, *by)? {
                Ok(record) => record,
                Err(rejection) => return Ok(Applied::rejected(rejection)),
            };
            let mut after = record.clone();
            let mut summary = Vec::new();
            for outcome in outcomes {
                let Some(status) = after.recipients.get_mut(outcome.index as usize) else {
                    return Ok(Applied::rejected(Rejection::Invalid(format!(
                        "attempt for {id} names recipient {} of {}",
                        outcome.index,
                        record.recipients.len()
                    ))));
                };
                if !status.is_pending() {
                    continue;
                }
                *status = match outcome.outcome {
                    AttemptOutcome::Delivered => RecipientStatus::Delivered { at: *at },
                    AttemptOutcome::Deferred => RecipientStatus::Pending {
                        last_reply: Some(outcome.reply.clone()),
                    },
                    AttemptOutcome::Failed => RecipientStatus::Failed {
                        at: *at,
                        reply: outcome.reply.clone(),
                    },
                };
                let rcpt = &record.envelope.recipients[outcome.index as usize].address;
                summary.push(format!("<{rcpt}> {:?}: {}", outcome.outcome, outcome.reply));
            }
            after.attempts = after.attempts.saturating_add(1);
            after.next_attempt_at = *next_attempt_at;
            after.last_target = Some(target.clone());

            let mut changes = vec![trace(
                *id,
                index,
                *at,
                node_name(*by),
                format!(
                    "attempt {} via {target}: {}",
                    after.attempts,
                    summary.join("; ")
                ),
            )];
            if let Some(dsn) = dsn {
                if let Err(rejection) = enqueue_changes(state, index, dsn, &mut changes)? {
                    return Ok(Applied::rejected(rejection));
                }
                changes.push(trace(
                    *id,
                    index,
                    *at,
                    node_name(*by),
                    format!(
                        "bounce {} queued to <{}>",
                        dsn.id, record.envelope.reverse_path
                    ),
                ));
            }
            if after.is_finished() {
                changes.push(trace(*id, index, *at, node_name(*by), "finished, removed"));
                changes.push(Change::Remove { record });
            } else {
                changes.push(Change::Update {
                    before: record,
                    after,
                });
            }
            Ok(Applied {
                changes,
                result: CommandResult::Applied { affected: 1 },
            })
        }
        Command::Delivered {
            id,
            by,
            at,
            target,
            reply,
        } => {
            let record = match owned_message(state, id, *by)? {
                Ok(record) => record,
                Err(rejection) => return Ok(Applied::rejected(rejection)),
            };
            let changes = vec![
                trace(
                    *id,
                    index,
                    *at,
                    node_name(*by),
                    format!("delivered via {target}: {reply}; removed"),
                ),
                Change::Remove { record },
            ];
            Ok(Applied {
                changes,
                result: CommandResult::Applied { affected: 1 },
            })
        }
        Command::Reassign { selector, to, at } => {
            let mut changes = Vec::new();
            for record in selected(state, selector)? {
                if record.owner == *to {
                    continue;
                }
                changes.push(trace(
                    record.id,
                    index,
                    *at,
                    "leader",
                    format!("owner node {} -> node {to}", record.owner),
                ));
                let mut after = record.clone();
                after.owner = *to;
                changes.push(Change::Update {
                    before: record,
                    after,
                });
            }
            Ok(counted(changes))
        }
        Command::Admin {
            action,
            selector,
            by,
            reason,
            at,
        } => {
            let mut changes = Vec::new();
            for record in selected(state, selector)? {
                let mut after = record.clone();
                let what = match action {
                    AdminAction::Hold if record.held.is_none() => {
                        after.held = Some(relay_types::Hold {
                            by: by.clone(),
                            reason: reason.clone(),
                            at: *at,
                        });
                        "held"
                    }
                    AdminAction::Release if record.held.is_some() => {
                        after.held = None;
                        after.next_attempt_at = *at;
                        "released"
                    }
                    AdminAction::RetryNow if record.held.is_none() => {
                        after.next_attempt_at = *at;
                        "retry now"
                    }
                    AdminAction::Delete => "deleted",
                    _ => continue,
                };
                changes.push(trace(
                    record.id,
                    index,
                    *at,
                    by.clone(),
                    format!("{what}: {reason}"),
                ));
                if *action == AdminAction::Delete {
                    changes.push(Change::Remove { record });
                } else {
                    changes.push(Change::Update {
                        before: record,
                        after,
                    });
                }
            }
            Ok(counted(changes))
        }
        Command::SetRoute { domain, route } => Ok(Applied {
            changes: vec![Change::PutRoute {
                domain: domain.clone(),
                route: route.clone(),
            }],
            result: CommandResult::Applied { affected: 1 },
        }),
        // Unreachable through `apply`; a batch inside a batch is not
        // batchable, so `apply_batch` never passes one here either.
        Command::Batch(_) => Ok(Applied::rejected(Rejection::Invalid(
            "a batch cannot nest".into(),
        ))),
        Command::DuplicateDelivered {
            id,
            by,
            at,
            target,
            reply,
            why,
        } => Ok(Applied {
            changes: vec![trace(
                *id,
                index,
                *at,
                node_name(*by),
                format!("duplicate delivery via {target} ({why}): {reply}"),
            )],
            result: CommandResult::Applied { affected: 0 },
        }),
        Command::TakeOver { from, to, at } => {
            if to.is_empty() || to.contains(from) {
                return Ok(Applied::rejected(Rejection::Invalid(format!(
                    "takeover of node {from} needs other nodes to take its messages"
                ))));
            }
            let filter = MessageFilter {
                owner: Some(*from),
                ..Default::default()
            };
            let mut changes = Vec::new();
            // `select` returns id order: the n-th message goes to to[n % len].
            for (n, record) in state.select(&filter)?.into_iter().enumerate() {
                let new_owner = to[n % to.len()];
                changes.push(trace(
                    record.id,
                    index,
                    *at,
                    "leader",
                    format!("owner node {from} -> node {new_owner} (taken over)"),
                ));
                let mut after = record.clone();
                after.owner = new_owner;
                changes.push(Change::Update {
                    before: record,
                    after,
                });
            }
            Ok(counted(changes))
        }
        // Only the mark: the queue moves later, in a `TakeOver` the leader
        // commits once the node's own deliveries have finished (moving it
        // here would refuse the reports of deliveries still running and
        // make duplicates of them).
        Command::Drain { node, drained, .. } => Ok(Applied {
            changes: vec![Change::SetDrained {
                node: *node,
                drained: *drained,
            }],
            result: CommandResult::Applied { affected: 1 },
        }),
        Command::Prune { before } => Ok(Applied {
            changes: vec![Change::PruneHistory {
                before: MessageId::first_at(*before),
            }],
            result: CommandResult::Applied { affected: 0 },
        }),
        Command::RemoveRoute { domain } => {
            if state.route(domain)?.is_none() {
                return Ok(Applied {
                    changes: Vec::new(),
                    result: CommandResult::Applied { affected: 0 },
                });
            }
            Ok(Applied {
                changes: vec![Change::RemoveRoute {
                    domain: domain.clone(),
                }],
                result: CommandResult::Applied { affected: 1 },
            })
        }
    }
}

/// Applies each command of a batch in order against the state plus the
/// changes of the commands before it, and concatenates their changes (the
/// store writes them in one batch, in order). A command that may not ride
/// in a batch is rejected alone; a batch over [`MAX_BATCH_COMMANDS`] is
/// rejected whole.
fn apply_batch<R: QueueRead>(
    state: &R,
    index: u64,
    commands: &[Command],
) -> Result<Applied, R::Error> {
    if commands.len() > MAX_BATCH_COMMANDS {
        return Ok(Applied::rejected(Rejection::Invalid(format!(
            "batch of {} commands, more than {MAX_BATCH_COMMANDS}",
            commands.len()
        ))));
    }
    let mut view = BatchView {
        state,
        written: HashMap::new(),
    };
    let mut changes = Vec::new();
    let mut results = Vec::with_capacity(commands.len());
    for command in commands {
        if !command.batchable() {
            results.push(CommandResult::Rejected(Rejection::Invalid(format!(
                "a {} command cannot ride in a batch",
                command.kind()
            ))));
            continue;
        }
        let applied = apply_command(&view, index, command)?;
        view.record(&applied.changes);
        changes.extend(applied.changes);
        results.push(applied.result);
    }
    Ok(Applied {
        changes,
        result: CommandResult::Batch(results),
    })
}

/// The state as a command inside a batch sees it: the store as of before
/// the entry, overlaid with the messages earlier commands of the batch
/// inserted, updated or removed (batchable commands touch only messages).
struct BatchView<'a, R> {
    state: &'a R,
    /// `Some(record)`: written by an earlier command; `None`: removed.
    written: HashMap<MessageId, Option<MessageRecord>>,
}

impl<R> BatchView<'_, R> {
    fn record(&mut self, changes: &[Change]) {
        for change in changes {
            match change {
                Change::Insert { record, .. } => {
                    self.written.insert(record.id, Some(record.clone()));
                }
                Change::Update { after, .. } => {
                    self.written.insert(after.id, Some(after.clone()));
                }
                Change::Remove { record } => {
                    self.written.insert(record.id, None);
                }
                Change::PutRoute { .. }
                | Change::RemoveRoute { .. }
                | Change::Trace { .. }
                | Change::PruneHistory { .. }
                | Change::SetDrained { .. } => {}
            }
        }
    }
}

impl<R: QueueRead> QueueRead for BatchView<'_, R> {
    type Error = R::Error;

    fn message(&self, id: &MessageId) -> Result<Option<MessageRecord>, R::Error> {
        match self.written.get(id) {
            Some(written) => Ok(written.clone()),
            None => self.state.message(id),
        }
    }

    fn select(&self, filter: &MessageFilter) -> Result<Vec<MessageRecord>, R::Error> {
        let mut out: Vec<MessageRecord> = self
            .state
            .select(filter)?
            .into_iter()
            .filter(|r| !self.written.contains_key(&r.id))
            .collect();
        out.extend(
            self.written
                .values()
                .flatten()
                .filter(|r| crate::filter::matches(filter, r))
                .cloned(),
        );
        out.sort_by_key(|r| r.id);
        Ok(out)
    }

    fn route(&self, domain: &str) -> Result<Option<Route>, R::Error> {
        self.state.route(domain)
    }

    fn finished(&self, id: &MessageId) -> Result<bool, R::Error> {
        match self.written.get(id) {
            // Removed earlier in this batch.
            Some(None) => Ok(true),
            Some(Some(_)) => Ok(false),
            None => self.state.finished(id),
        }
    }
}

/// Validates an `Enqueue` and pushes its changes; the inner `Err` is a
/// deterministic rejection.
fn enqueue_changes<R: QueueRead>(
    state: &R,
    index: u64,
    enqueue: &Enqueue,
    changes: &mut Vec<Change>,
) -> Result<Result<MessageId, Rejection>, R::Error> {
    // A copy of a queued message, or of one that already finished (a
    // forwarded proposal that committed after its first copy was
    // delivered): refused, never delivered twice.
    if state.message(&enqueue.id)?.is_some() || state.finished(&enqueue.id)? {
        return Ok(Err(Rejection::Duplicate(enqueue.id)));
    }
    if enqueue.envelope.recipients.is_empty() {
        return Ok(Err(Rejection::Invalid(format!(
            "message {} has no recipients",
            enqueue.id
        ))));
    }
    if body_checksum(&enqueue.body) != enqueue.checksum {
        return Ok(Err(Rejection::ChecksumMismatch(enqueue.id)));
    }
    let record = MessageRecord::from_enqueue(enqueue);
    changes.push(trace(
        enqueue.id,
        index,
        enqueue.received_at,
        node_name(enqueue.accepted_by),
        format!(
            "accepted from <{}> for {} recipient(s), {} octets, owner node {}",
            enqueue.envelope.reverse_path,
            enqueue.envelope.recipients.len(),
            enqueue.body.len(),
            enqueue.owner
        ),
    ));
    changes.push(Change::Insert {
        record,
        body: enqueue.body.clone(),
    });
    Ok(Ok(enqueue.id))
}

/// The message, if it exists and `by` owns it (the fencing check).
fn owned_message<R: QueueRead>(
    state: &R,
    id: &MessageId,
    by: u64,
) -> Result<Result<MessageRecord, Rejection>, R::Error> {
    Ok(match state.message(id)? {
        None => Err(Rejection::UnknownMessage(*id)),
        Some(record) if record.owner != by => Err(Rejection::NotOwner {
            id: *id,
            by,
            owner: record.owner,
        }),
        Some(record) => Ok(record),
    })
}

fn selected<R: QueueRead>(state: &R, selector: &Selector) -> Result<Vec<MessageRecord>, R::Error> {
    match selector {
        Selector::Ids(ids) => {
            let mut out = Vec::with_capacity(ids.len());
            let mut seen = std::collections::BTreeSet::new();
            for id in ids {
                if !seen.insert(*id) {
                    continue;
                }
                if let Some(record) = state.message(id)? {
                    out.push(record);
                }
            }
            Ok(out)
        }
        Selector::Filter(filter) => state.select(filter),
    }
}

fn trace(
    id: MessageId,
    index: u64,
    at: UnixMillis,
    by: impl Into<String>,
    what: impl Into<String>,
) -> Change {
    Change::Trace {
        id,
        event: TraceEvent::new(index, at, by, what),
    }
}

/// Wraps per-message changes with a count of messages changed (traces are
/// not counted).
fn counted(changes: Vec<Change>) -> Applied {
    let affected = changes
        .iter()
        .filter(|c| !matches!(c, Change::Trace { .. }))
        .count() as u32;
    Applied {
        changes,
        result: CommandResult::Applied { affected },
    }
}
