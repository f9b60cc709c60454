//! `MemQueue`: the in-memory reference implementation of the replicated state.
//!
//! Used by property tests and as the model the RocksDB store is checked
//! against. Not for production: it holds bodies in memory.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;

use bytes::Bytes;
use relay_types::{
    Command, CommandResult, MessageFilter, MessageId, MessageRecord, NodeId, QueueCounts, Route,
    TraceEvent, UnixMillis, encode,
};
use sha2::{Digest, Sha256};

use crate::apply::{QueueRead, apply};
use crate::change::Change;
use crate::filter::matches;

/// The whole replicated state, in memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemQueue {
    messages: BTreeMap<MessageId, MessageRecord>,
    bodies: BTreeMap<MessageId, Bytes>,
    routes: BTreeMap<String, Route>,
    traces: BTreeMap<(MessageId, u64, u32), TraceEvent>,
    finished: BTreeSet<MessageId>,
    drained: BTreeSet<relay_types::NodeId>,
    last_applied: u64,
}

impl QueueRead for MemQueue {
    type Error = Infallible;

    fn message(&self, id: &MessageId) -> Result<Option<MessageRecord>, Infallible> {
        Ok(self.messages.get(id).cloned())
    }

    fn select(&self, filter: &MessageFilter) -> Result<Vec<MessageRecord>, Infallible> {
        Ok(self
            .messages
            .values()
            .filter(|r| matches(filter, r))
            .cloned()
            .collect())
    }

    fn route(&self, domain: &str) -> Result<Option<Route>, Infallible> {
        Ok(self.routes.get(domain).cloned())
    }

    fn finished(&self, id: &MessageId) -> Result<bool, Infallible> {
        Ok(self.finished.contains(id))
    }
}

impl MemQueue {
    /// Applies one entry at `index` and returns its result.
    pub fn apply(&mut self, index: u64, command: &Command) -> CommandResult {
        let applied = match apply(self, index, command) {
            Ok(applied) => applied,
            Err(never) => match never {},
        };
        self.write(index, applied.changes);
        applied.result
    }

    /// Writes one entry's changes (what a store does in one batch).
    pub fn write(&mut self, index: u64, changes: Vec<Change>) {
        let mut seq = 0u32;
        for change in changes {
            match change {
                Change::Insert { record, body } => {
                    self.bodies.insert(record.id, body);
                    self.messages.insert(record.id, record);
                }
                Change::Update { after, .. } => {
                    self.messages.insert(after.id, after);
                }
                Change::Remove { record } => {
                    self.messages.remove(&record.id);
                    self.bodies.remove(&record.id);
                    self.finished.insert(record.id);
                }
                Change::PruneHistory { before } => {
                    let traces_before = self
                        .messages
                        .keys()
                        .next()
                        .map_or(before, |oldest| before.min(*oldest));
                    self.traces.retain(|(id, _, _), _| *id >= traces_before);
                    self.finished.retain(|id| *id >= before);
                }
                Change::PutRoute { domain, route } => {
                    self.routes.insert(domain, route);
                }
                Change::RemoveRoute { domain } => {
                    self.routes.remove(&domain);
                }
                Change::Trace { id, event } => {
                    self.traces.insert((id, event.index, seq), event);
                    seq += 1;
                }
                Change::SetDrained { node, drained } => {
                    if drained {
                        self.drained.insert(node);
                    } else {
                        self.drained.remove(&node);
                    }
                }
            }
        }
        self.last_applied = index;
    }

    /// The nodes marked drained.
    pub fn drained(&self) -> &BTreeSet<relay_types::NodeId> {
        &self.drained
    }

    /// The index of the last entry applied.
    pub fn last_applied(&self) -> u64 {
        self.last_applied
    }

    /// A body, while its message is queued.
    pub fn body(&self, id: &MessageId) -> Option<&Bytes> {
        self.bodies.get(id)
    }

    /// Ids of every stored body.
    pub fn body_ids(&self) -> Vec<MessageId> {
        self.bodies.keys().copied().collect()
    }

    /// Number of queued messages.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Messages `owner` should attempt at `now`, earliest first (held ones
    /// excluded), at most `limit`.
    pub fn due(&self, owner: NodeId, now: UnixMillis, limit: usize) -> Vec<MessageRecord> {
        let mut due: Vec<_> = self
            .messages
            .values()
            .filter(|r| r.owner == owner && r.held.is_none() && r.next_attempt_at <= now)
            .cloned()
            .collect();
        due.sort_by_key(|r| (r.next_attempt_at, r.id));
        due.truncate(limit);
        due
    }

    /// Counts by state.
    pub fn counts(&self) -> QueueCounts {
        let mut counts = QueueCounts::default();
        for r in self.messages.values() {
            match r.state() {
                relay_types::MessageState::Queued => counts.queued += 1,
                relay_types::MessageState::Deferred => counts.deferred += 1,
                relay_types::MessageState::Held => counts.held += 1,
            }
        }
        counts
    }

    /// A message's trace, in log order.
    pub fn trace(&self, id: &MessageId) -> Vec<TraceEvent> {
        self.traces
            .range((*id, 0, 0)..=(*id, u64::MAX, u32::MAX))
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// Whether `id` is remembered as finished (until pruned).
    pub fn is_finished(&self, id: &MessageId) -> bool {
        self.finished.contains(id)
    }

    /// SHA-256 over every table in key order: equal on replicas that applied
    /// the same entries.
    pub fn checksum(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        for (id, r) in &self.messages {
            h.update(id.as_bytes());
            h.update(encode(r));
        }
        for (id, b) in &self.bodies {
            h.update(id.as_bytes());
            h.update(b);
        }
        for (d, r) in &self.routes {
            h.update(d.as_bytes());
            h.update(encode(r));
        }
        for (k, e) in &self.traces {
            h.update(k.0.as_bytes());
            h.update(encode(e));
        }
        for id in &self.finished {
            h.update(id.as_bytes());
        }
        h.finalize().into()
    }
}
