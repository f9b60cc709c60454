//! This crate's Prometheus instruments (through the `metrics` facade; the
//! node installs the recorder and calls [`describe`]). Without a recorder
//! every update is a no-op.

use metrics::describe_counter;

/// Counter: leader writes that got no answer from Raft within the write
/// timeout (submit timeout plus `batcher::STRANDED_MARGIN`) and were given
/// up, their proposers told "outcome unknown" (SMTP 451, delivery report
/// proposed again). openraft 0.9 can leave a write unanswered when this
/// node, a former leader, lost the entry while catching up through a
/// snapshot; without this guard the group-commit slot would stay taken and
/// every later write on the node would hang. Anything above 0 is worth a
/// look; a steady rise means Raft is stuck on this node.
pub const STRANDED_WRITES_TOTAL: &str = "relay_cluster_stranded_writes_total";

/// Counts one write given up as stranded.
pub(crate) fn stranded_write() {
    metrics::counter!(STRANDED_WRITES_TOTAL).increment(1);
}

/// Registers descriptions of every instrument with the installed recorder.
pub fn describe() {
    describe_counter!(
        STRANDED_WRITES_TOTAL,
        "Leader writes Raft never answered within the write timeout, given up with outcome unknown."
    );
}
