//! Applying committed entries does not fsync again what the log
//! already made durable, and recovery after kill -9 is still exact.
//!
//! A child process (this test binary started again with
//! `QR_APPLY_RECOVERY_DIR`) opens a store with the power-loss failpoint
//! (every unsynced write dies with the process, as in a power cut), appends
//! a log (synced), saves the commit index and applies every entry (neither
//! synced) and reports how many WAL syncs that made, then waits to be
//! killed. The parent kills it with SIGKILL, reopens the store and does
//! what a restarted node does: apply the committed entries after the last
//! applied one (the commit index comes back from the leader; the local
//! copy is a hint and died with the process here). The state must then be
//! exactly what the in-memory model reaches by applying the same log.

mod common;

use std::io::BufRead;
use std::process::{Command as Process, Stdio};

use common::{enqueue, normal, sample_commands};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{Entry, RaftLogReader};
use relay_queue::MemQueue;
use relay_store::{StoreOptions, TypeConfig};
use relay_types::{Command, UnixMillis};

const CHILD_DIR: &str = "QR_APPLY_RECOVERY_DIR";

/// The log: the sample commands, then a batch entry of fresh messages and
/// one delivery, so group-commit entries are covered too.
fn log_entries() -> Vec<Entry<TypeConfig>> {
    let mut commands = sample_commands();
    let batch = (20u8..40)
        .map(|n| Command::Enqueue(Box::new(enqueue(n, 2, 1, false))))
        .chain(std::iter::once(Command::Delivered {
            id: common::id(25),
            by: 2,
            at: UnixMillis(9_000),
            target: "127.0.0.1:2600".into(),
            reply: "250 ok".into(),
        }))
        .collect();
    commands.push(Command::Batch(batch));
    commands
        .into_iter()
        .enumerate()
        .map(|(i, c)| normal(i as u64 + 1, c))
        .collect()
}

/// The child: log synced, commit index synced, entries applied unsynced.
#[tokio::test(flavor = "current_thread")]
async fn child_applies_then_waits_to_be_killed() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return; // Not started as the child.
    };
    let options = StoreOptions {
        unsynced_writes_die_with_process: true,
        ..StoreOptions::default()
    };
    let (mut log, mut sm) = relay_store::open_with(std::path::Path::new(&dir), options).unwrap();
    let entries = log_entries();
    let last = entries.last().unwrap().log_id;
    log.blocking_append(entries.clone()).await.unwrap();
    let before = log.synced_count();
    log.save_committed(Some(last)).await.unwrap();
    sm.apply(entries).await.unwrap();
    let apply_syncs = log.synced_count() - before;
    println!(
        "APPLIED {} SYNCS {apply_syncs}",
        sm.last_applied().unwrap().index
    );
    loop {
        std::thread::park();
    }
}

#[tokio::test(flavor = "current_thread")]
async fn kill_9_after_unsynced_applies_recovers_the_exact_state_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Process::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_applies_then_waits_to_be_killed",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_DIR, dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let report = loop {
        line.clear();
        let n = out.read_line(&mut line).unwrap();
        assert!(n > 0, "child exited before it applied");
        // The harness may have written "test NAME ... " on the same line.
        if let Some((_, rest)) = line.trim().split_once("APPLIED ") {
            break rest.to_string();
        }
    };
    child.kill().unwrap();
    child.wait().unwrap();

    let entries = log_entries();
    let last = entries.last().unwrap().log_id;
    assert_eq!(
        report,
        format!("{} SYNCS 0", last.index),
        "the child saved the commit index and applied every entry without a WAL sync"
    );

    let (mut log, mut sm) = relay_store::open(dir.path()).unwrap();
    // The applies were never synced: with the failpoint they died with the
    // process, so the state machine starts from nothing again.
    assert_eq!(
        sm.applied_state().await.unwrap().0,
        None,
        "unsynced applies must not survive a power cut"
    );
    // Unsynced like the applies, the local commit index died too.
    assert_eq!(log.read_committed().await.unwrap(), None);
    // What a restarted node does once the leader tells it the commit
    // index: apply the committed entries after the last applied one.
    let replay = log
        .get_log_reader()
        .await
        .try_get_log_entries(1..=last.index)
        .await
        .unwrap();
    assert_eq!(replay, entries, "the synced log is intact");
    sm.apply(replay).await.unwrap();

    let mut model = MemQueue::default();
    for entry in &entries {
        if let openraft::EntryPayload::Normal(c) = &entry.payload {
            model.apply(entry.log_id.index, c);
        }
    }
    let digest = sm.digest().unwrap();
    assert_eq!(digest.applied_index, last.index);
    assert_eq!(
        digest.checksum,
        hex::encode(model.checksum()),
        "recovered state equals the model's"
    );
    assert_eq!(sm.counts().unwrap(), model.counts());
}
