//! Model test: the RocksDB state machine and the in-memory reference
//! (`relay_queue::MemQueue`) applying the same random log agree after every
//! entry: results, records, bodies, traces, listings, counts, due lists,
//! routes and the state digest. At the end, a snapshot of the random state
//! installs onto a fresh store as the identical state.

mod common;

use common::{all_ids, apply_one, command, filters, normal, transfer};
use openraft::RaftSnapshotBuilder;
use openraft::storage::RaftStateMachine;
use proptest::prelude::*;
use relay_queue::{MemQueue, QueueRead};
use relay_store::StateMachine;
use relay_types::UnixMillis;

fn agrees(sm: &StateMachine, mem: &MemQueue, index: u64) -> Result<(), TestCaseError> {
    for id in all_ids() {
        prop_assert_eq!(
            sm.message(&id).unwrap(),
            mem.message(&id).unwrap(),
            "record of {}",
            id
        );
        prop_assert_eq!(
            sm.body(&id).unwrap(),
            mem.body(&id).cloned(),
            "body of {}",
            id
        );
        prop_assert_eq!(sm.trace(&id).unwrap(), mem.trace(&id), "trace of {}", id);
    }
    for filter in filters() {
        let want = mem.select(&filter).unwrap();
        prop_assert_eq!(
            &sm.list(&filter, usize::MAX).unwrap(),
            &want,
            "list {:?}",
            filter
        );
        let first_two: Vec<_> = want.iter().take(2).cloned().collect();
        prop_assert_eq!(
            sm.list(&filter, 2).unwrap(),
            first_two,
            "list {:?} limit 2",
            filter
        );
    }
    prop_assert_eq!(sm.counts().unwrap(), mem.counts());
    for owner in 1..4 {
        for now in [0, 1_002, 1_500, 2_500, 6_000, u64::MAX] {
            for limit in [1, 3, usize::MAX] {
                prop_assert_eq!(
                    sm.due(owner, UnixMillis(now), limit).unwrap(),
                    mem.due(owner, UnixMillis(now), limit),
                    "due owner {} now {} limit {}",
                    owner,
                    now,
                    limit
                );
            }
        }
    }
    let mut want_routes = Vec::new();
    for d in 0..3 {
        let domain = format!("d{d}.test");
        let route = mem.route(&domain).unwrap();
        prop_assert_eq!(sm.route(&domain).unwrap(), route.clone());
        if let Some(route) = route {
            want_routes.push((domain, route));
        }
    }
    prop_assert_eq!(sm.routes().unwrap(), want_routes);
    let digest = sm.digest().unwrap();
    prop_assert_eq!(digest.applied_index, index);
    prop_assert_eq!(
        digest.checksum,
        hex::encode(mem.checksum()),
        "digest equals MemQueue::checksum"
    );
    prop_assert_eq!(sm.last_applied().map(|l| l.index), Some(index));
    prop_assert_eq!(*sm.subscribe_applied().borrow(), index);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn rocksdb_state_machine_agrees_with_memqueue_after_every_entry(
        log in prop::collection::vec(command(), 1..50)
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dir = tempfile::TempDir::new().unwrap();
        let (_log, mut sm) = relay_store::open(dir.path()).unwrap();
        let mut mem = MemQueue::default();
        let last = log.len() as u64;
        for (i, command) in log.into_iter().enumerate() {
            let index = i as u64 + 1;
            let want = mem.apply(index, &command);
            let got = rt.block_on(apply_one(&mut sm, normal(index, command)));
            prop_assert_eq!(got, want, "result of entry {}", index);
            agrees(&sm, &mem, index)?;
        }

        // The same random state, moved by snapshot onto a fresh store.
        let other_dir = tempfile::TempDir::new().unwrap();
        let (_other_log, mut other) = relay_store::open(other_dir.path()).unwrap();
        rt.block_on(async {
            let snapshot = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
            transfer(&mut other, &snapshot).await.unwrap();
        });
        agrees(&other, &mem, last)?;
    }
}
