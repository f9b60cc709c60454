//! The leader's quorum lease, from its own clock.
//!
//! openraft 0.9 reports `millis_since_quorum_ack` in its metrics, but that
//! value is a snapshot taken when the metrics were last published: right
//! after a SIGCONT (or a VM pause) it still shows the fresh value from
//! before the pause, and a frozen leader would believe it holds a lease it
//! lost long ago. So the Raft network records, per peer, the monotonic
//! time at which it *sent* each AppendEntries that the peer then accepted
//! (any answer but a higher vote), and the lease is computed when it is
//! read: the newest instant acknowledged by a quorum of voters, the leader
//! itself counting as "now". Send times, not reply times: the peer's
//! acceptance proves only that it still followed this leader when the
//! request left.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use relay_types::NodeId;

/// Acknowledged AppendEntries send times, per peer, for one leader term.
#[derive(Debug, Default)]
pub struct QuorumAcks {
    state: Mutex<AckState>,
}

#[derive(Debug, Default)]
struct AckState {
    term: u64,
    sent: BTreeMap<NodeId, Instant>,
    /// The voters and term as last published by Raft (see
    /// [`QuorumAcks::set_voters`]), for the age sent to followers.
    voters: Vec<NodeId>,
    voters_term: u64,
}

impl QuorumAcks {
    /// `peer` accepted an AppendEntries of `term` that left at `sent`.
    pub fn record(&self, peer: NodeId, term: u64, sent: Instant) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if term > state.term {
            state.term = term;
            state.sent.clear();
        }
        if term == state.term {
            let slot = state.sent.entry(peer).or_insert(sent);
            *slot = (*slot).max(sent);
        }
    }

    /// Remembers the current voter set and term (kept up to date by the
    /// cluster from Raft's metrics).
    pub fn set_voters(&self, term: u64, voters: Vec<NodeId>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.voters = voters;
        state.voters_term = term;
    }

    /// How long ago a quorum of `voters` last acknowledged this node as
    /// leader of `term` (`me` counts as acknowledging now). `None`: no
    /// quorum has acknowledged it in this term.
    pub fn quorum_age(&self, me: NodeId, term: u64, voters: &[NodeId]) -> Option<Duration> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        quorum_age_of(&state, me, term, voters, Instant::now())
    }

    /// [`QuorumAcks::quorum_age`] for the last published voters and term:
    /// what the leader tells its followers with each AppendEntries.
    pub fn published_quorum_age(&self, me: NodeId) -> Option<Duration> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let voters = state.voters.clone();
        quorum_age_of(&state, me, state.voters_term, &voters, Instant::now())
    }
}

fn quorum_age_of(
    state: &AckState,
    me: NodeId,
    term: u64,
    voters: &[NodeId],
    now: Instant,
) -> Option<Duration> {
    if voters.is_empty() {
        return None;
    }
    let mut acked: Vec<Instant> = voters
        .iter()
        .filter_map(|v| {
            if *v == me {
                Some(now)
            } else if state.term == term {
                state.sent.get(v).copied()
            } else {
                None
            }
        })
        .collect();
    let quorum = voters.len() / 2 + 1;
    if acked.len() < quorum {
        return None;
    }
    // Newest first: the quorum-th newest instant is the one a quorum agrees on.
    acked.sort_unstable_by(|a, b| b.cmp(a));
    Some(now.saturating_duration_since(acked[quorum - 1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quorum_age_is_the_quorum_th_newest_ack() {
        let acks = QuorumAcks::default();
        let t0 = Instant::now();
        acks.record(2, 5, t0 - Duration::from_secs(3));
        acks.record(3, 5, t0 - Duration::from_secs(1));
        // Three voters: me (now) and node 3 (1 s ago) make a quorum.
        let age = acks.quorum_age(1, 5, &[1, 2, 3]).unwrap();
        assert!(age >= Duration::from_secs(1) && age < Duration::from_secs(2));
        // Five voters: the third newest is node 2's, 3 s ago.
        let age = acks.quorum_age(1, 5, &[1, 2, 3, 4, 5]).unwrap();
        assert!(age >= Duration::from_secs(3));
        // Seven voters: no quorum at all.
        assert_eq!(acks.quorum_age(1, 5, &[1, 2, 3, 4, 5, 6, 7]), None);
    }

    #[test]
    fn acks_of_another_term_do_not_count() {
        let acks = QuorumAcks::default();
        acks.record(2, 4, Instant::now());
        assert_eq!(acks.quorum_age(1, 5, &[1, 2, 3]), None);
        acks.record(2, 5, Instant::now());
        // A stale, older term's ack arriving late is ignored.
        acks.record(3, 4, Instant::now());
        assert!(acks.quorum_age(1, 5, &[1, 2, 3]).is_some());
        assert_eq!(acks.quorum_age(1, 5, &[1, 3, 4]), None);
    }

    #[test]
    fn a_frozen_leader_wakes_up_without_a_lease() {
        // The acks are as old as the pause: reading the lease computes the
        // age now, so nothing from before the pause looks fresh.
        let acks = QuorumAcks::default();
        let before_pause = Instant::now() - Duration::from_secs(20);
        acks.record(2, 1, before_pause);
        acks.record(3, 1, before_pause);
        acks.set_voters(1, vec![1, 2, 3]);
        let age = acks.published_quorum_age(1).unwrap();
        assert!(age >= Duration::from_secs(20));
    }
}
