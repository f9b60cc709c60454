//! `relayctl queue show ID [--body]`.

use clap::Args;
use relay_proto::admin::{MessageContent, MessageDetail, MessageRequest};
use serde::Serialize;

use crate::client::{Admin, CliError};
use crate::output::{self, outln};
use crate::trace::Event;

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Message id (as in "queued as <ID>").
    id: String,
    /// Print the whole message as stored, not only its header section.
    #[arg(long)]
    body: bool,
}

#[derive(Debug, Serialize)]
struct Held {
    by: String,
    reason: String,
    at_ms: u64,
}

#[derive(Debug, Serialize)]
struct Recipient {
    address: String,
    /// pending, delivered or failed.
    status: String,
    reply: Option<String>,
    at_ms: Option<u64>,
}

/// `queue show --json`.
#[derive(Debug, Serialize)]
struct ShowOutput {
    id: String,
    state: String,
    from: String,
    size: u64,
    subject: Option<String>,
    message_id: Option<String>,
    received_at_ms: u64,
    expires_at_ms: u64,
    accepted_by: u64,
    owner: u64,
    attempts: u32,
    next_attempt_ms: u64,
    last_target: Option<String>,
    checksum: String,
    held: Option<Held>,
    recipients: Vec<Recipient>,
    history: Vec<Event>,
    answered_by: u64,
    /// The header section, or the whole message with `--body` (UTF-8, any
    /// invalid byte replaced); null from a node that does not send it.
    content: Option<String>,
}

impl From<&MessageDetail> for ShowOutput {
    fn from(d: &MessageDetail) -> Self {
        let s = d.summary.clone().unwrap_or_default();
        ShowOutput {
            id: s.id,
            state: s.state,
            from: s.from,
            size: s.size,
            subject: s.subject,
            message_id: d.message_id_header.clone(),
            received_at_ms: s.received_at_ms,
            expires_at_ms: d.expires_at_ms,
            accepted_by: d.accepted_by,
            owner: s.owner,
            attempts: s.attempts,
            next_attempt_ms: s.next_attempt_ms,
            last_target: d.last_target.clone(),
            checksum: d.checksum.clone(),
            held: d.held.as_ref().map(|h| Held {
                by: h.by.clone(),
                reason: h.reason.clone(),
                at_ms: h.at_ms,
            }),
            recipients: d
                .recipients
                .iter()
                .map(|r| Recipient {
                    address: r.address.clone(),
                    status: r.status.clone(),
                    reply: r.reply.clone(),
                    at_ms: r.at_ms,
                })
                .collect(),
            history: d.history.iter().map(Event::from).collect(),
            answered_by: d.answered_by,
            content: d
                .content
                .as_ref()
                .map(|c| String::from_utf8_lossy(c).into_owned()),
        }
    }
}

pub async fn run(admin: &mut Admin, args: ShowArgs, as_json: bool) -> Result<(), CliError> {
    let content = if args.body {
        MessageContent::Full
    } else {
        MessageContent::Headers
    };
    let d = admin
        .client
        .show_message(MessageRequest {
            id: args.id,
            content: content.into(),
        })
        .await
        .map_err(|s| CliError::from_status(&admin.addr, s))?
        .into_inner();
    let out = ShowOutput::from(&d);
    if as_json {
        output::json(&out);
        return Ok(());
    }
    let now = d.now_ms;
    let field = |k: &str, v: String| outln!("{k:<13} {v}");
    field("id:", out.id.clone());
    field("state:", out.state.clone());
    if let Some(h) = &out.held {
        field(
            "held:",
            format!(
                "by {} {} ago: {}",
                h.by,
                output::age(now, h.at_ms),
                h.reason
            ),
        );
    }
    field("from:", format!("<{}>", out.from));
    field("size:", output::size(out.size));
    if let Some(subject) = &out.subject {
        field("subject:", subject.clone());
    }
    if let Some(mid) = &out.message_id {
        field("message-id:", mid.clone());
    }
    field(
        "received:",
        format!(
            "{} ago by node {}",
            output::age(now, out.received_at_ms),
            out.accepted_by
        ),
    );
    field("owner:", format!("node {}", out.owner));
    field("attempts:", out.attempts.to_string());
    field("next attempt:", output::until(now, out.next_attempt_ms));
    if let Some(t) = &out.last_target {
        field("last target:", t.clone());
    }
    field("expires:", output::until(now, out.expires_at_ms));
    outln!();
    let rows: Vec<[String; 3]> = out
        .recipients
        .iter()
        .map(|r| {
            [
                r.address.clone(),
                r.status.clone(),
                r.reply.clone().unwrap_or_default(),
            ]
        })
        .collect();
    output::table(&["RECIPIENT", "STATUS", "LAST REPLY"], &rows);
    outln!();
    crate::trace::print_events(&d.history);
    if let Some(content) = &out.content {
        outln!();
        outln!(
            "{}",
            if args.body {
                "message:"
            } else {
                "headers (the whole message with --body):"
            }
        );
        for line in content.lines() {
            outln!("{line}");
        }
    }
    Ok(())
}
