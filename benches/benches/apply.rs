//! State-machine apply, per layer: the pure `relay_queue::apply` (decides
//! the changes; verifies the body checksum) and the RocksDB state machine
//! (`relay-store`: apply plus one unsynced write batch per call).
//!
//! `cargo bench -p relay-benches --bench apply`

use std::cell::Cell;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use openraft::storage::RaftStateMachine;
use relay_queue::MemQueue;
use relay_types::{Command, UnixMillis};

mod common;

fn pure_apply(c: &mut Criterion) {
    let mut group = c.benchmark_group("queue_apply");
    for size in [1024, 32 * 1024] {
        let enqueue = common::enqueue(1, common::body(size));
        let empty = MemQueue::default();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("enqueue_{}k", size / 1024), |b| {
            b.iter(|| relay_queue::apply(&empty, 2, &enqueue))
        });
    }
    group.throughput(Throughput::Elements(1));
    let mut queued = MemQueue::default();
    let enqueue = common::enqueue(1, common::body(1024));
    queued.apply(2, &enqueue);
    let Command::Enqueue(e) = &enqueue else {
        unreachable!()
    };
    let delivered = Command::Delivered {
        id: e.id,
        by: 1,
        at: UnixMillis(1_700_000_000_500),
        target: "127.0.0.1:2600".into(),
        reply: "250 2.0.0 Ok: queued".into(),
    };
    group.bench_function("delivered", |b| {
        b.iter(|| relay_queue::apply(&queued, 3, &delivered))
    });
    group.finish();
}

/// The RocksDB state machine applying a batch of 64 committed `Enqueue`s
/// (what one openraft apply call gets under load).
fn store_apply(c: &mut Criterion) {
    const BATCH: u64 = 64;
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm) = relay_store::open(dir.path()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body = common::body(1024);
    let next = Cell::new(1u64);
    let mut group = c.benchmark_group("store_apply");
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("enqueue_64x1k", |b| {
        b.iter_batched(
            || {
                let first = next.get();
                next.set(first + BATCH);
                common::enqueue_entries(first, BATCH, &body)
            },
            |entries| rt.block_on(sm.apply(entries)).unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::short_runs();
    targets = pure_apply, store_apply
}
criterion_main!(benches);
