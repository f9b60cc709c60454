//! `relayctl trace ID`: a message's history from the replicated trace.

use clap::Args;
use relay_proto::admin::{MessageRequest, TraceEvent};
use serde_json::{Value, json};

use crate::client::{Admin, CliError};
use crate::output;

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Message id.
    id: String,
}

pub fn event_json(e: &TraceEvent) -> Value {
    json!({
        "index": e.index,
        "at_ms": e.at_ms,
        "by": e.by,
        "kind": e.kind,
        "what": e.what,
    })
}

/// The history as a table, oldest first.
pub fn print_events(events: &[TraceEvent]) {
    let rows: Vec<[String; 5]> = events
        .iter()
        .map(|e| {
            [
                e.index.to_string(),
                output::age(output::now_ms(), e.at_ms) + " ago",
                e.by.clone(),
                e.kind.clone(),
                e.what.clone(),
            ]
        })
        .collect();
    output::table(&["INDEX", "WHEN", "BY", "EVENT", "DETAIL"], &rows);
}

pub async fn run(admin: &mut Admin, args: TraceArgs, as_json: bool) -> Result<(), CliError> {
    let reply = admin
        .client
        .trace(MessageRequest { id: args.id })
        .await
        .map_err(|s| CliError::from_status(&admin.addr, s))?
        .into_inner();
    if as_json {
        output::json(&json!({
            "id": reply.id,
            "queued": reply.queued,
            "events": reply.events.iter().map(event_json).collect::<Vec<_>>(),
            "answered_by": reply.answered_by,
        }));
        return Ok(());
    }
    println!(
        "message {} ({})",
        reply.id,
        if reply.queued {
            "still queued"
        } else {
            "no longer queued"
        }
    );
    print_events(&reply.events);
    Ok(())
}
