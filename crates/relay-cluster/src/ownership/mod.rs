//! Who may deliver a message, and when another node takes it over.
//!
//! Every queued message has exactly one owner at every log index, recorded
//! in the replicated state; only the owner's reports (`Attempt`,
//! `Delivered`) are applied, a report by anyone else is refused. This
//! module holds the two halves that make that safe while nodes come and go.
//!
//! # Takeover (the leader)
//! [`takeover::run`] probes every member each second. An owner that is not a
//! live voter — silent for `takeover_after`, removed from the cluster, or a
//! learner — has its whole queue moved by **one** committed
//! `Command::TakeOver` entry, which spreads the messages over the live
//! voters in message-id order. One entry, decided after a fresh probe: a
//! node that comes back while it is decided sees all of it or none of it.
//!
//! # Fencing (every owner)
//! An owner *starts* handing a message to a target only while it holds its
//! **start lease** ([`Cluster::may_start_delivery`](crate::Cluster::may_start_delivery)):
//! - on the leader, a quorum of voters acknowledged an AppendEntries that
//!   this node sent less than `start_lease` ago, measured on this node's
//!   monotonic clock when the lease is read ([`lease::QuorumAcks`]); a
//!   paused and resumed leader finds its acknowledgements old at once;
//! - on a follower, the leader's last AppendEntries arrived less than
//!   `start_lease` ago *plus* the age of the leader's own quorum lease that
//!   it carried, so a deposed leader that lost its quorum (possible with
//!   five voters: openraft 0.9 has no check-quorum step-down) cannot keep
//!   its followers' leases alive;
//! - after a gap in contact, the node has also applied what the leader had
//!   committed when contact resumed ([`contact::LeaderContact::caught_up`]),
//!   so a node that wakes up with a stale view sees a `TakeOver` first.
//!
//! The start lease (a few heartbeats) is much shorter than
//! `takeover_after`, so a cut-off owner stops starting sessions long before
//! the leader gives its messages away. The delivery loop also stops
//! starting sessions while one of its reports is stuck, and asks the lease
//! again right before `MAIL FROM` and right before the message text.
//!
//! # The one duplicate window left
//! Nothing aborts a transaction whose message text is on its way: its
//! final reply is read and reported (aborting would only make a duplicate
//! certain, as the target may already hold the message). If ownership moved
//! while that transaction ran (the owner was cut off after the last lease
//! check and `takeover_after` passed), its report is refused and the new
//! owner delivers again: the relay counts each such delivery
//! (`relay_duplicate_deliveries_total`) and records it in the message's
//! trace. The other source is an owner that dies after the target accepted
//! and before its report is saved. A planned `relayctl failover` moves no
//! ownership, so it causes neither.
//!
//! # Layout
//! - [`lease`]: the leader's quorum lease from its own send times.
//! - [`contact`]: when a follower last heard from its leader.
//! - [`takeover`]: the leader's probe loop and the takeover decision.

pub mod contact;
pub mod lease;
pub mod takeover;

pub use contact::{Contact, LeaderContact};
pub use lease::QuorumAcks;

/// Counter: takeovers this node ran as leader (one per owner whose queue
/// was moved).
pub const TAKEOVERS_TOTAL: &str = "relay_takeovers_total";

/// Counter: messages moved to another owner by takeovers.
pub const MESSAGES_REASSIGNED_TOTAL: &str = "relay_messages_reassigned_total";
