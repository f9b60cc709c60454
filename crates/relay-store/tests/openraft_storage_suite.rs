//! openraft's own storage test suite, run against the RocksDB store.

use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};
use relay_store::{LogStore, StateMachine, TypeConfig};
use tempfile::TempDir;

/// Builds a fresh store in a temporary directory for every suite case.
struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<u64>> {
        let dir = TempDir::new().expect("temporary directory");
        let (log_store, state_machine) = relay_store::open(dir.path()).expect("open a fresh store");
        Ok((dir, log_store, state_machine))
    }
}

/// A plain `#[test]`: the suite builds its own tokio runtime per case.
#[test]
fn openraft_storage_suite_passes_on_rocksdb() {
    if let Err(e) = Suite::test_all(RocksBuilder) {
        panic!("openraft storage suite failed: {e}");
    }
}
