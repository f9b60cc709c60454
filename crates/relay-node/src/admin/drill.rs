//! `relayctl drill`: a read-only rehearsal of what a failover relies on.
//!
//! Per node: it answers; its replication is caught up; its state checksum
//! equals the leader's at the same applied index (an application-level check
//! of every replica); its shared settings digest equals the leader's; and it
//! can open an SMTP session (EHLO/QUIT, no mail) to every route target.
//! Changes nothing.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use relay_cluster::{Cluster, ClusterStatus, MemberStatus};
use relay_proto::admin::DrillCheck;
use relay_types::NodeId;
use tokio::time::Instant;

/// How long replicas get to reach the same applied index (the state may be
/// moving: deliveries commit entries).
const CONVERGE_WITHIN: Duration = Duration::from_secs(10);
/// Per-target SMTP probe timeout.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

fn check(check: &str, node: NodeId, ok: bool, detail: impl Into<String>) -> DrillCheck {
    DrillCheck {
        check: check.to_string(),
        node,
        ok,
        detail: detail.into(),
    }
}

/// True when every reachable member reports a digest at the same index as
/// the leader's (then checksums are comparable).
fn converged(status: &ClusterStatus) -> bool {
    let indexes: BTreeSet<u64> = status
        .members
        .iter()
        .filter_map(|m| m.reply.as_ref())
        .map(|r| r.digest_index)
        .collect();
    status.leader.is_some() && indexes.len() <= 1
}

/// Runs every check; one result per check and node.
pub async fn run(cluster: &Arc<Cluster>) -> Vec<DrillCheck> {
    let deadline = Instant::now() + CONVERGE_WITHIN;
    let status = loop {
        let status = cluster.status(true).await;
        if converged(&status) || Instant::now() >= deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut checks = Vec::new();
    let leader_reply = status.leader.and_then(|l| {
        status
            .members
            .iter()
            .find(|m| m.id == l)
            .and_then(|m| m.reply.clone())
    });
    checks.push(match (status.leader, &leader_reply) {
        (Some(l), Some(_)) => check("leader", 0, true, format!("node {l}, term {}", status.term)),
        (Some(l), None) => check(
            "leader",
            0,
            false,
            format!("leader node {l} does not answer"),
        ),
        (None, _) => check("leader", 0, false, "no leader is known"),
    });

    for m in &status.members {
        node_checks(m, leader_reply.as_ref(), &mut checks);
    }

    // SMTP connect tests, from every reachable node to every route target.
    let targets: Vec<String> = match cluster.store().routes() {
        Ok(routes) => routes
            .into_iter()
            .flat_map(|(_, r)| r.targets)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
        Err(e) => {
            checks.push(check(
                "smtp_target",
                0,
                false,
                format!("cannot read routes: {e}"),
            ));
            Vec::new()
        }
    };
    if !targets.is_empty() {
        let probes = futures::future::join_all(status.members.iter().filter(|m| m.reachable).map(
            |m| async {
                (
                    m.id,
                    cluster
                        .probe_from(m.id, &m.addr, targets.clone(), PROBE_TIMEOUT)
                        .await,
                )
            },
        ))
        .await;
        for (node, result) in probes {
            match result {
                Ok(results) => {
                    for r in results {
                        checks.push(check(
                            "smtp_target",
                            node,
                            r.ok,
                            format!("{}: {} ({} ms)", r.target, r.detail, r.millis),
                        ));
                    }
                }
                Err(e) => checks.push(check(
                    "smtp_target",
                    node,
                    false,
                    format!("cannot run the probe: {e}"),
                )),
            }
        }
    }
    checks
}

fn node_checks(
    m: &MemberStatus,
    leader: Option<&relay_proto::raft::NodeStatusReply>,
    checks: &mut Vec<DrillCheck>,
) {
    let Some(reply) = &m.reply else {
        checks.push(check(
            "reachable",
            m.id,
            false,
            format!("node {} at {} does not answer", m.id, m.addr),
        ));
        return;
    };
    checks.push(check(
        "reachable",
        m.id,
        true,
        format!("{} at {}", reply.role, m.addr),
    ));
    let Some(leader) = leader else {
        return;
    };
    checks.push(check(
        "replication",
        m.id,
        m.lag == 0,
        format!("applied {}, lag {}", m.applied, m.lag),
    ));
    let same_index = reply.digest_index == leader.digest_index;
    let same_state = same_index && reply.state_checksum == leader.state_checksum;
    checks.push(check(
        "state_checksum",
        m.id,
        same_state,
        if same_state {
            format!(
                "{} at index {}",
                short(&reply.state_checksum),
                reply.digest_index
            )
        } else if same_index {
            format!(
                "DIFFERS from the leader at index {}: {} vs {}",
                reply.digest_index,
                short(&reply.state_checksum),
                short(&leader.state_checksum)
            )
        } else {
            format!(
                "not comparable: index {} vs leader's {} (state kept moving)",
                reply.digest_index, leader.digest_index
            )
        },
    ));
    let same_format = reply.format_version == leader.format_version;
    checks.push(check(
        "format_version",
        m.id,
        same_format,
        if same_format {
            format!("format {}", reply.format_version)
        } else {
            format!(
                "format {} DIFFERS from the leader's {}: an upgrade is in progress; \
                 finish it before using what the newer release adds",
                reply.format_version, leader.format_version
            )
        },
    ));
    let same_config = reply.config_digest == leader.config_digest;
    checks.push(check(
        "config_digest",
        m.id,
        same_config,
        if same_config {
            short(&reply.config_digest).to_string()
        } else {
            format!(
                "DIFFERS from the leader: {} vs {}",
                short(&reply.config_digest),
                short(&leader.config_digest)
            )
        },
    ));
}

fn short(hex: &str) -> &str {
    hex.get(..12).unwrap_or(hex)
}
