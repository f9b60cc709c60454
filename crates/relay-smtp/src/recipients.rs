//! Recipient lists of relay domains (Postfix `relay_recipient_maps`): a
//! domain with a list accepts only the recipients on it; the others get
//! `550 5.1.1` at RCPT, so the tier never accepts mail it would have to
//! bounce to a (possibly forged) sender. Domains without a list accept
//! every local part.
//!
//! The lists live in one directory, one file per domain, named after the
//! domain (`example.test`; names starting with `.` and ending in `~` are
//! skipped). A file holds one entry a line: a local part (`alice`) or a
//! whole address (`alice@example.test`); `#` starts a comment, blank lines
//! are skipped, matching ignores ASCII case. An empty file accepts nobody.
//! [`RecipientLists::reload`] (on SIGHUP) reads the directory again and
//! swaps the lists in only if every file loaded.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use relay_types::normalize_domain;

/// One domain's accepted local parts (lower-case).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecipientList {
    local_parts: HashSet<String>,
}

impl RecipientList {
    /// Parses a list file's text for `domain`; `file` names it in errors.
    pub fn parse(domain: &str, file: &Path, text: &str) -> Result<Self, RecipientListError> {
        let mut local_parts = HashSet::new();
        for (i, line) in text.lines().enumerate() {
            let entry = line.split('#').next().unwrap_or("").trim();
            if entry.is_empty() {
                continue;
            }
            let bad = |why: &'static str| RecipientListError::Entry {
                file: file.to_path_buf(),
                line: i + 1,
                why,
            };
            if entry.contains(char::is_whitespace) {
                return Err(bad("one address a line"));
            }
            let local = match entry.rsplit_once('@') {
                Some((local, d)) if normalize_domain(d) == domain => local,
                Some(_) => return Err(bad("address of another domain")),
                None => entry,
            };
            if local.is_empty() {
                return Err(bad("empty local part"));
            }
            local_parts.insert(local.to_ascii_lowercase());
        }
        Ok(RecipientList { local_parts })
    }

    /// Is `local_part` on the list?
    pub fn contains(&self, local_part: &str) -> bool {
        self.local_parts.contains(&local_part.to_ascii_lowercase())
    }

    /// Entries on the list.
    pub fn len(&self) -> usize {
        self.local_parts.len()
    }

    /// Whether the list is empty (the domain accepts nobody).
    pub fn is_empty(&self) -> bool {
        self.local_parts.is_empty()
    }
}

/// Why a list did not load.
#[derive(Debug, thiserror::Error)]
pub enum RecipientListError {
    /// The directory could not be listed.
    #[error("{dir}: {source}")]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file could not be read.
    #[error("{file}: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A line is not a local part or an address of the list's domain.
    #[error("{file}:{line}: {why}")]
    Entry {
        /// The file.
        file: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        why: &'static str,
    },
}

/// Every domain's list, swapped whole on reload.
#[derive(Debug)]
pub struct RecipientLists {
    dir: PathBuf,
    current: RwLock<Arc<BTreeMap<String, RecipientList>>>,
}

impl RecipientLists {
    /// Loads every list in `dir`; the first that does not load is the
    /// error.
    pub fn load(dir: &Path) -> Result<Arc<Self>, RecipientListError> {
        let lists = read_dir(dir)?;
        Ok(Arc::new(RecipientLists {
            dir: dir.to_path_buf(),
            current: RwLock::new(Arc::new(lists)),
        }))
    }

    /// Reads the directory again and uses it if every file loaded;
    /// otherwise keeps the lists in use and returns the error. Returns
    /// (domains, entries).
    pub fn reload(&self) -> Result<(usize, usize), RecipientListError> {
        let lists = read_dir(&self.dir)?;
        let counts = (lists.len(), lists.values().map(RecipientList::len).sum());
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(lists);
        Ok(counts)
    }

    /// `Some(true/false)` for a domain with a list; `None` for a domain
    /// without one (every local part accepted).
    pub fn accepts(&self, domain: &str, local_part: &str) -> Option<bool> {
        let lists = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        lists.get(domain).map(|l| l.contains(local_part))
    }
}

fn read_dir(dir: &Path) -> Result<BTreeMap<String, RecipientList>, RecipientListError> {
    let dir_err = |source| RecipientListError::Dir {
        dir: dir.to_path_buf(),
        source,
    };
    let mut lists = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(dir_err)? {
        let entry = entry.map_err(dir_err)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name.ends_with('~') {
            continue;
        }
        let file = entry.path();
        if !file.is_file() {
            continue;
        }
        let domain = normalize_domain(&name);
        let text = std::fs::read_to_string(&file).map_err(|source| RecipientListError::Read {
            file: file.clone(),
            source,
        })?;
        lists.insert(domain.clone(), RecipientList::parse(&domain, &file, &text)?);
    }
    Ok(lists)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_take_local_parts_and_addresses_and_ignore_case() {
        let list = RecipientList::parse(
            "example.test",
            Path::new("l"),
            "# staff\nalice\n  Bob@Example.TEST  # with domain\n\ncarol+tag\n",
        )
        .unwrap();
        assert_eq!(list.len(), 3);
        assert!(list.contains("ALICE") && list.contains("bob") && list.contains("carol+tag"));
        assert!(!list.contains("mallory") && !list.contains("carol"));
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        for (text, line) in [
            ("alice\nbob@other.test\n", 2),
            ("a b\n", 1),
            ("ok\n\n@example.test\n", 3),
        ] {
            let err = RecipientList::parse("example.test", Path::new("x.txt"), text).unwrap_err();
            assert!(
                err.to_string().starts_with(&format!("x.txt:{line}:")),
                "{err}"
            );
        }
    }

    #[test]
    fn reload_swaps_only_when_every_file_loads() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("Example.Test");
        std::fs::write(&file, "alice\n").unwrap();
        std::fs::write(dir.path().join(".hidden"), "x y z\n").unwrap();
        let lists = RecipientLists::load(dir.path()).unwrap();
        assert_eq!(lists.accepts("example.test", "alice"), Some(true));
        assert_eq!(lists.accepts("example.test", "bob"), Some(false));
        assert_eq!(lists.accepts("other.test", "bob"), None);
        std::fs::write(&file, "alice\nbob\n").unwrap();
        assert_eq!(lists.reload().unwrap(), (1, 2));
        assert_eq!(lists.accepts("example.test", "bob"), Some(true));
        std::fs::write(&file, "bob@elsewhere.test\n").unwrap();
        assert!(lists.reload().is_err());
        assert_eq!(
            lists.accepts("example.test", "bob"),
            Some(true),
            "old list kept"
        );
    }
}
