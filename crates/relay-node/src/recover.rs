//! `relayd --config FILE --recover [--confirm]`: a new one-voter cluster
//! from this (stopped) node's store after the quorum is lost for good
//! (`relay_store::recover` has the mechanism and its limits).
//!
//! Without `--confirm` it only reads and prints, and exits 1: the operator
//! sees what the node holds and what may be missing before deciding.
//! stdout gets the report as JSON (for scripts); stderr the explanation.

use std::process::ExitCode;

use relay_store::recover::{RecoveryReport, force_single_voter, inspect};

use crate::NodeConfig;

/// Runs the recovery (or its dry run) for `config`'s node.
pub fn run(config: &NodeConfig, confirm: bool) -> ExitCode {
    let db = config.data_dir.join("db");
    let guard = config.data_dir.join("voter-guard");
    let result = if confirm {
        force_single_voter(&db, &guard, config.node_id)
    } else {
        inspect(&db, config.node_id)
    };
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "relayd: recovery of {} failed: {e} (is the node stopped?)",
                db.display()
            );
            return ExitCode::FAILURE;
        }
    };
    match serde_json::to_string_pretty(&report) {
        Ok(json) => println!("{json}"),
        Err(e) => eprintln!("relayd: cannot print the report: {e}"),
    }
    explain(&report, confirm);
    if confirm {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn explain(r: &RecoveryReport, confirm: bool) {
    let at = |ms: u64| format!("{} (Unix ms {ms})", relay_types::UnixMillis(ms).rfc5322());
    eprintln!(
        "node {}: old cluster voters {:?}, learners {:?}",
        r.node, r.old_voters, r.old_learners
    );
    eprintln!(
        "it holds the log up to index {} (term {}); the last index it knew committed is {}",
        r.last_log_index, r.last_log_term, r.known_committed
    );
    if r.held_beyond_known_commit > 0 {
        eprintln!(
            "{} entries past that are kept and will be committed: their mail is delivered, \
             some of it possibly never acknowledged to its sender",
            r.held_beyond_known_commit
        );
    }
    match r.newest_message_ms {
        Some(ms) => eprintln!(
            "possibly missing: mail the old cluster acknowledged after {} (the newest message \
             this node holds); the replica's lag before the loss (relayctl status, LAG S) bounds it",
            at(ms)
        ),
        None => eprintln!("this node holds no message at all"),
    }
    eprintln!("{} messages queued in its state", r.queued);
    if confirm {
        if let Some(dir) = &r.evidence {
            eprintln!("evidence kept in {}", dir.display());
        }
        eprintln!(
            "node {} is now the only voter of a new cluster (term {}); start it, then add the \
             other nodes back as learners with empty data dirs (docs/disaster-recovery.md)",
            r.node, r.new_term
        );
    } else {
        eprintln!(
            "dry run: nothing changed. This node would become the only voter of a new cluster; \
             the old members must never run on their old data again. Run again with --confirm \
             to do it."
        );
    }
}
