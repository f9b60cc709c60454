//! Recovery after a quorum is lost for good (a site with two of three
//! voters destroyed): turn one surviving store into a new cluster of one
//! voter, like etcd's `--force-new-cluster`.
//!
//! Raft cannot do this by itself: without a quorum nothing commits, ever.
//! The operator chooses a survivor (typically the recovery-site replica),
//! stops it, and runs `relayd recover`, which:
//! 1. reads what the store holds: the old membership, the vote, the last
//!    log entry, the commit index it knew, the newest message it saw;
//! 2. keeps that as evidence in `<data_dir>/recovery-<time>/` (a JSON
//!    report and a copy of the voter guard) before anything changes;
//! 3. appends one membership entry naming this node the only voter, with a
//!    term above any it has seen, and records a vote for itself in that
//!    term (synced, and in the voter guard).
//!
//! Started again, the node is the only voter of its cluster: it elects
//! itself and commits every entry it holds, including entries the old
//! cluster may never have committed (their senders got no `250`; they may
//! arrive twice if the sender tried again elsewhere). What it cannot have
//! is what the old cluster committed after this node's last entry: mail
//! acknowledged after the newest message it holds may be missing. The
//! report says so with that time; the replica's lag in seconds before the
//! loss (`relay_raft_replication_lag_seconds`) bounds it.
//!
//! The old members stay out: a node of the old cluster that comes back
//! must rejoin empty, as a learner (its store is refused by the new
//! cluster's members, and its own voter guard refuses it as a voter of a
//! cluster it no longer belongs to only once its data dir is emptied).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use openraft::{
    BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, StoredMembership, Vote,
};
use relay_types::{Command, NodeId, UnixMillis};
use rocksdb::WriteBatch;
use serde::Serialize;

use crate::TypeConfig;
use crate::db::{
    CF_FINISHED, CF_LOG, CF_MESSAGES, CF_RAFT_META, CF_SM_META, KEY_COMMITTED, KEY_LAST_MEMBERSHIP,
    KEY_LAST_PURGED, KEY_VOTE, Store, log_key,
};
use crate::error::StoreError;
use crate::metrics::SyncOp;

/// What a store holds, read before a recovery (and kept as evidence).
#[derive(Clone, Debug, Serialize)]
pub struct RecoveryReport {
    /// The node recovered.
    pub node: NodeId,
    /// The voters of the membership in force in this store.
    pub old_voters: Vec<NodeId>,
    /// Its learners.
    pub old_learners: Vec<NodeId>,
    /// Every member's Raft address.
    pub old_addresses: BTreeMap<NodeId, String>,
    /// The vote stored (term, node, committed).
    pub vote: Option<(u64, NodeId, bool)>,
    /// The last log index this store has.
    pub last_log_index: u64,
    /// Its term.
    pub last_log_term: u64,
    /// The last index it knew committed (a hint openraft keeps).
    pub known_committed: u64,
    /// Its last applied index.
    pub last_applied: u64,
    /// Entries it holds past the commit index it knew: committed by the
    /// new cluster, so their mail is delivered (some may never have been
    /// acknowledged to their senders).
    pub held_beyond_known_commit: u64,
    /// Acceptance time of the newest message this store knows of (in its
    /// log, its queue, or finished), Unix milliseconds: mail acknowledged
    /// by the old cluster after it may be missing.
    pub newest_message_ms: Option<u64>,
    /// Queued messages in its state now (more may arrive from its log).
    pub queued: u64,
    /// The term of the new cluster.
    pub new_term: u64,
    /// Where the evidence was written (none in a dry run).
    pub evidence: Option<PathBuf>,
}

/// Reads what the store at `dir` holds, changing nothing.
pub fn inspect(dir: &Path, node: NodeId) -> Result<RecoveryReport, StoreError> {
    let (log_store, state_machine) = crate::open(dir)?;
    read_report(&log_store.store, &state_machine, node)
}

/// Makes the store at `dir` the only voter of a new cluster (see the module
/// docs), after writing the evidence to `<data_dir>/recovery-<ms>/`
/// (`data_dir` is `dir`'s parent). `guard` is the voter guard file, which
/// records the new vote. The node must be stopped.
pub fn force_single_voter(
    dir: &Path,
    guard: &Path,
    node: NodeId,
) -> Result<RecoveryReport, StoreError> {
    let voter_guard = crate::voter_guard::VoterGuard::load(guard)?;
    let (log_store, state_machine) = crate::open(dir)?;
    let store = &log_store.store;
    let mut report = read_report(store, &state_machine, node)?;
    let addr = report.old_addresses.get(&node).cloned().ok_or_else(|| {
        StoreError::Inconsistent(format!(
            "node {node} is not a member of the cluster this store belongs to \
             (members: {:?}); recover on a node that was one",
            report.old_addresses.keys().collect::<Vec<_>>()
        ))
    })?;

    // Evidence first: nothing changes unless it is on disk.
    let data_dir = dir.parent().unwrap_or(dir);
    let evidence = data_dir.join(format!("recovery-{}", UnixMillis::now().0));
    report.evidence = Some(evidence.clone());
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::SnapshotIo { path, op, source }
    };
    std::fs::create_dir_all(&evidence).map_err(io("create", &evidence))?;
    let json = serde_json::to_vec_pretty(&report)
        .map_err(|e| StoreError::Inconsistent(format!("cannot encode the report: {e}")))?;
    let report_path = evidence.join("report.json");
    std::fs::write(&report_path, json).map_err(io("write", &report_path))?;
    if guard.exists() {
        let copy = evidence.join("voter-guard");
        std::fs::copy(guard, &copy).map_err(io("copy", &copy))?;
    }

    // The new membership, one entry past the log, in a term above any seen.
    let term = report.new_term;
    let index = report.last_log_index + 1;
    let nodes = BTreeMap::from([(node, BasicNode::new(addr))]);
    let membership = Membership::new(vec![BTreeSet::from([node])], nodes);
    let entry: Entry<TypeConfig> = Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, node), index),
        payload: EntryPayload::Membership(membership),
    };
    let vote = Vote::new(term, node);
    let mut batch = WriteBatch::default();
    store.put(&mut batch, CF_LOG, &log_key(index), &entry)?;
    store.put(&mut batch, CF_RAFT_META, KEY_VOTE, &vote)?;
    store.write_synced(batch, SyncOp::Vote)?;
    voter_guard.record_vote(&vote)?;
    tracing::warn!(
        node,
        term,
        index,
        "store turned into a one-voter cluster (recovery after quorum loss)"
    );
    Ok(report)
}

fn read_report(
    store: &Store,
    state_machine: &crate::StateMachine,
    node: NodeId,
) -> Result<RecoveryReport, StoreError> {
    let reader = store.live();
    let vote: Option<Vote<u64>> = reader.get(CF_RAFT_META, KEY_VOTE)?;
    let committed: Option<Option<LogId<u64>>> = reader.get(CF_RAFT_META, KEY_COMMITTED)?;
    let purged: Option<LogId<u64>> = reader.get(CF_RAFT_META, KEY_LAST_PURGED)?;
    let applied = state_machine.last_applied();
    let mut membership: StoredMembership<u64, BasicNode> = reader
        .get(CF_SM_META, KEY_LAST_MEMBERSHIP)?
        .unwrap_or_default();
    // The log past the applied state: the newest membership in it is the
    // one in force; Enqueues in it are messages not yet in the state.
    let mut last: Option<LogId<u64>> = applied.max(purged);
    let mut newest_ms: Option<u64> = None;
    let mut note = |ms: u64| newest_ms = Some(newest_ms.map_or(ms, |n| n.max(ms)));
    for item in reader.scan(CF_LOG, &[], None)? {
        let (_, value) = item?;
        let entry: Entry<TypeConfig> =
            relay_types::decode(&value).map_err(StoreError::corrupt(CF_LOG))?;
        last = Some(entry.log_id);
        match entry.payload {
            EntryPayload::Membership(m) => {
                if applied.is_none_or(|a| entry.log_id > a) {
                    membership = StoredMembership::new(Some(entry.log_id), m);
                }
            }
            EntryPayload::Normal(command) => enqueued_at(&command, &mut note),
            EntryPayload::Blank => {}
        }
    }
    for cf in [CF_MESSAGES, CF_FINISHED] {
        // Ids are UUIDv7: the first 48 bits are the acceptance time.
        if let Some((key, _)) = store.last_raw(cf)?
            && key.len() >= 6
        {
            let mut ms = [0u8; 8];
            ms[2..].copy_from_slice(&key[..6]);
            note(u64::from_be_bytes(ms));
        }
    }
    let m = membership.membership();
    let old_voters: Vec<NodeId> = m.voter_ids().collect();
    let old_learners: Vec<NodeId> = m.learner_ids().collect();
    let old_addresses = m
        .nodes()
        .map(|(id, n)| (*id, n.addr.clone()))
        .collect::<BTreeMap<_, _>>();
    let last_index = last.map_or(0, |l| l.index);
    let last_term = last.map_or(0, |l| l.leader_id.term);
    let known_committed = committed
        .flatten()
        .map_or(0, |l| l.index)
        .max(applied.map_or(0, |a| a.index));
    let vote_term = vote.map_or(0, |v| v.leader_id().term);
    let counts = state_machine.counts()?;
    Ok(RecoveryReport {
        node,
        old_voters,
        old_learners,
        old_addresses,
        vote: vote.map(|v| {
            (
                v.leader_id().term,
                v.leader_id().voted_for().unwrap_or(0),
                v.is_committed(),
            )
        }),
        last_log_index: last_index,
        last_log_term: last_term,
        known_committed,
        last_applied: applied.map_or(0, |a| a.index),
        held_beyond_known_commit: last_index.saturating_sub(known_committed),
        newest_message_ms: newest_ms,
        queued: counts.queued + counts.deferred + counts.held,
        new_term: vote_term.max(last_term) + 1,
        evidence: None,
    })
}

/// Calls `note` with the acceptance time of every message `command` enqueues.
fn enqueued_at(command: &Command, note: &mut impl FnMut(u64)) {
    match command {
        Command::Enqueue(e) => note(e.received_at.0),
        Command::Attempt { dsn: Some(d), .. } => note(d.received_at.0),
        Command::Batch(commands) => {
            for c in commands {
                enqueued_at(c, note);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use openraft::testing::log_id;
    use relay_types::{Enqueue, Envelope, MessageId, MessageInfo, Recipient};

    use super::*;

    /// A store of a member of {1, 2, 3} + learner 4 with a membership entry
    /// and one message in its log.
    fn old_store(dir: &Path) {
        let (log_store, _sm) = crate::open(dir).unwrap();
        let store = &log_store.store;
        let nodes: BTreeMap<NodeId, BasicNode> = (1..=4)
            .map(|id| (id, BasicNode::new(format!("127.0.0.1:710{id}"))))
            .collect();
        let membership = Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes);
        let first: Entry<TypeConfig> = Entry {
            log_id: log_id(1, 1, 1),
            payload: EntryPayload::Membership(membership),
        };
        let body = Bytes::from_static(b"Subject: x\r\n\r\nx\r\n");
        let second: Entry<TypeConfig> = Entry {
            log_id: log_id(3, 2, 2),
            payload: EntryPayload::Normal(Command::Enqueue(Box::new(Enqueue {
                id: MessageId([7; 16]),
                received_at: UnixMillis(1_234),
                accepted_by: 2,
                owner: 2,
                envelope: Envelope {
                    reverse_path: "s@sender.test".into(),
                    recipients: vec![Recipient::new("r@example.test".to_string())],
                    ..Default::default()
                },
                info: MessageInfo::default(),
                checksum: relay_queue::body_checksum(&body),
                expires_at: UnixMillis(99_999),
                body,
            }))),
        };
        let mut batch = WriteBatch::default();
        store.put(&mut batch, CF_LOG, &log_key(1), &first).unwrap();
        store.put(&mut batch, CF_LOG, &log_key(2), &second).unwrap();
        store
            .put(
                &mut batch,
                CF_RAFT_META,
                KEY_VOTE,
                &Vote::new_committed(3, 2),
            )
            .unwrap();
        store.write_synced(batch, SyncOp::Vote).unwrap();
    }

    #[test]
    fn a_survivor_becomes_the_only_voter_in_a_new_term_with_evidence_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("db");
        let guard = tmp.path().join("voter-guard");
        old_store(&dir);

        let dry = inspect(&dir, 4).unwrap();
        assert_eq!(dry.old_voters, vec![1, 2, 3]);
        assert_eq!(dry.old_learners, vec![4]);
        assert_eq!(dry.last_log_index, 2);
        assert_eq!(dry.newest_message_ms, Some(1_234));
        assert_eq!(dry.new_term, 4);
        assert!(dry.evidence.is_none());

        // Not a member: refused, nothing written.
        let err = force_single_voter(&dir, &guard, 9).unwrap_err().to_string();
        assert!(err.contains("node 9"), "{err}");

        let report = force_single_voter(&dir, &guard, 4).unwrap();
        let evidence = report.evidence.clone().unwrap();
        assert!(evidence.join("report.json").exists());

        let (log_store, _sm) = crate::open(&dir).unwrap();
        let reader = log_store.store.live();
        let vote: Vote<u64> = reader.get(CF_RAFT_META, KEY_VOTE).unwrap().unwrap();
        assert_eq!(vote, Vote::new(4, 4));
        let last: Entry<TypeConfig> = reader.get(CF_LOG, &log_key(3)).unwrap().unwrap();
        assert_eq!(last.log_id, log_id(4, 4, 3));
        match last.payload {
            EntryPayload::Membership(m) => {
                assert_eq!(m.voter_ids().collect::<Vec<_>>(), vec![4]);
                assert_eq!(m.learner_ids().count(), 0);
            }
            other => panic!("expected a membership entry, got {other:?}"),
        }
        // The guard remembers the new vote, so an older copy is refused.
        let durable = crate::voter_guard::VoterGuard::load(&guard)
            .unwrap()
            .durable();
        assert_eq!(durable.vote, Some(Vote::new(4, 4)));
    }
}
