//! The Debian package and the newcomer's setup on a real Debian 12, in
//! containers this test starts from the image `scripts/debian-rootfs.sh`
//! builds once (debootstrap; `docker import`, no registry):
//!
//! - the `.deb` from `scripts/build-deb.sh` installs with apt, and systemd
//!   (PID 1 in the container) starts a node from the shipped unit: it runs
//!   as the `quorum-relay` user, answers SMTP `220` on port 25, `/readyz`
//!   and `relayctl status`, and the unit restarts it after a kill -9;
//! - with another mail server installed (exim4), `scripts/setup.sh demo`
//!   (the demo's package step) installs for real and leaves it in place,
//!   and the test set's package step (dry run: apt's own resolver) would
//!   neither install postfix nor remove anything.
//!
//! Opt-in (`QR_PACKAGE_TESTS=1`; docs/fault-suite.md, "Package tier and
//! the Compose tier"): 2-3 minutes; the first run also builds the root
//! filesystem (about 160 MB in ~/.cache/quorum-relay/debian-rootfs), and
//! each run downloads exim4 and the demo packages (build tools, libclang)
//! into a container that is removed afterwards. Needs root, a Docker
//! engine and a reachable Debian mirror.

use std::time::Duration;

use relay_tests::compose::repo_root;
use relay_tests::debian::{
    Container, build_deb, debian_image, docker_engine, mount_ro, package_tests_enabled,
};
use relay_tests::smtp::SmtpClient;

const LONG: Duration = Duration::from_secs(120);

fn enabled(test: &str) -> bool {
    if !package_tests_enabled() {
        eprintln!("SKIPPED {test}: the package tier is opt-in (QR_PACKAGE_TESTS=1)");
        return false;
    }
    if !docker_engine() {
        eprintln!("SKIPPED {test}: no Docker engine answers here");
        return false;
    }
    true
}

/// A one-node tier: the smallest configuration the unit can start.
const ONE_NODE: &str = r#"node_id = 1
data_dir = "/var/lib/quorum-relay"
hostname = "relay1.test"

[listen]
smtp = "0.0.0.0:25"
raft = "127.0.0.1:7101"
admin = "127.0.0.1:7201"
http = "0.0.0.0:9101"

[cluster]
secret_file = "/etc/quorum-relay/cluster-secret"
bootstrap = true

[[cluster.members]]
id = 1
raft = "127.0.0.1:7101"

[smtp]
authorized_networks = ["127.0.0.0/8"]
tls = "auto"

[[routes]]
domain = "example.test"
targets = ["127.0.0.1:2600"]
tls = "none"

[admin]
token_file = "/etc/quorum-relay/admin-token"
"#;

fn main_pid(c: &Container) -> String {
    c.sh_ok("systemctl show -p MainPID --value relayd")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deb_installs_and_systemd_starts_a_node() {
    if !enabled("deb_installs_and_systemd_starts_a_node") {
        return;
    }
    let image = debian_image().expect("Debian image");
    let deb = build_deb().expect(".deb");
    let file = deb.file_name().unwrap().to_string_lossy().into_owned();
    let c = Container::boot_systemd(&image.name, &[mount_ro(deb.parent().unwrap(), "/pkg")])
        .expect("container");
    c.wait_booted(LONG).await.expect("systemd booted");

    // As the README says: apt installs the file and what it depends on.
    let install = c
        .sh(&format!(
            "DEBIAN_FRONTEND=noninteractive apt-get install -y /pkg/{file}"
        ))
        .expect("apt-get install");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&install.stdout),
        String::from_utf8_lossy(&install.stderr)
    );
    assert!(install.status.success(), "apt-get install: {said}");
    // Installed, not enabled; the postinst says what to do next.
    assert!(said.contains("systemctl enable --now relayd"), "{said}");
    assert_eq!(
        c.sh_ok("systemctl is-enabled relayd || true")
            .unwrap()
            .trim(),
        "disabled"
    );
    assert_eq!(
        c.sh_ok("stat -c '%U %a' /var/lib/quorum-relay /etc/quorum-relay/relayd.toml")
            .unwrap(),
        "quorum-relay 750\nroot 640\n"
    );

    c.write_file(
        "/etc/quorum-relay/cluster-secret",
        "package-test-cluster-secret-0123456789\n",
        "0640",
        "root:quorum-relay",
    )
    .unwrap();
    c.write_file(
        "/etc/quorum-relay/admin-token",
        "package-test-token\n",
        "0640",
        "root:quorum-relay",
    )
    .unwrap();
    c.write_file(
        "/etc/quorum-relay/relayd.toml",
        ONE_NODE,
        "0640",
        "root:quorum-relay",
    )
    .unwrap();
    c.sh_ok("systemctl enable --now relayd")
        .expect("enable --now");

    let ip = c.ip().unwrap();
    let ready = relay_testkit::wait_until(LONG, || {
        relay_node::check::health_check(&format!("http://{ip}:9101/readyz"), Duration::from_secs(2))
            .is_ok()
    })
    .await;
    assert!(
        ready.is_ok(),
        "/readyz not ready within {LONG:?}: {}",
        c.sh_ok("systemctl status relayd --no-pager; journalctl -u relayd --no-pager | tail -n 30")
            .unwrap_or_default()
    );
    // SMTP on port 25 as an unprivileged user: the unit's ambient
    // CAP_NET_BIND_SERVICE.
    let addr: std::net::SocketAddr = format!("{ip}:25").parse().unwrap();
    let (_, greeting) = SmtpClient::connect(addr).await.expect("SMTP connect");
    assert_eq!(greeting.code, 220, "{}", greeting.text());
    let pid = main_pid(&c);
    assert_eq!(
        c.sh_ok(&format!("stat -c %U /proc/{pid}")).unwrap().trim(),
        "quorum-relay"
    );
    let status = c
        .sh("relayctl --addr 127.0.0.1:7201 --token-file /etc/quorum-relay/admin-token status")
        .unwrap();
    assert!(
        status.status.success(),
        "relayctl status: {}{}",
        String::from_utf8_lossy(&status.stdout),
        String::from_utf8_lossy(&status.stderr)
    );

    // Restart=on-failure: a killed node is started again by systemd.
    c.sh_ok(&format!("kill -9 {pid}")).unwrap();
    let restarted = relay_testkit::wait_until(LONG, || {
        let now = main_pid(&c);
        now != pid
            && now != "0"
            && !now.is_empty()
            && relay_node::check::health_check(
                &format!("http://{ip}:9101/readyz"),
                Duration::from_secs(2),
            )
            .is_ok()
    })
    .await;
    assert!(
        restarted.is_ok(),
        "not restarted after kill -9: {}",
        c.sh_ok("systemctl status relayd --no-pager")
            .unwrap_or_default()
    );
}

fn installed(c: &Container, package: &str) -> bool {
    c.sh_ok(&format!(
        "dpkg-query -W -f='${{Status}}' {package} 2>/dev/null || true"
    ))
    .is_ok_and(|s| s.contains("install ok installed"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_leaves_another_mail_server_in_place() {
    if !enabled("setup_leaves_another_mail_server_in_place") {
        return;
    }
    let image = debian_image().expect("Debian image");
    let root = repo_root();
    let c = Container::plain(
        &image.name,
        &[
            mount_ro(&root.join("scripts"), "/src/scripts"),
            mount_ro(&root.join("Cargo.toml"), "/src/Cargo.toml"),
        ],
    )
    .expect("container");
    c.sh_ok(
        "apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
         apt-get install -y -qq --no-install-recommends exim4-daemon-light >/dev/null",
    )
    .expect("install exim4");
    assert!(installed(&c, "exim4-daemon-light"));
    // The hazard is real: apt would remove exim4 to install postfix.
    let hazard = c.sh_ok("apt-get install --simulate postfix").unwrap();
    assert!(hazard.contains("Remv exim4-daemon-light"), "{hazard}");

    // The demo's package step, for real. It then stops at the Rust check
    // (no toolchain in this container), after the packages.
    let demo = c.sh("/src/scripts/setup.sh demo").unwrap();
    let said = String::from_utf8_lossy(&demo.stderr).into_owned();
    assert!(said.contains("no Rust toolchain"), "{said}");
    for package in ["build-essential", "libclang-dev", "swaks", "jq"] {
        assert!(installed(&c, package), "{package} not installed: {said}");
    }
    assert!(installed(&c, "exim4-daemon-light"), "exim4 removed: {said}");

    // The test set's package step (dry run: chromium alone is hundreds of
    // MB): postfix is left out with a message, and apt would remove nothing.
    let test = c.sh("/src/scripts/setup.sh test --dry-run").unwrap();
    let out = String::from_utf8_lossy(&test.stdout).into_owned();
    let err = String::from_utf8_lossy(&test.stderr).into_owned();
    assert!(test.status.success(), "{out}{err}");
    assert!(
        err.contains("not installing postfix") && err.contains("exim4-daemon-light"),
        "{err}"
    );
    let would = out
        .lines()
        .find_map(|l| l.strip_prefix("setup: dry run: would install: "))
        .unwrap_or_else(|| panic!("no install line: {out}"));
    assert!(!would.split(' ').any(|p| p == "postfix"), "{out}");
    assert!(would.contains("chromium"), "{out}");
    assert!(
        out.contains("setup: dry run: apt would remove: nothing"),
        "{out}"
    );

    assert!(installed(&c, "exim4-daemon-light"));
    assert!(!installed(&c, "postfix"));
}
