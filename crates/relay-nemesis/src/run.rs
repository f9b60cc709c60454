//! One nemesis run: start, load, the schedule, heal, settle, observe, judge.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nemesis_check::records::{AfterHeal, FaultSpan, NodeEnd, RunInfo};
use relay_testkit::{Behaviour, Reply, TargetOptions, TestTarget};
use tokio_util::sync::CancellationToken;

use crate::Args;
use crate::disk::SmallDisks;
use crate::net::Firewall;
use crate::observe::{self, DupCounter};
use crate::record::{Jsonl, StoredSink};
use crate::schedule::{self, Fault, TargetFault, Who};
use crate::shape::Shaper;
use crate::topology::{Cluster, DOMAIN, PURGE_INTERVAL_SECS};

/// Load keeps running this long after the last heal (the tier must take
/// mail again whichever node leads).
const LOAD_AFTER_HEAL: Duration = Duration::from_secs(10);
/// Deadline for the queue to drain after the load stopped.
const DRAIN_WITHIN: Duration = Duration::from_secs(180);
/// Deadline for every log to be purged past the drained index.
const PURGE_WITHIN: Duration = Duration::from_secs(60);
/// After a full disk is healed, its node may still be in the middle of
/// the ordered stop a failed WAL write starts (SMTP sessions get their
/// grace first); an exit this soon after the heal is that stop, and the
/// harness restarts the node as its supervisor would.
const STOP_AFTER_DISK_HEAL: Duration = Duration::from_secs(30);
/// Deadline for a re-added node to catch up before it is promoted.
const CATCH_UP_WITHIN: Duration = Duration::from_secs(60);
/// Where libfaketime lives (Debian package `libfaketime`).
const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

// Fields drop in order: the nodes stop before the links and disks they
// use are taken away.
struct Harness {
    cluster: Cluster,
    firewall: Option<Firewall>,
    shaper: Option<Shaper>,
    disks: Option<SmallDisks>,
    /// A node taken out of the voters (removed or demoted) that the heal
    /// must bring back: `(id, removed)` (`false`: demoted).
    out_of_voters: Option<(u64, bool)>,
    targets: Vec<TestTarget>,
    dups: Vec<DupCounter>,
    epoch: Instant,
    last_scrape: Instant,
    /// Node exits nobody asked for, with what was running then.
    problems: Vec<String>,
    /// A node expected to stop by itself (the fsync failpoint).
    may_exit: Option<u64>,
    /// A node whose disk was full until the heal: it may still stop by
    /// itself until then, and is started again at once.
    stopping_after_full: Option<(u64, Instant)>,
    /// The node running with a failpoint or a fake clock, if any.
    special: Option<u64>,
    current: String,
}

fn default_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64 % 1_000_000_000)
}

/// Runs the whole thing; `Ok(exit status)`: 0 passed, 1 lost or invented
/// mail or a bad state after the heal, 3 only duplicate counting failed.
pub async fn run(args: Args) -> anyhow::Result<u8> {
    let seed = args.seed.unwrap_or_else(default_seed);
    let mut classes: Vec<String> = if args.classes.is_empty() {
        schedule::DEFAULT_CLASSES
            .iter()
            .map(|c| c.to_string())
            .collect()
    } else {
        args.classes.clone()
    };
    classes.retain(|c| !c.is_empty());
    for c in &classes {
        if !schedule::CLASSES.contains(&c.as_str()) {
            bail!(
                "unknown fault class {c:?} (known: {})",
                schedule::CLASSES.join(", ")
            );
        }
    }
    if classes.iter().any(|c| c == "clock") && !Path::new(FAKETIME_LIB).exists() {
        bail!(
            "the clock class needs libfaketime ({FAKETIME_LIB}): scripts/setup.sh nemesis installs it"
        );
    }
    let total = Duration::from_secs_f64(args.minutes * 60.0);
    let steps = schedule::schedule(seed, &classes, total);
    println!(
        "nemesis: seed {seed}, classes {}, {} faults over {:.1} min",
        classes.join(","),
        steps.len(),
        args.minutes
    );
    if args.dry_run {
        for (i, s) in steps.iter().enumerate() {
            println!(
                "{i:>4}: after {:>5} ms: [{}] {} for {} ms",
                s.gap.as_millis(),
                s.fault.class(),
                s.fault,
                s.hold.as_millis()
            );
        }
        return Ok(0);
    }

    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("nemesis-runs/seed-{seed}")));
    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("clear {}", out.display()))?;
    }
    std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
    let out = out.canonicalize()?;
    let mut switches = Vec::new();
    let mut base_env = Vec::new();
    if args.break_append_fsync {
        switches.push("QR_TEST_SKIP_APPEND_FSYNC=1".to_string());
        base_env.push(("QR_TEST_SKIP_APPEND_FSYNC".to_string(), "1".to_string()));
    }
    std::fs::write(
        out.join("run.json"),
        serde_json::to_string_pretty(&RunInfo {
            seed,
            classes: classes.clone(),
            seconds: total.as_secs(),
            switches,
        })?,
    )?;
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("binary has no directory")?
            .to_path_buf(),
    };
    let ip = |last: u8| -> anyhow::Result<IpAddr> {
        format!("{}.{last}", args.net)
            .parse()
            .with_context(|| format!("--net {:?} does not make an IPv4 address", args.net))
    };
    let ips = vec![ip(1)?, ip(2)?, ip(3)?];
    for addr in &ips {
        if !addr.is_loopback() {
            bail!("--net must be inside 127.0.0.0/8, got {addr}");
        }
    }

    // The firewall first: a run that needs it and cannot have it stops
    // before anything starts.
    let network = classes.iter().any(|c| c == "network");
    let firewall = if network {
        Some(Firewall::install().context("install the iptables chain (needs root)")?)
    } else {
        None
    };
    let shaper = if network {
        Some(Shaper::install().context("install the link-quality chains (needs root)")?)
    } else {
        None
    };
    let disks = if classes.iter().any(|c| c == "disk") {
        let dirs = (1..=3).map(|id| out.join(format!("node{id}"))).collect();
        Some(SmallDisks::mount(dirs).context("mount the nodes' small file systems (needs root)")?)
    } else {
        None
    };

    let stored = Jsonl::create(&out.join("stored.jsonl"))?;
    let mut targets = Vec::new();
    for _ in 0..2 {
        targets.push(
            TestTarget::start_with(TargetOptions {
                listen: SocketAddr::new(ip(100)?, 0),
                hostname: "target.test".into(),
                keep_messages: false,
                sink: Some(std::sync::Arc::new(StoredSink(stored.clone()))),
                ..TargetOptions::default()
            })
            .await?,
        );
    }
    let ports = crate::topology::free_ports(&ips, seed ^ u64::from(std::process::id()))?;
    let cluster = Cluster::create(&out, &ips, ports, targets[0].addr(), &bin_dir, base_env)?;
    let epoch = Instant::now();
    let mut h = Harness {
        cluster,
        firewall,
        shaper,
        disks,
        out_of_voters: None,
        targets,
        dups: vec![DupCounter::default(); 3],
        epoch,
        last_scrape: epoch,
        problems: Vec::new(),
        may_exit: None,
        stopping_after_full: None,
        special: None,
        current: "start".into(),
    };
    for id in 1..=3 {
        h.cluster.start(id, &[])?;
    }
    h.wait_leader(Duration::from_secs(60))
        .await
        .context("the cluster elected no leader at start")?;
    // From now on no node may found a cluster, even on an emptied store.
    h.cluster.clear_bootstrap()?;
    println!("nemesis: cluster up, files in {}", out.display());

    let sent = Jsonl::create(&out.join("sent.jsonl"))?;
    let stop = CancellationToken::new();
    let mut senders = Vec::new();
    for node in &h.cluster.nodes {
        for lane in 0..args.senders {
            senders.push(tokio::spawn(crate::load::sender(
                node.smtp(),
                node.id,
                lane,
                seed,
                epoch,
                sent.clone(),
                stop.clone(),
            )));
        }
    }

    let faults = Jsonl::create(&out.join("faults.jsonl"))?;
    for (i, step) in steps.iter().enumerate() {
        h.current = "quiet gap".into();
        h.hold(step.gap).await;
        let start_ms = h.now_ms();
        h.current = step.fault.to_string();
        let (name, mut error) = match h.inject(step.fault).await {
            Ok(name) => (name, None),
            Err(e) => (step.fault.to_string(), Some(format!("inject: {e:#}"))),
        };
        println!(
            "nemesis: {:>6.1}s fault {}/{} [{}] {name}",
            start_ms as f64 / 1000.0,
            i + 1,
            steps.len(),
            step.fault.class()
        );
        h.hold(step.hold).await;
        if let Err(e) = h.heal(step.fault).await {
            error = Some(format!("heal: {e:#}"));
        }
        h.may_exit = None;
        faults.write(&FaultSpan {
            class: step.fault.class().to_string(),
            name,
            start_ms,
            end_ms: h.now_ms(),
            error,
        })?;
    }

    h.current = "final heal".into();
    h.heal_all().await?;
    if h.wait_leader(Duration::from_secs(60)).await.is_err() {
        h.problems
            .push("no leader within 60 s after the final heal".into());
    }
    h.hold(LOAD_AFTER_HEAL).await;
    stop.cancel();
    for s in senders {
        let _ = s.await;
    }
    println!(
        "nemesis: load stopped at {:.1}s; waiting for the queue to drain",
        h.now_ms() as f64 / 1000.0
    );
    h.current = "settling".into();
    let after = h.settle().await;
    std::fs::write(
        out.join("after_heal.json"),
        serde_json::to_string_pretty(&after)?,
    )?;
    for id in 1..=3 {
        h.cluster.stop(id, Duration::from_secs(15));
    }
    let mut after = after;
    after.counted_ids = flagged_duplicates(&h.cluster);
    std::fs::write(
        out.join("after_heal.json"),
        serde_json::to_string_pretty(&after)?,
    )?;
    drop(h.firewall.take());
    drop(h.shaper.take());
    drop(h.disks.take());
    for t in h.targets.drain(..) {
        t.shutdown().await;
    }

    let report = nemesis_check::Report::from_dir(&out)?;
    let sent: Vec<nemesis_check::records::Sent> =
        nemesis_check::records::read_lines(&out.join("sent.jsonl"))?;
    let results = out.join("results.md");
    std::fs::write(&results, report.results_markdown(&sent))?;
    for p in &report.after_heal {
        println!("nemesis: after heal: {p}");
    }
    if !report.uncounted.is_empty() {
        println!(
            "nemesis: duplicated but never flagged by the relay: {} (see results.md)",
            report.uncounted.len()
        );
    }
    println!("nemesis: results in {}", results.display());
    println!("{}", report.summary_line());
    Ok(if report.passed() {
        0
    } else if report.hard_failure() {
        1
    } else {
        3
    })
}

/// Voter ids from `relayctl --json member list`.
fn voters_of(json: &str) -> anyhow::Result<Vec<u64>> {
    let v: serde_json::Value = serde_json::from_str(json).context("member list --json")?;
    let members = v
        .get("members")
        .and_then(|m| m.as_array())
        .context("member list --json has no members array")?;
    Ok(members
        .iter()
        .filter(|m| m.get("voter").and_then(|x| x.as_bool()) == Some(true))
        .filter_map(|m| m.get("id").and_then(|x| x.as_u64()))
        .collect())
}

/// Queue ids the relay flagged as (possibly) delivered twice: the `id` of
/// every log line its nodes wrote with `duplicate=true` (the relay's trace
/// of each count of `relay_duplicate_deliveries_total`).
fn flagged_duplicates(cluster: &Cluster) -> Vec<String> {
    let mut ids = std::collections::BTreeSet::new();
    for node in &cluster.nodes {
        let Ok(text) = std::fs::read_to_string(&node.log) else {
            continue;
        };
        for line in text.lines().filter(|l| l.contains("duplicate=true")) {
            if let Some((_, rest)) = line.split_once("{id=") {
                let id: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .collect();
                ids.insert(id);
            }
        }
    }
    ids.into_iter().collect()
}

impl Harness {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn ip(&self, id: u64) -> IpAddr {
        self.cluster.node(id).ip
    }

    /// Waits `d` while watching the nodes (duplicate counters every
    /// second, processes that ended by themselves).
    async fn hold(&mut self, d: Duration) {
        let until = Instant::now() + d;
        loop {
            self.watch().await;
            let now = Instant::now();
            if now >= until {
                return;
            }
            tokio::time::sleep((until - now).min(Duration::from_millis(250))).await;
        }
    }

    async fn watch(&mut self) {
        for id in 1..=3u64 {
            if let Some(status) = self.cluster.reap(id) {
                self.dups[id as usize - 1].process_ended();
                let late_stop = self
                    .stopping_after_full
                    .is_some_and(|(n, until)| n == id && Instant::now() < until);
                if self.may_exit == Some(id) || late_stop {
                    println!(
                        "nemesis: node {id} stopped by itself ({status}) at {:.1}s during: {} (allowed)",
                        self.now_ms() as f64 / 1000.0,
                        self.current
                    );
                }
                if late_stop {
                    if let Err(e) = self.cluster.start(id, &[]) {
                        self.problems
                            .push(format!("node {id}: start after its disk was full: {e:#}"));
                    }
                } else if self.may_exit != Some(id) {
                    let text = format!(
                        "node {id} exited by itself ({status}) at {:.1}s during: {}",
                        self.now_ms() as f64 / 1000.0,
                        self.current
                    );
                    println!("nemesis: {text}");
                    self.problems.push(text);
                }
            }
        }
        if self.last_scrape.elapsed() >= Duration::from_secs(1) {
            self.last_scrape = Instant::now();
            for id in 1..=3u64 {
                self.scrape(id).await;
            }
        }
    }

    async fn scrape(&mut self, id: u64) {
        if !self.cluster.node(id).serving() {
            return;
        }
        if let Ok(n) = observe::duplicates(self.cluster.node(id).http()).await {
            self.dups[id as usize - 1].observe(n);
        }
    }

    /// Reads the counter, then kills the process and banks the count.
    async fn kill(&mut self, id: u64) {
        self.scrape(id).await;
        self.cluster.kill(id);
        self.dups[id as usize - 1].process_ended();
    }

    async fn graceful_stop(&mut self, id: u64) {
        self.scrape(id).await;
        self.cluster.stop(id, Duration::from_secs(15));
        self.dups[id as usize - 1].process_ended();
    }

    /// The leader as the serving nodes report it.
    async fn leader(&self) -> Option<u64> {
        for node in self.cluster.nodes.iter().filter(|n| n.serving()) {
            if let Ok(s) = observe::status(node.raft(), false).await
                && let Some(l) = s.leader
                && self.cluster.node(l).serving()
                && observe::status(self.cluster.node(l).raft(), false)
                    .await
                    .is_ok_and(|own| own.role == "leader")
            {
                return Some(l);
            }
        }
        None
    }

    async fn wait_leader(&mut self, within: Duration) -> anyhow::Result<u64> {
        let until = Instant::now() + within;
        loop {
            if let Some(l) = self.leader().await {
                return Ok(l);
            }
            if Instant::now() >= until {
                bail!("no leader within {within:?}");
            }
            self.hold(Duration::from_millis(200)).await;
        }
    }

    async fn resolve(&self, who: Who) -> u64 {
        let leader = self.leader().await;
        match who {
            Who::Node(n) => n,
            Who::Leader => leader.unwrap_or(1),
            Who::Follower => (1..=3).find(|n| Some(*n) != leader).unwrap_or(1),
        }
    }

    fn others(id: u64) -> (u64, u64) {
        let mut o = (1..=3).filter(|n| *n != id);
        (o.next().unwrap_or(1), o.next().unwrap_or(2))
    }

    fn set_target(&self, b: Behaviour) {
        for t in &self.targets {
            t.set_behaviour(b.clone());
        }
    }

    fn relayctl_any(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut last = String::from("no node serving");
        for node in self.cluster.nodes.iter().filter(|n| n.serving()) {
            let out = self.cluster.relayctl(node.id, args)?;
            if out.status.success() {
                return Ok(String::from_utf8_lossy(&out.stdout).trim().to_string());
            }
            last = format!(
                "node {}: exit {}: {}",
                node.id,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        bail!("relayctl {}: {last}", args.join(" "))
    }

    fn firewall(&self) -> anyhow::Result<&Firewall> {
        self.firewall
            .as_ref()
            .context("no firewall (network class not selected)")
    }

    fn faketime_env(env: &str) -> Vec<(String, String)> {
        vec![
            ("LD_PRELOAD".into(), FAKETIME_LIB.into()),
            ("FAKETIME".into(), env.into()),
            ("FAKETIME_NO_CACHE".into(), "1".into()),
        ]
    }

    /// Injects `fault`; returns its name with roles resolved.
    async fn inject(&mut self, fault: Fault) -> anyhow::Result<String> {
        let name = |w: Who, n: u64| {
            fault
                .to_string()
                .replace(&w.to_string(), &format!("node {n}"))
        };
        match fault {
            Fault::Kill(w) => {
                let n = self.resolve(w).await;
                self.kill(n).await;
                Ok(name(w, n))
            }
            Fault::Pause(w) => {
                let n = self.resolve(w).await;
                self.scrape(n).await;
                self.cluster.pause(n);
                Ok(name(w, n))
            }
            Fault::Restart(w) => {
                let n = self.resolve(w).await;
                self.graceful_stop(n).await;
                self.cluster.start(n, &[])?;
                Ok(name(w, n))
            }
            Fault::PowerLossAll => {
                for n in 1..=3 {
                    self.scrape(n).await;
                }
                // Back to back, so no node syncs after another died.
                for n in 1..=3 {
                    self.cluster.kill(n);
                }
                for n in 1..=3 {
                    self.dups[n as usize - 1].process_ended();
                }
                Ok(fault.to_string())
            }
            Fault::Failover(to) => {
                let to_arg = to.map(|n| n.to_string());
                let mut args = vec!["failover"];
                if let Some(t) = &to_arg {
                    args.extend(["--to", t]);
                }
                self.relayctl_any(&args)?;
                Ok(fault.to_string())
            }
            Fault::SnapshotNow(n) => {
                let out = self.cluster.relayctl(n, &["snapshot"])?;
                if !out.status.success() && self.cluster.node(n).serving() {
                    bail!(
                        "relayctl snapshot: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    );
                }
                Ok(fault.to_string())
            }
            Fault::RouteChange => {
                let target = self.targets[1].target();
                self.relayctl_any(&["route", "set", DOMAIN, &target, "--tls", "none"])?;
                Ok(fault.to_string())
            }
            Fault::Target(t) => {
                self.set_target(match t {
                    TargetFault::SlowFinalDot(ms) => {
                        Behaviour::DelayDataReply(Duration::from_millis(ms))
                    }
                    TargetFault::Down => Behaviour::DropConnection,
                    TargetFault::Defer4xx => Behaviour::RejectData(Reply::temporary()),
                    TargetFault::DropMidData => Behaviour::DropDuringData,
                    TargetFault::DropAfterStore => Behaviour::DropAfterData,
                });
                Ok(fault.to_string())
            }
            Fault::Isolate(w) => {
                let n = self.resolve(w).await;
                let (a, b) = Self::others(n);
                let fw = self.firewall()?;
                fw.cut_both(self.ip(n), self.ip(a))?;
                fw.cut_both(self.ip(n), self.ip(b))?;
                Ok(name(w, n))
            }
            Fault::Bridge(w) => {
                let n = self.resolve(w).await;
                let (a, b) = Self::others(n);
                self.firewall()?.cut_both(self.ip(a), self.ip(b))?;
                Ok(name(w, n))
            }
            Fault::OneWay(a, b) => {
                self.firewall()?.cut(self.ip(a), self.ip(b))?;
                Ok(fault.to_string())
            }
            Fault::Links(w, quality) => {
                let n = self.resolve(w).await;
                let (a, b) = Self::others(n);
                let (ip, peers) = (self.ip(n), [self.ip(a), self.ip(b)]);
                self.shaper
                    .as_mut()
                    .context("no shaper (network class not selected)")?
                    .apply(quality, ip, &peers)?;
                Ok(name(w, n))
            }
            Fault::DiskFull(w) => {
                let n = self.resolve(w).await;
                // Full disks may make a node stop by itself; the heal
                // starts it again, and the checker judges the mail.
                self.may_exit = Some(n);
                let bytes = self
                    .disks
                    .as_ref()
                    .context("no small disks (disk class not selected)")?
                    .fill(n)?;
                Ok(format!("{} ({} MiB ballast)", name(w, n), bytes >> 20))
            }
            Fault::ReplaceFollower => {
                let n = self.voting_follower().await?;
                // 1. remove it (against a live node: its mail moves on).
                self.relayctl_any(&["member", "remove", &n.to_string()])?;
                self.out_of_voters = Some((n, true));
                // 2. stop it and empty its data dir, 3. start it empty.
                self.graceful_stop(n).await;
                self.cluster.wipe_data(n)?;
                self.cluster.start(n, &[])?;
                Ok(format!("member remove node {n}, wipe, start empty"))
            }
            Fault::DemoteFollower => {
                let n = self.voting_follower().await?;
                self.relayctl_any(&["member", "demote", &n.to_string()])?;
                self.out_of_voters = Some((n, false));
                Ok(format!("member demote node {n}"))
            }
            Fault::FsyncEio(w, after) => {
                let n = self.resolve(w).await;
                self.kill(n).await;
                self.may_exit = Some(n);
                self.special = Some(n);
                self.cluster.start(
                    n,
                    &[(
                        "QR_FAILPOINT_FAIL_FSYNC_AFTER".to_string(),
                        after.to_string(),
                    )],
                )?;
                Ok(name(w, n))
            }
            Fault::ClockStep(w, secs) => {
                let n = self.resolve(w).await;
                self.kill(n).await;
                let mut env = Self::faketime_env(&format!("{secs:+}s"));
                // A step moves the wall clock only; the monotonic clock
                // (timers, leases) runs on.
                env.push(("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()));
                self.special = Some(n);
                self.cluster.start(n, &env)?;
                Ok(name(w, n))
            }
            Fault::ClockRate(w, per_mille) => {
                let n = self.resolve(w).await;
                self.kill(n).await;
                let rate = per_mille as f64 / 1000.0;
                self.special = Some(n);
                self.cluster
                    .start(n, &Self::faketime_env(&format!("+0 x{rate}")))?;
                Ok(name(w, n))
            }
        }
    }

    /// Undoes `fault` (a no-op for instantaneous ones).
    async fn heal(&mut self, fault: Fault) -> anyhow::Result<()> {
        match fault {
            Fault::Kill(_) | Fault::PowerLossAll => {
                for n in 1..=3 {
                    if !self.cluster.node(n).running() {
                        self.cluster.start(n, &[])?;
                    }
                }
            }
            Fault::Pause(_) => {
                for n in 1..=3 {
                    self.cluster.resume(n);
                }
            }
            Fault::Restart(_) | Fault::Failover(_) | Fault::SnapshotNow(_) => {}
            Fault::RouteChange => {
                let target = self.targets[0].target();
                self.relayctl_any(&["route", "set", DOMAIN, &target, "--tls", "none"])?;
            }
            Fault::Target(_) => self.set_target(Behaviour::AcceptAll),
            Fault::Isolate(_) | Fault::Bridge(_) | Fault::OneWay(..) => self.firewall()?.heal()?,
            Fault::Links(..) => {
                if let Some(s) = self.shaper.as_mut() {
                    let seen = s.counters();
                    s.heal()?;
                    println!("nemesis: link fault healed: {seen}");
                }
            }
            Fault::DiskFull(_) => {
                if let Some(d) = &self.disks {
                    d.heal()?;
                }
                if let Some(n) = self.may_exit {
                    self.stopping_after_full = Some((n, Instant::now() + STOP_AFTER_DISK_HEAL));
                }
                for n in 1..=3 {
                    if !self.cluster.node(n).running() {
                        self.cluster.start(n, &[])?;
                    }
                }
            }
            Fault::ReplaceFollower | Fault::DemoteFollower => self.back_to_voters().await?,
            Fault::FsyncEio(..) | Fault::ClockStep(..) | Fault::ClockRate(..) => {
                self.restart_special().await?;
            }
        }
        Ok(())
    }

    /// Restarts the node that runs with a failpoint or a fake clock on its
    /// plain settings, and starts any node that stopped.
    async fn restart_special(&mut self) -> anyhow::Result<()> {
        if let Some(n) = self.special.take()
            && self.cluster.node(n).running()
        {
            self.kill(n).await;
        }
        for n in 1..=3 {
            if !self.cluster.node(n).running() {
                self.cluster.start(n, &[])?;
            }
        }
        Ok(())
    }

    /// Heals everything at once, whatever ran last.
    async fn heal_all(&mut self) -> anyhow::Result<()> {
        if let Some(fw) = &self.firewall {
            fw.heal()?;
        }
        if let Some(s) = self.shaper.as_mut() {
            s.heal()?;
        }
        if let Some(d) = &self.disks {
            d.heal()?;
        }
        self.set_target(Behaviour::AcceptAll);
        for n in 1..=3 {
            self.cluster.resume(n);
        }
        self.restart_special().await?;
        let target = self.targets[0].target();
        if let Err(e) = self.relayctl_any(&["route", "set", DOMAIN, &target, "--tls", "none"]) {
            // Retried once a leader is back (the route must point home).
            tokio::time::sleep(Duration::from_secs(2)).await;
            self.wait_leader(Duration::from_secs(60)).await.ok();
            self.relayctl_any(&["route", "set", DOMAIN, &target, "--tls", "none"])
                .map_err(|e2| anyhow::anyhow!("{e:#}; again: {e2:#}"))?;
        }
        if self.out_of_voters.is_some() {
            self.wait_leader(Duration::from_secs(60)).await.ok();
            self.back_to_voters().await?;
        }
        Ok(())
    }

    /// A follower that votes (lowest id), as the leader reports it.
    async fn voting_follower(&mut self) -> anyhow::Result<u64> {
        let leader = self.wait_leader(Duration::from_secs(30)).await?;
        let voters = self.voters(leader).await?;
        voters
            .into_iter()
            .find(|v| *v != leader)
            .context("no voting follower")
    }

    /// The voters in the membership the leader reports (`member list`).
    async fn voters(&self, leader: u64) -> anyhow::Result<Vec<u64>> {
        let out = self
            .cluster
            .relayctl(leader, &["--json", "member", "list"])?;
        if !out.status.success() {
            bail!(
                "relayctl member list: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        voters_of(&String::from_utf8_lossy(&out.stdout))
    }

    /// Brings the node taken out of the voters back: for a removed one,
    /// `member add` (a learner that receives a snapshot and the log); then
    /// waits until it has applied what the leader had applied when it was
    /// added, and `member promote`.
    async fn back_to_voters(&mut self) -> anyhow::Result<()> {
        let Some((n, removed)) = self.out_of_voters else {
            return Ok(());
        };
        if !self.cluster.node(n).running() {
            self.cluster.start(n, &[])?;
        }
        let leader = self.wait_leader(Duration::from_secs(60)).await?;
        if removed {
            let raft = self.cluster.node(n).raft().to_string();
            self.relayctl_any(&["member", "add", &n.to_string(), &raft])?;
        }
        let goal = observe::status(self.cluster.node(leader).raft(), false)
            .await
            .map_or(0, |s| s.applied_index);
        let until = Instant::now() + CATCH_UP_WITHIN;
        loop {
            let applied = observe::status(self.cluster.node(n).raft(), false)
                .await
                .map_or(0, |s| s.applied_index);
            if applied >= goal {
                break;
            }
            if Instant::now() >= until {
                bail!("node {n} applied {applied} of {goal} within {CATCH_UP_WITHIN:?}");
            }
            self.hold(Duration::from_millis(250)).await;
        }
        self.relayctl_any(&["member", "promote", &n.to_string()])?;
        self.out_of_voters = None;
        Ok(())
    }

    /// Waits for the queue to drain and the logs to be purged, then
    /// observes every node.
    async fn settle(&mut self) -> AfterHeal {
        let mut after = AfterHeal::default();
        let until = Instant::now() + DRAIN_WITHIN;
        let mut last_flush = Instant::now() - Duration::from_secs(60);
        let mut seen = Vec::new();
        loop {
            self.watch().await;
            for n in 1..=3 {
                if !self.cluster.node(n).running() {
                    let _ = self.cluster.start(n, &[]);
                }
            }
            if last_flush.elapsed() >= Duration::from_secs(10) {
                last_flush = Instant::now();
                // Deferred mail waits for its backoff; retry it now.
                let _ = self.relayctl_any(&["queue", "flush", "--all", "--yes"]);
            }
            seen.clear();
            for node in &self.cluster.nodes {
                if let Ok(s) = observe::status(node.raft(), true).await {
                    seen.push(s);
                }
            }
            let done = seen.len() == 3
                && seen.iter().all(|s| {
                    let q = s.queue.unwrap_or_default();
                    q.queued + q.deferred + q.held == 0 && s.stored_bodies == 0
                })
                && seen.windows(2).all(|w| {
                    w[0].digest_index == w[1].digest_index
                        && w[0].state_checksum == w[1].state_checksum
                });
            if done {
                after.drained = true;
                after.drained_index = seen.iter().map(|s| s.digest_index).max().unwrap_or(0);
                break;
            }
            if Instant::now() >= until {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        println!(
            "nemesis: drained={} at index {} ({:.1}s)",
            after.drained,
            after.drained_index,
            self.now_ms() as f64 / 1000.0
        );
        if after.drained {
            let until =
                Instant::now() + PURGE_WITHIN.max(Duration::from_secs(PURGE_INTERVAL_SECS * 5));
            loop {
                let mut purged = Vec::new();
                for node in &self.cluster.nodes {
                    purged.push(
                        observe::status(node.raft(), false)
                            .await
                            .map_or(0, |s| s.purged_index),
                    );
                }
                if purged.iter().all(|p| *p >= after.drained_index) || Instant::now() >= until {
                    break;
                }
                self.hold(Duration::from_millis(500)).await;
            }
        }
        // The final observation: equal state needs equal indexes, and
        // entries (prunes, probes) may still be committing; a few tries.
        for _ in 0..20 {
            seen.clear();
            for node in &self.cluster.nodes {
                if let Ok(s) = observe::status(node.raft(), true).await {
                    seen.push(s);
                }
            }
            if seen.len() == 3
                && seen
                    .windows(2)
                    .all(|w| w[0].digest_index == w[1].digest_index)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        after.nodes = seen
            .iter()
            .map(|s| {
                let q = s.queue.unwrap_or_default();
                NodeEnd {
                    id: s.id,
                    queued: q.queued,
                    deferred: q.deferred,
                    held: q.held,
                    stored_bodies: s.stored_bodies,
                    digest_index: s.digest_index,
                    state_checksum: s.state_checksum.clone(),
                    purged_index: s.purged_index,
                }
            })
            .collect();
        if seen.len() < 3 {
            after.problems.push(format!(
                "only {} node(s) answered after the heal",
                seen.len()
            ));
        }
        for n in 1..=3 {
            self.scrape(n).await;
        }
        after.counted_duplicates = self.dups.iter().map(DupCounter::total).sum();
        after.problems.extend(self.problems.iter().cloned());
        after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voters_are_read_from_member_list_json_and_learners_left_out() {
        let json = r#"{"leader":1,"members":[
            {"id":1,"addr":"a","voter":true,"role":"leader","reachable":true},
            {"id":2,"addr":"b","voter":false,"role":"learner","reachable":true},
            {"id":3,"addr":"c","voter":true,"role":"follower","reachable":false}]}"#;
        assert_eq!(voters_of(json).unwrap(), vec![1, 3]);
        assert!(voters_of(r#"{"leader":1}"#).is_err());
    }
}
