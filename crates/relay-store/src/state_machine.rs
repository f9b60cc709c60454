//! `StateMachine`: openraft's `RaftStateMachine` over the state column
//! families, driven by the pure `relay_queue::apply`.
//!
//! Each committed entry becomes one RocksDB `WriteBatch`: the entry's
//! changes (records, bodies, index keys, routes, traces, counts) plus the
//! new last-applied log id (and membership, for membership entries). The
//! batch is written before the next entry is applied, so `apply` always
//! reads the state as of just before its entry.
//!
//! The batches are not synced: see `LogStore::purge` for why that is safe
//! (they share the WAL with the synced log, and purge syncs first).

use std::collections::BTreeSet;
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use openraft::storage::RaftStateMachine;
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, Snapshot, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use relay_queue::Change;
use relay_types::{CommandResult, MessageId, MessageRecord, MessageState, NodeId, QueueCounts};
use rocksdb::WriteBatch;
use tokio::sync::watch;

use crate::TypeConfig;
use crate::db::{
    CF_BODIES, CF_DUE, CF_FINISHED, CF_MESSAGES, CF_OWNER, CF_ROUTES, CF_SM_META, CF_TRACES,
    KEY_COUNTS, KEY_DRAINED, KEY_LAST_APPLIED, KEY_LAST_MEMBERSHIP, Store, due_key, owner_key,
    trace_key,
};
use crate::error::{StoreError, read_sm, read_snapshot, write_snapshot};
use crate::queries::LiveView;
use crate::snapshot::{self, SnapshotBuilder};
use crate::snapshot_file::SnapshotFile;

/// Last applied log id and last membership, as openraft asks for them.
type AppliedState = (Option<LogId<u64>>, StoredMembership<u64, BasicNode>);

/// The replicated queue state in the node's RocksDB, plus queries on it.
/// Cheap to clone (two `Arc`s); clones share everything.
#[derive(Clone)]
pub struct StateMachine {
    pub(crate) store: Arc<Store>,
    pub(crate) shared: Arc<Shared>,
}

/// In-memory state shared by clones.
pub(crate) struct Shared {
    /// Mirror of `sm_meta/last_applied`, for cheap reads.
    last_applied: RwLock<Option<LogId<u64>>>,
    /// Last applied index, for waiters.
    applied_tx: watch::Sender<u64>,
    /// Mirror of `sm_meta/drained` (the nodes in maintenance), read on
    /// every SMTP accept and delivery start, so kept in memory.
    drained_tx: watch::Sender<BTreeSet<NodeId>>,
    /// Makes snapshot ids unique within a process.
    pub(crate) snapshot_seq: AtomicU64,
    /// Serialises "make this the current snapshot" between a build that
    /// finishes late and an install, so an older snapshot never replaces a
    /// newer one. Held for a whole install (which is not one batch), so a
    /// build never takes its view in the middle of one, and while the
    /// current snapshot file is opened, so it is not deleted in between.
    pub(crate) snapshot_lock: Mutex<()>,
    /// When a snapshot file last could not be written (see
    /// `snapshot::build_or_keep`); `None` after a build succeeds.
    pub(crate) snapshot_write_failed_at: Mutex<Option<std::time::Instant>>,
    /// Fault injection: while set, writing a new snapshot file fails as on
    /// a full disk (see [`StateMachine::set_snapshot_write_failpoint`]).
    pub(crate) fail_snapshot_writes: std::sync::atomic::AtomicBool,
}

impl fmt::Debug for StateMachine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateMachine")
            .field("path", &self.store.path())
            .field("last_applied", &self.last_applied())
            .finish()
    }
}

impl StateMachine {
    pub(crate) fn new(store: Arc<Store>) -> Result<Self, StoreError> {
        // Before the first read of the state: may finish an interrupted
        // snapshot install.
        snapshot::recover(&store)?;
        let last_applied: Option<LogId<u64>> = store.live().get(CF_SM_META, KEY_LAST_APPLIED)?;
        let (applied_tx, _) = watch::channel(last_applied.map(|l| l.index).unwrap_or(0));
        let (drained_tx, _) = watch::channel(stored_drained(&store)?);
        Ok(StateMachine {
            store,
            shared: Arc::new(Shared {
                last_applied: RwLock::new(last_applied),
                applied_tx,
                drained_tx,
                snapshot_seq: AtomicU64::new(0),
                snapshot_lock: Mutex::new(()),
                snapshot_write_failed_at: Mutex::new(None),
                fail_snapshot_writes: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// Fault injection: while `fail` is true, writing a new snapshot file
    /// fails with "no space left on device" after its rows are written, as
    /// on a full disk. The store keeps its current snapshot meanwhile.
    pub fn set_snapshot_write_failpoint(&self, fail: bool) {
        self.shared
            .fail_snapshot_writes
            .store(fail, std::sync::atomic::Ordering::SeqCst);
    }

    /// The log id of the last entry applied (`None` before the first).
    pub fn last_applied(&self) -> Option<LogId<u64>> {
        *self
            .shared
            .last_applied
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A receiver that turns `true` once a WAL sync of this store failed:
    /// from then on nothing is acknowledged as durable, and the node must
    /// stop and restart (see `failpoint.rs`).
    pub fn subscribe_poisoned(&self) -> watch::Receiver<bool> {
        self.store.sync.subscribe()
    }

    /// A receiver of the last applied index; it changes after every applied
    /// entry or installed snapshot (the delivery loop and tests wait on it).
    pub fn subscribe_applied(&self) -> watch::Receiver<u64> {
        self.shared.applied_tx.subscribe()
    }

    /// The nodes in maintenance (`Command::Drain`), as applied.
    pub fn drained(&self) -> BTreeSet<NodeId> {
        self.shared.drained_tx.borrow().clone()
    }

    /// Whether `node` is drained, as applied (cheap: no copy).
    pub fn is_drained(&self, node: NodeId) -> bool {
        self.shared.drained_tx.borrow().contains(&node)
    }

    /// A receiver of the drained nodes; it changes when a `Drain` entry
    /// or a snapshot changes them.
    pub fn subscribe_drained(&self) -> watch::Receiver<BTreeSet<NodeId>> {
        self.shared.drained_tx.subscribe()
    }

    /// Reads the drained nodes from the store again (after a snapshot
    /// install replaced the state).
    pub(crate) fn reload_drained(&self) -> Result<(), StoreError> {
        let drained = stored_drained(&self.store)?;
        self.shared.drained_tx.send_if_modified(|d| {
            let changed = *d != drained;
            *d = drained;
            changed
        });
        Ok(())
    }

    /// Publishes a new last-applied log id (after its batch is written).
    pub(crate) fn set_applied(&self, log_id: Option<LogId<u64>>) {
        *self
            .shared
            .last_applied
            .write()
            .unwrap_or_else(PoisonError::into_inner) = log_id;
        self.shared
            .applied_tx
            .send_replace(log_id.map(|l| l.index).unwrap_or(0));
    }

    /// Applies one committed entry in one batch.
    pub(crate) fn apply_entry(
        &self,
        entry: Entry<TypeConfig>,
    ) -> Result<CommandResult, StoreError> {
        let log_id = entry.log_id;
        let mut batch = WriteBatch::default();
        let mut drained_now = None;
        let result = match entry.payload {
            EntryPayload::Blank => CommandResult::Applied { affected: 0 },
            EntryPayload::Normal(command) => {
                crate::metrics::applied_entry(match &command {
                    relay_types::Command::Batch(commands) => commands.len(),
                    _ => 1,
                });
                let view = LiveView::new(&self.store);
                let applied = relay_queue::apply(&view, log_id.index, &command)?;
                drained_now = self.write_changes(&mut batch, applied.changes)?;
                applied.result
            }
            EntryPayload::Membership(membership) => {
                let stored = StoredMembership::new(Some(log_id), membership);
                self.store
                    .put(&mut batch, CF_SM_META, KEY_LAST_MEMBERSHIP, &stored)?;
                CommandResult::Applied { affected: 0 }
            }
        };
        self.store
            .put(&mut batch, CF_SM_META, KEY_LAST_APPLIED, &log_id)?;
        self.store.write(batch)?;
        if let Some(drained) = drained_now {
            self.shared.drained_tx.send_replace(drained);
        }
        self.set_applied(Some(log_id));
        Ok(result)
    }

    /// Adds one entry's changes to `batch`, keeping the due and owner
    /// indexes and the counts in step with the records. Returns the new
    /// set of drained nodes if the entry changed it (published once the
    /// batch is written).
    fn write_changes(
        &self,
        batch: &mut WriteBatch,
        changes: Vec<Change>,
    ) -> Result<Option<BTreeSet<NodeId>>, StoreError> {
        let mut drained: Option<BTreeSet<NodeId>> = None;
        let store = &self.store;
        let old_counts: QueueCounts = store
            .live()
            .get(CF_SM_META, KEY_COUNTS)?
            .unwrap_or_default();
        let mut counts = old_counts;
        // Traces of one entry are numbered in order (as `MemQueue` does), so
        // several events of one entry keep their order.
        let mut seq = 0u32;
        for change in changes {
            match change {
                Change::Insert { record, body } => {
                    store.put(batch, CF_MESSAGES, record.id.as_bytes(), &record)?;
                    batch.put_cf(store.cf(CF_BODIES)?, record.id.as_bytes(), &body);
                    self.put_index_keys(batch, &record)?;
                    count(&mut counts, &record, true);
                }
                Change::Update { before, after } => {
                    self.delete_index_keys(batch, &before)?;
                    self.put_index_keys(batch, &after)?;
                    store.put(batch, CF_MESSAGES, after.id.as_bytes(), &after)?;
                    count(&mut counts, &before, false);
                    count(&mut counts, &after, true);
                }
                Change::Remove { record } => {
                    batch.delete_cf(store.cf(CF_MESSAGES)?, record.id.as_bytes());
                    batch.delete_cf(store.cf(CF_BODIES)?, record.id.as_bytes());
                    batch.put_cf(store.cf(CF_FINISHED)?, record.id.as_bytes(), []);
                    self.delete_index_keys(batch, &record)?;
                    count(&mut counts, &record, false);
                }
                Change::PruneHistory { before } => {
                    // Ids sort by acceptance time, so both prunes are one
                    // range each; traces stop at the oldest queued message
                    // (read before this entry's own changes, which cannot
                    // add an older one).
                    let oldest_queued = store
                        .live()
                        .scan(CF_MESSAGES, &[], None)?
                        .next()
                        .transpose()?
                        .and_then(|(key, _)| MessageId::from_slice(&key));
                    let traces_end = oldest_queued.map_or(before, |oldest| oldest.min(before));
                    batch.delete_range_cf(
                        store.cf(CF_TRACES)?,
                        &[][..],
                        &traces_end.as_bytes()[..],
                    );
                    batch.delete_range_cf(store.cf(CF_FINISHED)?, &[][..], &before.as_bytes()[..]);
                }
                Change::PutRoute { domain, route } => {
                    store.put(batch, CF_ROUTES, domain.as_bytes(), &route)?;
                }
                Change::RemoveRoute { domain } => {
                    batch.delete_cf(store.cf(CF_ROUTES)?, domain.as_bytes());
                }
                Change::Trace { id, event } => {
                    let key = trace_key(&id, event.index, seq);
                    store.put(batch, CF_TRACES, &key, &event)?;
                    seq += 1;
                }
                Change::SetDrained { node, drained: on } => {
                    let set = match &mut drained {
                        Some(set) => set,
                        None => drained.insert(stored_drained(store)?),
                    };
                    if on {
                        set.insert(node);
                    } else {
                        set.remove(&node);
                    }
                }
            }
        }
        if counts != old_counts {
            store.put(batch, CF_SM_META, KEY_COUNTS, &counts)?;
        }
        if let Some(set) = &drained {
            if set.is_empty() {
                batch.delete_cf(store.cf(CF_SM_META)?, KEY_DRAINED);
            } else {
                let list: Vec<NodeId> = set.iter().copied().collect();
                store.put(batch, CF_SM_META, KEY_DRAINED, &list)?;
            }
        }
        Ok(drained)
    }

    fn put_index_keys(
        &self,
        batch: &mut WriteBatch,
        record: &MessageRecord,
    ) -> Result<(), StoreError> {
        batch.put_cf(
            self.store.cf(CF_OWNER)?,
            owner_key(record.owner, &record.id),
            b"",
        );
        if record.held.is_none() {
            batch.put_cf(
                self.store.cf(CF_DUE)?,
                due_key(record.owner, record.next_attempt_at, &record.id),
                b"",
            );
        }
        Ok(())
    }

    /// Index keys go with a plain `delete`. `single_delete` would drop its
    /// tombstone sooner, but RocksDB defines it only for a key put once and
    /// never touched by another kind of delete, and a snapshot install
    /// range-deletes these column families and puts the same keys again:
    /// mixing the two is undefined (a deleted key could come back). The
    /// indexes' small memtables (see `db.rs`) keep the tombstones that
    /// due scans step over few.
    fn delete_index_keys(
        &self,
        batch: &mut WriteBatch,
        record: &MessageRecord,
    ) -> Result<(), StoreError> {
        batch.delete_cf(
            self.store.cf(CF_OWNER)?,
            owner_key(record.owner, &record.id),
        );
        if record.held.is_none() {
            batch.delete_cf(
                self.store.cf(CF_DUE)?,
                due_key(record.owner, record.next_attempt_at, &record.id),
            );
        }
        Ok(())
    }

    /// Last applied log id and membership, as stored.
    pub(crate) fn stored_applied_state(&self) -> Result<AppliedState, StoreError> {
        let reader = self.store.live();
        let applied = reader.get(CF_SM_META, KEY_LAST_APPLIED)?;
        let membership = reader
            .get(CF_SM_META, KEY_LAST_MEMBERSHIP)?
            .unwrap_or_default();
        Ok((applied, membership))
    }
}

/// The drained nodes as stored (none when the key is absent).
fn stored_drained(store: &Store) -> Result<BTreeSet<NodeId>, StoreError> {
    let list: Option<Vec<NodeId>> = store.live().get(CF_SM_META, KEY_DRAINED)?;
    Ok(list.unwrap_or_default().into_iter().collect())
}

/// Adds (`add`) or removes a message from the counts of its state.
fn count(counts: &mut QueueCounts, record: &MessageRecord, add: bool) {
    let slot = match record.state() {
        MessageState::Queued => &mut counts.queued,
        MessageState::Deferred => &mut counts.deferred,
        MessageState::Held => &mut counts.held,
    };
    *slot = if add {
        *slot + 1
    } else {
        slot.saturating_sub(1)
    };
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<AppliedState, StorageError<u64>> {
        self.stored_applied_state().map_err(read_sm)
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut results = Vec::new();
        for entry in entries {
            let log_id = entry.log_id;
            let result = self
                .apply_entry(entry)
                .map_err(|e| StorageError::from(StorageIOError::apply(log_id, &e)))?;
            results.push(result);
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder::new(self.clone())
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotFile>, StorageError<u64>> {
        snapshot::begin_receiving(&self.store)
            .map(Box::new)
            .map_err(write_snapshot)
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<SnapshotFile>,
    ) -> Result<(), StorageError<u64>> {
        let failed = |e: StoreError| -> StorageError<u64> {
            StorageIOError::write_snapshot(Some(meta.signature()), &e).into()
        };
        let path = snapshot.path().to_path_buf();
        let (file, path, temporary) = snapshot
            .take()
            .await
            .map_err(|e| failed(crate::snapshot_file::io_error(&path, "flush")(e)))?;
        let sm = self.clone();
        let meta_owned = meta.clone();
        tokio::task::spawn_blocking(move || {
            snapshot::install(&sm, &meta_owned, file, path, temporary)
        })
        .await
        .map_err(|e| write_snapshot(StoreError::Task(e.to_string())))?
        .map_err(failed)
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        snapshot::current(self).map_err(read_snapshot)
    }
}
