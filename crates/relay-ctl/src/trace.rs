//! `relayctl trace ID`: a message's history from the replicated trace.

use clap::Args;
use relay_proto::admin::{MessageRequest, TraceEvent};
use serde::Serialize;

use crate::client::{Admin, CliError};
use crate::output::{self, outln};

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Message id.
    id: String,
}

/// One trace event, as `trace` and `queue show` print it.
#[derive(Debug, Serialize)]
pub struct Event {
    /// Log index of the committed entry that caused it.
    pub index: u64,
    pub at_ms: u64,
    pub by: String,
    pub kind: String,
    pub what: String,
}

impl From<&TraceEvent> for Event {
    fn from(e: &TraceEvent) -> Self {
        Event {
            index: e.index,
            at_ms: e.at_ms,
            by: e.by.clone(),
            kind: e.kind.clone(),
            what: e.what.clone(),
        }
    }
}

/// `trace --json`.
#[derive(Debug, Serialize)]
struct TraceOutput {
    id: String,
    /// Still queued on the answering node's replica.
    queued: bool,
    events: Vec<Event>,
    answered_by: u64,
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
        .trace(MessageRequest {
            id: args.id,
            ..Default::default()
        })
        .await
        .map_err(|s| CliError::from_status(&admin.addr, s))?
        .into_inner();
    if as_json {
        output::json(&TraceOutput {
            id: reply.id.clone(),
            queued: reply.queued,
            events: reply.events.iter().map(Event::from).collect(),
            answered_by: reply.answered_by,
        });
        return Ok(());
    }
    outln!(
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
