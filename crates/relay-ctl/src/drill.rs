//! `relayctl drill`: one line per check, green or red; exit 0 only if all
//! pass.

use relay_proto::admin::DrillRequest;
use serde_json::json;

use crate::client::{Admin, CliError};
use crate::output;

pub async fn run(admin: &mut Admin, as_json: bool) -> Result<(), CliError> {
    let reply = admin
        .client
        .drill(DrillRequest {})
        .await
        .map_err(|s| CliError::from_status(&admin.addr, s))?
        .into_inner();
    if as_json {
        output::json(&json!({
            "ok": reply.ok,
            "answered_by": reply.answered_by,
            "checks": reply.checks.iter().map(|c| json!({
                "check": c.check,
                "node": c.node,
                "ok": c.ok,
                "detail": c.detail,
            })).collect::<Vec<_>>(),
        }));
    } else {
        let rows: Vec<[String; 4]> = reply
            .checks
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
    if reply.ok {
        if !as_json {
            println!("drill: all {} checks passed", reply.checks.len());
        }
        Ok(())
    } else {
        let red: Vec<String> = reply
            .checks
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
}
