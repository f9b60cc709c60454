//! `relay-nemesis`: runs three real `relayd` processes under continuous
//! load through a seeded random schedule of faults and heals, heals
//! everything, waits for the tier to settle, and hands the run's files to
//! the independent checker (`nemesis-check`).
//!
//! Owns: the topology (one loopback address per node), the recording
//! target, the load, the schedule and its execution, and the post-heal
//! observation. Must never: judge the run itself (the checker does, from
//! files), read a node's store, or touch processes, firewall rules or
//! addresses it did not create.
//!
//! # Layout
//! - [`schedule`] — the seeded schedule: fault classes, faults, steps.
//! - [`topology`] — node configs and processes.
//! - [`net`] — iptables rules on `lo` between node addresses.
//! - [`shape`] — link quality between node addresses: a rate-capped
//!   traffic class on `lo` and random drops and marks.
//! - [`disk`] — small file systems for the data dirs, and the ballast.
//! - [`load`] — the senders and their ledger.
//! - [`record`] — the run's JSON-lines files and the target's sink.
//! - [`observe`] — `NodeStatus` and `/metrics` of each node.
//! - [`run`] — the run itself: inject, hold, heal, settle, observe.

mod disk;
mod load;
mod net;
mod observe;
mod record;
mod run;
mod schedule;
mod shape;
mod topology;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Runs a nemesis schedule against three local relayd processes.
#[derive(Debug, Parser)]
#[command(name = "relay-nemesis")]
pub struct Args {
    /// Seed of the schedule (default: from the clock; printed either way).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Length of the fault phase in minutes (fractions allowed).
    #[arg(long, default_value_t = 2.0)]
    pub minutes: f64,
    /// Fault classes, comma-separated (process, power, operator, target,
    /// network, disk, clock, membership). Default: all but clock and
    /// membership.
    #[arg(long, value_delimiter = ',')]
    pub classes: Vec<String>,
    /// Where the run's files go (default: ./nemesis-runs/seed-<seed>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Directory holding relayd and relayctl (default: this binary's).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// The first three octets of the node addresses: nodes get .1, .2, .3,
    /// the target .100.
    #[arg(long, default_value = "127.77.0")]
    pub net: String,
    /// Senders per node.
    #[arg(long, default_value_t = 2)]
    pub senders: usize,
    /// TEST ONLY: run the nodes with log appends unsynced
    /// (`QR_TEST_SKIP_APPEND_FSYNC=1`), to show the checker reports the
    /// acknowledged mail that loses. The run is expected to fail.
    #[arg(long)]
    pub break_append_fsync: bool,
    /// Print the schedule for the seed and classes, and run nothing.
    #[arg(long)]
    pub dry_run: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("relay-nemesis: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    // On ctrl-c the run is dropped, not killed: its nodes stop and its
    // firewall rules, qdisc and mounts are removed by their `Drop`.
    let outcome = runtime.block_on(async {
        tokio::select! {
            r = run::run(args) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted; everything removed")),
        }
    });
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("relay-nemesis: {e:#}");
            ExitCode::from(2)
        }
    }
}
