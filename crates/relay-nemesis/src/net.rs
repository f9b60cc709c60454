//! Link faults between node addresses with iptables on `lo`.
//!
//! Every rule lives in one chain of this run (`QRNEM<pid>`), jumped to from
//! `INPUT` for packets arriving on `lo`. Only packets whose source and
//! destination are both node addresses are dropped, so other processes on
//! the machine (and the senders, the target and the harness, which use
//! other addresses) are never touched. Dropping in `INPUT` makes a packet
//! vanish silently (a cut cable), where dropping in `OUTPUT` would hand the
//! sender an immediate error. [`Firewall::drop`] removes the chain.

use std::net::IpAddr;
use std::process::Command;

use anyhow::{Context, bail};

/// This run's iptables chain.
#[derive(Debug)]
pub struct Firewall {
    chain: String,
    installed: bool,
}

fn iptables(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("iptables")
        .args(["-w", "5"])
        .args(args)
        .output()
        .context("run iptables")?;
    if !out.status.success() {
        bail!(
            "iptables {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Firewall {
    /// Creates the (empty) chain and the jump to it.
    pub fn install() -> anyhow::Result<Firewall> {
        let chain = format!("QRNEM{}", std::process::id());
        iptables(&["-N", &chain])?;
        let mut fw = Firewall {
            chain,
            installed: true,
        };
        if let Err(e) = iptables(&["-I", "INPUT", "1", "-i", "lo", "-j", &fw.chain]) {
            let _ = iptables(&["-X", &fw.chain]);
            fw.installed = false;
            return Err(e);
        }
        Ok(fw)
    }

    /// Drops packets from `from` to `to` (one direction).
    pub fn cut(&self, from: IpAddr, to: IpAddr) -> anyhow::Result<()> {
        iptables(&[
            "-A",
            &self.chain,
            "-s",
            &from.to_string(),
            "-d",
            &to.to_string(),
            "-j",
            "DROP",
        ])
    }

    /// Drops packets both ways between `a` and `b`.
    pub fn cut_both(&self, a: IpAddr, b: IpAddr) -> anyhow::Result<()> {
        self.cut(a, b)?;
        self.cut(b, a)
    }

    /// Removes every rule (all links healed).
    pub fn heal(&self) -> anyhow::Result<()> {
        iptables(&["-F", &self.chain])
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        if self.installed {
            let _ = iptables(&["-D", "INPUT", "-i", "lo", "-j", &self.chain]);
            let _ = iptables(&["-F", &self.chain]);
            let _ = iptables(&["-X", &self.chain]);
        }
    }
}
