//! Link-quality faults between node addresses: a traffic-control class on
//! `lo` that only packets between two node addresses enter, and iptables
//! rules that drop or mark a random share of them.
//!
//! Why not `tc netem`: the kernel of these machines has no `sch_netem` (nor
//! `prio`, `tbf` or the `flower`/`fw` classifiers); it has `htb`, `pfifo`,
//! the `u32` classifier and iptables `statistic`. What they give:
//!
//! - **slow**: an `htb` root on `lo` with no default class, so every
//!   packet no filter matches goes out through htb's direct queue, unshaped
//!   (other processes on the machine are not slowed), and one class capped
//!   at a rate, with a short `pfifo`, that `u32` filters send the node
//!   pairs' packets to (matched by source and destination address);
//! - **loss**: an iptables `statistic --mode random` DROP in this run's
//!   filter chain, per node pair;
//! - **reorder**: an iptables `statistic` MARK in this run's mangle chain,
//!   per node pair, and a `u32` filter that sends marked packets only to
//!   the capped class: they arrive after packets sent later.
//!
//! One fault at a time: [`Shaper::apply`] installs, [`Shaper::heal`]
//! removes the qdisc (only one this run added) and flushes the chains.
//! [`Drop`] removes both chains and the qdisc, so a run that ends, panics
//! or is interrupted (the binary turns ctrl-c into an orderly drop) leaves
//! nothing behind.

use std::net::IpAddr;
use std::process::Command;

use anyhow::{Context, bail};

use crate::schedule::{LinkQuality, REORDER_KBIT};

/// The packet mark of held-back packets (`Reorder`).
const MARK: &str = "0x5a17";

/// One command: program and arguments.
pub type Cmd = Vec<String>;

fn cmd(program: &str, args: &[&str]) -> Cmd {
    std::iter::once(program)
        .chain(args.iter().copied())
        .map(String::from)
        .collect()
}

fn iptables(args: &[&str]) -> Cmd {
    let mut c = cmd("iptables", &["-w", "5"]);
    c.extend(args.iter().map(|a| a.to_string()));
    c
}

/// The commands that degrade every link between `node` and `peers`, both
/// directions, with the run's chains `filter_chain` (filter table) and
/// `mangle_chain` (mangle table) already in place.
pub fn plan(
    quality: LinkQuality,
    node: IpAddr,
    peers: &[IpAddr],
    filter_chain: &str,
    mangle_chain: &str,
) -> Vec<Cmd> {
    let mut pairs = Vec::new();
    for p in peers {
        pairs.push((node.to_string(), p.to_string()));
        pairs.push((p.to_string(), node.to_string()));
    }
    let mut out = Vec::new();
    let capped = |out: &mut Vec<Cmd>, kbit: u64| {
        let rate = format!("{kbit}kbit");
        out.push(cmd(
            "tc",
            &["qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb"],
        ));
        out.push(cmd(
            "tc",
            &[
                "class", "add", "dev", "lo", "parent", "1:", "classid", "1:2", "htb", "rate",
                &rate, "ceil", &rate,
            ],
        ));
        out.push(cmd(
            "tc",
            &[
                "qdisc", "add", "dev", "lo", "parent", "1:2", "handle", "20:", "pfifo", "limit",
                "100",
            ],
        ));
    };
    match quality {
        LinkQuality::Slow(kbit) => {
            capped(&mut out, kbit);
            for (s, d) in &pairs {
                out.push(cmd(
                    "tc",
                    &[
                        "filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "prio",
                        "1", "u32", "match", "ip", "src", s, "match", "ip", "dst", d, "flowid",
                        "1:2",
                    ],
                ));
            }
        }
        LinkQuality::Loss(pct) => {
            let p = format!("{:.2}", pct as f64 / 100.0);
            for (s, d) in &pairs {
                out.push(iptables(&[
                    "-A",
                    filter_chain,
                    "-s",
                    s,
                    "-d",
                    d,
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    &p,
                    "-j",
                    "DROP",
                ]));
            }
        }
        LinkQuality::Reorder(pct) => {
            capped(&mut out, REORDER_KBIT);
            let p = format!("{:.2}", pct as f64 / 100.0);
            for (s, d) in &pairs {
                out.push(iptables(&[
                    "-t",
                    "mangle",
                    "-A",
                    mangle_chain,
                    "-s",
                    s,
                    "-d",
                    d,
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    &p,
                    "-j",
                    "MARK",
                    "--set-mark",
                    MARK,
                ]));
            }
            out.push(cmd(
                "tc",
                &[
                    "filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "prio", "1",
                    "u32", "match", "mark", MARK, "0xffff", "flowid", "1:2",
                ],
            ));
        }
    }
    out
}

fn run(c: &Cmd) -> anyhow::Result<()> {
    let out = Command::new(&c[0])
        .args(&c[1..])
        .output()
        .with_context(|| format!("run {}", c[0]))?;
    if !out.status.success() {
        bail!(
            "{}: {}",
            c.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// This run's link-quality machinery: two iptables chains (installed for
/// the whole run) and, while a fault holds, the qdisc on `lo`.
#[derive(Debug)]
pub struct Shaper {
    filter_chain: String,
    mangle_chain: String,
    chains: bool,
    qdisc: bool,
}

impl Shaper {
    /// Creates the (empty) chains and the jumps to them: filter `INPUT` and
    /// mangle `OUTPUT`, for packets on `lo` only.
    pub fn install() -> anyhow::Result<Shaper> {
        let pid = std::process::id();
        let mut s = Shaper {
            filter_chain: format!("QRNEMQ{pid}"),
            mangle_chain: format!("QRNEMM{pid}"),
            chains: false,
            qdisc: false,
        };
        run(&iptables(&["-N", &s.filter_chain]))?;
        run(&iptables(&["-t", "mangle", "-N", &s.mangle_chain]))?;
        s.chains = true;
        run(&iptables(&[
            "-I",
            "INPUT",
            "1",
            "-i",
            "lo",
            "-j",
            &s.filter_chain,
        ]))?;
        run(&iptables(&[
            "-t",
            "mangle",
            "-I",
            "OUTPUT",
            "1",
            "-o",
            "lo",
            "-j",
            &s.mangle_chain,
        ]))?;
        Ok(s)
    }

    /// Degrades the links between `node` and `peers`. Refuses when `lo`
    /// already has a root qdisc someone else added (it is never replaced).
    pub fn apply(
        &mut self,
        quality: LinkQuality,
        node: IpAddr,
        peers: &[IpAddr],
    ) -> anyhow::Result<()> {
        let cmds = plan(quality, node, peers, &self.filter_chain, &self.mangle_chain);
        for c in &cmds {
            let first_qdisc = c[0] == "tc" && c[1] == "qdisc" && c.contains(&"root".to_string());
            run(c).with_context(|| {
                if first_qdisc {
                    "lo has a root qdisc already (another run?); it is left alone".to_string()
                } else {
                    "apply a link-quality fault".to_string()
                }
            })?;
            if first_qdisc {
                self.qdisc = true;
            }
        }
        Ok(())
    }

    /// What the fault did so far, from the kernel's counters: packets
    /// through the capped class and dropped there, packets matched by the
    /// drop and mark rules. Proof that the fault fired.
    pub fn counters(&self) -> String {
        let text = |c: &Cmd| {
            Command::new(&c[0])
                .args(&c[1..])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        let rule_packets = |listing: &str| -> u64 {
            listing
                .lines()
                .filter(|l| l.contains("DROP") || l.contains("MARK"))
                .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
                .sum()
        };
        let mut out = Vec::new();
        if self.qdisc {
            let class = text(&cmd(
                "tc",
                &["-s", "class", "show", "dev", "lo", "classid", "1:2"],
            ));
            if let Some(line) = class.lines().find(|l| l.trim_start().starts_with("Sent")) {
                out.push(format!("capped class: {}", line.trim()));
            }
        }
        let drops = rule_packets(&text(&iptables(&[
            "-L",
            &self.filter_chain,
            "-v",
            "-n",
            "-x",
        ])));
        let marks = rule_packets(&text(&iptables(&[
            "-t",
            "mangle",
            "-L",
            &self.mangle_chain,
            "-v",
            "-n",
            "-x",
        ])));
        out.push(format!(
            "{drops} packets dropped at random, {marks} marked to be held back"
        ));
        out.join("; ")
    }

    /// Removes the qdisc (if this run added it) and every rule.
    pub fn heal(&mut self) -> anyhow::Result<()> {
        let mut first_error = None;
        if self.qdisc {
            match run(&cmd(
                "tc",
                &["qdisc", "del", "dev", "lo", "root", "handle", "1:", "htb"],
            )) {
                Ok(()) => self.qdisc = false,
                Err(e) => first_error = Some(e),
            }
        }
        if self.chains {
            for c in [
                iptables(&["-F", &self.filter_chain]),
                iptables(&["-t", "mangle", "-F", &self.mangle_chain]),
            ] {
                if let Err(e) = run(&c) {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Shaper {
    fn drop(&mut self) {
        let _ = self.heal();
        // Jumps and chains, whichever of them exist.
        let _ = run(&iptables(&[
            "-D",
            "INPUT",
            "-i",
            "lo",
            "-j",
            &self.filter_chain,
        ]));
        let _ = run(&iptables(&[
            "-t",
            "mangle",
            "-D",
            "OUTPUT",
            "-o",
            "lo",
            "-j",
            &self.mangle_chain,
        ]));
        let _ = run(&iptables(&["-X", &self.filter_chain]));
        let _ = run(&iptables(&["-t", "mangle", "-X", &self.mangle_chain]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn peers() -> Vec<IpAddr> {
        vec![ip("127.77.0.1"), ip("127.77.0.3")]
    }

    #[test]
    fn a_slow_link_filters_only_the_node_pairs_into_the_capped_class() {
        let p = plan(LinkQuality::Slow(256), ip("127.77.0.2"), &peers(), "F", "M");
        let text: Vec<String> = p.iter().map(|c| c.join(" ")).collect();
        assert_eq!(text[0], "tc qdisc add dev lo root handle 1: htb");
        // No `default`: unmatched traffic leaves unshaped.
        assert!(!text[0].contains("default"));
        assert!(text[1].contains("rate 256kbit ceil 256kbit"));
        let filters: Vec<&String> = text.iter().filter(|t| t.contains(" filter ")).collect();
        assert_eq!(filters.len(), 4, "two peers, both directions: {text:#?}");
        for f in &filters {
            assert!(f.contains("match ip src 127.77.0.") && f.contains("match ip dst 127.77.0."));
            assert!(f.ends_with("flowid 1:2"));
        }
        assert!(
            text.iter()
                .any(|t| t.contains("src 127.77.0.3 match ip dst 127.77.0.2"))
        );
        assert!(
            text.iter()
                .any(|t| t.contains("src 127.77.0.2 match ip dst 127.77.0.3"))
        );
        assert!(!text.iter().any(|t| t.starts_with("iptables")));
    }

    #[test]
    fn loss_is_a_random_drop_per_pair_in_the_runs_chain_and_adds_no_qdisc() {
        let p = plan(LinkQuality::Loss(25), ip("127.77.0.2"), &peers(), "F", "M");
        assert_eq!(p.len(), 4);
        for c in &p {
            let t = c.join(" ");
            assert!(t.starts_with("iptables -w 5 -A F -s 127.77.0."), "{t}");
            assert!(t.ends_with("--probability 0.25 -j DROP"), "{t}");
        }
    }

    #[test]
    fn reorder_marks_a_share_of_pair_packets_and_only_marked_packets_are_held() {
        let p = plan(
            LinkQuality::Reorder(30),
            ip("127.77.0.1"),
            &peers()[1..],
            "F",
            "M",
        );
        let text: Vec<String> = p.iter().map(|c| c.join(" ")).collect();
        let marks: Vec<&String> = text.iter().filter(|t| t.contains("MARK")).collect();
        assert_eq!(marks.len(), 2);
        for m in marks {
            assert!(
                m.starts_with("iptables -w 5 -t mangle -A M -s 127.77.0."),
                "{m}"
            );
            assert!(m.contains("--probability 0.30"), "{m}");
        }
        let filters: Vec<&String> = text.iter().filter(|t| t.contains(" filter ")).collect();
        assert_eq!(filters.len(), 1);
        assert!(filters[0].contains(&format!("match mark {MARK} 0xffff flowid 1:2")));
        assert!(text[1].contains(&format!("rate {REORDER_KBIT}kbit")));
    }
}
