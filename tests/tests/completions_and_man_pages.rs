//! Shell completions and man pages, generated from the clap definitions by
//! the real binaries: they run without a node, name every subcommand and
//! option, and are valid for the tools that read them.

use std::process::{Command, Output};

use relay_tests::bin_path;

fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(bin_path(bin))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {bin}: {e}"))
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("UTF-8 output")
}

/// relayctl's subcommands, and a few of their options.
const RELAYCTL_WORDS: &[&str] = &[
    "status",
    "queue",
    "summary",
    "list",
    "show",
    "hold",
    "release",
    "delete",
    "flush",
    "route",
    "member",
    "promote",
    "failover",
    "trace",
    "drill",
    "snapshot",
    "--to-domain",
    "--older-than",
    "--dry-run",
    "--addr",
    "--json",
];

#[test]
fn relayctl_completions_cover_every_subcommand_and_parse_in_bash() {
    // No node listens on the default address: nothing is asked.
    let bash = stdout(&run("relayctl", &["completions", "bash"]));
    for word in RELAYCTL_WORDS {
        assert!(
            bash.contains(word),
            "{word} missing from the bash completion"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("relayctl.bash");
    std::fs::write(&script, &bash).unwrap();
    let check = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    // Loaded into bash, it registers a completion for relayctl.
    let loaded = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {} && complete -p relayctl",
            script.display()
        ))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&loaded.stdout).contains("relayctl"),
        "{}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let script = stdout(&run("relayctl", &["completions", shell]));
        assert!(script.contains("drill"), "{shell}");
    }
    let out = run("relayctl", &["completions", "tcsh"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[test]
fn relayctl_man_pages_render_and_name_every_option() {
    let page = stdout(&run("relayctl", &["man"]));
    assert!(page.contains(".TH relayctl 1"), "{page}");
    for word in [
        "status",
        "queue",
        "drill",
        "\\-\\-addr",
        "\\-\\-token\\-file",
    ] {
        assert!(page.contains(word), "{word} missing from relayctl.1");
    }
    let dir = tempfile::tempdir().unwrap();
    let out = run("relayctl", &["man", "--dir", &dir.path().to_string_lossy()]);
    stdout(&out);
    let list = std::fs::read_to_string(dir.path().join("relayctl-queue-list.1"))
        .expect("a page per subcommand");
    for option in [
        "\\-\\-to\\-domain",
        "\\-\\-older\\-than",
        "\\-\\-state",
        "\\-\\-owner",
    ] {
        assert!(
            list.contains(option),
            "{option} missing from relayctl-queue-list.1"
        );
    }
    let pages = std::fs::read_dir(dir.path()).unwrap().count();
    assert!(pages >= 20, "{pages} pages");

    // groff, which man uses, formats it without warnings.
    if Command::new("groff").arg("--version").output().is_ok() {
        let path = dir.path().join("relayctl.1");
        let rendered = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(rendered.status.success());
        assert!(
            rendered.stderr.is_empty(),
            "groff: {}",
            String::from_utf8_lossy(&rendered.stderr)
        );
    }
}

#[test]
fn relayd_completions_and_man_page() {
    let bash = stdout(&run("relayd", &["--completions", "bash"]));
    for option in [
        "--config",
        "--print-config",
        "--config-reference",
        "--check-config",
    ] {
        assert!(bash.contains(option), "{option} missing");
    }
    let page = stdout(&run("relayd", &["--man"]));
    assert!(page.contains(".TH relayd 1"), "{page}");
    assert!(page.contains("\\-\\-print\\-config"), "{page}");
    let out = run("relayd", &["--man", "--config", "x.toml"]);
    assert_eq!(out.status.code(), Some(2));
}
