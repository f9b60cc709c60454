//! A store that cannot be opened is an error naming the path and the cause,
//! never a silently empty store.

use std::fs;

use relay_store::StoreError;
use tempfile::TempDir;

#[test]
fn a_directory_holding_other_files_is_refused() {
    let dir = TempDir::new().unwrap();
    fs::write(dir.path().join("notes.txt"), "not a database").unwrap();
    let err = relay_store::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::NotAStore { .. }), "{err}");
    assert!(
        err.to_string().contains(&dir.path().display().to_string()),
        "{err}"
    );
}

#[test]
fn a_missing_directory_becomes_a_new_store() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("data").join("db");
    let (_log, sm) = relay_store::open(&path).unwrap();
    assert_eq!(sm.last_applied(), None);
    assert!(path.join("CURRENT").exists());
}

#[test]
fn a_store_already_open_is_refused_with_path_and_cause() {
    let dir = TempDir::new().unwrap();
    let _open = relay_store::open(dir.path()).unwrap();
    let err = relay_store::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains(&dir.path().display().to_string()), "{text}");
    assert!(text.to_lowercase().contains("lock"), "{text}");
}

#[test]
fn a_corrupted_store_fails_to_open_instead_of_starting_empty() {
    let dir = TempDir::new().unwrap();
    drop(relay_store::open(dir.path()).unwrap());
    fs::write(dir.path().join("CURRENT"), "garbage").unwrap();
    let err = relay_store::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err}");
    assert!(
        err.to_string().contains(&dir.path().display().to_string()),
        "{err}"
    );
}
