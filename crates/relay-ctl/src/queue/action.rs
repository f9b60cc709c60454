//! `relayctl queue hold|release|delete|flush`: named ids, or `--all` with
//! selectors; `--dry-run` shows what would change and changes nothing.
//!
//! The dry run asks the same replica with reads only (`ShowMessage` per id,
//! `ListQueue` for selectors) and applies the rule the state machine
//! applies: hold changes messages not held, release held ones, flush those
//! not held, delete every one. A write a moment later may still see a
//! slightly different queue (deliveries go on meanwhile).

use clap::Args;
use relay_proto::admin::{ListQueueRequest, MessageRequest, QueueActionRequest};
use serde::Serialize;

use super::{FilterArgs, MessageRow};
use crate::client::{Admin, CliError};
use crate::output::{self, outln};

/// Largest listing the node serves; a dry run over more says so.
const DRY_RUN_LIMIT: u32 = 100_000;

#[derive(Debug, Args)]
pub struct ActionArgs {
    /// Message ids.
    ids: Vec<String>,
    /// Act on every message matching the selectors (every message without
    /// selectors) instead of named ids; needs --yes, or --dry-run.
    #[arg(long, conflicts_with = "ids")]
    all: bool,
    /// Confirms --all: without it nothing is changed.
    #[arg(long)]
    yes: bool,
    /// Print the messages that would change, and change nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    filter: FilterArgs,
    /// Why; kept in each message's trace.
    #[arg(long, default_value = "")]
    reason: String,
    /// Who; kept in each message's trace (default: $RELAYCTL_OPERATOR or $USER).
    #[arg(long, env = "RELAYCTL_OPERATOR")]
    by: Option<String>,
}

impl ActionArgs {
    /// Usage checks before connecting (exit 2 even with no node up).
    pub fn validate(&self, action: &str) -> Result<(), CliError> {
        if self.ids.is_empty() && !self.all {
            return Err(CliError::usage(format!(
                "queue {action}: name message ids, or use --all (with optional selectors)"
            )));
        }
        if !self.ids.is_empty() && !self.filter.is_empty() {
            return Err(CliError::usage(format!(
                "queue {action}: selectors only apply with --all"
            )));
        }
        if self.all && !self.yes && !self.dry_run {
            return Err(CliError::usage(format!(
                "queue {action} --all changes every matching message: add --yes to confirm, \
                 or --dry-run to see which"
            )));
        }
        Ok(())
    }
}

/// `queue <action> --json`.
#[derive(Debug, Serialize)]
struct ActionOutput {
    action: String,
    /// True: nothing was changed; `affected` is what would have changed.
    dry_run: bool,
    affected: u64,
    /// With `--dry-run`: the messages that would change.
    #[serde(skip_serializing_if = "Option::is_none")]
    messages: Option<Vec<MessageRow>>,
    /// With `--dry-run`: the listing stopped at the node's limit, so there
    /// are more.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
}

/// Whether `action` changes a message in `state` (the state machine's rule).
fn would_change(action: &str, state: &str) -> bool {
    match action {
        "hold" | "flush" => state != "held",
        "release" => state == "held",
        _ => true,
    }
}

pub async fn run(
    admin: &mut Admin,
    action: &str,
    args: ActionArgs,
    as_json: bool,
) -> Result<(), CliError> {
    if args.dry_run {
        return dry_run(admin, action, args, as_json).await;
    }
    let reply = admin
        .client
        .queue_action(QueueActionRequest {
            action: action.to_string(),
            ids: args.ids.clone(),
            filter: Some(args.filter.to_proto()),
            all: args.all,
            by: super::operator(args.by),
            reason: args.reason,
        })
        .await
        .map_err(|s| CliError::from_status(&admin.addr, s))?
        .into_inner();
    if as_json {
        output::json(&ActionOutput {
            action: action.to_string(),
            dry_run: false,
            affected: reply.affected.into(),
            messages: None,
            truncated: false,
        });
    } else {
        outln!("{action}: {} message(s) changed", reply.affected);
    }
    // Named ids that changed nothing are worth a non-zero exit for scripts.
    if !args.ids.is_empty() && reply.affected == 0 {
        return Err(CliError::failed(format!(
            "queue {action}: no named message was changed (unknown ids, or already in that state)"
        )));
    }
    Ok(())
}

async fn dry_run(
    admin: &mut Admin,
    action: &str,
    args: ActionArgs,
    as_json: bool,
) -> Result<(), CliError> {
    let mut candidates = Vec::new();
    let mut truncated = false;
    let mut now_ms = output::now_ms();
    if args.ids.is_empty() {
        let reply = admin
            .client
            .list_queue(ListQueueRequest {
                filter: Some(args.filter.to_proto()),
                limit: DRY_RUN_LIMIT,
            })
            .await
            .map_err(|s| CliError::from_status(&admin.addr, s))?
            .into_inner();
        truncated = reply.truncated;
        now_ms = reply.now_ms;
        candidates.extend(reply.messages.iter().map(MessageRow::from));
    } else {
        for id in &args.ids {
            match admin
                .client
                .show_message(MessageRequest {
                    id: id.clone(),
                    ..Default::default()
                })
                .await
            {
                Ok(d) => {
                    let d = d.into_inner();
                    now_ms = d.now_ms;
                    candidates.extend(d.summary.as_ref().map(MessageRow::from));
                }
                // Unknown ids change nothing, as in the real action.
                Err(s) if s.code() == tonic::Code::NotFound => {}
                Err(s) => return Err(CliError::from_status(&admin.addr, s)),
            }
        }
    }
    let rows: Vec<MessageRow> = candidates
        .into_iter()
        .filter(|m| would_change(action, &m.state))
        .collect();
    let out = ActionOutput {
        action: action.to_string(),
        dry_run: true,
        affected: rows.len() as u64,
        messages: Some(rows),
        truncated,
    };
    if as_json {
        output::json(&out);
        return Ok(());
    }
    let rows = out.messages.as_deref().unwrap_or_default();
    super::print_rows(rows, now_ms);
    outln!(
        "{action} --dry-run: {}{} message(s) would change; nothing was changed",
        if out.truncated { "at least " } else { "" },
        out.affected
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::would_change;

    #[test]
    fn dry_run_follows_the_state_machine_rule() {
        assert!(would_change("hold", "deferred"));
        assert!(!would_change("hold", "held"));
        assert!(would_change("release", "held"));
        assert!(!would_change("release", "queued"));
        assert!(!would_change("flush", "held"));
        assert!(would_change("flush", "queued"));
        assert!(would_change("delete", "held"));
    }
}
