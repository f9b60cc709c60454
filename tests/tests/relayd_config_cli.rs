//! `relayd --print-config` and `--config-reference` through the real
//! binary: output, exit codes, and every configuration file the
//! repository ships.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use relay_tests::bin_path;
use relay_tests::compose::repo_root;

fn relayd(args: &[&str]) -> Output {
    Command::new(bin_path("relayd"))
        .args(args)
        .output()
        .expect("run relayd")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every `*.toml` under `cluster-config/`.
fn shipped_configs() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read cluster-config") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "toml") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&repo_root().join("cluster-config"), &mut out);
    out.sort();
    out
}

/// Secrets written inline in the shipped files (the compose and deb files
/// read theirs from files, which `--print-config` does not open).
const INLINE_SECRETS: &[&str] = &["dev-cluster-secret-change-me", "dev-token"];

#[test]
fn print_config_shows_every_shipped_config_with_defaults_and_masked_secrets() {
    let configs = shipped_configs();
    assert!(configs.len() >= 7, "{configs:?}");
    for config in &configs {
        let path = config.to_string_lossy();
        let out = relayd(&["--print-config", "--config", &path]);
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "{path}: {:?}\n{}",
            out.status,
            text(&out.stderr)
        );
        // TOML again, with the file's own values and the defaults it omits.
        let printed: toml::Table = toml::from_str(&stdout)
            .unwrap_or_else(|e| panic!("{path}: printed config is not TOML: {e}\n{stdout}"));
        let file: toml::Table = toml::from_str(&std::fs::read_to_string(config).unwrap()).unwrap();
        assert_eq!(printed["node_id"], file["node_id"], "{path}");
        assert_eq!(
            printed["cluster"]["submit_timeout"], file["cluster"]["submit_timeout"],
            "{path}"
        );
        assert!(
            stdout.contains("keep_logs = 1000  # default\n"),
            "{path}: a default not marked\n{stdout}"
        );
        assert!(
            stdout.contains("max_concurrent = 20  # default\n"),
            "{path}\n{stdout}"
        );
        for secret in INLINE_SECRETS {
            assert!(!stdout.contains(secret), "{path}: {secret} shown\n{stdout}");
        }
        let masked = stdout.matches("\"********\"  # masked").count();
        let inline = ["secret = ", "token = "]
            .iter()
            .filter(|k| {
                std::fs::read_to_string(config)
                    .unwrap()
                    .lines()
                    .any(|l| l.starts_with(*k))
            })
            .count();
        assert_eq!(masked, inline, "{path}: secrets masked\n{stdout}");

        // `--explicit`: only what the file sets.
        let out = relayd(&["--print-config", "--explicit", "--config", &path]);
        assert!(out.status.success(), "{path}: {}", text(&out.stderr));
        let explicit = text(&out.stdout);
        assert!(!explicit.contains("# default"), "{path}\n{explicit}");
        assert!(!explicit.contains("keep_logs"), "{path}\n{explicit}");
        assert!(explicit.contains("submit_timeout = "), "{path}\n{explicit}");
    }
}

#[test]
fn print_config_names_an_unknown_key_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let local = repo_root().join("cluster-config/local/node1.toml");
    let good = std::fs::read_to_string(&local).unwrap();
    let bad = dir.path().join("typo.toml");
    std::fs::write(
        &bad,
        good.replace("max_message_size = ", "max_mesage_size = "),
    )
    .unwrap();
    let out = relayd(&["--print-config", "--config", &bad.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("typo.toml") && stderr.contains("max_mesage_size"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());

    let missing = dir.path().join("missing.toml");
    let out = relayd(&["--print-config", "--config", &missing.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("missing.toml: cannot read"));

    // Usage errors are clap's exit 2 as well.
    let out = relayd(&["--explicit", "--config", &local.to_string_lossy()]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "--explicit needs --print-config"
    );
    let out = relayd(&["--print-config"]);
    assert_eq!(out.status.code(), Some(2), "--print-config needs --config");
}

#[test]
fn config_reference_is_docs_configuration_md() {
    let out = relayd(&["--config-reference"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let generated = text(&out.stdout);
    let docs = std::fs::read_to_string(repo_root().join("docs/configuration.md")).unwrap();
    assert!(
        generated == docs,
        "docs/configuration.md differs from `relayd --config-reference`; regenerate it"
    );
    // Every key a shipped file sets is in the reference.
    for config in shipped_configs() {
        let table: toml::Table =
            toml::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
        let mut keys = Vec::new();
        collect(&table, "", &mut keys);
        for key in keys {
            assert!(
                generated.contains(&format!("| `{key}` |")),
                "{}: {key} is not in the reference",
                config.display()
            );
        }
    }
    let out = relayd(&["--config-reference", "--check-config"]);
    assert_eq!(out.status.code(), Some(2));
}

/// Dotted keys of a parsed file, `[]` for entries of a list of tables.
fn collect(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
    for (name, value) in table {
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match value {
            toml::Value::Table(inner) => collect(inner, &key, out),
            toml::Value::Array(items)
                if items.iter().all(toml::Value::is_table) && !items.is_empty() =>
            {
                for item in items {
                    collect(item.as_table().unwrap(), &format!("{key}[]"), out);
                }
            }
            _ => out.push(key),
        }
    }
}
