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
    "process",
    "power",
    "operator",
    "target",
    "network",
    "disk",
    "clock",
    "membership",
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

/// What a link-quality fault does to every packet between a node and the
/// other two (both directions). The kernel here has no `sch_netem`, so
/// these are built from what it has: an `htb` class on `lo` that only the
/// node pairs' packets are filtered into, and iptables `statistic`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkQuality {
    /// A rate cap of this many kbit/s (with a short packet queue): delay
    /// that grows and shrinks with the traffic, and tail drops in bursts.
    Slow(u64),
    /// This per cent of packets dropped at random.
    Loss(u64),
    /// This per cent of packets, chosen at random, queued behind the rate
    /// cap of [`REORDER_KBIT`] while the rest pass at once: they arrive
    /// after packets sent later.
    Reorder(u64),
}

/// The rate the held-back packets of [`LinkQuality::Reorder`] drain at.
pub const REORDER_KBIT: u64 = 2_000;

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
    /// Degrade every link between `Who` and the other two nodes (both
    /// directions); healed by removing the qdisc and the rules.
    Links(Who, LinkQuality),
    /// Fill the small file system that holds the node's data dir with a
    /// ballast file until `ENOSPC`; healed by deleting the ballast (and
    /// starting the node if it stopped).
    DiskFull(Who),
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
    /// Replace a follower's store, the documented sequence: `relayctl
    /// member remove`, stop, empty its data dir, start it empty; healed by
    /// `member add` (a learner), catching up, `member promote`.
    ReplaceFollower,
    /// `relayctl member demote` of a follower (a learner that keeps its
    /// data and receives the log); healed by `member promote`.
    DemoteFollower,
}

impl Fault {
    /// The class it belongs to.
    pub fn class(&self) -> &'static str {
        match self {
            Fault::Kill(_) | Fault::Pause(_) | Fault::Restart(_) => "process",
            Fault::PowerLossAll => "power",
            Fault::Failover(_) | Fault::SnapshotNow(_) | Fault::RouteChange => "operator",
            Fault::Target(_) => "target",
            Fault::Isolate(_) | Fault::Bridge(_) | Fault::OneWay(..) | Fault::Links(..) => {
                "network"
            }
            Fault::FsyncEio(..) | Fault::DiskFull(_) => "disk",
            Fault::ReplaceFollower | Fault::DemoteFollower => "membership",
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
            Fault::Links(w, q) => match q {
                LinkQuality::Slow(kbit) => write!(f, "links of {w} capped at {kbit} kbit/s"),
                LinkQuality::Loss(p) => write!(f, "links of {w} drop {p}% of packets"),
                LinkQuality::Reorder(p) => write!(f, "links of {w} hold back {p}% of packets"),
            },
            Fault::FsyncEio(w, n) => write!(f, "EIO on fsync {n} of {w}"),
            Fault::DiskFull(w) => write!(f, "file system of {w} full"),
            Fault::ReplaceFollower => write!(f, "member remove, wipe and re-add a follower"),
            Fault::DemoteFollower => write!(f, "member demote a follower"),
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
        "network" => match rng.range(0, 5) {
            0 => Fault::Isolate(who(rng)),
            1 => Fault::Bridge(who(rng)),
            2 => {
                let a = node(rng);
                let b = 1 + (a + rng.range(0, 1)) % 3;
                Fault::OneWay(a, b)
            }
            3 => Fault::Links(who(rng), LinkQuality::Slow(*rng.pick(&[64, 256, 1_000]))),
            4 => Fault::Links(who(rng), LinkQuality::Loss(rng.range(5, 40))),
            _ => Fault::Links(who(rng), LinkQuality::Reorder(rng.range(10, 50))),
        },
        "disk" => match rng.range(0, 1) {
            0 => Fault::FsyncEio(who(rng), rng.range(20, 400)),
            _ => Fault::DiskFull(who(rng)),
        },
        "membership" => match rng.range(0, 1) {
            0 => Fault::ReplaceFollower,
            _ => Fault::DemoteFollower,
        },
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
///
/// Classes are drawn from a shuffled bag: each round of `classes.len()`
/// faults has every class once, in a random order. A run therefore
/// reaches a number of faults per class in the least time (a uniform
/// draw leaves some class short by chance), and per-class counts never
/// differ by more than one.
pub fn schedule(seed: u64, classes: &[String], total: Duration) -> Vec<Step> {
    let mut rng = Rng::new(seed);
    let mut steps = Vec::new();
    let mut at = Duration::ZERO;
    let mut bag: Vec<String> = Vec::new();
    loop {
        let gap = Duration::from_millis(rng.range(2_000, 6_000));
        if bag.is_empty() {
            bag = classes.to_vec();
            // Fisher-Yates; popped from the end below.
            for i in (1..bag.len()).rev() {
                let j = rng.range(0, i as u64) as usize;
                bag.swap(i, j);
            }
        }
        let class = bag.pop().expect("the bag was just filled");
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
    fn every_class_gets_its_share_of_the_faults() {
        let classes: Vec<String> = CLASSES.iter().map(|c| c.to_string()).collect();
        for seed in [1, 42, 20261205] {
            let steps = schedule(seed, &classes, Duration::from_secs(3_600));
            let mut counts = std::collections::BTreeMap::new();
            for step in &steps {
                *counts.entry(step.fault.class()).or_insert(0usize) += 1;
            }
            assert_eq!(counts.len(), classes.len(), "seed {seed}: {counts:?}");
            let (min, max) = (
                counts.values().min().unwrap(),
                counts.values().max().unwrap(),
            );
            assert!(max - min <= 1, "seed {seed}: {counts:?}");
        }
    }

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

    fn kinds_of(class: &str, seeds: std::ops::Range<u64>) -> Vec<Fault> {
        let mut out = Vec::new();
        for seed in seeds {
            let mut rng = Rng::new(seed);
            let f = fault_of(class, &mut rng);
            assert_eq!(f.class(), class, "{f}");
            out.push(f);
        }
        out
    }

    #[test]
    fn the_network_class_draws_every_link_quality_with_bounded_settings() {
        let faults = kinds_of("network", 0..400);
        let (mut slow, mut loss, mut reorder) = (0, 0, 0);
        for f in &faults {
            match f {
                Fault::Links(_, LinkQuality::Slow(k)) => {
                    assert!([64, 256, 1_000].contains(k));
                    slow += 1;
                }
                Fault::Links(_, LinkQuality::Loss(p)) => {
                    assert!((5..=40).contains(p));
                    loss += 1;
                }
                Fault::Links(_, LinkQuality::Reorder(p)) => {
                    assert!((10..=50).contains(p));
                    reorder += 1;
                }
                _ => {}
            }
        }
        assert!(
            slow > 20 && loss > 20 && reorder > 20,
            "{slow} {loss} {reorder}"
        );
        assert!(faults.iter().any(|f| matches!(f, Fault::Isolate(_))));
    }

    #[test]
    fn the_disk_class_draws_full_disks_and_fsync_errors() {
        let faults = kinds_of("disk", 0..100);
        assert!(faults.iter().any(|f| matches!(f, Fault::DiskFull(_))));
        assert!(faults.iter().any(|f| matches!(f, Fault::FsyncEio(..))));
    }

    #[test]
    fn the_membership_class_replaces_and_demotes_followers_and_is_opt_in() {
        let faults = kinds_of("membership", 0..50);
        assert!(faults.contains(&Fault::ReplaceFollower));
        assert!(faults.contains(&Fault::DemoteFollower));
        assert!(CLASSES.contains(&"membership"));
        assert!(!DEFAULT_CLASSES.contains(&"membership"));
        let classes = vec!["membership".to_string()];
        let steps = schedule(7, &classes, Duration::from_secs(120));
        assert!(steps.len() >= 5, "{}", steps.len());
        assert!(steps.iter().all(|s| s.fault.class() == "membership"));
    }

    #[test]
    fn splitmix_matches_its_reference_values() {
        // First outputs for seed 1234567 from the reference implementation.
        let mut r = Rng::new(1234567);
        assert_eq!(r.next_u64(), 6457827717110365317);
        assert_eq!(r.next_u64(), 3203168211198807973);
    }
}
