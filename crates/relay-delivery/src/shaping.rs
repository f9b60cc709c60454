//! Per-destination shaping: how many deliveries this node runs at once to
//! one route's targets, and how often it starts one.
//!
//! A *destination* is a route's target list (`host:port` joined by `,`), the
//! same key the loop used for `per_target_concurrency`: routes that name the
//! same targets share one destination, so give them the same shaping (the
//! limits of the route being started are the ones applied).
//!
//! # Rules
//! A route without shaping keeps the behaviour from before shaping: at most
//! `per_target_concurrency` deliveries at once per node, no slow start, no
//! rate limit. A route with `shaping.concurrency = L` is shaped like
//! Postfix's destination concurrency scheduler:
//!
//! - **Cluster share.** Every owner delivers to the route, so each node
//!   takes an equal share of `L`: `max(1, floor(L / V))`, where `V` is the
//!   number of voters in this node's current membership (all voters, live
//!   or not, so the shares of the nodes never add up to more than `L`). A
//!   node never gets 0, or its messages to the route would never leave:
//!   when `L < V`, each node gets 1 and the cluster may run `V` at once.
//!   A dead voter's share is not redistributed (its messages move to the
//!   others by takeover; they deliver within their own shares).
//! - **Slow start.** A destination starts at `min(2, share)` deliveries at
//!   once and grows by one with every delivery the target accepted, up to
//!   the share.
//! - **Back-off.** A delivery that ended in a temporary failure for every
//!   recipient (4xx, connection refused or lost, timeout) drops the
//!   destination to 1 at once; it grows again by slow start. Deliveries
//!   already running when it dropped (the failed *cohort*) neither grow nor
//!   drop it again when they end, so a burst of failures is one back-off
//!   and a late success does not undo it. A delivery refused for good (5xx
//!   for every recipient) changes nothing: the target answered normally.
//! - **Rate.** With `shaping.rate = N per P seconds`, the node starts a
//!   delivery to the destination at most once every `ceil(P·V / N)`
//!   milliseconds (its share of the rate). Over any interval of `T`
//!   seconds the cluster starts at most `V·(1 + T / spacing)` deliveries,
//!   i.e. about `N·T/P` plus one per voter. A message held back waits in
//!   the queue; the loop wakes when the destination opens again.
//!
//! The state lives in memory on each node and starts afresh when the node
//! restarts; it is kept while the node runs (an idle destination keeps the
//! concurrency it reached). Limits are re-read from the route every round,
//! so `relayctl route set` takes effect on the next round.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use relay_types::Route;

use crate::classify::ReplyClass;
use crate::metrics as m;

/// A shaped destination starts at this many deliveries at once (or its
/// share, if smaller).
pub const INITIAL_CONCURRENCY: u32 = 2;

/// This node's share of a cluster-wide limit `limit` among `voters` nodes:
/// `max(1, floor(limit / voters))`.
pub fn node_share(limit: u32, voters: u32) -> u32 {
    (limit / voters.max(1)).max(1)
}

/// What this node applies to one destination now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most deliveries at once on this node (the share, or
    /// `per_target_concurrency` for an unshaped route).
    pub concurrency: u32,
    /// Slow start and back-off apply (the route sets a concurrency).
    pub slow_start: bool,
    /// Least time between two starts on this node (the route sets a rate).
    pub spacing: Option<Duration>,
}

impl Limits {
    /// The limits of `route` on a node whose membership has `voters`
    /// voters.
    pub fn of(route: &Route, per_target_concurrency: usize, voters: u32) -> Limits {
        let voters = voters.max(1);
        let spacing = route
            .shaping
            .rate
            .map(|rate| Duration::from_millis(rate.spacing_ms(voters)));
        match route.shaping.concurrency {
            Some(limit) => Limits {
                concurrency: node_share(limit, voters),
                slow_start: true,
                spacing,
            },
            None => Limits {
                concurrency: u32::try_from(per_target_concurrency.max(1)).unwrap_or(u32::MAX),
                slow_start: false,
                spacing,
            },
        }
    }
}

/// How a delivery to a destination ended, as slow start sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The target accepted at least one recipient: grow.
    Accepted,
    /// Temporary failure for every recipient: back off.
    Deferred,
    /// Nothing to learn (5xx only, nothing sent, or the attempt stopped).
    Neutral,
}

impl Outcome {
    /// The outcome of one transaction from its recipients' reply classes.
    pub fn of(classes: impl IntoIterator<Item = ReplyClass>) -> Outcome {
        let mut outcome = Outcome::Neutral;
        for class in classes {
            match class {
                ReplyClass::Success => return Outcome::Accepted,
                ReplyClass::Temporary => outcome = Outcome::Deferred,
                ReplyClass::Permanent => {}
            }
        }
        outcome
    }
}

/// Why a delivery may not start now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// The destination runs as many deliveries as it may.
    Concurrency,
    /// The rate allows the next start at this time.
    Rate(Instant),
}

/// One destination's state on this node. Pure: times come in as
/// arguments, so the rules are tested with a made-up clock.
#[derive(Clone, Debug)]
pub struct Window {
    running: u32,
    /// Slow-start concurrency (used when the limits say `slow_start`).
    window: u32,
    /// Bumped by each back-off; a delivery started before it is part of
    /// the failed cohort.
    generation: u64,
    next_start: Option<Instant>,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            running: 0,
            window: INITIAL_CONCURRENCY,
            generation: 0,
            next_start: None,
        }
    }
}

impl Window {
    /// Deliveries running now.
    pub fn running(&self) -> u32 {
        self.running
    }

    /// How many may run at once now under `limits`.
    pub fn allowed(&self, limits: &Limits) -> u32 {
        if limits.slow_start {
            self.window.clamp(1, limits.concurrency.max(1))
        } else {
            limits.concurrency.max(1)
        }
    }

    /// May one more start at `now`?
    pub fn check(&self, limits: &Limits, now: Instant) -> Result<(), Wait> {
        if self.running >= self.allowed(limits) {
            return Err(Wait::Concurrency);
        }
        match (limits.spacing, self.next_start) {
            (Some(_), Some(next)) if now < next => Err(Wait::Rate(next)),
            _ => Ok(()),
        }
    }

    /// Counts a start at `now` (after [`Window::check`]); the generation to
    /// hand back to [`Window::finish`].
    pub fn start(&mut self, limits: &Limits, now: Instant) -> u64 {
        self.running += 1;
        if let Some(spacing) = limits.spacing {
            self.next_start = Some(now + spacing);
        }
        self.generation
    }

    /// Counts the end of a delivery started in `generation`.
    pub fn finish(&mut self, limits: &Limits, generation: u64, outcome: Outcome) {
        self.running = self.running.saturating_sub(1);
        if !limits.slow_start || generation != self.generation {
            return;
        }
        let limit = limits.concurrency.max(1);
        match outcome {
            Outcome::Accepted => self.window = (self.window.min(limit) + 1).min(limit),
            Outcome::Deferred => {
                self.window = 1;
                self.generation += 1;
            }
            Outcome::Neutral => {}
        }
    }
}

/// The windows of every destination this node delivers to.
#[derive(Debug, Default)]
pub struct Shaper {
    destinations: Mutex<HashMap<String, Window>>,
    /// The earliest time a rate-limited destination opens again.
    wake: Mutex<Option<Instant>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update is a few integer steps; a panic elsewhere leaves the
    // map usable.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shaper {
    /// Starts one delivery to each of `wanted` (destination, limits) at
    /// `now`, or none of them: all are checked before any is counted, so a
    /// message held back by one destination spends nothing at the others.
    pub fn try_start(
        self: &Arc<Self>,
        wanted: &[(String, Limits)],
        now: Instant,
    ) -> Result<Vec<Permit>, Wait> {
        let mut destinations = lock(&self.destinations);
        for (key, limits) in wanted {
            let checked = destinations
                .get(key)
                .map_or(Ok(()), |w| w.check(limits, now));
            if let Err(wait) = checked {
                let reason = match wait {
                    Wait::Concurrency => "concurrency",
                    Wait::Rate(at) => {
                        let mut wake = lock(&self.wake);
                        *wake = Some(wake.map_or(at, |w| w.min(at)));
                        "rate"
                    }
                };
                metrics::counter!(
                    m::DESTINATION_THROTTLED_TOTAL,
                    "destination" => key.clone(),
                    "reason" => reason
                )
                .increment(1);
                return Err(wait);
            }
        }
        let mut permits = Vec::with_capacity(wanted.len());
        for (key, limits) in wanted {
            let window = destinations.entry(key.clone()).or_default();
            let generation = window.start(limits, now);
            publish(key, window, limits);
            permits.push(Permit {
                shaper: self.clone(),
                key: key.clone(),
                limits: *limits,
                generation,
                finished: false,
            });
        }
        Ok(permits)
    }

    /// The earliest time a destination held back by its rate opens again,
    /// if any was; cleared (each round records the waits that still hold).
    pub fn take_wake(&self) -> Option<Instant> {
        lock(&self.wake).take()
    }

    fn finish(&self, key: &str, limits: &Limits, generation: u64, outcome: Outcome) {
        let mut destinations = lock(&self.destinations);
        if let Some(window) = destinations.get_mut(key) {
            window.finish(limits, generation, outcome);
            publish(key, window, limits);
        }
        if outcome == Outcome::Deferred {
            metrics::counter!(m::DESTINATION_DEFERRALS_TOTAL, "destination" => key.to_string())
                .increment(1);
        }
    }
}

fn publish(key: &str, window: &Window, limits: &Limits) {
    metrics::gauge!(m::DESTINATION_CONCURRENCY, "destination" => key.to_string())
        .set(f64::from(window.running()));
    metrics::gauge!(m::DESTINATION_CONCURRENCY_LIMIT, "destination" => key.to_string())
        .set(f64::from(window.allowed(limits)));
}

/// One running delivery to a destination. [`Permit::finish`] reports how
/// it went; dropped unfinished, it counts as [`Outcome::Neutral`].
#[derive(Debug)]
pub struct Permit {
    shaper: Arc<Shaper>,
    key: String,
    limits: Limits,
    generation: u64,
    finished: bool,
}

impl Permit {
    /// The destination.
    pub fn destination(&self) -> &str {
        &self.key
    }

    /// Ends the delivery with `outcome`.
    pub fn finish(mut self, outcome: Outcome) {
        self.finished = true;
        self.shaper
            .finish(&self.key, &self.limits, self.generation, outcome);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.finished {
            self.shaper
                .finish(&self.key, &self.limits, self.generation, Outcome::Neutral);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_types::{Rate, Shaping, TlsPolicy};

    fn shaped(limit: u32) -> Limits {
        Limits {
            concurrency: limit,
            slow_start: true,
            spacing: None,
        }
    }

    /// Starts as many as the window allows at `now`; their generations.
    fn fill(w: &mut Window, limits: &Limits, now: Instant) -> Vec<u64> {
        let mut started = Vec::new();
        while w.check(limits, now).is_ok() {
            started.push(w.start(limits, now));
        }
        started
    }

    #[test]
    fn shares_never_add_up_to_more_than_the_limit() {
        for limit in 1..=40u32 {
            for voters in 1..=5u32 {
                let share = node_share(limit, voters);
                assert!(share >= 1);
                if limit >= voters {
                    assert!(share * voters <= limit, "{limit}/{voters}");
                } else {
                    assert_eq!(share, 1, "below one per node, each still gets 1");
                }
            }
        }
        assert_eq!(node_share(3, 3), 1);
        assert_eq!(node_share(10, 3), 3);
        assert_eq!(node_share(2, 3), 1);
    }

    #[test]
    fn limits_come_from_the_route_or_the_node_default() {
        let mut route = Route::new(vec!["a:25".into()], TlsPolicy::None);
        assert_eq!(
            Limits::of(&route, 5, 3),
            Limits {
                concurrency: 5,
                slow_start: false,
                spacing: None
            },
            "unshaped: per_target_concurrency per node, as before"
        );
        route.shaping = Shaping {
            concurrency: Some(9),
            rate: Some(Rate {
                messages: 30,
                per_secs: 1,
            }),
        };
        assert_eq!(
            Limits::of(&route, 5, 3),
            Limits {
                concurrency: 3,
                slow_start: true,
                spacing: Some(Duration::from_millis(100))
            }
        );
    }

    #[test]
    fn slow_start_grows_by_one_per_accepted_delivery_up_to_the_share() {
        let limits = shaped(5);
        let now = Instant::now();
        let mut w = Window::default();
        assert_eq!(fill(&mut w, &limits, now).len(), 2, "starts at 2");
        let mut seen = vec![w.allowed(&limits)];
        for _ in 0..6 {
            w.finish(&limits, 0, Outcome::Accepted);
            fill(&mut w, &limits, now);
            seen.push(w.allowed(&limits));
            assert!(w.running() <= w.allowed(&limits));
        }
        assert_eq!(seen, [2, 3, 4, 5, 5, 5, 5]);
        assert_eq!(w.running(), 5);
    }

    #[test]
    fn a_share_below_the_initial_window_starts_at_the_share() {
        let limits = shaped(1);
        let mut w = Window::default();
        assert_eq!(fill(&mut w, &limits, Instant::now()).len(), 1);
    }

    #[test]
    fn a_temporary_failure_drops_to_one_once_per_cohort_then_slow_start() {
        let limits = shaped(4);
        let now = Instant::now();
        let mut w = Window::default();
        fill(&mut w, &limits, now);
        for _ in 0..2 {
            w.finish(&limits, 0, Outcome::Accepted);
            fill(&mut w, &limits, now);
        }
        assert_eq!((w.allowed(&limits), w.running()), (4, 4));

        // One of the four fails: down to 1 at once.
        w.finish(&limits, 0, Outcome::Deferred);
        assert_eq!(w.allowed(&limits), 1);
        // The rest of the failed cohort ends: a failure does not count
        // twice, a success does not undo the back-off.
        w.finish(&limits, 0, Outcome::Deferred);
        w.finish(&limits, 0, Outcome::Accepted);
        assert_eq!(w.allowed(&limits), 1);
        assert!(w.check(&limits, now).is_err(), "one still running");
        w.finish(&limits, 0, Outcome::Accepted);
        assert_eq!(w.running(), 0);
        assert_eq!(w.allowed(&limits), 1);

        // Recovery by slow start, from the new generation only.
        let g = fill(&mut w, &limits, now);
        assert_eq!(g, [1]);
        w.finish(&limits, 1, Outcome::Accepted);
        assert_eq!(w.allowed(&limits), 2);
        let g = fill(&mut w, &limits, now);
        assert_eq!(g.len(), 2);
        w.finish(&limits, 1, Outcome::Accepted);
        w.finish(&limits, 1, Outcome::Accepted);
        assert_eq!(w.allowed(&limits), 4);
    }

    #[test]
    fn a_permanent_failure_neither_grows_nor_drops() {
        let limits = shaped(4);
        let mut w = Window::default();
        fill(&mut w, &limits, Instant::now());
        w.finish(&limits, 0, Outcome::of([ReplyClass::Permanent]));
        assert_eq!(w.allowed(&limits), 2);
        assert_eq!(
            Outcome::of([ReplyClass::Temporary, ReplyClass::Permanent]),
            Outcome::Deferred
        );
        assert_eq!(
            Outcome::of([ReplyClass::Temporary, ReplyClass::Success]),
            Outcome::Accepted
        );
        assert_eq!(Outcome::of([]), Outcome::Neutral);
    }

    #[test]
    fn an_unshaped_destination_keeps_its_fixed_limit() {
        let limits = Limits {
            concurrency: 3,
            slow_start: false,
            spacing: None,
        };
        let now = Instant::now();
        let mut w = Window::default();
        assert_eq!(fill(&mut w, &limits, now).len(), 3);
        w.finish(&limits, 0, Outcome::Deferred);
        assert_eq!(w.allowed(&limits), 3);
        assert_eq!(fill(&mut w, &limits, now).len(), 1);
    }

    #[test]
    fn a_lowered_limit_applies_at_once_and_a_raised_one_by_slow_start() {
        let now = Instant::now();
        let mut w = Window::default();
        let wide = shaped(6);
        fill(&mut w, &wide, now);
        for _ in 0..4 {
            w.finish(&wide, 0, Outcome::Accepted);
            fill(&mut w, &wide, now);
        }
        assert_eq!(w.allowed(&wide), 6);
        let narrow = shaped(2);
        assert_eq!(w.allowed(&narrow), 2);
        assert_eq!(w.check(&narrow, now), Err(Wait::Concurrency));
        for _ in 0..6 {
            w.finish(&narrow, 0, Outcome::Accepted);
        }
        assert_eq!(w.allowed(&narrow), 2);
        // Raised again: from where it is, one per accepted delivery.
        assert_eq!(w.allowed(&wide), 2);
        fill(&mut w, &wide, now);
        w.finish(&wide, 0, Outcome::Accepted);
        assert_eq!(w.allowed(&wide), 3);
    }

    #[test]
    fn the_rate_spaces_starts_on_a_made_up_clock() {
        let limits = Limits {
            concurrency: 100,
            slow_start: false,
            spacing: Some(Duration::from_millis(300)),
        };
        let t0 = Instant::now();
        let mut w = Window::default();
        let mut starts = Vec::new();
        // Try every 10 ms for 3 s of made-up time.
        for step in 0..300u64 {
            let now = t0 + Duration::from_millis(step * 10);
            match w.check(&limits, now) {
                Ok(()) => {
                    w.start(&limits, now);
                    starts.push(step * 10);
                }
                Err(Wait::Rate(at)) => assert!(at > now),
                Err(Wait::Concurrency) => panic!("concurrency is not the limit here"),
            }
        }
        assert_eq!(
            starts,
            [0, 300, 600, 900, 1200, 1500, 1800, 2100, 2400, 2700]
        );
    }

    #[test]
    fn permits_start_all_or_none_and_report_on_drop() {
        let shaper = Arc::new(Shaper::default());
        let now = Instant::now();
        let one = shaped(1);
        let a = ("a:25".to_string(), one);
        let b = ("b:25".to_string(), one);
        let held_b = shaper.try_start(std::slice::from_ref(&b), now).unwrap();
        // b is full: a message to a and b takes nothing at a.
        assert_eq!(
            shaper.try_start(&[a.clone(), b.clone()], now).unwrap_err(),
            Wait::Concurrency
        );
        let held_a = shaper.try_start(std::slice::from_ref(&a), now).unwrap();
        drop(held_a);
        drop(held_b);
        let both = shaper.try_start(&[a.clone(), b.clone()], now).unwrap();
        assert_eq!(both.len(), 2);
        let mut both = both.into_iter();
        both.next().unwrap().finish(Outcome::Deferred);
        drop(both);
        let windows = lock(&shaper.destinations);
        assert_eq!(windows["a:25"].running(), 0);
        assert_eq!(windows["b:25"].running(), 0);
        assert_eq!(windows["a:25"].generation, 1, "a backed off");
        assert_eq!(windows["b:25"].generation, 0, "dropped: neutral");
    }

    #[test]
    fn a_rate_wait_sets_the_wake_time() {
        let shaper = Arc::new(Shaper::default());
        let now = Instant::now();
        let limits = Limits {
            concurrency: 10,
            slow_start: false,
            spacing: Some(Duration::from_millis(500)),
        };
        let d = [("a:25".to_string(), limits)];
        let first = shaper.try_start(&d, now).unwrap();
        assert_eq!(
            shaper.try_start(&d, now).unwrap_err(),
            Wait::Rate(now + Duration::from_millis(500))
        );
        assert_eq!(shaper.take_wake(), Some(now + Duration::from_millis(500)));
        assert_eq!(shaper.take_wake(), None);
        drop(first);
        assert!(
            shaper
                .try_start(&d, now + Duration::from_millis(500))
                .is_ok()
        );
    }
}
