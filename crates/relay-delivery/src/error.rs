//! Errors of the delivery side.

/// Why a proposal did not (knowingly) commit.
///
/// `Timeout` is ambiguous: the entry may still commit later. The loop
/// treats every variant the same way — it keeps the report and proposes it
/// again on a later round.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// No leader is known (election, minority partition).
    #[error("no leader is known")]
    NoLeader,
    /// The entry did not commit in time; it may still commit.
    #[error("proposal timed out")]
    Timeout,
    /// Anything else (shutting down, internal failure).
    #[error("proposal failed: {0}")]
    Other(String),
}
