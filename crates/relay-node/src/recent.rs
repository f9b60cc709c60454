//! The last delivery result per target, as this node's delivery loop
//! committed it, for the status page.
//!
//! Recorded by [`crate::adapters::ClusterProposer`] when an `Attempt` or
//! `Delivered` entry committed, so the page shows what the replicated log
//! says happened, not what was merely tried. Only this node's own
//! deliveries are seen (each node delivers the messages it owns); the page
//! says so. Bounded: one row per target, and targets come from routes.

use std::collections::BTreeMap;
use std::sync::Mutex;

use relay_types::{AttemptOutcome, Command, UnixMillis};

/// Most targets remembered; a route change can retire targets, and the
/// page must not grow without bound.
const MAX_TARGETS: usize = 256;
/// Longest reply text kept (the page shows one line).
const MAX_REPLY: usize = 160;

/// One target's last committed result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetResult {
    /// When the attempt finished.
    pub at: UnixMillis,
    /// `delivered`, `deferred`, `failed` or `mixed`.
    pub result: &'static str,
    /// The target's reply (first recipient's, truncated).
    pub reply: String,
}

/// Last committed result per target (`host:port`).
#[derive(Debug, Default)]
pub struct RecentResults {
    by_target: Mutex<BTreeMap<String, TargetResult>>,
}

impl RecentResults {
    /// Records a committed delivery command; other commands are ignored.
    pub fn record(&self, command: &Command) {
        let (target, result) = match command {
            Command::Delivered {
                target, at, reply, ..
            } => (
                target,
                TargetResult {
                    at: *at,
                    result: "delivered",
                    reply: truncate(reply),
                },
            ),
            Command::Attempt {
                target,
                at,
                outcomes,
                ..
            } => {
                let all = |o: AttemptOutcome| outcomes.iter().all(|r| r.outcome == o);
                let result = if all(AttemptOutcome::Delivered) {
                    "delivered"
                } else if all(AttemptOutcome::Deferred) {
                    "deferred"
                } else if all(AttemptOutcome::Failed) {
                    "failed"
                } else {
                    "mixed"
                };
                let reply = outcomes
                    .first()
                    .map(|o| truncate(&o.reply))
                    .unwrap_or_default();
                (
                    target,
                    TargetResult {
                        at: *at,
                        result,
                        reply,
                    },
                )
            }
            _ => return,
        };
        let mut map = self.by_target.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_TARGETS && !map.contains_key(target) {
            // Forget the stalest target to make room.
            if let Some(oldest) = map.iter().min_by_key(|(_, r)| r.at).map(|(t, _)| t.clone()) {
                map.remove(&oldest);
            }
        }
        map.insert(target.clone(), result);
    }

    /// The last result for `target`.
    pub fn get(&self, target: &str) -> Option<TargetResult> {
        self.by_target
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(target)
            .cloned()
    }
}

fn truncate(s: &str) -> String {
    let line = s.lines().next().unwrap_or("");
    match line.char_indices().nth(MAX_REPLY) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_string(),
    }
}
