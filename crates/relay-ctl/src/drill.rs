//! `relayctl drill [--transfer]`: one line per check, green or red; exit 0
//! only if all pass.

use clap::Args;
use relay_proto::admin::{DrillCheck, DrillRequest, FailoverRequest, StatusRequest};
use serde_json::json;

use crate::client::{Admin, CliError};
use crate::output::{self, outln};

#[derive(Debug, Args)]
pub struct DrillArgs {
    /// Also move leadership to each other voter in turn and back to the
    /// current leader (writes pause for about one election each time).
    #[arg(long)]
    transfer: bool,
}

/// Moves leadership to every other voter and back; one check per move.
async fn transfers(admin: &mut Admin) -> Result<Vec<DrillCheck>, CliError> {
    let status = admin
        .client
        .status(StatusRequest {})
        .await
        .map_err(|s| CliError::from_status(&admin.addr, s))?
        .into_inner();
    let Some(leader) = status.leader else {
        return Ok(vec![DrillCheck {
            check: "transfer".into(),
            node: 0,
            ok: false,
            detail: "no leader to transfer from".into(),
        }]);
    };
    let mut order: Vec<u64> = status
        .nodes
        .iter()
        .filter(|n| n.voter && n.id != leader)
        .map(|n| n.id)
        .collect();
    order.push(leader);
    let mut checks = Vec::new();
    for to in order {
        let result = admin
            .client
            .failover(FailoverRequest { to: Some(to) })
            .await;
        checks.push(match result {
            Ok(reply) => {
                let r = reply.into_inner();
                DrillCheck {
                    check: "transfer".into(),
                    node: to,
                    ok: r.leader == to,
                    detail: format!("leader in {} ms, term {}", r.millis, r.term),
                }
            }
            Err(status) => DrillCheck {
                check: "transfer".into(),
                node: to,
                ok: false,
                detail: status.message().to_string(),
            },
        });
    }
    Ok(checks)
}

pub async fn run(admin: &mut Admin, args: DrillArgs, as_json: bool) -> Result<(), CliError> {
    let reply = admin
        .client
        .drill(DrillRequest {})
        .await
        .map_err(|s| CliError::from_status(&admin.addr, s))?
        .into_inner();
    let mut checks = reply.checks;
    if args.transfer {
        checks.extend(transfers(admin).await?);
    }
    let ok = checks.iter().all(|c| c.ok);
    if as_json {
        output::json(&json!({
            "ok": ok,
            "answered_by": reply.answered_by,
            "checks": checks.iter().map(|c| json!({
                "check": c.check,
                "node": c.node,
                "ok": c.ok,
                "detail": c.detail,
            })).collect::<Vec<_>>(),
        }));
    } else {
        let rows: Vec<[String; 4]> = checks
            .iter()
            .map(|c| {
                [
                    if c.ok { "green" } else { "RED" }.to_string(),
                    c.check.clone(),
                    if c.node == 0 {
                        "cluster".to_string()
                    } else {
                        format!("node {}", c.node)
                    },
                    c.detail.clone(),
                ]
            })
            .collect();
        output::table(&["RESULT", "CHECK", "WHERE", "DETAIL"], &rows);
    }
    if ok {
        if !as_json {
            outln!("drill: all {} checks passed", checks.len());
        }
        return Ok(());
    }
    let red: Vec<String> = checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| {
            if c.node == 0 {
                c.check.clone()
            } else {
                format!("{} on node {}", c.check, c.node)
            }
        })
        .collect();
    Err(CliError::failed(format!(
        "drill failed: {}",
        red.join(", ")
    )))
}
