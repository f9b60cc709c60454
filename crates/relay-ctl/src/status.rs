//! `relayctl status`.

use relay_proto::admin::StatusRequest;
use serde_json::json;

use crate::client::{Admin, CliError};
use crate::output;

/// Prints cluster status.
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
                "voter": n.voter,
            })).collect::<Vec<_>>(),
            "queue": {"queued": queue.queued, "deferred": queue.deferred, "held": queue.held},
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&value).expect("JSON values always serialise")
        );
        return Ok(());
    }
    match reply.leader {
        Some(l) => println!("leader: node {l}   term: {}", reply.term),
        None => println!(
            "leader: none (election or no quorum)   term: {}",
            reply.term
        ),
    }
    let rows: Vec<[String; 6]> = reply
        .nodes
        .iter()
        .map(|n| {
            [
                n.id.to_string(),
                if n.voter {
                    n.role.clone()
                } else {
                    format!("{} (learner)", n.role)
                },
                n.addr.clone(),
                if n.reachable {
                    "yes".into()
                } else {
                    "NO".into()
                },
                n.applied.to_string(),
                n.lag.to_string(),
            ]
        })
        .collect();
    output::table(
        &["ID", "ROLE", "ADDRESS", "REACHABLE", "APPLIED", "LAG"],
        &rows,
    );
    println!(
        "queue: {} queued, {} deferred, {} held",
        queue.queued, queue.deferred, queue.held
    );
    Ok(())
}
