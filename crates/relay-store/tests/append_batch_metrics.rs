//! Group-commit visibility: every log append records how many entries it
//! made durable (one observation per append) and every WAL fsync is counted
//! by operation. A recorder local to the test thread keeps this independent
//! of other tests.

mod common;

use common::{LEADER, TERM, blank, normal};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use openraft::Vote;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use relay_store::metrics::{APPEND_BATCH_BUCKETS, APPEND_BATCH_ENTRIES, LOG_FSYNCS_TOTAL};
use relay_types::{Command, Route, TlsPolicy};
use tempfile::TempDir;

fn route_command(n: u64) -> Command {
    Command::SetRoute {
        domain: format!("d{n}.test"),
        route: Route::new(vec!["127.0.0.1:2600".into()], TlsPolicy::None),
    }
}

/// The value of the sample line `name` (with labels, exactly as rendered).
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn render(handle: &PrometheusHandle) -> String {
    handle.run_upkeep();
    handle.render()
}

#[test]
fn one_append_of_n_entries_is_one_observation_of_n() {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(APPEND_BATCH_ENTRIES.into()),
            &APPEND_BATCH_BUCKETS,
        )
        .unwrap()
        .build_recorder();
    let handle = recorder.handle();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = TempDir::new().unwrap();

    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let (mut log, _sm) = relay_store::open(dir.path()).unwrap();
            // One append of 5 entries, then one of 1, then one of 20.
            let five = std::iter::once(blank(1))
                .chain((2..=5).map(|i| normal(i, route_command(i))))
                .collect::<Vec<_>>();
            log.blocking_append(five).await.unwrap();
            log.blocking_append([normal(6, route_command(6))])
                .await
                .unwrap();
            log.blocking_append((7..=26).map(|i| normal(i, route_command(i))))
                .await
                .unwrap();
            log.save_vote(&Vote::new(TERM + 1, LEADER)).await.unwrap();
            log.save_committed(Some(openraft::testing::log_id(TERM, LEADER, 26)))
                .await
                .unwrap();
        })
    });

    let text = render(&handle);
    let h = APPEND_BATCH_ENTRIES;
    assert_eq!(sample(&text, &format!("{h}_count")), Some(3.0), "{text}");
    assert_eq!(sample(&text, &format!("{h}_sum")), Some(26.0), "{text}");
    // Cumulative buckets: the 1-entry append, then the 5, then the 20.
    for (le, want) in [
        ("1", 1.0),
        ("2", 1.0),
        ("4", 1.0),
        ("8", 2.0),
        ("16", 2.0),
        ("32", 3.0),
    ] {
        assert_eq!(
            sample(&text, &format!("{h}_bucket{{le=\"{le}\"}}")),
            Some(want),
            "bucket le={le}\n{text}"
        );
    }
    let f = LOG_FSYNCS_TOTAL;
    assert_eq!(
        sample(&text, &format!("{f}{{op=\"append\"}}")),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, &format!("{f}{{op=\"vote\"}}")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, &format!("{f}{{op=\"committed\"}}")),
        None,
        "save_committed does not sync: {text}"
    );
}

#[test]
fn an_append_whose_fsync_failed_is_not_recorded() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = TempDir::new().unwrap();

    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let (mut log, _sm) = relay_store::open(dir.path()).unwrap();
            log.blocking_append([blank(1), normal(2, route_command(2))])
                .await
                .unwrap();
            log.set_sync_failpoint(true);
            assert!(
                log.blocking_append([normal(3, route_command(3))])
                    .await
                    .is_err()
            );
        })
    });

    let text = render(&handle);
    let h = APPEND_BATCH_ENTRIES;
    assert_eq!(sample(&text, &format!("{h}_count")), Some(1.0), "{text}");
    assert_eq!(sample(&text, &format!("{h}_sum")), Some(2.0), "{text}");
    assert_eq!(
        sample(&text, &format!("{LOG_FSYNCS_TOTAL}{{op=\"append\"}}")),
        Some(1.0),
        "{text}"
    );
}
