//! The PromQL we ship — alert rules and the Grafana dashboard in
//! `cluster-config/` — parses, and reads only metrics that real nodes
//! export. (`scripts/check-promql.sh` runs these for CI.)
//!
//! "Export" is what three real `relayd` processes put on `/metrics` after
//! one message was delivered and one refused: every series registered at
//! start plus those whose labels appear with their first event (peers,
//! targets, reply codes). A name outside that set is a typo or a metric
//! that was renamed or removed, and the panel or alert over it would stay
//! silent.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use relay_testkit::TestTarget;
use relay_tests::promql::{self, Expression};
use relay_tests::smtp::send_mail;
use relay_tests::{ClusterOptions, ProcessCluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

fn shipped_expressions() -> anyhow::Result<(Vec<Expression>, Vec<Expression>)> {
    let rules = std::fs::read_to_string(promql::alert_rules_path())?;
    let dashboard = std::fs::read_to_string(promql::dashboard_path())?;
    Ok((
        promql::rule_expressions(&rules)?,
        promql::dashboard_expressions(&dashboard)?,
    ))
}

/// Both files hold a fair number of expressions: the readers found them.
#[test]
fn the_shipped_files_hold_the_expected_expressions() -> anyhow::Result<()> {
    let (rules, dashboard) = shipped_expressions()?;
    let rule_count = std::fs::read_to_string(promql::alert_rules_path())?
        .matches("- alert:")
        .count();
    ensure!(rules.len() == rule_count && rule_count >= 14, "{rules:?}");
    ensure!(
        dashboard.len() >= 40,
        "{} dashboard expressions",
        dashboard.len()
    );
    Ok(())
}

/// `promtool check rules` on the alert rules and on a rules file that
/// records every dashboard expression; `promtool test rules` on the alert
/// tests (the all-nodes-down case among them).
#[test]
fn every_expression_parses_and_the_alert_tests_pass() -> anyhow::Result<()> {
    let Some(promtool) = promql::promtool() else {
        eprintln!("SKIPPED: promtool is not installed (scripts/setup.sh test installs it)");
        return Ok(());
    };
    let rules = promql::alert_rules_path();
    let checked = promql::run_promtool(&promtool, &["check", "rules", &rules.to_string_lossy()])?;
    ensure!(checked.contains("SUCCESS"), "{checked}");

    let (_, dashboard) = shipped_expressions()?;
    let dir = tempfile::tempdir()?;
    let generated = dir.path().join("dashboard-expressions.yml");
    std::fs::write(&generated, promql::as_recording_rules(&dashboard))?;
    let checked =
        promql::run_promtool(&promtool, &["check", "rules", &generated.to_string_lossy()])
            .context("a dashboard expression does not parse (check:<n> is its position)")?;
    ensure!(
        checked.contains(&format!("SUCCESS: {} rules found", dashboard.len())),
        "{checked}"
    );

    let tests = promql::alert_tests_path();
    promql::run_promtool(&promtool, &["test", "rules", &tests.to_string_lossy()])?;

    // And a broken expression is caught: the check can fail.
    let broken = [Expression {
        origin: "broken".into(),
        expr: "sum(rate(relay_messages_accepted_total[5m])".into(),
    }];
    std::fs::write(&generated, promql::as_recording_rules(&broken))?;
    ensure!(
        promql::run_promtool(&promtool, &["check", "rules", &generated.to_string_lossy()]).is_err(),
        "promtool accepted an unbalanced parenthesis"
    );
    Ok(())
}

/// One HTTP GET on loopback; the body of a 200.
async fn get(port: u16, path: &str) -> anyhow::Result<String> {
    let io = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        anyhow::Ok(String::from_utf8(raw)?)
    };
    let raw = tokio::time::timeout(Duration::from_secs(10), io).await??;
    let (head, body) = raw.split_once("\r\n\r\n").context("no HTTP head")?;
    ensure!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
    Ok(body.to_string())
}

async fn poll<T, F, Fut>(within: Duration, what: &str, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_and_dashboard_name_only_metrics_the_nodes_export() -> anyhow::Result<()> {
    let (rules, dashboard) = shipped_expressions()?;
    let target = TestTarget::start().await?;
    let cluster = ProcessCluster::start(ClusterOptions {
        delivery_extra: format!("default_route = [\"{}\"]\n", target.target()),
        ..Default::default()
    })?;
    cluster
        .wait_for_leader(Duration::from_secs(20), None)
        .await?;
    for node in &cluster.nodes {
        let port = node.ports.http;
        poll(Duration::from_secs(20), "every node ready", || async move {
            get(port, "/readyz").await.ok()
        })
        .await?;
    }

    // One message delivered (per-target series), one refused at end of
    // data (per-code series).
    let smtp = cluster.smtp_addr(1);
    let good = b"From: a@client.test\r\nSubject: promql\r\n\r\nhello\r\n";
    let reply = send_mail(smtp, "a@client.test", &["b@anywhere.test"], good).await?;
    ensure!(reply.code == 250, "{reply}");
    let headless = b"no header section here\r\n";
    let reply = send_mail(smtp, "a@client.test", &["b@anywhere.test"], headless).await?;
    ensure!(reply.code == 550, "{reply}");
    target
        .wait_for_messages(1, Duration::from_secs(30))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    let exported = poll(Duration::from_secs(30), "delivery counted", || {
        let cluster = &cluster;
        async move {
            let mut names = BTreeSet::new();
            for node in &cluster.nodes {
                names.extend(promql::exported_names(
                    &get(node.ports.http, "/metrics").await.ok()?,
                ));
            }
            names
                .contains("relay_delivery_target_attempts_total")
                .then_some(names)
        }
    })
    .await?;
    for name in [
        "relay_messages_rejected_total",
        "relay_raft_replication_lag",
        "relay_raft_log_fsync_seconds_bucket",
    ] {
        ensure!(exported.contains(name), "{name} not exported: {exported:?}");
    }

    let unknown = promql::unknown_names(&rules, &exported)?;
    ensure!(
        unknown.is_empty(),
        "alert rules read metrics no node exports: {unknown:?}"
    );
    let unknown = promql::unknown_names(&dashboard, &exported)?;
    ensure!(
        unknown.is_empty(),
        "the dashboard reads metrics no node exports: {unknown:?}"
    );

    // Every exported relay metric family is on the dashboard, or listed
    // here with the reason it is not.
    const NOT_ON_THE_DASHBOARD: &[&str] = &[
        // Constant 1 with version labels: for joins, not for a graph.
        "relay_build_info",
        // Above 0 only after damage and absent until then; the node logs
        // each one.
        "relay_store_dangling_index_keys_total",
    ];
    let on_dashboard: BTreeSet<String> = dashboard
        .iter()
        .map(|e| promql::metric_names(&e.expr))
        .collect::<anyhow::Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .map(|n| family(&n))
        .collect();
    let missing: Vec<String> = exported
        .iter()
        .filter(|n| n.starts_with("relay_"))
        .map(|n| family(n))
        .filter(|f| !on_dashboard.contains(f) && !NOT_ON_THE_DASHBOARD.contains(&f.as_str()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    ensure!(
        missing.is_empty(),
        "exported but on no dashboard panel (add a panel or a reason): {missing:?}"
    );
    Ok(())
}

/// A histogram's family name (`x` for `x_bucket`, `x_sum`, `x_count`).
fn family(name: &str) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            return base.to_string();
        }
    }
    name.to_string()
}
