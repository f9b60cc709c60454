//! The voter guard: a small file beside the store that remembers the
//! newest vote this node made durable and how far its log reached below
//! the last purge, so a store that comes back *behind* it is refused.
//!
//! Raft's safety rests on a voter never forgetting a vote or an entry it
//! acknowledged. A store that was wiped, restored from an older copy, or
//! lost acknowledged writes (a disk that lied about a flush) would let the
//! node vote a second time in a term, or count towards a quorum for
//! entries it no longer has: committed mail could be lost. Such a node
//! must rejoin as a new member instead (remove it, start it with an empty
//! data directory, add it as a learner, promote it).
//!
//! The file lives outside the RocksDB directory (the node puts it in its
//! `data_dir`), so wiping or replacing the store does not take it along.
//! It is rewritten (temporary file, fsync, rename, directory fsync) after
//! every vote the store made durable and after every purge: both are rare
//! (a vote per term, a purge per snapshot), so appends never pay for it.
//! Entries below a purge are never truncated by Raft, which makes the
//! purge index a floor the log can never legitimately fall below.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use openraft::Vote;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// Format version of the file.
const VERSION: u8 = 1;

/// What the file holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Durable {
    /// The newest vote the store made durable.
    pub(crate) vote: Option<Vote<u64>>,
    /// The highest index the log was purged to (every entry up to it is
    /// in the state; the log never ends below it).
    pub(crate) log_floor: u64,
}

/// The guard file of one store.
#[derive(Debug)]
pub(crate) struct VoterGuard {
    path: PathBuf,
    state: Mutex<Durable>,
}

impl VoterGuard {
    /// Reads the file at `path` (a missing file: nothing recorded yet).
    pub(crate) fn load(path: &Path) -> Result<VoterGuard, StoreError> {
        let state = match fs::read(path) {
            Ok(bytes) => decode(&bytes).ok_or_else(|| StoreError::SnapshotFile {
                path: path.to_path_buf(),
                problem: "the voter guard file is not readable (unknown version or truncated)"
                    .into(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Durable::default(),
            Err(source) => {
                return Err(StoreError::SnapshotIo {
                    path: path.to_path_buf(),
                    op: "read",
                    source,
                });
            }
        };
        Ok(VoterGuard {
            path: path.to_path_buf(),
            state: Mutex::new(state),
        })
    }

    /// What the file says.
    pub(crate) fn durable(&self) -> Durable {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records a vote the store has made durable.
    pub(crate) fn record_vote(&self, vote: &Vote<u64>) -> Result<(), StoreError> {
        self.update(|d| {
            if d.vote.as_ref() != Some(vote) {
                d.vote = Some(*vote);
                true
            } else {
                false
            }
        })
    }

    /// Records a purge up to `index`.
    pub(crate) fn record_floor(&self, index: u64) -> Result<(), StoreError> {
        self.update(|d| {
            if index > d.log_floor {
                d.log_floor = index;
                true
            } else {
                false
            }
        })
    }

    fn update(&self, change: impl FnOnce(&mut Durable) -> bool) -> Result<(), StoreError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = state.clone();
        if !change(&mut next) {
            return Ok(());
        }
        self.write(&next)?;
        *state = next;
        Ok(())
    }

    fn write(&self, durable: &Durable) -> Result<(), StoreError> {
        let io = |op: &'static str| {
            let path = self.path.clone();
            move |source| StoreError::SnapshotIo { path, op, source }
        };
        let tmp = self.path.with_extension("tmp");
        let mut bytes = vec![VERSION];
        bytes.extend(relay_types::encode(durable));
        let mut file = File::create(&tmp).map_err(io("create"))?;
        file.write_all(&bytes).map_err(io("write"))?;
        file.sync_all().map_err(io("fsync"))?;
        fs::rename(&tmp, &self.path).map_err(io("rename"))?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io("fsync directory"))?;
        }
        Ok(())
    }
}

fn decode(bytes: &[u8]) -> Option<Durable> {
    match bytes.split_first() {
        Some((&VERSION, rest)) => relay_types::decode(rest).ok(),
        _ => None,
    }
}

/// Refuses a store that is behind `guard`: an older vote (or none), or a
/// log that ends below the recorded purge floor.
pub(crate) fn check(
    guard: &Durable,
    store_vote: Option<Vote<u64>>,
    store_log_end: u64,
    store_path: &Path,
    guard_path: &Path,
) -> Result<(), StoreError> {
    let vote_behind = match (&guard.vote, &store_vote) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(g), Some(s)) => !matches!(
            s.partial_cmp(g),
            Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal)
        ),
    };
    if vote_behind || store_log_end < guard.log_floor {
        return Err(StoreError::BehindVoterGuard {
            path: store_path.to_path_buf(),
            guard: guard_path.to_path_buf(),
            detail: format!(
                "it holds vote {store_vote:?} and a log ending at {store_log_end}; this node had \
                 made durable vote {:?} and a log reaching {}",
                guard.vote, guard.log_floor
            ),
        });
    }
    Ok(())
}
