//! `relayctl queue list|summary|show|hold|release|delete|flush`, one file
//! per subcommand.
//!
//! Selectors are the same everywhere: `--state`, `--to-domain`, `--from`,
//! `--older-than`, `--owner`. The bulk actions take them only with `--all`,
//! and `--all` changes nothing without `--yes` (or shows what it would
//! change with `--dry-run`).
//!
//! # Layout
//! - this file: the subcommands, the shared selectors and the message row.
//! - `list`: `queue list`.
//! - `summary`: `queue summary` (domain × age, like qshape).
//! - `show`: `queue show ID [--body]`.
//! - `action`: `queue hold|release|delete|flush` with `--dry-run`.

mod action;
mod list;
mod show;
mod summary;

use std::time::Duration;

use clap::{Args, Subcommand};
use relay_proto::admin::{MessageSummary, QueueFilter};
use serde::Serialize;

use crate::client::{Admin, CliError};

pub use action::ActionArgs;

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
    /// Pending messages counted by destination domain and age (0-5m, 5-10m,
    /// 10-20m, 20-40m, 40-80m, 80-160m, 160m+), like Postfix's qshape. Any
    /// node's replica holds the whole cluster's queue.
    Summary {
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// One message: envelope, size, owner, recipients, attempts, replies and
    /// its header section (the whole message with --body).
    Show(show::ShowArgs),
    /// Stop delivering until released.
    Hold(ActionArgs),
    /// Undo a hold; the message is due at once.
    Release(ActionArgs),
    /// Remove messages on every node (audited in their trace).
    Delete(ActionArgs),
    /// Make messages due now (retry at once); held messages are skipped.
    Flush(ActionArgs),
}

/// Selectors shared by `list`, `summary` and the actions' `--all`.
#[derive(Debug, Args)]
pub struct FilterArgs {
    /// queued, deferred or held.
    #[arg(long, value_parser = ["queued", "deferred", "held"])]
    state: Option<String>,
    /// Only messages with a recipient in this domain.
    #[arg(long = "to-domain", visible_alias = "to", value_name = "DOMAIN")]
    to_domain: Option<String>,
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
            to_domain: self.to_domain.clone(),
            from: self.from.clone(),
            older_than_ms: self.older_than.map(|d| d.as_millis() as u64),
            owner: self.owner,
        }
    }

    fn is_empty(&self) -> bool {
        self.state.is_none()
            && self.to_domain.is_none()
            && self.from.is_none()
            && self.older_than.is_none()
            && self.owner.is_none()
    }
}

/// One queued message, as `list` and `--dry-run` print it.
#[derive(Debug, Serialize)]
pub struct MessageRow {
    pub id: String,
    pub state: String,
    pub from: String,
    /// Recipients still pending.
    pub to: Vec<String>,
    pub size: u64,
    pub received_at_ms: u64,
    pub owner: u64,
    pub attempts: u32,
    pub next_attempt_ms: u64,
    pub last_reply: Option<String>,
    pub subject: Option<String>,
}

impl From<&MessageSummary> for MessageRow {
    fn from(m: &MessageSummary) -> Self {
        MessageRow {
            id: m.id.clone(),
            state: m.state.clone(),
            from: m.from.clone(),
            to: m.to.clone(),
            size: m.size,
            received_at_ms: m.received_at_ms,
            owner: m.owner,
            attempts: m.attempts,
            next_attempt_ms: m.next_attempt_ms,
            last_reply: m.last_reply.clone(),
            subject: m.subject.clone(),
        }
    }
}

/// Prints `rows` as the queue table (ages against the node's `now_ms`).
fn print_rows(rows: &[MessageRow], now_ms: u64) {
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|m| {
            [
                m.id.clone(),
                m.state.clone(),
                crate::output::age(now_ms, m.received_at_ms),
                crate::output::size(m.size),
                m.owner.to_string(),
                m.attempts.to_string(),
                format!("<{}>", m.from),
                m.to.join(", "),
            ]
        })
        .collect();
    crate::output::table(
        &["ID", "STATE", "AGE", "SIZE", "OWNER", "TRIES", "FROM", "TO"],
        &cells,
    );
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
        match self {
            QueueCommand::List { .. } | QueueCommand::Summary { .. } | QueueCommand::Show(_) => {
                Ok(())
            }
            QueueCommand::Hold(a) => a.validate("hold"),
            QueueCommand::Release(a) => a.validate("release"),
            QueueCommand::Delete(a) => a.validate("delete"),
            QueueCommand::Flush(a) => a.validate("flush"),
        }
    }
}

pub async fn run(admin: &mut Admin, command: QueueCommand, as_json: bool) -> Result<(), CliError> {
    match command {
        QueueCommand::List { filter, limit } => list::run(admin, filter, limit, as_json).await,
        QueueCommand::Summary { filter } => summary::run(admin, filter, as_json).await,
        QueueCommand::Show(args) => show::run(admin, args, as_json).await,
        QueueCommand::Hold(a) => action::run(admin, "hold", a, as_json).await,
        QueueCommand::Release(a) => action::run(admin, "release", a, as_json).await,
        QueueCommand::Delete(a) => action::run(admin, "delete", a, as_json).await,
        QueueCommand::Flush(a) => action::run(admin, "flush", a, as_json).await,
    }
}
