//! How far behind each peer is, in time as well as in entries: the leader's
//! view, for `relayctl status`, the status page and metrics.
//!
//! Entries are the leader's last log index minus what the peer is known to
//! hold. Time is the age of the oldest entry the peer lacks: the leader
//! samples its own last log index as it grows ([`LogClock`]), and a peer
//! holding index `m` lacks everything appended after the first sample
//! above `m`. That is what a recovery-site replica would lose if the
//! primary site went now: mail acknowledged in the last that-many seconds.
//! It is 0 for a peer that holds the whole log however old its last entry
//! is, and it grows while a cut-off peer falls further behind even when no
//! new entry arrives. A lower bound: samples start at this node's election
//! and the oldest are dropped past [`MAX_SAMPLES`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::ServerState;
use relay_types::NodeId;
use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;

/// Samples kept (one per growth of the log, so a few minutes under load).
pub const MAX_SAMPLES: usize = 16_384;

/// A peer's distance from the leader's log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerLag {
    /// Entries the peer lacks.
    pub entries: u64,
    /// Age of the oldest entry it lacks (zero when it lacks none).
    pub age: Duration,
}

/// When the leader's log reached each index (sampled).
#[derive(Debug, Default)]
pub struct LogClock {
    state: Mutex<ClockState>,
}

#[derive(Debug, Default)]
struct ClockState {
    term: u64,
    samples: VecDeque<(Instant, u64)>,
}

impl LogClock {
    /// The leader of `term` has `last_index` in its log now.
    pub fn record(&self, term: u64, last_index: u64, now: Instant) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.term != term {
            s.term = term;
            s.samples.clear();
        }
        if s.samples.back().is_none_or(|(_, i)| *i < last_index) {
            s.samples.push_back((now, last_index));
            if s.samples.len() > MAX_SAMPLES {
                s.samples.pop_front();
            }
        }
    }

    /// How long ago the log first held an index above `matched` (zero if it
    /// never did while sampled).
    pub fn age_after(&self, matched: u64, now: Instant) -> Duration {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.samples
            .iter()
            .find(|(_, i)| *i > matched)
            .map_or(Duration::ZERO, |(t, _)| now.saturating_duration_since(*t))
    }
}

impl Cluster {
    /// Every peer's lag as this node sees it as leader (empty elsewhere).
    pub fn replication_lag(&self) -> BTreeMap<NodeId, PeerLag> {
        let metrics = self.raft().metrics();
        let m = metrics.borrow();
        if m.state != ServerState::Leader {
            return BTreeMap::new();
        }
        let last = m.last_log_index.unwrap_or(0);
        let now = Instant::now();
        m.replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .filter(|(id, _)| **id != m.id)
                    .map(|(id, matched)| {
                        let matched = matched.map_or(0, |l| l.index);
                        let entries = last.saturating_sub(matched);
                        let age = if entries == 0 {
                            Duration::ZERO
                        } else {
                            self.log_clock.age_after(matched, now)
                        };
                        (*id, PeerLag { entries, age })
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Samples the log's growth while this node leads. Runs until `shutdown`.
pub async fn run_log_clock(cluster: Arc<Cluster>, shutdown: CancellationToken) {
    let mut metrics = cluster.watch_metrics();
    loop {
        {
            let m = metrics.borrow_and_update();
            if m.state == ServerState::Leader {
                cluster.log_clock.record(
                    m.current_term,
                    m.last_log_index.unwrap_or(0),
                    Instant::now(),
                );
            }
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            _ = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_age_is_that_of_the_oldest_missing_entry() {
        let clock = LogClock::default();
        let t0 = Instant::now();
        clock.record(1, 10, t0);
        clock.record(1, 20, t0 + Duration::from_secs(5));
        clock.record(1, 30, t0 + Duration::from_secs(8));
        let now = t0 + Duration::from_secs(10);
        // Holds 20: lacks 21.., first seen at +8 s.
        assert_eq!(clock.age_after(20, now), Duration::from_secs(2));
        // Holds 12: lacks 13.., first seen at +5 s.
        assert_eq!(clock.age_after(12, now), Duration::from_secs(5));
        // Holds 5: lacks entries older than any sample: the oldest sample.
        assert_eq!(clock.age_after(5, now), Duration::from_secs(10));
        // Holds everything.
        assert_eq!(clock.age_after(30, now), Duration::ZERO);
        // A new term starts over.
        clock.record(2, 31, now);
        assert_eq!(clock.age_after(5, now), Duration::ZERO);
    }
}
