//! `relayctl queue list|show|hold|release|delete|flush`.

use std::time::Duration;

use clap::{Args, Subcommand};
use relay_proto::admin::{
    ListQueueRequest, MessageDetail, MessageRequest, MessageSummary, QueueActionRequest,
    QueueFilter,
};
use serde_json::{Value, json};

use crate::client::{Admin, CliError};
use crate::output;

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Queued messages (as the answering node's replica has them).
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// At most this many (server default 1000).
        #[arg(long)]
        limit: Option<u32>,
    },
    /// One message: envelope, size, owner, recipients, attempts and replies.
    Show {
        /// Message id (as in "queued as <ID>").
        id: String,
    },
    /// Stop delivering until released.
    Hold(ActionArgs),
    /// Undo a hold; the message is due at once.
    Release(ActionArgs),
    /// Remove messages on every node (audited in their trace).
    Delete(ActionArgs),
    /// Make messages due now (retry at once).
    Flush(ActionArgs),
}

/// Filters shared by `list` and the actions' `--all`.
#[derive(Debug, Args)]
pub struct FilterArgs {
    /// queued, deferred or held.
    #[arg(long, value_parser = ["queued", "deferred", "held"])]
    state: Option<String>,
    /// Only messages with a recipient in this domain.
    #[arg(long, value_name = "DOMAIN")]
    to: Option<String>,
    /// Only messages from this sender address.
    #[arg(long, value_name = "ADDR")]
    from: Option<String>,
    /// Only messages received longer ago than this (e.g. 10m, 2h, 1d).
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration)]
    older_than: Option<Duration>,
    /// Only messages owned by this node.
    #[arg(long, value_name = "ID")]
    owner: Option<u64>,
}

impl FilterArgs {
    fn to_proto(&self) -> QueueFilter {
        QueueFilter {
            state: self.state.clone(),
            to_domain: self.to.clone(),
            from: self.from.clone(),
            older_than_ms: self.older_than.map(|d| d.as_millis() as u64),
            owner: self.owner,
        }
    }

    fn is_empty(&self) -> bool {
        self.state.is_none()
            && self.to.is_none()
            && self.from.is_none()
            && self.older_than.is_none()
            && self.owner.is_none()
    }
}

#[derive(Debug, Args)]
pub struct ActionArgs {
    /// Message ids.
    ids: Vec<String>,
    /// Act on every message matching the filters (all messages without
    /// filters) instead of named ids.
    #[arg(long, conflicts_with = "ids")]
    all: bool,
    #[command(flatten)]
    filter: FilterArgs,
    /// Why; kept in each message's trace.
    #[arg(long, default_value = "")]
    reason: String,
    /// Who; kept in each message's trace (default: $RELAYCTL_OPERATOR or $USER).
    #[arg(long, env = "RELAYCTL_OPERATOR")]
    by: Option<String>,
}

/// The operator name recorded in audited entries.
pub fn operator(by: Option<String>) -> String {
    by.or_else(|| std::env::var("USER").ok())
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "relayctl".into())
}

impl QueueCommand {
    /// Usage checks that need no node: run before connecting, so a usage
    /// error exits 2 even when no node is reachable.
    pub fn validate(&self) -> Result<(), CliError> {
        let (action, args) = match self {
            QueueCommand::List { .. } | QueueCommand::Show { .. } => return Ok(()),
            QueueCommand::Hold(a) => ("hold", a),
            QueueCommand::Release(a) => ("release", a),
            QueueCommand::Delete(a) => ("delete", a),
            QueueCommand::Flush(a) => ("flush", a),
        };
        if args.ids.is_empty() && !args.all {
            return Err(CliError::usage(format!(
                "queue {action}: name message ids, or use --all (with optional filters)"
            )));
        }
        if !args.ids.is_empty() && !args.filter.is_empty() {
            return Err(CliError::usage(format!(
                "queue {action}: filters only apply with --all"
            )));
        }
        Ok(())
    }
}

pub async fn run(admin: &mut Admin, command: QueueCommand, as_json: bool) -> Result<(), CliError> {
    match command {
        QueueCommand::List { filter, limit } => list(admin, filter, limit, as_json).await,
        QueueCommand::Show { id } => show(admin, id, as_json).await,
        QueueCommand::Hold(a) => action(admin, "hold", a, as_json).await,
        QueueCommand::Release(a) => action(admin, "release", a, as_json).await,
        QueueCommand::Delete(a) => action(admin, "delete", a, as_json).await,
        QueueCommand::Flush(a) => action(admin, "flush", a, as_json).await,
    }
}

pub fn summary_json(m: &MessageSummary) -> Value {
    json!({
        "id": m.id,
        "state": m.state,
        "from": m.from,
        "to": m.to,
        "size": m.size,
        "received_at_ms": m.received_at_ms,
        "owner": m.owner,
        "attempts": m.attempts,
        "next_attempt_ms": m.next_attempt_ms,
        "last_reply": m.last_reply,
        "subject": m.subject,
    })
}

async fn list(
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
    if as_json {
        output::json(&json!({
            "answered_by": reply.answered_by,
            "truncated": reply.truncated,
            "messages": reply.messages.iter().map(summary_json).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    let now = reply.now_ms;
    let rows: Vec<[String; 8]> = reply
        .messages
        .iter()
        .map(|m| {
            [
                m.id.clone(),
                m.state.clone(),
                output::age(now, m.received_at_ms),
                output::size(m.size),
                m.owner.to_string(),
                m.attempts.to_string(),
                format!("<{}>", m.from),
                m.to.join(", "),
            ]
        })
        .collect();
    output::table(
        &["ID", "STATE", "AGE", "SIZE", "OWNER", "TRIES", "FROM", "TO"],
        &rows,
    );
    println!(
        "{} message(s){} (node {}'s replica)",
        reply.messages.len(),
        if reply.truncated {
            ", more not shown (--limit)"
        } else {
            ""
        },
        reply.answered_by
    );
    Ok(())
}

fn detail_json(d: &MessageDetail) -> Value {
    let s = d.summary.clone().unwrap_or_default();
    json!({
        "id": s.id,
        "state": s.state,
        "from": s.from,
        "size": s.size,
        "subject": s.subject,
        "message_id": d.message_id_header,
        "received_at_ms": s.received_at_ms,
        "expires_at_ms": d.expires_at_ms,
        "accepted_by": d.accepted_by,
        "owner": s.owner,
        "attempts": s.attempts,
        "next_attempt_ms": s.next_attempt_ms,
        "last_target": d.last_target,
        "checksum": d.checksum,
        "held": d.held.as_ref().map(|h| json!({"by": h.by, "reason": h.reason, "at_ms": h.at_ms})),
        "recipients": d.recipients.iter().map(|r| json!({
            "address": r.address,
            "status": r.status,
            "reply": r.reply,
            "at_ms": r.at_ms,
        })).collect::<Vec<_>>(),
        "history": d.history.iter().map(crate::trace::event_json).collect::<Vec<_>>(),
        "answered_by": d.answered_by,
    })
}

async fn show(admin: &mut Admin, id: String, as_json: bool) -> Result<(), CliError> {
    let d = admin
        .client
        .show_message(MessageRequest { id })
        .await
        .map_err(|s| CliError::from_status(&admin.addr, s))?
        .into_inner();
    if as_json {
        output::json(&detail_json(&d));
        return Ok(());
    }
    let s = d.summary.clone().unwrap_or_default();
    let now = d.now_ms;
    let field = |k: &str, v: String| println!("{k:<13} {v}");
    field("id:", s.id.clone());
    field("state:", s.state.clone());
    if let Some(h) = &d.held {
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
    field("from:", format!("<{}>", s.from));
    field("size:", output::size(s.size));
    if let Some(subject) = &s.subject {
        field("subject:", subject.clone());
    }
    if let Some(mid) = &d.message_id_header {
        field("message-id:", mid.clone());
    }
    field(
        "received:",
        format!(
            "{} ago by node {}",
            output::age(now, s.received_at_ms),
            d.accepted_by
        ),
    );
    field("owner:", format!("node {}", s.owner));
    field("attempts:", s.attempts.to_string());
    field("next attempt:", output::until(now, s.next_attempt_ms));
    if let Some(t) = &d.last_target {
        field("last target:", t.clone());
    }
    field("expires:", output::until(now, d.expires_at_ms));
    println!();
    let rows: Vec<[String; 3]> = d
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
    println!();
    crate::trace::print_events(&d.history);
    Ok(())
}

async fn action(
    admin: &mut Admin,
    action: &str,
    args: ActionArgs,
    as_json: bool,
) -> Result<(), CliError> {
    let reply = admin
        .client
        .queue_action(QueueActionRequest {
            action: action.to_string(),
            ids: args.ids.clone(),
            filter: Some(args.filter.to_proto()),
            all: args.all,
            by: operator(args.by),
            reason: args.reason,
        })
        .await
        .map_err(|s| CliError::from_status(&admin.addr, s))?
        .into_inner();
    if as_json {
        output::json(&json!({"action": action, "affected": reply.affected}));
    } else {
        println!("{action}: {} message(s) changed", reply.affected);
    }
    // Named ids that changed nothing are worth a non-zero exit for scripts.
    if !args.ids.is_empty() && reply.affected == 0 {
        return Err(CliError::failed(format!(
            "queue {action}: no named message was changed (unknown ids, or already in that state)"
        )));
    }
    Ok(())
}
