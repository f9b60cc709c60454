//! `relayctl queue list`.

use relay_proto::admin::ListQueueRequest;
use serde::Serialize;

use super::{FilterArgs, MessageRow};
use crate::client::{Admin, CliError};
use crate::output::{self, outln};

/// `queue list --json`.
#[derive(Debug, Serialize)]
struct ListOutput {
    answered_by: u64,
    /// More matched than `--limit`.
    truncated: bool,
    messages: Vec<MessageRow>,
}

pub async fn run(
    admin: &mut Admin,
    filter: FilterArgs,
    limit: Option<u32>,
    as_json: bool,
) -> Result<(), CliError> {
    let reply = admin
        .client
        .list_queue(ListQueueRequest {
            filter: Some(filter.to_proto()),
            limit: limit.unwrap_or(0),
        })
        .await
        .map_err(|s| CliError::from_status(&admin.addr, s))?
        .into_inner();
    let out = ListOutput {
        answered_by: reply.answered_by,
        truncated: reply.truncated,
        messages: reply.messages.iter().map(MessageRow::from).collect(),
    };
    if as_json {
        output::json(&out);
        return Ok(());
    }
    super::print_rows(&out.messages, reply.now_ms);
    outln!(
        "{} message(s){} (node {}'s replica)",
        out.messages.len(),
        if out.truncated {
            ", more not shown (--limit)"
        } else {
            ""
        },
        out.answered_by
    );
    Ok(())
}
