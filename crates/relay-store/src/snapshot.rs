//! Snapshots: build from one RocksDB snapshot of the state column families,
//! install by replacing them all in one synced batch, and keep the current
//! one (meta + data) in the `snapshot` column family so it survives restart.
//!
//! Format: `relay_types::encode` of [`SnapshotData`]: a format number, the
//! last applied log id and membership, and every row (key, value) of every
//! state column family (`sm_meta`, messages, bodies, both indexes, routes,
//! traces). Copying the derived indexes and counts keeps install a plain
//! copy, with no decoding of records.
//!
//! Known limit: a snapshot is built, sent and installed as one `Vec<u8>` in
//! memory (openraft 0.9's `Cursor<Vec<u8>>` snapshot data), so memory use is
//! about twice the state size. Fine for queues of thousands of messages; a
//! million-message queue with bodies needs streaming snapshots (RocksDB
//! checkpoints or chunked files), which is future work.

use std::fmt;
use std::io::Cursor;
use std::sync::PoisonError;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use openraft::{
    BasicNode, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError, StoredMembership,
};
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use crate::TypeConfig;
use crate::db::{
    CF_SM_META, CF_SNAPSHOT, KEY_LAST_APPLIED, KEY_LAST_MEMBERSHIP, KEY_SNAPSHOT_DATA,
    KEY_SNAPSHOT_META, STATE_CFS, Store,
};
use crate::error::{StoreError, write_snapshot};
use crate::state_machine::StateMachine;

/// Bumped when the layout of the state column families changes.
const FORMAT: u32 = 1;

/// The serialised snapshot.
#[derive(Serialize, Deserialize)]
struct SnapshotData {
    format: u32,
    last_applied: Option<LogId<u64>>,
    last_membership: StoredMembership<u64, BasicNode>,
    tables: Vec<Table>,
}

/// Every row of one column family, in key order.
#[derive(Serialize, Deserialize)]
struct Table {
    cf: String,
    rows: Vec<(Bytes, Bytes)>,
}

/// openraft's snapshot builder: a handle on the state machine.
pub struct SnapshotBuilder {
    sm: StateMachine,
}

impl fmt::Debug for SnapshotBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotBuilder")
            .field("sm", &self.sm)
            .finish()
    }
}

impl SnapshotBuilder {
    pub(crate) fn new(sm: StateMachine) -> Self {
        SnapshotBuilder { sm }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        let sm = self.sm.clone();
        tokio::task::spawn_blocking(move || build(&sm))
            .await
            .map_err(|e| write_snapshot(StoreError::Task(e.to_string())))?
            .map_err(write_snapshot)
    }
}

/// Serialises the state as of one RocksDB snapshot and makes it the current
/// snapshot (unless a newer one was installed meanwhile).
pub(crate) fn build(sm: &StateMachine) -> Result<Snapshot<TypeConfig>, StoreError> {
    let store = &sm.store;
    let payload = read_state(store)?;
    let last_applied = payload.last_applied;
    let last_membership = payload.last_membership.clone();
    let data = relay_types::encode(&payload);
    drop(payload);
    let seq = sm.shared.snapshot_seq.fetch_add(1, Ordering::SeqCst);
    let at = match last_applied {
        Some(l) => l.to_string(),
        None => "empty".to_string(),
    };
    let meta = SnapshotMeta {
        last_log_id: last_applied,
        last_membership,
        snapshot_id: format!("{at}-{}-{seq}", relay_types::UnixMillis::now().0),
    };

    let _guard = sm
        .shared
        .snapshot_lock
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let current: Option<SnapshotMeta<u64, BasicNode>> =
        store.live().get(CF_SNAPSHOT, KEY_SNAPSHOT_META)?;
    if current.is_none_or(|c| c.last_log_id <= meta.last_log_id) {
        let mut batch = WriteBatch::default();
        store.put(&mut batch, CF_SNAPSHOT, KEY_SNAPSHOT_META, &meta)?;
        batch.put_cf(store.cf(CF_SNAPSHOT)?, KEY_SNAPSHOT_DATA, &data);
        // Not synced: a snapshot lost in a crash is rebuilt from the log,
        // which is only purged after a WAL sync (see `LogStore::purge`).
        store.write(batch)?;
    }
    Ok(Snapshot {
        meta,
        snapshot: Box::new(Cursor::new(data)),
    })
}

/// Every row of the state column families, read from one RocksDB snapshot
/// (released on return).
fn read_state(store: &Store) -> Result<SnapshotData, StoreError> {
    let db_snapshot = store.snapshot();
    let reader = store.at(&db_snapshot);
    let last_applied: Option<LogId<u64>> = reader.get(CF_SM_META, KEY_LAST_APPLIED)?;
    let last_membership: StoredMembership<u64, BasicNode> = reader
        .get(CF_SM_META, KEY_LAST_MEMBERSHIP)?
        .unwrap_or_default();
    let mut tables = Vec::with_capacity(STATE_CFS.len());
    for cf in STATE_CFS {
        let mut rows = Vec::new();
        for item in reader.scan(cf, &[], None)? {
            let (key, value) = item?;
            rows.push((Bytes::from(key.into_vec()), Bytes::from(value.into_vec())));
        }
        tables.push(Table {
            cf: cf.to_string(),
            rows,
        });
    }
    Ok(SnapshotData {
        format: FORMAT,
        last_applied,
        last_membership,
        tables,
    })
}

/// Replaces the whole replicated state with the snapshot's, in one batch,
/// and syncs it; the snapshot becomes the current one.
pub(crate) fn install(
    sm: &StateMachine,
    meta: &SnapshotMeta<u64, BasicNode>,
    data: Vec<u8>,
) -> Result<(), StoreError> {
    let payload: SnapshotData =
        relay_types::decode(&data).map_err(StoreError::corrupt("snapshot data"))?;
    if payload.format != FORMAT {
        return Err(StoreError::Snapshot(format!(
            "format {} (this build reads format {FORMAT})",
            payload.format
        )));
    }
    if payload.last_applied != meta.last_log_id {
        return Err(StoreError::Snapshot(format!(
            "data is at {:?} but its meta says {:?}",
            payload.last_applied, meta.last_log_id
        )));
    }
    let store = &sm.store;
    let _guard = sm
        .shared
        .snapshot_lock
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let mut batch = WriteBatch::default();
    for cf in STATE_CFS {
        store.delete_all(&mut batch, cf)?;
    }
    for table in payload.tables {
        let Some(&cf) = STATE_CFS.iter().find(|cf| **cf == table.cf) else {
            return Err(StoreError::Snapshot(format!(
                "unknown table {:?}",
                table.cf
            )));
        };
        let handle = store.cf(cf)?;
        for (key, value) in table.rows {
            batch.put_cf(handle, key, value);
        }
    }
    // The meta is authoritative for what openraft believes was installed.
    let sm_meta = store.cf(CF_SM_META)?;
    match &meta.last_log_id {
        Some(log_id) => store.put(&mut batch, CF_SM_META, KEY_LAST_APPLIED, log_id)?,
        None => batch.delete_cf(sm_meta, KEY_LAST_APPLIED),
    }
    store.put(
        &mut batch,
        CF_SM_META,
        KEY_LAST_MEMBERSHIP,
        &meta.last_membership,
    )?;
    store.put(&mut batch, CF_SNAPSHOT, KEY_SNAPSHOT_META, meta)?;
    batch.put_cf(store.cf(CF_SNAPSHOT)?, KEY_SNAPSHOT_DATA, &data);
    store.write_synced(batch, crate::metrics::SyncOp::SnapshotInstall)?;
    sm.set_applied(meta.last_log_id);
    tracing::info!(last_log_id = ?meta.last_log_id, bytes = data.len(), "installed snapshot");
    Ok(())
}

/// The current snapshot, if one was built or installed.
pub(crate) fn current(store: &Store) -> Result<Option<Snapshot<TypeConfig>>, StoreError> {
    let db_snapshot = store.snapshot();
    let reader = store.at(&db_snapshot);
    let Some(meta) = reader.get::<SnapshotMeta<u64, BasicNode>>(CF_SNAPSHOT, KEY_SNAPSHOT_META)?
    else {
        return Ok(None);
    };
    let data = reader
        .get_raw(CF_SNAPSHOT, KEY_SNAPSHOT_DATA)?
        .ok_or_else(|| StoreError::Inconsistent("snapshot meta without data".into()))?;
    Ok(Some(Snapshot {
        meta,
        snapshot: Box::new(Cursor::new(data)),
    }))
}
