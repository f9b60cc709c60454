//! The due-index scan stays O(due) after many deliveries. Every
//! delivered message leaves a tombstone in the due index; a scan from the
//! start of an owner's range must not walk all of them. Counted with
//! RocksDB's own perf counter of deletes skipped by iterators.

mod common;

use common::{apply_one, enqueue, normal};
use relay_store::StateMachine;
use relay_types::{Command, CommandResult, MessageId, UnixMillis};
use rocksdb::perf::{PerfContext, PerfMetric, PerfStatsLevel, set_perf_stats};

const MESSAGES: u64 = 200_000;
const STILL_QUEUED: u64 = 10;
const PER_ENTRY: u64 = 1_000;

fn message_id(n: u64) -> MessageId {
    let mut bytes = [0u8; 16];
    bytes[8..].copy_from_slice(&n.to_be_bytes());
    MessageId(bytes)
}

/// Applies `commands` as batch entries of `PER_ENTRY` from `*index` on.
async fn apply_batches(sm: &mut StateMachine, index: &mut u64, commands: Vec<Command>) {
    let mut commands = commands.into_iter().peekable();
    while commands.peek().is_some() {
        let batch: Vec<Command> = commands.by_ref().take(PER_ENTRY as usize).collect();
        let n = batch.len();
        *index += 1;
        let result = apply_one(sm, normal(*index, Command::Batch(batch))).await;
        let CommandResult::Batch(results) = result else {
            panic!("not a batch result: {result:?}");
        };
        assert_eq!(results.len(), n);
        assert!(
            results
                .iter()
                .all(|r| !matches!(r, CommandResult::Rejected(_))),
            "{results:?}"
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn due_scan_does_not_walk_the_tombstones_of_delivered_messages() {
    let dir = tempfile::TempDir::new().unwrap();
    let (_log, mut sm) = relay_store::open(dir.path()).unwrap();
    let mut index = 0;
    let enqueues = (0..MESSAGES)
        .map(|n| {
            let mut e = enqueue(1, 1, 1, false);
            e.id = message_id(n);
            e.received_at = UnixMillis(1_000 + n);
            Command::Enqueue(Box::new(e))
        })
        .collect();
    apply_batches(&mut sm, &mut index, enqueues).await;
    // Deliver all but the newest few, oldest first, as a draining queue does.
    let delivered = (0..MESSAGES - STILL_QUEUED)
        .map(|n| Command::Delivered {
            id: message_id(n),
            by: 1,
            at: UnixMillis(500_000),
            target: "t".into(),
            reply: "250 ok".into(),
        })
        .collect();
    apply_batches(&mut sm, &mut index, delivered).await;

    set_perf_stats(PerfStatsLevel::EnableCount);
    let mut perf = PerfContext::default();
    perf.reset();
    let due = sm.due(1, UnixMillis(u64::MAX), usize::MAX).unwrap();
    let skipped = perf.metric(PerfMetric::InternalDeleteSkippedCount);
    set_perf_stats(PerfStatsLevel::Disable);

    assert_eq!(due.len() as u64, STILL_QUEUED);
    // With RocksDB's defaults every one of the ~200,000 tombstones is
    // still in the 64 MiB memtable and the scan steps over each. With the
    // small index memtables and single deletes, what is left is what the
    // last few flushed files hold until compaction meets their keys
    // (about 16,000 here), whatever the number of deliveries.
    let bound = (MESSAGES - STILL_QUEUED) / 5;
    assert!(
        skipped < bound,
        "the due scan skipped {skipped} deleted keys to find {} due messages (bound {bound})",
        due.len()
    );
    println!(
        "due scan: {} due, {skipped} tombstones skipped after {} deliveries",
        due.len(),
        MESSAGES - STILL_QUEUED
    );
}
