//! Harness for the package tests: a Debian 12 container booted with
//! systemd as PID 1, from the image `scripts/debian-rootfs.sh` makes once
//! (debootstrap, then `docker import`; no registry), and the `.deb` that
//! `scripts/build-deb.sh --no-build` packages from this target dir.
//!
//! Owns: the containers it starts (removed, by id, when dropped) and the
//! commands run in them. The engine here lacks CAP_SYS_RESOURCE, so
//! `--privileged` cannot start a container; the capabilities systemd needs
//! are granted one by one instead.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::compose::repo_root;

/// Whether the opt-in package tier was asked for (`QR_PACKAGE_TESTS=1`).
pub fn package_tests_enabled() -> bool {
    std::env::var("QR_PACKAGE_TESTS").is_ok_and(|v| v == "1")
}

/// Whether a Docker engine answers.
pub fn docker_engine() -> bool {
    Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn checked(what: &str, out: std::io::Result<Output>) -> anyhow::Result<Output> {
    let out = out.with_context(|| format!("run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// Tests holding the image; the last one to let go removes it.
static IMAGE_USERS: std::sync::Mutex<usize> = std::sync::Mutex::new(0);

/// The Debian image, held by one test. The tar stays cached; the image is
/// removed once no test holds it (the next test imports it again), so no
/// image is left behind. Drop it after the containers made from it.
#[derive(Debug)]
pub struct DebianImage {
    /// The image name.
    pub name: String,
}

impl Drop for DebianImage {
    fn drop(&mut self) {
        let mut users = IMAGE_USERS.lock().unwrap_or_else(|e| e.into_inner());
        *users -= 1;
        if *users == 0 {
            let _ = Command::new("bash")
                .arg(repo_root().join("scripts/debian-rootfs.sh"))
                .arg("--remove")
                .output();
        }
    }
}

/// The systemd image, built (once per machine) and imported if missing.
pub fn debian_image() -> anyhow::Result<DebianImage> {
    let mut users = IMAGE_USERS.lock().unwrap_or_else(|e| e.into_inner());
    let out = checked(
        "scripts/debian-rootfs.sh",
        Command::new("bash")
            .arg(repo_root().join("scripts/debian-rootfs.sh"))
            .output(),
    )?;
    let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if name.is_empty() {
        bail!("scripts/debian-rootfs.sh printed no image name");
    }
    *users += 1;
    Ok(DebianImage { name })
}

/// Packages the binaries of this target dir into a `.deb` with
/// `scripts/build-deb.sh --no-build`; its path.
pub fn build_deb() -> anyhow::Result<PathBuf> {
    let bin_dir = crate::bin_path("relayd")
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let target = bin_dir.parent().expect("target dir").to_path_buf();
    let out = checked(
        "scripts/build-deb.sh --no-build",
        Command::new("bash")
            .arg(repo_root().join("scripts/build-deb.sh"))
            .arg("--no-build")
            .env("CARGO_TARGET_DIR", &target)
            .output(),
    )?;
    let deb = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if deb.extension().is_none_or(|e| e != "deb") || !deb.is_file() {
        bail!("scripts/build-deb.sh printed no .deb: {}", deb.display());
    }
    Ok(deb)
}

/// Capabilities systemd (and the units' sandboxing) needs; everything
/// `--privileged` would give except CAP_SYS_RESOURCE, which this engine
/// does not hold.
const CAPS: &[&str] = &[
    "SYS_ADMIN",
    "NET_ADMIN",
    "SYS_PTRACE",
    "SYS_NICE",
    "IPC_LOCK",
    "IPC_OWNER",
    "MKNOD",
    "SETPCAP",
    "SETFCAP",
    "SYS_CHROOT",
    "LINUX_IMMUTABLE",
    "NET_BROADCAST",
    "SYS_RAWIO",
    "AUDIT_CONTROL",
    "AUDIT_WRITE",
    "AUDIT_READ",
    "LEASE",
    "SYSLOG",
];

/// A container the test started, removed (`docker rm -f` of its id) when
/// dropped.
#[derive(Debug)]
pub struct Container {
    /// The container id.
    pub id: String,
}

impl Container {
    /// `docker run -d` of `image` with systemd as PID 1 and `mounts`
    /// (`host:container:ro` volume specs).
    pub fn boot_systemd(image: &str, mounts: &[String]) -> anyhow::Result<Container> {
        let mut cmd = Command::new("docker");
        cmd.args(["run", "-d", "--label", "quorum-relay-test=package"]);
        for cap in CAPS {
            cmd.args(["--cap-add", cap]);
        }
        // systemd manages its own cgroup tree and seccomp filters (the
        // unit's SystemCallFilter); cgroup v1 here: the host tree, as
        // systemd-in-Docker needs it.
        cmd.args([
            "--security-opt",
            "seccomp=unconfined",
            "--security-opt",
            "apparmor=unconfined",
            "--cgroupns=host",
            "-v",
            "/sys/fs/cgroup:/sys/fs/cgroup:rw",
            "--tmpfs",
            "/run",
            "--tmpfs",
            "/run/lock",
        ]);
        for m in mounts {
            cmd.args(["-v", m]);
        }
        cmd.args([image, "/sbin/init"]);
        let out = checked("docker run", cmd.output())?;
        Ok(Container {
            id: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        })
    }

    /// `docker run -d` of `image` with a plain `sleep infinity` as PID 1
    /// (no init system), for running scripts in a real Debian.
    pub fn plain(image: &str, mounts: &[String]) -> anyhow::Result<Container> {
        let mut cmd = Command::new("docker");
        cmd.args(["run", "-d", "--label", "quorum-relay-test=package"]);
        for m in mounts {
            cmd.args(["-v", m]);
        }
        cmd.args([image, "sleep", "infinity"]);
        let out = checked("docker run", cmd.output())?;
        Ok(Container {
            id: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        })
    }

    /// Runs `script` with `sh -c` in the container; its output, whatever
    /// the exit status.
    pub fn sh(&self, script: &str) -> anyhow::Result<Output> {
        Command::new("docker")
            .args(["exec", &self.id, "sh", "-c", script])
            .output()
            .context("docker exec")
    }

    /// Like [`Container::sh`], failing unless it exits 0; its stdout.
    pub fn sh_ok(&self, script: &str) -> anyhow::Result<String> {
        let out = checked(
            &format!("in the container: {script}"),
            Command::new("docker")
                .args(["exec", &self.id, "sh", "-c", script])
                .output(),
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Writes `contents` to `path` in the container with `mode` and
    /// `owner` (`user:group`).
    pub fn write_file(
        &self,
        path: &str,
        contents: &str,
        mode: &str,
        owner: &str,
    ) -> anyhow::Result<()> {
        let script = format!("cat > {path} && chmod {mode} {path} && chown {owner} {path}");
        let mut child = Command::new("docker")
            .args(["exec", "-i", &self.id, "sh", "-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("docker exec -i")?;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(contents.as_bytes())?;
        checked(&format!("write {path}"), child.wait_with_output())?;
        Ok(())
    }

    /// The container's address on Docker's bridge network.
    pub fn ip(&self) -> anyhow::Result<String> {
        let out = checked(
            "docker inspect",
            Command::new("docker")
                .args([
                    "inspect",
                    "-f",
                    "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                    &self.id,
                ])
                .output(),
        )?;
        let ip = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if ip.is_empty() {
            bail!("container {} has no address", self.id);
        }
        Ok(ip)
    }

    /// Waits until systemd has finished booting (`running`, or `degraded`
    /// when some unrelated unit failed).
    pub async fn wait_booted(&self, within: Duration) -> anyhow::Result<()> {
        let state = std::sync::Mutex::new(String::new());
        let booted = relay_testkit::wait_until(within, || {
            let s = self
                .sh("systemctl is-system-running")
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_default();
            let done = s == "running" || s == "degraded";
            *state.lock().unwrap() = s;
            done
        })
        .await;
        if booted.is_err() {
            bail!(
                "systemd did not finish booting within {within:?}: {}",
                state.lock().unwrap()
            );
        }
        Ok(())
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &self.id])
            .output();
    }
}

/// `host:container:ro` for a bind mount.
pub fn mount_ro(host: &Path, container: &str) -> String {
    format!("{}:{container}:ro", host.display())
}
