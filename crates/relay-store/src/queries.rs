//! Read-only queries on the replicated state, and the `QueueRead` view that
//! `relay_queue::apply` reads through.
//!
//! Queries are synchronous (RocksDB reads; cheap except `digest` and
//! unfiltered `list`, which scan). Those that read more than one key use one
//! RocksDB snapshot, so they never mix two applied indexes.

use bytes::Bytes;
use relay_queue::QueueRead;
use relay_types::{
    Command, MessageFilter, MessageId, MessageRecord, NodeId, QueueCounts, Route, TraceEvent,
    UnixMillis,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::db::{
    CF_BODIES, CF_DUE, CF_FINISHED, CF_MESSAGES, CF_OWNER, CF_PENDING_REPORTS, CF_ROUTES,
    CF_SM_META, CF_TRACES, KEY_COUNTS, KEY_LAST_APPLIED, Reader, Store, owner_key_id,
    parse_due_key,
};
use crate::error::StoreError;
use crate::state_machine::StateMachine;

/// A checksum of the replicated state at one applied index: equal on every
/// replica that applied the same log up to `applied_index`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StateDigest {
    /// The index of the last entry applied (0 before the first).
    pub applied_index: u64,
    /// Hex SHA-256 over messages, bodies, routes and traces in key order.
    pub checksum: String,
    /// Message bodies held in the state (0 once every message is gone:
    /// how tests and operators check that delivered mail left no copy).
    pub bodies: u64,
    /// Their total size in octets.
    pub body_bytes: u64,
}

impl StateMachine {
    /// Remembers, durably (synced before it returns), the report of a
    /// delivery the target accepted but whose entry has not committed yet.
    /// A node that restarts proposes these instead of delivering again,
    /// which closes most of the "accepted by the target, `Delivered` not
    /// committed" duplicate window. Local to this node: never replicated,
    /// not in snapshots or the state digest.
    pub fn save_pending_report(&self, id: &MessageId, report: &Command) -> Result<(), StoreError> {
        let mut batch = rocksdb::WriteBatch::default();
        batch.put_cf(
            self.store.cf(CF_PENDING_REPORTS)?,
            id.as_bytes(),
            relay_types::encode(report),
        );
        self.store
            .write_synced(batch, crate::metrics::SyncOp::PendingReport)
    }

    /// Forgets a pending report once its entry committed (or was refused).
    /// Not synced: a report found again after a crash is proposed again and
    /// the state machine refuses it (the message is finished or moved).
    pub fn clear_pending_report(&self, id: &MessageId) -> Result<(), StoreError> {
        let mut batch = rocksdb::WriteBatch::default();
        batch.delete_cf(self.store.cf(CF_PENDING_REPORTS)?, id.as_bytes());
        self.store.write(batch)
    }

    /// Every pending report, to be proposed again after a restart.
    pub fn pending_reports(&self) -> Result<Vec<(MessageId, Command)>, StoreError> {
        let mut out = Vec::new();
        for item in self.store.live().scan(CF_PENDING_REPORTS, &[], None)? {
            let (key, value) = item?;
            let id = MessageId::from_slice(&key).ok_or_else(|| {
                StoreError::Inconsistent(format!("bad key in {CF_PENDING_REPORTS}"))
            })?;
            let command =
                relay_types::decode(&value).map_err(StoreError::corrupt(CF_PENDING_REPORTS))?;
            out.push((id, command));
        }
        Ok(out)
    }

    /// A queued message's record.
    pub fn message(&self, id: &MessageId) -> Result<Option<MessageRecord>, StoreError> {
        message(&self.store.live(), id)
    }

    /// A queued message's body.
    pub fn body(&self, id: &MessageId) -> Result<Option<Bytes>, StoreError> {
        Ok(self
            .store
            .live()
            .get_raw(CF_BODIES, id.as_bytes())?
            .map(Bytes::from))
    }

    /// Messages `owner` should attempt at `now`: not held, `next_attempt_at
    /// <= now`, earliest first (ties by id), at most `limit`. Walks the due
    /// index, so the cost is O(result), not O(queue).
    pub fn due(
        &self,
        owner: NodeId,
        now: UnixMillis,
        limit: usize,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        let snapshot = self.store.snapshot();
        let reader = self.store.at(&snapshot);
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        for item in reader.scan_prefix(CF_DUE, &owner.to_be_bytes())? {
            let (key, _) = item?;
            let (_, at, id) = parse_due_key(&key)?;
            if at > now {
                break;
            }
            // A key whose record is gone (or says otherwise) is skipped:
            // one bad index key must not stop every delivery of its owner.
            let record = match message(&reader, &id)? {
                Some(r) if r.owner == owner && r.held.is_none() && r.next_attempt_at == at => r,
                other => {
                    dangling_index_key(CF_DUE, &id, other.is_some());
                    continue;
                }
            };
            out.push(record);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Queued messages matching `filter`, in id order, at most `limit`.
    /// With `filter.owner` set it walks that owner's index; otherwise it
    /// scans the message table.
    pub fn list(
        &self,
        filter: &MessageFilter,
        limit: usize,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        let snapshot = self.store.snapshot();
        select(&self.store.at(&snapshot), filter, limit)
    }

    /// The distinct owners of queued messages, ascending: one seek per
    /// owner in the owner index, whatever the queue size (the takeover
    /// loop asks every second).
    pub fn owners(&self) -> Result<Vec<NodeId>, StoreError> {
        let snapshot = self.store.snapshot();
        let reader = self.store.at(&snapshot);
        let mut owners = Vec::new();
        let mut from: u64 = 0;
        loop {
            let Some(item) = reader.scan(CF_OWNER, &from.to_be_bytes(), None)?.next() else {
                break;
            };
            let (key, _) = item?;
            let owner_bytes: [u8; 8] = key
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| StoreError::Inconsistent("short owner index key".into()))?;
            let owner = u64::from_be_bytes(owner_bytes);
            owners.push(owner);
            match owner.checked_add(1) {
                Some(next) => from = next,
                None => break,
            }
        }
        Ok(owners)
    }

    /// How many queued messages `owner` owns (a drained node is safe to
    /// stop at 0). Scans that owner's part of the owner index.
    pub fn owned_count(&self, owner: NodeId) -> Result<u64, StoreError> {
        let reader = self.store.live();
        let mut n = 0u64;
        for item in reader.scan_prefix(CF_OWNER, &owner.to_be_bytes())? {
            item?;
            n += 1;
        }
        Ok(n)
    }

    /// Message counts by state (kept up to date by every apply: O(1)).
    pub fn counts(&self) -> Result<QueueCounts, StoreError> {
        Ok(self
            .store
            .live()
            .get(CF_SM_META, KEY_COUNTS)?
            .unwrap_or_default())
    }

    /// The oldest queued message (ids are UUIDv7, so the first key of the
    /// message table is the earliest accepted): one seek, for the
    /// `relay_queue_oldest_message_age_seconds` gauge.
    pub fn oldest(&self) -> Result<Option<MessageRecord>, StoreError> {
        match self.store.first_raw(CF_MESSAGES)? {
            Some((_, value)) => Ok(Some(
                relay_types::decode(&value).map_err(StoreError::corrupt(CF_MESSAGES))?,
            )),
            None => Ok(None),
        }
    }

    /// Bytes the node's RocksDB holds (SST files plus memtables, every
    /// column family, Raft log included).
    pub fn stored_bytes(&self) -> Result<u64, StoreError> {
        self.store.stored_bytes()
    }

    /// Bytes in the node's RocksDB write-ahead log files: disk the store
    /// takes beyond [`StateMachine::stored_bytes`] until the memtables
    /// they back are flushed.
    pub fn wal_bytes(&self) -> Result<u64, StoreError> {
        self.store.wal_bytes()
    }

    /// Size in bytes of the current snapshot file (the serialized
    /// replicated state), 0 when there is none. Building the next snapshot
    /// needs about as much free space again.
    pub fn snapshot_file_bytes(&self) -> u64 {
        crate::snapshot::current_file_len(&self.store)
    }

    /// Octets an unprivileged writer can still put on the file system
    /// that holds the store (`statvfs`: available blocks × fragment size).
    pub fn free_bytes(&self) -> Result<u64, StoreError> {
        let path = self.store.path();
        let stat = rustix::fs::statvfs(path).map_err(|e| StoreError::DirIo {
            path: path.to_path_buf(),
            op: "statvfs",
            source: e.into(),
        })?;
        Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
    }

    /// Every route, by domain.
    pub fn routes(&self) -> Result<Vec<(String, Route)>, StoreError> {
        let snapshot = self.store.snapshot();
        let reader = self.store.at(&snapshot);
        let mut out = Vec::new();
        for item in reader.scan(CF_ROUTES, &[], None)? {
            let (key, value) = item?;
            let domain = String::from_utf8(key.into_vec())
                .map_err(|_| StoreError::Inconsistent("a route's domain is not UTF-8".into()))?;
            let route = relay_types::decode(&value).map_err(StoreError::corrupt(CF_ROUTES))?;
            out.push((domain, route));
        }
        Ok(out)
    }

    /// The route of `domain` (looked up exactly as given; routes are stored
    /// under the normalised domain their entry carried).
    pub fn route(&self, domain: &str) -> Result<Option<Route>, StoreError> {
        self.store.live().get(CF_ROUTES, domain.as_bytes())
    }

    /// A message's trace in log order. Traces outlive the message.
    pub fn trace(&self, id: &MessageId) -> Result<Vec<TraceEvent>, StoreError> {
        let snapshot = self.store.snapshot();
        let reader = self.store.at(&snapshot);
        let mut out = Vec::new();
        for item in reader.scan_prefix(CF_TRACES, id.as_bytes())? {
            let (_, value) = item?;
            out.push(relay_types::decode(&value).map_err(StoreError::corrupt(CF_TRACES))?);
        }
        Ok(out)
    }

    /// The state digest, read from one RocksDB snapshot (so the applied index
    /// and the tables agree). Hashes, in key order: each message (id, then
    /// encoded record), each body (id, then bytes), each route (domain, then
    /// encoded route), each trace event (message id, then encoded event),
    /// each finished id (the id; the value is empty).
    /// By construction this is the same SHA-256 as `MemQueue::checksum` for
    /// the same state. The derived index tables and counts are not hashed:
    /// they are functions of the messages. Scans the whole state.
    pub fn digest(&self) -> Result<StateDigest, StoreError> {
        let snapshot = self.store.snapshot();
        let reader = self.store.at(&snapshot);
        let applied: Option<openraft::LogId<u64>> = reader.get(CF_SM_META, KEY_LAST_APPLIED)?;
        let mut hasher = Sha256::new();
        let (mut bodies, mut body_bytes) = (0u64, 0u64);
        for (cf, key_part) in [
            (CF_MESSAGES, None),
            (CF_BODIES, None),
            (CF_ROUTES, None),
            (CF_TRACES, Some(16)),
            (CF_FINISHED, None),
        ] {
            for item in reader.scan(cf, &[], None)? {
                let (key, value) = item?;
                let key = match key_part {
                    None => &key[..],
                    Some(n) => key
                        .get(..n)
                        .ok_or_else(|| StoreError::Inconsistent(format!("short key in {cf}")))?,
                };
                if cf == CF_BODIES {
                    bodies += 1;
                    body_bytes += value.len() as u64;
                }
                hasher.update(key);
                hasher.update(&value);
            }
        }
        Ok(StateDigest {
            applied_index: applied.map(|l| l.index).unwrap_or(0),
            checksum: hex::encode(hasher.finalize()),
            bodies,
            body_bytes,
        })
    }
}

/// An index key without a matching record: logged and counted
/// (`relay_store_dangling_index_keys_total`), never fatal to the scan that
/// met it. Apply writes a record and its index keys in one batch, so this
/// means damage (or a bug) worth a look, not a reason to stop delivering
/// every other message.
fn dangling_index_key(index: &'static str, id: &MessageId, record_differs: bool) {
    tracing::warn!(
        index,
        %id,
        problem = if record_differs { "the record does not match the key" } else { "no record" },
        "skipping a dangling index key"
    );
    crate::metrics::dangling_index_key(index);
}

fn message(reader: &Reader<'_>, id: &MessageId) -> Result<Option<MessageRecord>, StoreError> {
    reader.get(CF_MESSAGES, id.as_bytes())
}

fn select(
    reader: &Reader<'_>,
    filter: &MessageFilter,
    limit: usize,
) -> Result<Vec<MessageRecord>, StoreError> {
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    let mut keep = |record: MessageRecord| {
        if relay_queue::matches(filter, &record) {
            out.push(record);
        }
        out.len() < limit
    };
    match filter.owner {
        Some(owner) => {
            for item in reader.scan_prefix(CF_OWNER, &owner.to_be_bytes())? {
                let (key, _) = item?;
                let id = owner_key_id(&key)?;
                let record = match message(reader, &id)? {
                    Some(r) if r.owner == owner => r,
                    other => {
                        dangling_index_key(CF_OWNER, &id, other.is_some());
                        continue;
                    }
                };
                if !keep(record) {
                    break;
                }
            }
        }
        None => {
            for item in reader.scan(CF_MESSAGES, &[], None)? {
                let (_, value) = item?;
                let record =
                    relay_types::decode(&value).map_err(StoreError::corrupt(CF_MESSAGES))?;
                if !keep(record) {
                    break;
                }
            }
        }
    }
    Ok(out)
}

/// The state as `relay_queue::apply` sees it: the live database, which
/// holds every earlier entry's batch (apply writes one batch per entry).
pub(crate) struct LiveView<'a> {
    reader: Reader<'a>,
}

impl<'a> LiveView<'a> {
    pub(crate) fn new(store: &'a Store) -> Self {
        LiveView {
            reader: store.live(),
        }
    }
}

impl QueueRead for LiveView<'_> {
    type Error = StoreError;

    fn message(&self, id: &MessageId) -> Result<Option<MessageRecord>, StoreError> {
        message(&self.reader, id)
    }

    fn select(&self, filter: &MessageFilter) -> Result<Vec<MessageRecord>, StoreError> {
        select(&self.reader, filter, usize::MAX)
    }

    fn route(&self, domain: &str) -> Result<Option<Route>, StoreError> {
        self.reader.get(CF_ROUTES, domain.as_bytes())
    }

    fn finished(&self, id: &MessageId) -> Result<bool, StoreError> {
        Ok(self.reader.get_raw(CF_FINISHED, id.as_bytes())?.is_some())
    }
}

#[cfg(test)]
mod dangling_index_tests {
    //! An index key without its record (damage, or a bug elsewhere) is
    //! skipped and counted; the scan still returns every other message.

    use bytes::Bytes;
    use openraft::{Entry, EntryPayload};
    use relay_types::{
        Command, Enqueue, Envelope, MessageFilter, MessageId, MessageInfo, Recipient, UnixMillis,
    };
    use rocksdb::WriteBatch;

    use crate::db::{CF_DUE, CF_OWNER, due_key, owner_key};

    const OWNER: u64 = 1;

    fn enqueue(n: u8) -> Command {
        let body = Bytes::from(format!("Subject: m{n}\r\n\r\nbody {n}\r\n"));
        Command::Enqueue(Box::new(Enqueue {
            id: MessageId([n; 16]),
            received_at: UnixMillis(1_000 + n as u64),
            accepted_by: OWNER,
            owner: OWNER,
            envelope: Envelope {
                reverse_path: "s@sender.test".into(),
                recipients: vec![Recipient::new("r@example.test".to_string())],
                ..Default::default()
            },
            info: MessageInfo::default(),
            checksum: relay_queue::body_checksum(&body),
            expires_at: UnixMillis(10_000_000),
            body,
        }))
    }

    #[test]
    fn a_dangling_index_key_is_skipped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let (_log, sm) = crate::open(dir.path()).unwrap();
        for n in 1..=3u8 {
            sm.apply_entry(Entry {
                log_id: openraft::testing::log_id(1, 1, n as u64),
                payload: EntryPayload::Normal(enqueue(n)),
            })
            .unwrap();
        }
        // Index keys of a message that has no record, due before the others.
        let ghost = MessageId([0; 16]);
        let mut batch = WriteBatch::default();
        batch.put_cf(
            sm.store.cf(CF_DUE).unwrap(),
            due_key(OWNER, UnixMillis(1), &ghost),
            b"",
        );
        batch.put_cf(
            sm.store.cf(CF_OWNER).unwrap(),
            owner_key(OWNER, &ghost),
            b"",
        );
        sm.store.write(batch).unwrap();

        let due = sm.due(OWNER, UnixMillis(u64::MAX), 10).unwrap();
        let ids: Vec<MessageId> = due.iter().map(|r| r.id).collect();
        assert_eq!(
            ids,
            vec![MessageId([1; 16]), MessageId([2; 16]), MessageId([3; 16])]
        );
        // The limit counts messages returned, not keys walked.
        assert_eq!(sm.due(OWNER, UnixMillis(u64::MAX), 1).unwrap().len(), 1);

        let listed = sm
            .list(
                &MessageFilter {
                    owner: Some(OWNER),
                    ..Default::default()
                },
                10,
            )
            .unwrap();
        assert_eq!(listed.len(), 3);
    }
}
