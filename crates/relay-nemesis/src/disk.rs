//! Small file systems for the nodes' data dirs, and a ballast that fills
//! one to `ENOSPC`.
//!
//! With the `disk` class each node's data dir is a small ext4 file system
//! ([`DISK_MIB`] MiB) in an image file beside it, loop-mounted by this run:
//! a real disk file system with a real journal and real `fsync`, only with
//! a hard size (and no blocks reserved for root, so a node running as root
//! meets `ENOSPC` like any other). The power-loss failpoint still decides
//! what a crash loses. [`SmallDisks::fill`] writes a ballast file until the
//! file system refuses with `ENOSPC`; [`SmallDisks::heal`] deletes it.
//! [`Drop`] unmounts (lazily: a node process that outlived the run must not
//! keep the mount forever) and deletes the images, so nothing stays
//! mounted after the run.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// Size of each node's file system, so that only the ballast fills it.
/// Two-minute runs at full load used up to about 135 MiB (RocksDB files
/// between compactions, with snapshots and purges every few seconds). Long
/// runs hold a full history window: its snapshot reached about 100 MB,
/// and a follower installing one needs room for the received file, the
/// current one and the rows it writes (WAL, then tables) at once, about
/// 480 MB here, which filled a 512 MiB file system.
pub const DISK_MIB: u64 = 1024;

/// The ballast file's name in a data dir.
pub const BALLAST: &str = "nemesis-ballast";

/// The image file behind data dir `dir`: `<dir>.ext4`, beside it.
pub fn image_path(dir: &Path) -> PathBuf {
    let mut name = dir.as_os_str().to_owned();
    name.push(".ext4");
    PathBuf::from(name)
}

/// The `mkfs.ext4` arguments for `image` (quiet, no reserved blocks).
pub fn mkfs_args(image: &Path) -> Vec<String> {
    vec![
        "-q".into(),
        "-F".into(),
        "-m".into(),
        "0".into(),
        image.display().to_string(),
    ]
}

/// Runs `program` with `args`; says what failed with its stderr.
fn run(program: &str, args: &[String]) -> anyhow::Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("run {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Makes a `mib` MiB ext4 image beside `dir` and mounts it on `dir`
/// (created if missing), leaving `dir` empty and private.
pub fn make_and_mount(dir: &Path, mib: u64) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let image = image_path(dir);
    std::fs::File::create(&image)
        .and_then(|f| f.set_len(mib << 20))
        .with_context(|| format!("create {}", image.display()))?;
    run("mkfs.ext4", &mkfs_args(&image))?;
    run(
        "mount",
        &[
            "-o".into(),
            "loop".into(),
            image.display().to_string(),
            dir.display().to_string(),
        ],
    )?;
    // A fresh ext4 holds lost+found; a node's data dir starts empty.
    let _ = std::fs::remove_dir(dir.join("lost+found"));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod {}", dir.display()))?;
    Ok(())
}

/// Unmounts `dir` (lazily) and deletes its image.
fn unmount(dir: &Path) {
    let _ = Command::new("umount").arg("-l").arg(dir).status();
    let _ = std::fs::remove_file(image_path(dir));
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
    /// Mounts a small ext4 file system on each of `dirs` (created if
    /// missing).
    pub fn mount(dirs: Vec<PathBuf>) -> anyhow::Result<SmallDisks> {
        let mut disks = SmallDisks {
            mounted: vec![false; dirs.len()],
            dirs,
        };
        for i in 0..disks.dirs.len() {
            let dir = disks.dirs[i].clone();
            make_and_mount(&dir, DISK_MIB)
                .with_context(|| format!("a {DISK_MIB} MiB file system on {}", dir.display()))?;
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
                unmount(dir);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_system_is_an_ext4_image_beside_the_data_dir_with_no_reserved_blocks() {
        let image = image_path(Path::new("/run/x/node2"));
        assert_eq!(image, Path::new("/run/x/node2.ext4"));
        assert_eq!(mkfs_args(&image).join(" "), "-q -F -m 0 /run/x/node2.ext4");
    }

    /// Fills a real small file system when this runs as root (it mounts
    /// one); elsewhere it says so and passes.
    #[test]
    fn the_ballast_fills_a_small_file_system_to_enospc_and_heal_frees_it() {
        let dir = std::env::temp_dir().join(format!("qr-nemesis-disk-{}", std::process::id()));
        if let Err(e) = make_and_mount(&dir, 16) {
            eprintln!("skipped: cannot mount a small file system here (not root?): {e:#}");
            let _ = std::fs::remove_dir(&dir);
            let _ = std::fs::remove_file(image_path(&dir));
            return;
        }
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "starts empty");
        let disks = SmallDisks {
            dirs: vec![dir.clone()],
            mounted: vec![true],
        };
        let n = disks.fill(1).unwrap();
        assert!(n > 8 << 20 && n <= 16 << 20, "{n}");
        let err = std::fs::write(dir.join("more"), b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(28), "{err}");
        disks.heal().unwrap();
        std::fs::write(dir.join("more"), b"x").unwrap();
        drop(disks);
        assert!(!image_path(&dir).exists(), "the image is deleted");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
