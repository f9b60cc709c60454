//! `relayctl member drain|undrain|drain-status`: take a node out of
//! service for maintenance and wait until it is safe to stop.

use std::time::{Duration, Instant};

use relay_proto::admin::{DrainReply, DrainRequest, DrainStatusRequest};
use serde_json::json;

use crate::client::{Admin, CliError};
use crate::output::{self, outln};

/// How often `drain` asks again while it waits.
const POLL: Duration = Duration::from_millis(250);

/// `member drain ID`: commits the drain, then (unless `wait` is zero)
/// waits until the node is safe to stop; exit 1 if it is not within `wait`.
pub async fn drain(
    admin: &mut Admin,
    id: u64,
    by: String,
    wait: Duration,
    as_json: bool,
) -> Result<(), CliError> {
    let mut reply = admin
        .client
        .drain(DrainRequest {
            id,
            undrain: false,
            by,
        })
        .await
        .map_err(|s| CliError::from_status(&admin.addr, s))?
        .into_inner();
    if !as_json {
        outln!("node {id} drained: it takes no new SMTP connection and no new delivery");
    }
    let deadline = Instant::now() + wait;
    let mut last_waiting: Vec<String> = Vec::new();
    while !reply.safe_to_stop && Instant::now() < deadline {
        if !as_json && reply.waiting_for != last_waiting {
            outln!("waiting for: {}", reply.waiting_for.join("; "));
            last_waiting = reply.waiting_for.clone();
        }
        tokio::time::sleep(POLL).await;
        reply = status(admin, id).await?;
    }
    report(&reply, as_json);
    if reply.safe_to_stop || wait.is_zero() {
        Ok(())
    } else {
        Err(CliError::failed(format!(
            "node {id} is not safe to stop after {}s; still waiting for: {}",
            wait.as_secs(),
            reply.waiting_for.join("; ")
        )))
    }
}

/// `member undrain ID`: back in service.
pub async fn undrain(
    admin: &mut Admin,
    id: u64,
    by: String,
    as_json: bool,
) -> Result<(), CliError> {
    let reply = admin
        .client
        .drain(DrainRequest {
            id,
            undrain: true,
            by,
        })
        .await
        .map_err(|s| CliError::from_status(&admin.addr, s))?
        .into_inner();
    if as_json {
        output::json(&reply_json(&reply));
    } else {
        outln!("node {id} back in service: it takes SMTP connections and deliveries again");
    }
    Ok(())
}

/// `member drain-status ID`: exit 0 when safe to stop, 1 otherwise.
pub async fn drain_status(admin: &mut Admin, id: u64, as_json: bool) -> Result<(), CliError> {
    let reply = status(admin, id).await?;
    report(&reply, as_json);
    if reply.safe_to_stop {
        Ok(())
    } else {
        Err(CliError::failed(String::new()))
    }
}

async fn status(admin: &mut Admin, id: u64) -> Result<DrainReply, CliError> {
    Ok(admin
        .client
        .drain_status(DrainStatusRequest { id })
        .await
        .map_err(|s| CliError::from_status(&admin.addr, s))?
        .into_inner())
}

fn report(reply: &DrainReply, as_json: bool) {
    if as_json {
        output::json(&reply_json(reply));
    } else if reply.safe_to_stop {
        outln!("node {}: safe to stop", reply.node);
    } else {
        outln!(
            "node {}: not safe to stop yet: {}",
            reply.node,
            reply.waiting_for.join("; ")
        );
    }
}

fn reply_json(r: &DrainReply) -> serde_json::Value {
    json!({
        "node": r.node,
        "drained": r.drained,
        "reachable": r.reachable,
        "applied_by_node": r.applied_by_node,
        "leader": r.leader,
        "owned": r.owned,
        "smtp_sessions": r.smtp_sessions,
        "busy_deliveries": r.busy_deliveries,
        "safe_to_stop": r.safe_to_stop,
        "waiting_for": r.waiting_for,
        "answered_by": r.answered_by,
    })
}
