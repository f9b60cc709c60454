//! Snapshots as files: built by streaming one RocksDB snapshot of the state
//! column families into a file, sent and received by openraft chunk by
//! chunk from and into files, installed by streaming the rows back in
//! bounded write batches. Memory use is a few MiB (read/write buffers, one
//! write batch, one row) whatever the size of the state.
//!
//! # On disk
//!
//! The files live in `snapshots/` inside the store directory (RocksDB's own
//! directory: RocksDB only touches names it recognises, such as `CURRENT`,
//! `MANIFEST-*`, `*.sst`, `*.log`, `LOG*`, `OPTIONS-*`, so it ignores this
//! one). An operator sees:
//! - `snapshots/<index>-<millis>-<seq>.snap`: the current snapshot (one,
//!   except for a moment while a newer one replaces it); `<index>` is its
//!   last log index, zero-padded to 20 digits.
//! - `*.tmp`: a snapshot being built (`<index>-...tmp`) or received from the
//!   leader (`receiving-...tmp`). Deleted when abandoned, and on open.
//!
//! Every other file in `snapshots/` is deleted on open. The `snapshot`
//! column family names the current file and holds its meta, so the current
//! snapshot survives restart (it is served to lagging followers).
//!
//! # Format
//!
//! Length-prefixed rows of every state column family, in key order, with a
//! versioned header and a SHA-256 trailer: see `snapshot_file.rs`. Copying
//! the derived indexes and counts keeps install a plain copy, with no
//! decoding of records.
//!
//! # Build
//!
//! One RocksDB snapshot (taken while no install runs, so never half of an
//! install) is streamed into `<stem>.tmp`, which is fsynced. Then, under
//! `snapshot_lock` and only if no newer snapshot is current, it is renamed to
//! `<stem>.snap`, the directory fsynced, the `snapshot` column family
//! pointed at it (synced: the old file is deleted right after), and the
//! superseded file deleted.
//!
//! # Install, and why a crash cannot leave a mix
//!
//! 1. The received file is fsynced and verified (structure and checksum)
//!    before anything changes; a bad file is refused with its path and the
//!    problem, and deleted. Then it is renamed to `<stem>.snap` and the
//!    directory fsynced.
//! 2. A marker `install` = (file, meta) is written to the `snapshot` column
//!    family and the WAL synced. Until then the state is untouched.
//! 3. The state column families are emptied (range deletes) and the rows
//!    written in batches of about [`BATCH_BYTES`], not synced.
//! 4. One last batch writes `last_applied`, the membership, the new current
//!    snapshot (meta + file) and deletes the marker; the WAL is synced.
//!    Then the superseded file is deleted.
//!
//! RocksDB recovers a prefix of the WAL (point-in-time recovery), so after a
//! crash either the marker is absent (a crash before 2: old state, intact;
//! or after 4: new state, complete) or it is present, and then opening the
//! store redoes steps 3–4 from the marked file, which was fsynced and
//! verified before the marker was written, before anything reads the state.
//! The redo is idempotent, so a crash during it is handled the same way.
//!
//! While an install runs (it holds `snapshot_lock`), queries on the live
//! state may see part of the new state: the old rows are gone, not all new
//! rows are there yet, and `last_applied` still names the old index.
//! Snapshot builds wait for the install to end before they take their view.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{MutexGuard, PoisonError};
use std::{fmt, mem};

use bytes::Bytes;
use openraft::{
    BasicNode, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError, StoredMembership,
};
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use crate::TypeConfig;
use crate::db::{
    CF_SM_META, CF_SNAPSHOT, KEY_LAST_APPLIED, KEY_LAST_MEMBERSHIP, KEY_SNAPSHOT_DATA,
    KEY_SNAPSHOT_FILE, KEY_SNAPSHOT_INSTALL, KEY_SNAPSHOT_META, STATE_CFS, Store,
};
use crate::error::{StoreError, write_snapshot};
use crate::metrics::SyncOp;
use crate::snapshot_file::{self, BUFFER, Head, SnapshotFile, Writer, io_error};
use crate::state_machine::StateMachine;

/// The snapshot directory, inside the store directory.
const DIR: &str = "snapshots";

/// Install writes the rows in batches of about this many bytes (one row
/// more at most).
pub(crate) const BATCH_BYTES: usize = 4 << 20;

/// Makes file names unique within a process (with the clock, across runs).
static NAME_SEQ: AtomicU64 = AtomicU64::new(0);

type Meta = SnapshotMeta<u64, BasicNode>;

/// Name prefix of a file being received (or copied in for an install).
const RECEIVING_PREFIX: &str = "receiving-";

/// "An install from this file, to this meta, has begun": present only
/// between steps 2 and 4 of an install.
#[derive(Serialize, Deserialize)]
struct InstallMarker {
    file: String,
    meta: Meta,
}

/// The last applied log id that a restart would come back with if the WAL
/// were synced now: the stored `last_applied`, or the target of an install
/// whose marker is written (opening the store finishes that install).
pub(crate) fn recoverable_applied(store: &Store) -> Result<Option<LogId<u64>>, StoreError> {
    let reader = store.live();
    let applied: Option<LogId<u64>> = reader.get(CF_SM_META, KEY_LAST_APPLIED)?;
    let installing = reader
        .get::<InstallMarker>(CF_SNAPSHOT, KEY_SNAPSHOT_INSTALL)?
        .and_then(|m| m.meta.last_log_id);
    Ok(applied.max(installing))
}

/// Whether a snapshot is on its way into the state machine: a received
/// file not yet installed (openraft creates it at the first chunk), or an
/// install running. From the first chunk to the end of the install, one
/// or the other holds without a gap (the install counts itself before it
/// renames the received file).
pub(crate) fn install_pending(store: &Store) -> bool {
    if store.installs_running.load(Ordering::SeqCst) > 0 {
        return true;
    }
    let Ok(entries) = std::fs::read_dir(dir(store)) else {
        return false;
    };
    entries.flatten().any(|e| {
        e.file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(RECEIVING_PREFIX))
    })
}

/// Counts one running install in `Store::installs_running` while alive.
struct RunningInstall<'a>(&'a Store);

impl<'a> RunningInstall<'a> {
    fn start(store: &'a Store) -> Self {
        store.installs_running.fetch_add(1, Ordering::SeqCst);
        RunningInstall(store)
    }
}

impl Drop for RunningInstall<'_> {
    fn drop(&mut self) {
        self.0.installs_running.fetch_sub(1, Ordering::SeqCst);
    }
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
        tokio::task::spawn_blocking(move || build_or_keep(&sm))
            .await
            .map_err(|e| write_snapshot(StoreError::Task(e.to_string())))?
            .map_err(write_snapshot)
    }
}

/// How long after a snapshot file could not be written the next build is
/// tried; until then a build returns the current snapshot at once.
pub(crate) const RETRY_WRITE_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

/// [`build`], except that a snapshot file that cannot be written (a full
/// disk, an I/O error) keeps the current snapshot instead of failing: the
/// current snapshot is returned, and openraft, which only moves forward,
/// keeps it and does not purge the log past it. The next build is tried
/// after [`RETRY_WRITE_AFTER`].
///
/// A build needs room for a second copy of the state beside the current
/// one; on a small disk that is what runs out first. openraft treats a
/// failed build as fatal and stops the node, which then fails the same way
/// at every restart. Nothing has changed when the file fails (a `.tmp`
/// file, deleted, or at most an unreferenced `.snap` deleted on open), so
/// keeping the current snapshot is safe; the log grows until a build
/// succeeds, and the `RelaySnapshotsStalled` alert says so. With no
/// current snapshot there is nothing to keep, and the error stands.
pub(crate) fn build_or_keep(sm: &StateMachine) -> Result<Snapshot<TypeConfig>, StoreError> {
    let failed_at = *sm
        .shared
        .snapshot_write_failed_at
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if failed_at.is_some_and(|at| at.elapsed() < RETRY_WRITE_AFTER)
        && let Some(current) = current(sm)?
    {
        return Ok(current);
    }
    let result = build(sm);
    let mut failed_at = sm
        .shared
        .snapshot_write_failed_at
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    match result {
        Ok(built) => {
            *failed_at = None;
            Ok(built)
        }
        Err(error @ StoreError::SnapshotIo { .. }) => {
            *failed_at = Some(std::time::Instant::now());
            drop(failed_at);
            match current(sm)? {
                Some(current) => {
                    tracing::error!(
                        %error,
                        kept = ?current.meta.last_log_id,
                        retry_after_s = RETRY_WRITE_AFTER.as_secs(),
                        "cannot write a new snapshot; keeping the current one, the log is not purged past it"
                    );
                    Ok(current)
                }
                None => Err(error),
            }
        }
        Err(other) => Err(other),
    }
}

/// The snapshot directory of `store`.
pub(crate) fn dir(store: &Store) -> PathBuf {
    store.path().join(DIR)
}

fn lock(sm: &StateMachine) -> MutexGuard<'_, ()> {
    sm.shared
        .snapshot_lock
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// Deletes a file when dropped, unless disarmed.
struct RemoveOnDrop(Option<PathBuf>);

impl RemoveOnDrop {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take()
            && let Err(e) = std::fs::remove_file(&path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot delete a snapshot file");
        }
    }
}

fn millis() -> u64 {
    relay_types::UnixMillis::now().0
}

/// A stem `<index>-<millis>-<seq>` free as both `.tmp` and `.snap`.
fn new_stem(dir: &Path, index: u64) -> String {
    loop {
        let seq = NAME_SEQ.fetch_add(1, Ordering::Relaxed);
        let stem = format!("{index:020}-{}-{seq}", millis());
        if !dir.join(format!("{stem}.snap")).exists() && !dir.join(format!("{stem}.tmp")).exists() {
            return stem;
        }
    }
}

/// Creates `name` in `dir` for reading and writing; fails if it exists.
fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
}

/// Makes renames and deletes in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir, "fsync directory"))
}

fn remove_superseded(dir: &Path, old: Option<String>, new: &str) {
    if let Some(old) = old
        && old != new
    {
        drop(RemoveOnDrop(Some(dir.join(old))));
    }
}

/// The current snapshot's file name, as stored.
fn current_file(store: &Store) -> Result<Option<String>, StoreError> {
    store
        .live()
        .get_raw(CF_SNAPSHOT, KEY_SNAPSHOT_FILE)?
        .map(|raw| {
            String::from_utf8(raw)
                .map_err(|_| StoreError::Inconsistent("snapshot file name is not UTF-8".into()))
        })
        .transpose()
}

/// Size in bytes of the current snapshot file (the serialized replicated
/// state), 0 when there is none or it cannot be read.
pub(crate) fn current_file_len(store: &Store) -> u64 {
    match current_file(store) {
        Ok(Some(name)) => std::fs::metadata(dir(store).join(name)).map_or(0, |m| m.len()),
        _ => 0,
    }
}

/// Adds "the current snapshot is `meta` in `file`" to `batch`.
fn point_at(
    store: &Store,
    batch: &mut WriteBatch,
    meta: &Meta,
    file: &str,
) -> Result<(), StoreError> {
    store.put(batch, CF_SNAPSHOT, KEY_SNAPSHOT_META, meta)?;
    batch.put_cf(store.cf(CF_SNAPSHOT)?, KEY_SNAPSHOT_FILE, file.as_bytes());
    Ok(())
}

/// Streams the state as of one RocksDB snapshot into a new file and makes
/// it the current snapshot (unless a newer one became current meanwhile).
pub(crate) fn build(sm: &StateMachine) -> Result<Snapshot<TypeConfig>, StoreError> {
    let store = &sm.store;
    let dir = dir(store);
    let db_snapshot = {
        // Not in the middle of an install (see the module doc).
        let _guard = lock(sm);
        store.snapshot()
    };
    let reader = store.at(&db_snapshot);
    let head = Head {
        last_applied: reader.get(CF_SM_META, KEY_LAST_APPLIED)?,
        last_membership: reader
            .get(CF_SM_META, KEY_LAST_MEMBERSHIP)?
            .unwrap_or_default(),
    };
    let index = head.last_applied.map_or(0, |l| l.index);
    let stem = new_stem(&dir, index);
    let tmp = dir.join(format!("{stem}.tmp"));
    let file = create_new(&tmp).map_err(io_error(&tmp, "create"))?;
    let mut tmp_guard = RemoveOnDrop(Some(tmp.clone()));
    let mut writer = Writer::new(file, &tmp, &head)?;
    for cf in STATE_CFS {
        writer.table(cf)?;
        for item in reader.scan_uncached(cf)? {
            let (key, value) = item?;
            writer.row(&key, &value)?;
        }
    }
    // Release the RocksDB snapshot (it pins old versions) before fsync.
    drop(db_snapshot);
    if sm.shared.fail_snapshot_writes.load(Ordering::SeqCst) {
        return Err(io_error(&tmp, "write")(io::Error::from(
            io::ErrorKind::StorageFull,
        )));
    }
    let (mut file, rows, bytes) = writer.finish()?;
    file.seek(SeekFrom::Start(0))
        .map_err(io_error(&tmp, "seek"))?;

    let seq = sm.shared.snapshot_seq.fetch_add(1, Ordering::SeqCst);
    let at = match head.last_applied {
        Some(l) => l.to_string(),
        None => "empty".to_string(),
    };
    let meta = SnapshotMeta {
        last_log_id: head.last_applied,
        last_membership: head.last_membership,
        snapshot_id: format!("{at}-{}-{seq}", millis()),
    };

    let name = format!("{stem}.snap");
    let path = dir.join(&name);
    let _guard = lock(sm);
    let current: Option<Meta> = store.live().get(CF_SNAPSHOT, KEY_SNAPSHOT_META)?;
    let returned_path = if current.is_none_or(|c| c.last_log_id <= meta.last_log_id) {
        std::fs::rename(&tmp, &path).map_err(io_error(&tmp, "rename"))?;
        tmp_guard.disarm();
        sync_dir(&dir)?;
        let old = current_file(store)?;
        let mut batch = WriteBatch::default();
        point_at(store, &mut batch, &meta, &name)?;
        // Synced before the old file goes: the pointer must never name a
        // deleted file.
        store.write_synced(batch, SyncOp::SnapshotBuild)?;
        remove_superseded(&dir, old, &name);
        tracing::info!(last_log_id = ?meta.last_log_id, rows, bytes, file = %path.display(), "built snapshot");
        path
    } else {
        // A newer snapshot was installed meanwhile: this one is returned (the
        // file stays readable through the open handle) but not kept.
        tracing::info!(last_log_id = ?meta.last_log_id, "built snapshot is older than the current one; not kept");
        tmp
    };
    Ok(Snapshot {
        meta,
        snapshot: Box::new(SnapshotFile::new(
            tokio::fs::File::from_std(file),
            returned_path,
            false,
        )),
    })
}

/// A new, empty file for openraft to write a received snapshot into;
/// deleted if dropped before it is installed.
pub(crate) fn begin_receiving(store: &Store) -> Result<SnapshotFile, StoreError> {
    let (file, path) = new_receiving(&dir(store))?;
    Ok(SnapshotFile::new(
        tokio::fs::File::from_std(file),
        path,
        true,
    ))
}

fn new_receiving(dir: &Path) -> Result<(File, PathBuf), StoreError> {
    loop {
        let seq = NAME_SEQ.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{RECEIVING_PREFIX}{}-{seq}.tmp", millis()));
        match create_new(&path) {
            Ok(file) => return Ok((file, path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_error(&path, "create")(e)),
        }
    }
}

/// Installs the snapshot in `file` (at `path`; `temporary` if it is a
/// receiving file to delete on failure) and makes it the current one. The
/// file is verified before the state is touched; see the module doc for
/// the steps and why a crash cannot leave a mix of two states.
pub(crate) fn install(
    sm: &StateMachine,
    meta: &Meta,
    file: File,
    path: PathBuf,
    temporary: bool,
) -> Result<(), StoreError> {
    let store = &sm.store;
    // Before the received file is renamed: `install_pending` holds
    // throughout (see `LogStore::purge`).
    let _running = RunningInstall::start(store);
    let dir = dir(store);
    let mut incoming_guard = RemoveOnDrop(temporary.then(|| path.clone()));
    let (mut file, path, mut guard) = if temporary && path.parent() == Some(dir.as_path()) {
        incoming_guard.disarm();
        (file, path.clone(), RemoveOnDrop(Some(path)))
    } else {
        // Not a file this store received (openraft's storage suite and the
        // tests hand over another store's file): copy it in first.
        let (copy, copy_path) = new_receiving(&dir)?;
        let guard = RemoveOnDrop(Some(copy_path.clone()));
        let mut source = file;
        source
            .seek(SeekFrom::Start(0))
            .map_err(io_error(&path, "seek"))?;
        let mut out = BufWriter::with_capacity(BUFFER, copy);
        io::copy(&mut BufReader::with_capacity(BUFFER, source), &mut out)
            .map_err(io_error(&copy_path, "copy into"))?;
        let copy = out
            .into_inner()
            .map_err(|e| io_error(&copy_path, "write")(e.into_error()))?;
        (copy, copy_path, guard)
    };
    file.sync_all().map_err(io_error(&path, "fsync"))?;
    let verified = snapshot_file::verify(&mut file, &path)?;
    if verified.head.last_applied != meta.last_log_id {
        return Err(StoreError::SnapshotFile {
            path,
            problem: format!(
                "data is at {:?} but its meta says {:?}",
                verified.head.last_applied, meta.last_log_id
            ),
        });
    }
    let stem = new_stem(&dir, meta.last_log_id.map_or(0, |l| l.index));
    let name = format!("{stem}.snap");
    let final_path = dir.join(&name);
    std::fs::rename(&path, &final_path).map_err(io_error(&path, "rename"))?;
    guard.0 = Some(final_path.clone());
    sync_dir(&dir)?;

    let _lock = lock(sm);
    let old = current_file(store)?;
    let mut batch = WriteBatch::default();
    store.put(
        &mut batch,
        CF_SNAPSHOT,
        KEY_SNAPSHOT_INSTALL,
        &InstallMarker {
            file: name.clone(),
            meta: meta.clone(),
        },
    )?;
    // From here on the file may be the marker's (even a failed sync may have
    // reached the disk): never deleted on an error, the next open redoes the
    // install from it, or sweeps it if the marker did not persist.
    guard.disarm();
    store.write_synced(batch, SyncOp::SnapshotInstall)?;
    replace_state(store, &mut file, &final_path, meta)?;
    remove_superseded(&dir, old, &name);
    sm.reload_drained()?;
    sm.set_applied(meta.last_log_id);
    tracing::info!(
        last_log_id = ?meta.last_log_id,
        rows = verified.rows,
        bytes = verified.bytes,
        file = %final_path.display(),
        "installed snapshot"
    );
    Ok(())
}

/// Steps 3 and 4 of an install: replaces every state column family with the
/// rows of the (verified) file in bounded batches, then writes the applied
/// state and the current snapshot and deletes the marker in one synced
/// batch.
fn replace_state(
    store: &Store,
    file: &mut File,
    path: &Path,
    meta: &Meta,
) -> Result<(), StoreError> {
    let mut batch = WriteBatch::default();
    for cf in STATE_CFS {
        store.delete_all(&mut batch, cf)?;
    }
    store.write(batch)?;
    let mut batch = WriteBatch::default();
    snapshot_file::load(file, path, &mut |cf, key, value| {
        // Written last, from the meta (authoritative for what openraft
        // believes was installed).
        if cf == CF_SM_META && (key == KEY_LAST_APPLIED || key == KEY_LAST_MEMBERSHIP) {
            return Ok(());
        }
        batch.put_cf(store.cf(cf)?, key, value);
        if batch.size_in_bytes() >= BATCH_BYTES {
            store.write(mem::take(&mut batch))?;
            #[cfg(test)]
            crash_tests::batch_written();
        }
        Ok(())
    })?;
    match &meta.last_log_id {
        Some(log_id) => store.put(&mut batch, CF_SM_META, KEY_LAST_APPLIED, log_id)?,
        None => batch.delete_cf(store.cf(CF_SM_META)?, KEY_LAST_APPLIED),
    }
    store.put(
        &mut batch,
        CF_SM_META,
        KEY_LAST_MEMBERSHIP,
        &meta.last_membership,
    )?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .expect("snapshot file names are ours and UTF-8");
    point_at(store, &mut batch, meta, name)?;
    batch.delete_cf(store.cf(CF_SNAPSHOT)?, KEY_SNAPSHOT_INSTALL);
    store.write_synced(batch, SyncOp::SnapshotInstall)
}

/// The current snapshot, if one was built or installed: a read handle on
/// its file.
pub(crate) fn current(sm: &StateMachine) -> Result<Option<Snapshot<TypeConfig>>, StoreError> {
    let store = &sm.store;
    // A build or install may replace (and delete) the file: read the
    // pointer and open the file under the lock. Once open, it stays
    // readable even if deleted.
    let _guard = lock(sm);
    let Some(meta) = store.live().get::<Meta>(CF_SNAPSHOT, KEY_SNAPSHOT_META)? else {
        return Ok(None);
    };
    let name = current_file(store)?
        .ok_or_else(|| StoreError::Inconsistent("snapshot meta without a file".into()))?;
    let path = dir(store).join(name);
    let file = File::open(&path).map_err(io_error(&path, "open"))?;
    Ok(Some(Snapshot {
        meta,
        snapshot: Box::new(SnapshotFile::new(
            tokio::fs::File::from_std(file),
            path,
            false,
        )),
    }))
}

/// Runs on open, before anything reads the state: creates the snapshot
/// directory, converts a snapshot stored by an older build, finishes an
/// interrupted install, and deletes every file that is not the current
/// snapshot.
pub(crate) fn recover(store: &Store) -> Result<(), StoreError> {
    let dir = dir(store);
    std::fs::create_dir_all(&dir).map_err(io_error(&dir, "create directory"))?;
    convert_legacy(store, &dir)?;

    if let Some(marker) = store
        .live()
        .get::<InstallMarker>(CF_SNAPSHOT, KEY_SNAPSHOT_INSTALL)?
    {
        let path = dir.join(&marker.file);
        tracing::warn!(file = %path.display(), last_log_id = ?marker.meta.last_log_id, "a snapshot install was interrupted; redoing it");
        // Refuse to start rather than serve a mix of two states.
        let mut file = File::open(&path).map_err(io_error(&path, "open"))?;
        snapshot_file::verify(&mut file, &path)?;
        replace_state(store, &mut file, &path, &marker.meta)?;
        tracing::info!(file = %path.display(), "interrupted snapshot install finished");
    }

    let mut keep = current_file(store)?;
    if let Some(name) = &keep
        && !dir.join(name).is_file()
    {
        // The state is intact; only the copy for lagging followers is lost.
        // openraft builds a new one (policy or the periodic purge task).
        tracing::warn!(file = %dir.join(name).display(), "the current snapshot file is missing; forgetting it");
        let mut batch = WriteBatch::default();
        let cf = store.cf(CF_SNAPSHOT)?;
        batch.delete_cf(cf, KEY_SNAPSHOT_META);
        batch.delete_cf(cf, KEY_SNAPSHOT_FILE);
        store.write_synced(batch, SyncOp::SnapshotBuild)?;
        keep = None;
    }
    let entries = std::fs::read_dir(&dir).map_err(io_error(&dir, "list"))?;
    for entry in entries {
        let entry = entry.map_err(io_error(&dir, "list"))?;
        if keep.as_deref().is_some_and(|k| entry.file_name() == k) {
            continue;
        }
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            tracing::info!(file = %path.display(), "deleting a stale snapshot file");
            drop(RemoveOnDrop(Some(path)));
        }
    }
    Ok(())
}

/// The snapshot data of format 1 (one RocksDB value). Tests write it too,
/// as the previous build did.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct LegacyData {
    format: u32,
    last_applied: Option<LogId<u64>>,
    last_membership: StoredMembership<u64, BasicNode>,
    tables: Vec<LegacyTable>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct LegacyTable {
    cf: String,
    rows: Vec<(Bytes, Bytes)>,
}

/// A store written by a build before snapshot files holds its current
/// snapshot as one value (`snapshot/data`): rewrite it as a file, so a
/// lagging follower can still be served after the upgrade.
fn convert_legacy(store: &Store, dir: &Path) -> Result<(), StoreError> {
    let reader = store.live();
    let Some(raw) = reader.get_raw(CF_SNAPSHOT, KEY_SNAPSHOT_DATA)? else {
        return Ok(());
    };
    let meta: Option<Meta> = reader.get(CF_SNAPSHOT, KEY_SNAPSHOT_META)?;
    let mut batch = WriteBatch::default();
    let cf = store.cf(CF_SNAPSHOT)?;
    batch.delete_cf(cf, KEY_SNAPSHOT_DATA);
    match (meta, relay_types::decode::<LegacyData>(&raw)) {
        (Some(meta), Ok(data)) if data.format == 1 && data.last_applied == meta.last_log_id => {
            let stem = new_stem(dir, meta.last_log_id.map_or(0, |l| l.index));
            let tmp = dir.join(format!("{stem}.tmp"));
            let file = create_new(&tmp).map_err(io_error(&tmp, "create"))?;
            let mut guard = RemoveOnDrop(Some(tmp.clone()));
            let head = Head {
                last_applied: data.last_applied,
                last_membership: data.last_membership,
            };
            let mut writer = Writer::new(file, &tmp, &head)?;
            for table in &data.tables {
                writer.table(&table.cf)?;
                for (key, value) in &table.rows {
                    writer.row(key, value)?;
                }
            }
            let (mut file, _, _) = writer.finish()?;
            // Refuses a table this build does not know.
            snapshot_file::verify(&mut file, &tmp)?;
            let name = format!("{stem}.snap");
            std::fs::rename(&tmp, dir.join(&name)).map_err(io_error(&tmp, "rename"))?;
            guard.disarm();
            sync_dir(dir)?;
            point_at(store, &mut batch, &meta, &name)?;
            tracing::info!(file = %dir.join(&name).display(), "converted the stored snapshot to a file");
        }
        _ => {
            tracing::warn!("the stored snapshot of an older build is unreadable; dropping it");
            batch.delete_cf(cf, KEY_SNAPSHOT_META);
        }
    }
    store.write_synced(batch, SyncOp::SnapshotBuild)
}

#[cfg(test)]
mod crash_tests {
    //! A crash in the middle of an install: the child (this test binary
    //! started again with `QR_INSTALL_CHILD_DIR`) installs a snapshot far
    //! larger than one write batch and stops after a few batches, waiting
    //! to be killed; the parent kills it with SIGKILL and reopens the store.
    //! The state must then be the snapshot's, not the old one and not a mix.

    use std::path::Path;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use openraft::{BasicNode, Entry, EntryPayload, SnapshotMeta};
    use relay_types::{Enqueue, Envelope, MessageId, MessageInfo, Recipient, UnixMillis};

    use crate::db::{CF_SNAPSHOT, KEY_SNAPSHOT_INSTALL};
    use crate::{StateMachine, StoreOptions, TypeConfig};

    const CHILD_DIR: &str = "QR_INSTALL_CHILD_DIR";
    const CHILD_SNAPSHOT: &str = "QR_INSTALL_CHILD_SNAPSHOT";
    const CHILD_FAILPOINT: &str = "QR_INSTALL_CHILD_FAILPOINT";
    /// The child stops after this many install batches.
    const STOP_AFTER: usize = 2;

    static BATCHES: AtomicUsize = AtomicUsize::new(0);
    static STOP: AtomicUsize = AtomicUsize::new(usize::MAX);

    /// Called by `replace_state` after each intermediate batch.
    pub(super) fn batch_written() {
        if BATCHES.fetch_add(1, Ordering::SeqCst) + 1 == STOP.load(Ordering::SeqCst) {
            println!("READY");
            loop {
                std::thread::park();
            }
        }
    }

    /// Applies `count` messages of `body_len` bytes from log index `first`.
    fn enqueue_many(sm: &StateMachine, first: u64, id_base: u64, count: u64, body_len: usize) {
        for k in 0..count {
            let i = id_base + k;
            let mut id = [0x55u8; 16];
            id[..8].copy_from_slice(&i.to_be_bytes());
            let body: Vec<u8> = (0..body_len)
                .map(|j| b'a' + ((i as usize * 7 + j) % 26) as u8)
                .collect();
            let body = bytes::Bytes::from(body);
            let enqueue = Enqueue {
                id: MessageId(id),
                received_at: UnixMillis(1_000 + i),
                accepted_by: 1 + i % 3,
                owner: 1 + i % 3,
                envelope: Envelope {
                    reverse_path: format!("s{i}@sender.test"),
                    recipients: vec![Recipient::new(format!("r{i}@example.test"))],
                    ..Default::default()
                },
                info: MessageInfo::default(),
                checksum: relay_queue::body_checksum(&body),
                expires_at: UnixMillis(10_000_000),
                body,
            };
            let entry = Entry::<TypeConfig> {
                log_id: openraft::testing::log_id(1, 1, first + k),
                payload: EntryPayload::Normal(relay_types::Command::Enqueue(Box::new(enqueue))),
            };
            sm.apply_entry(entry).unwrap();
        }
    }

    /// The child: opens the store at `CHILD_DIR` and installs the snapshot
    /// file `CHILD_SNAPSHOT` (meta in `<file>.meta`), stopping midway.
    #[test]
    fn child_installs_and_stops_midway() {
        let Some(dir) = std::env::var_os(CHILD_DIR) else {
            return; // Not started as the child.
        };
        let snapshot = std::path::PathBuf::from(std::env::var_os(CHILD_SNAPSHOT).unwrap());
        let meta: SnapshotMeta<u64, BasicNode> =
            relay_types::decode(&std::fs::read(snapshot.with_extension("meta")).unwrap()).unwrap();
        let options = StoreOptions {
            unsynced_writes_die_with_process: std::env::var_os(CHILD_FAILPOINT).is_some(),
            ..StoreOptions::default()
        };
        let (_log, sm) = crate::open_with(Path::new(&dir), options).unwrap();
        STOP.store(STOP_AFTER, Ordering::SeqCst);
        let file = std::fs::File::open(&snapshot).unwrap();
        super::install(&sm, &meta, file, snapshot, false).unwrap();
        panic!("the install finished without stopping");
    }

    fn killed_midway_then_reopened(failpoint: bool) {
        // A: 4,000 messages of 4 KiB (about 17 MiB of rows: four batches).
        let a_dir = tempfile::tempdir().unwrap();
        let (_a_log, a) = crate::open(a_dir.path()).unwrap();
        enqueue_many(&a, 1, 0, 4_000, 4096);
        let snapshot = super::build(&a).unwrap();
        let want = a.digest().unwrap();
        let want_counts = a.counts().unwrap();
        // Outside both stores, so only the child's install touches B's files.
        let outside = tempfile::tempdir().unwrap();
        let file = outside.path().join("a.snap");
        std::fs::copy(snapshot.snapshot.path(), &file).unwrap();
        std::fs::write(
            file.with_extension("meta"),
            relay_types::encode(&snapshot.meta),
        )
        .unwrap();

        // B: other messages, a different state.
        let b_dir = tempfile::tempdir().unwrap();
        {
            let (_b_log, b) = crate::open(b_dir.path()).unwrap();
            enqueue_many(&b, 1, 1_000_000, 500, 1000);
            b.store.sync_wal(crate::metrics::SyncOp::Append).unwrap();
            assert_ne!(b.digest().unwrap(), want);
        }

        let on = std::ffi::OsStr::new("1");
        let mut envs = vec![
            (CHILD_DIR, b_dir.path().as_os_str()),
            (CHILD_SNAPSHOT, file.as_os_str()),
        ];
        if failpoint {
            envs.push((CHILD_FAILPOINT, on));
        }
        crate::child_process::kill_child_when_ready(
            "snapshot::crash_tests::child_installs_and_stops_midway",
            &envs,
        );

        // The child died with the marker written and the state half
        // replaced (or, with the failpoint, the batches after the marker
        // lost). Opening redoes the install.
        let (_b_log, b) = crate::open(b_dir.path()).unwrap();
        assert_eq!(b.digest().unwrap(), want, "the snapshot's state, not a mix");
        assert_eq!(b.counts().unwrap(), want_counts);
        for owner in 1..=3 {
            let due = |sm: &StateMachine| sm.due(owner, UnixMillis(u64::MAX), usize::MAX).unwrap();
            assert_eq!(due(&b), due(&a));
        }
        assert_eq!(b.last_applied(), snapshot.meta.last_log_id);
        assert!(
            b.store
                .live()
                .get_raw(CF_SNAPSHOT, KEY_SNAPSHOT_INSTALL)
                .unwrap()
                .is_none(),
            "the marker is gone"
        );
        let current = super::current(&b).unwrap().expect("a current snapshot");
        assert_eq!(current.meta, snapshot.meta);
        let files: Vec<_> = std::fs::read_dir(super::dir(&b.store))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files, vec![current.snapshot.path().to_path_buf()]);
    }

    #[test]
    fn killed_during_an_install_the_store_reopens_with_the_snapshots_state() {
        killed_midway_then_reopened(false);
    }

    #[test]
    fn power_cut_during_an_install_the_store_reopens_with_the_snapshots_state() {
        killed_midway_then_reopened(true);
    }
}

#[cfg(test)]
mod legacy_tests {
    //! A store written before snapshot files kept its snapshot as one
    //! value; opening it with this build converts that to a file.

    use bytes::Bytes;
    use openraft::{SnapshotMeta, StoredMembership};
    use rocksdb::WriteBatch;

    use crate::db::{
        CF_ROUTES, CF_SM_META, CF_SNAPSHOT, KEY_LAST_APPLIED, KEY_SNAPSHOT_DATA, KEY_SNAPSHOT_META,
    };

    #[test]
    fn a_snapshot_stored_by_the_previous_build_becomes_a_file_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let log_id = openraft::testing::log_id(2, 1, 7);
        let meta = SnapshotMeta {
            last_log_id: Some(log_id),
            last_membership: StoredMembership::default(),
            snapshot_id: "old".into(),
        };
        let data = super::LegacyData {
            format: 1,
            last_applied: Some(log_id),
            last_membership: StoredMembership::default(),
            tables: vec![
                super::LegacyTable {
                    cf: CF_SM_META.into(),
                    rows: vec![(
                        Bytes::from_static(KEY_LAST_APPLIED),
                        Bytes::from(relay_types::encode(&log_id)),
                    )],
                },
                super::LegacyTable {
                    cf: CF_ROUTES.into(),
                    rows: vec![(Bytes::from_static(b"a.test"), Bytes::from_static(b"r"))],
                },
            ],
        };
        {
            let store = crate::db::Store::open(dir.path(), crate::StoreOptions::default()).unwrap();
            let mut batch = WriteBatch::default();
            store
                .put(&mut batch, CF_SNAPSHOT, KEY_SNAPSHOT_META, &meta)
                .unwrap();
            store
                .put(&mut batch, CF_SNAPSHOT, KEY_SNAPSHOT_DATA, &data)
                .unwrap();
            store
                .write_synced(batch, crate::metrics::SyncOp::Append)
                .unwrap();
        }

        let (_log, sm) = crate::open(dir.path()).unwrap();
        let current = super::current(&sm).unwrap().expect("converted snapshot");
        assert_eq!(current.meta, meta);
        let path = current.snapshot.path().to_path_buf();
        let mut file = std::fs::File::open(&path).unwrap();
        let verified = crate::snapshot_file::verify(&mut file, &path).unwrap();
        assert_eq!(
            (verified.head.last_applied, verified.rows),
            (Some(log_id), 2)
        );
        let raw = sm
            .store
            .live()
            .get_raw(CF_SNAPSHOT, KEY_SNAPSHOT_DATA)
            .unwrap();
        assert!(raw.is_none(), "the old value is gone");
    }
}
