//! The Raft log append as openraft calls it (`relay-store` `LogStore::append`:
//! one RocksDB write batch, then one WAL fsync, then the flush callback), on
//! a temporary directory. Batch sizes 1, 16 and 64 show what group commit
//! buys per entry; the fsync dominates small batches.
//!
//! `cargo bench -p relay-benches --bench log_append`
//! (the temporary directory is on the filesystem of `TMPDIR`).

use std::cell::Cell;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use openraft::storage::RaftLogStorageExt;

mod common;

fn append(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _sm) = relay_store::open(dir.path()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let next = Cell::new(1u64);
    let mut group = c.benchmark_group("log_append_fsync");
    for (entries, size) in [
        (1u64, 1024),
        (16, 1024),
        (64, 1024),
        (1, 32 * 1024),
        (16, 32 * 1024),
    ] {
        let body = common::body(size);
        group.throughput(Throughput::Elements(entries));
        group.bench_function(format!("{entries}x{}k", size / 1024), |b| {
            b.iter_batched(
                || {
                    let first = next.get();
                    next.set(first + entries);
                    common::enqueue_entries(first, entries, &body)
                },
                |batch| rt.block_on(log.blocking_append(batch)).unwrap(),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::short_runs();
    targets = append
}
criterion_main!(benches);
