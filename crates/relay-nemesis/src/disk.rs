//! Small file systems for the nodes' data dirs, and a ballast that fills
//! one to `ENOSPC`.
//!
//! With the `disk` class each node's data dir is a size-limited `tmpfs`
//! ([`DISK_MIB`] MiB) mounted by this run. A tmpfs keeps what was written
//! across a kill of the process (only unmounting drops it), so the
//! power-loss failpoint still decides what a crash loses; what it adds is a
//! hard size. [`SmallDisks::fill`] writes a ballast file until the file
//! system refuses with `ENOSPC`; [`SmallDisks::heal`] deletes it. [`Drop`]
//! unmounts (lazily: a node process that outlived the run must not keep
//! the mount forever), so nothing stays mounted after the run.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// Size of each node's file system. Two-minute runs at full load used up
/// to about 135 MiB (RocksDB files between compactions, with snapshots and
/// purges every few seconds), so only the ballast fills it.
pub const DISK_MIB: u64 = 512;

/// The ballast file's name in a data dir.
pub const BALLAST: &str = "nemesis-ballast";

/// The `mount` arguments for a data dir of `mib` MiB at `dir`.
pub fn mount_args(dir: &Path, mib: u64) -> Vec<String> {
    vec![
        "-t".into(),
        "tmpfs".into(),
        "-o".into(),
        format!("size={mib}m,mode=0700"),
        "qr-nemesis".into(),
        dir.display().to_string(),
    ]
}

/// Appends to `file` in 1 MiB writes, then 4 KiB ones, until the file
/// system says `ENOSPC`; the bytes written. Any other error is an error.
pub fn fill_until_full(file: &Path) -> anyhow::Result<u64> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .with_context(|| format!("create {}", file.display()))?;
    let mut written = 0u64;
    for chunk in [1 << 20, 4 << 10, 512] {
        let block = vec![0x5au8; chunk];
        loop {
            match f.write(&block) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => return Err(e).with_context(|| format!("write {}", file.display())),
            }
        }
    }
    Ok(written)
}

/// The mounted data dirs of this run, by node id (index = id - 1).
#[derive(Debug)]
pub struct SmallDisks {
    dirs: Vec<PathBuf>,
    mounted: Vec<bool>,
}

impl SmallDisks {
    /// Mounts a small tmpfs on each of `dirs` (created if missing).
    pub fn mount(dirs: Vec<PathBuf>) -> anyhow::Result<SmallDisks> {
        let mut disks = SmallDisks {
            mounted: vec![false; dirs.len()],
            dirs,
        };
        for i in 0..disks.dirs.len() {
            let dir = disks.dirs[i].clone();
            std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
            let out = Command::new("mount")
                .args(mount_args(&dir, DISK_MIB))
                .output()
                .context("run mount")?;
            if !out.status.success() {
                bail!(
                    "mount a {DISK_MIB} MiB tmpfs on {}: {}",
                    dir.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            disks.mounted[i] = true;
        }
        Ok(disks)
    }

    /// Fills node `id`'s file system; the ballast's size in bytes.
    pub fn fill(&self, id: u64) -> anyhow::Result<u64> {
        fill_until_full(&self.dirs[id as usize - 1].join(BALLAST))
    }

    /// Deletes every ballast (all disks have room again).
    pub fn heal(&self) -> anyhow::Result<()> {
        for dir in &self.dirs {
            match std::fs::remove_file(dir.join(BALLAST)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).context("delete the ballast"),
            }
        }
        Ok(())
    }
}

impl Drop for SmallDisks {
    fn drop(&mut self) {
        for (dir, mounted) in self.dirs.iter().zip(&self.mounted) {
            if *mounted {
                let _ = Command::new("umount").arg("-l").arg(dir).status();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mount_is_a_size_limited_tmpfs_on_the_data_dir() {
        let args = mount_args(Path::new("/run/x/node2"), 64);
        assert_eq!(
            args.join(" "),
            "-t tmpfs -o size=64m,mode=0700 qr-nemesis /run/x/node2"
        );
    }

    /// Fills a real small file system when this runs as root (it mounts
    /// one); elsewhere it says so and passes.
    #[test]
    fn the_ballast_fills_a_small_file_system_to_enospc_and_heal_frees_it() {
        let dir = std::env::temp_dir().join(format!("qr-nemesis-disk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new("mount")
            .args(mount_args(&dir, 4))
            .output()
            .unwrap();
        if !out.status.success() {
            eprintln!("skipped: cannot mount a tmpfs here (not root?)");
            let _ = std::fs::remove_dir(&dir);
            return;
        }
        let disks = SmallDisks {
            dirs: vec![dir.clone()],
            mounted: vec![true],
        };
        let n = disks.fill(1).unwrap();
        assert!(n > 3 << 20 && n <= 4 << 20, "{n}");
        let err = std::fs::write(dir.join("more"), b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(28), "{err}");
        disks.heal().unwrap();
        std::fs::write(dir.join("more"), b"x").unwrap();
        drop(disks);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
