//! `relayctl status`.

use relay_proto::admin::{NodeInfo, StatusReply, StatusRequest};
use serde_json::json;

use crate::client::{Admin, CliError};
use crate::output::{self, outln};

/// Lag (entries) above which a reachable node counts as degraded.
const DEGRADED_LAG: u64 = 100;

/// One word per node: `ok`, `degraded` (answers but lags, or sees no
/// leader), `down` (does not answer).
fn node_verdict(reply: &StatusReply, n: &NodeInfo) -> &'static str {
    if !n.reachable {
        "down"
    } else if reply.leader.is_none() || n.lag > DEGRADED_LAG {
        "degraded"
    } else {
        "ok"
    }
}

/// One word for the cluster: `ok` (every node ok), `degraded` (a leader and
/// a quorum of voters answer), `down` (no leader or no quorum).
fn cluster_verdict(reply: &StatusReply) -> &'static str {
    let voters: Vec<&NodeInfo> = reply.nodes.iter().filter(|n| n.voter).collect();
    let up = voters.iter().filter(|n| n.reachable).count();
    if reply.leader.is_none() || up * 2 <= voters.len() {
        "down"
    } else if reply.nodes.iter().all(|n| node_verdict(reply, n) == "ok") {
        "ok"
    } else {
        "degraded"
    }
}

/// The exit status for a cluster verdict: 0 ok, 4 degraded, 5 down, so
/// `relayctl status` can gate a script or a monitoring check.
fn verdict_result(verdict: &str) -> Result<(), CliError> {
    match verdict {
        "ok" => Ok(()),
        "degraded" => Err(CliError::degraded()),
        _ => Err(CliError::down()),
    }
}

/// Prints cluster status; exits 4 when degraded, 5 when down.
pub async fn run(admin: &mut Admin, as_json: bool) -> Result<(), CliError> {
    let reply = admin
        .client
        .status(StatusRequest {})
        .await
        .map_err(|s| CliError::from_status(&admin.addr, s))?
        .into_inner();
    let queue = reply.queue.unwrap_or_default();
    if as_json {
        let value = json!({
            "leader": reply.leader,
            "term": reply.term,
            "answered_by": reply.answered_by,
            "nodes": reply.nodes.iter().map(|n| json!({
                "id": n.id,
                "role": n.role,
                "addr": n.addr,
                "reachable": n.reachable,
                "applied": n.applied,
                "lag": n.lag,
                "lag_seconds": n.lag_millis.map(|ms| ms as f64 / 1000.0),
                "voter": n.voter,
                "drained": n.drained,
                "verdict": node_verdict(&reply, n),
            })).collect::<Vec<_>>(),
            "verdict": cluster_verdict(&reply),
            "queue": {"queued": queue.queued, "deferred": queue.deferred, "held": queue.held},
        });
        output::json(&value);
        return verdict_result(cluster_verdict(&reply));
    }
    match reply.leader {
        Some(l) => outln!(
            "cluster: {}   leader: node {l}   term: {}",
            cluster_verdict(&reply),
            reply.term
        ),
        None => outln!(
            "cluster: {}   leader: none (election or no quorum)   term: {}",
            cluster_verdict(&reply),
            reply.term
        ),
    }
    let rows: Vec<[String; 8]> = reply
        .nodes
        .iter()
        .map(|n| {
            let mut role = n.role.clone();
            if !n.voter {
                role.push_str(" (learner)");
            }
            if n.drained {
                role.push_str(" (drained)");
            }
            [
                n.id.to_string(),
                role,
                n.addr.clone(),
                if n.reachable {
                    "yes".into()
                } else {
                    "NO".into()
                },
                n.applied.to_string(),
                n.lag.to_string(),
                n.lag_millis
                    .map_or("?".to_string(), |ms| format!("{:.1}", ms as f64 / 1000.0)),
                node_verdict(&reply, n).to_string(),
            ]
        })
        .collect();
    output::table(
        &[
            "ID",
            "ROLE",
            "ADDRESS",
            "REACHABLE",
            "APPLIED",
            "LAG",
            "LAG S",
            "VERDICT",
        ],
        &rows,
    );
    outln!(
        "queue: {} queued, {} deferred, {} held",
        queue.queued,
        queue.deferred,
        queue.held
    );
    verdict_result(cluster_verdict(&reply))
}
