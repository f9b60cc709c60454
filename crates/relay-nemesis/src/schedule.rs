//! The schedule: a list of faults with their start offsets and durations,
//! drawn from a seed by a generator that is part of this file (SplitMix64),
//! so the same seed and classes give the same schedule on any build.
//!
//! Faults run one at a time: inject, hold, heal, a quiet gap, next. Which
//! node a fault hits is fixed by the schedule (`node 2`) or by role at the
//! moment it runs (`the leader`), so a schedule replays exactly in what it
//! does, while roles are resolved against the live cluster.

use std::fmt;
use std::time::Duration;

/// SplitMix64 (Steele, Lea, Flood 2014): small, fast, and fixed forever.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next_u64() % items.len() as u64) as usize]
    }
}

/// Fault classes, in the order they were built.
pub const CLASSES: &[&str] = &[
    "process", "power", "operator", "target", "network", "disk", "clock",
];

/// Classes a plain `--classes` default runs (all that need nothing beyond
/// root and the default build).
pub const DEFAULT_CLASSES: &[&str] = &["process", "power", "operator", "target", "network", "disk"];

/// Which node a fault hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    /// This node id.
    Node(u64),
    /// Whichever node leads when the fault starts.
    Leader,
    /// A node that does not lead when the fault starts (the lowest id).
    Follower,
}

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Who::Node(n) => write!(f, "node {n}"),
            Who::Leader => write!(f, "the leader"),
            Who::Follower => write!(f, "a follower"),
        }
    }
}

/// What a target fault makes the target do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetFault {
    /// Store, then wait this long before `250` to the final dot.
    SlowFinalDot(u64),
    /// Close every new connection without a greeting.
    Down,
    /// `451` to the final dot, nothing stored.
    Defer4xx,
    /// Close right after `354`.
    DropMidData,
    /// Store, then close without a reply to the final dot.
    DropAfterStore,
}

/// One fault; [`Fault::class`] names its class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL (with the power-loss failpoint: unsynced writes are gone);
    /// healed by starting it again on its data dir.
    Kill(Who),
    /// SIGSTOP; healed by SIGCONT.
    Pause(Who),
    /// SIGTERM and start again at once (held: nothing).
    Restart(Who),
    /// SIGKILL all three at once (power cut of the whole tier: every
    /// unsynced write is lost); healed by starting all three.
    PowerLossAll,
    /// `relayctl failover` (to a chosen node or the next voter).
    Failover(Option<u64>),
    /// `relayctl snapshot` on a node.
    SnapshotNow(u64),
    /// Re-point the route of the test domain to the second target port
    /// (both store into the same record); healed by pointing it back.
    RouteChange,
    /// The target misbehaves until healed.
    Target(TargetFault),
    /// Drop every packet between `Who` and the other two nodes.
    Isolate(Who),
    /// Cut the link between the other two nodes; `Who` still sees both.
    Bridge(Who),
    /// Drop packets from the first node to the second only.
    OneWay(u64, u64),
    /// Restart the node with the failed-fsync failpoint: its WAL sync
    /// after this many fails and the node stops by itself; healed by a
    /// normal start.
    FsyncEio(Who, u64),
    /// Restart the node with its wall clock stepped by this many seconds
    /// (libfaketime); healed by a normal restart.
    ClockStep(Who, i64),
    /// Restart the node with its clocks running at this rate (per mille,
    /// 1000 = normal; libfaketime); healed by a normal restart.
    ClockRate(Who, u64),
}

impl Fault {
    /// The class it belongs to.
    pub fn class(&self) -> &'static str {
        match self {
            Fault::Kill(_) | Fault::Pause(_) | Fault::Restart(_) => "process",
            Fault::PowerLossAll => "power",
            Fault::Failover(_) | Fault::SnapshotNow(_) | Fault::RouteChange => "operator",
            Fault::Target(_) => "target",
            Fault::Isolate(_) | Fault::Bridge(_) | Fault::OneWay(..) => "network",
            Fault::FsyncEio(..) => "disk",
            Fault::ClockStep(..) | Fault::ClockRate(..) => "clock",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Kill(w) => write!(f, "kill -9 {w}"),
            Fault::Pause(w) => write!(f, "SIGSTOP {w}"),
            Fault::Restart(w) => write!(f, "restart {w}"),
            Fault::PowerLossAll => write!(f, "power loss on all three nodes"),
            Fault::Failover(Some(n)) => write!(f, "relayctl failover --to {n}"),
            Fault::Failover(None) => write!(f, "relayctl failover"),
            Fault::SnapshotNow(n) => write!(f, "relayctl snapshot on node {n}"),
            Fault::RouteChange => write!(f, "route change to the second target port"),
            Fault::Target(t) => match t {
                TargetFault::SlowFinalDot(ms) => {
                    write!(f, "target: {ms} ms before 250 to the final dot")
                }
                TargetFault::Down => write!(f, "target down"),
                TargetFault::Defer4xx => write!(f, "target: 451 to the final dot"),
                TargetFault::DropMidData => write!(f, "target: drop mid-DATA"),
                TargetFault::DropAfterStore => {
                    write!(f, "target: store, then drop before the reply")
                }
            },
            Fault::Isolate(w) => write!(f, "isolate {w}"),
            Fault::Bridge(w) => write!(f, "bridge through {w}"),
            Fault::OneWay(a, b) => write!(f, "drop packets node {a} -> node {b}"),
            Fault::FsyncEio(w, n) => write!(f, "EIO on fsync {n} of {w}"),
            Fault::ClockStep(w, s) => write!(f, "wall clock of {w} stepped {s:+} s"),
            Fault::ClockRate(w, r) => write!(f, "clocks of {w} at rate {:.3}", *r as f64 / 1000.0),
        }
    }
}

/// One scheduled fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// Quiet time before it.
    pub gap: Duration,
    /// The fault.
    pub fault: Fault,
    /// How long it is held before the heal.
    pub hold: Duration,
}

fn who(rng: &mut Rng) -> Who {
    match rng.range(0, 4) {
        0 => Who::Leader,
        1 => Who::Follower,
        n => Who::Node(n - 1),
    }
}

fn node(rng: &mut Rng) -> u64 {
    rng.range(1, 3)
}

/// A random fault of `class`.
pub fn fault_of(class: &str, rng: &mut Rng) -> Fault {
    match class {
        "process" => match rng.range(0, 2) {
            0 => Fault::Kill(who(rng)),
            1 => Fault::Pause(who(rng)),
            _ => Fault::Restart(who(rng)),
        },
        "power" => Fault::PowerLossAll,
        "operator" => match rng.range(0, 3) {
            0 => Fault::Failover(None),
            1 => Fault::Failover(Some(node(rng))),
            2 => Fault::SnapshotNow(node(rng)),
            _ => Fault::RouteChange,
        },
        "target" => Fault::Target(match rng.range(0, 4) {
            0 => TargetFault::SlowFinalDot(rng.range(1_000, 8_000)),
            1 => TargetFault::Down,
            2 => TargetFault::Defer4xx,
            3 => TargetFault::DropMidData,
            _ => TargetFault::DropAfterStore,
        }),
        "network" => match rng.range(0, 2) {
            0 => Fault::Isolate(who(rng)),
            1 => Fault::Bridge(who(rng)),
            _ => {
                let a = node(rng);
                let b = 1 + (a + rng.range(0, 1)) % 3;
                Fault::OneWay(a, b)
            }
        },
        "disk" => Fault::FsyncEio(who(rng), rng.range(20, 400)),
        "clock" => match rng.range(0, 1) {
            0 => {
                let minutes = rng.range(1, 10) as i64;
                let sign = if rng.range(0, 1) == 0 { -1 } else { 1 };
                Fault::ClockStep(who(rng), sign * minutes * 60)
            }
            _ => Fault::ClockRate(who(rng), *rng.pick(&[500, 900, 1100, 2000])),
        },
        other => panic!("unknown fault class {other:?}"),
    }
}

/// The schedule for `seed` over `classes`, filling `total` with faults
/// held 3–12 s after quiet gaps of 2–6 s.
pub fn schedule(seed: u64, classes: &[String], total: Duration) -> Vec<Step> {
    let mut rng = Rng::new(seed);
    let mut steps = Vec::new();
    let mut at = Duration::ZERO;
    loop {
        let gap = Duration::from_millis(rng.range(2_000, 6_000));
        let class = rng.pick(classes).clone();
        let fault = fault_of(&class, &mut rng);
        let hold = Duration::from_millis(rng.range(3_000, 12_000));
        if at + gap + hold > total && !steps.is_empty() {
            return steps;
        }
        at += gap + hold;
        steps.push(Step { gap, fault, hold });
        if at > total {
            return steps;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_schedule_and_another_seed_another() {
        let classes: Vec<String> = DEFAULT_CLASSES.iter().map(|c| c.to_string()).collect();
        let a = schedule(42, &classes, Duration::from_secs(600));
        let b = schedule(42, &classes, Duration::from_secs(600));
        let c = schedule(43, &classes, Duration::from_secs(600));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.len() > 20, "{}", a.len());
        // Every default class shows up in a ten-minute schedule.
        for class in DEFAULT_CLASSES {
            assert!(a.iter().any(|s| s.fault.class() == *class), "{class}");
        }
    }

    #[test]
    fn splitmix_matches_its_reference_values() {
        // First outputs for seed 1234567 from the reference implementation.
        let mut r = Rng::new(1234567);
        assert_eq!(r.next_u64(), 6457827717110365317);
        assert_eq!(r.next_u64(), 3203168211198807973);
    }
}
