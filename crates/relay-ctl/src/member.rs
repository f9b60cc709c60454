//! `relayctl member list|add|promote|remove` (drain and undrain are in
//! `drain`), `relayctl failover` and `relayctl snapshot`.

use std::time::Duration;

use clap::{Args, Subcommand};
use relay_proto::admin::{FailoverRequest, MembershipRequest, SnapshotRequest, StatusRequest};
use serde_json::json;

use crate::client::{Admin, CliError};
use crate::output::{self, outln};

/// Replacing a node's store, the one sequence (shown by `relayctl member
/// --help`). The same steps a node prints when it refuses a store that is
/// behind its voter guard (exit status 3).
pub const REPLACE_A_NODE: &str = "\
Replacing a node whose disk was lost, damaged or restored from an old copy
(node ID, Raft address RAFT_ADDR), with the other nodes running:
  1. relayctl member remove ID          (against a live node; its mail moves to the others)
  2. stop the node, move its data_dir away (the voter-guard file included)
  3. start the node again on the empty data_dir
  4. relayctl member add ID RAFT_ADDR   (a learner: it receives a snapshot of the whole queue)
  5. wait until it has caught up        (relayctl status: its lag is near 0)
  6. relayctl member promote ID         (a voter again)
Never start a voter on a wiped store without steps 1 and 4: it would come
back with no memory of its votes, and committed mail could be lost.";

#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// Voters and learners with their role and reachability.
    List,
    /// Add a node as a learner (it receives the log, does not vote yet).
    Add {
        /// New node id.
        id: u64,
        /// Its Raft gRPC address (host:port). (Not named `addr`: that id
        /// belongs to the global `--addr`, and clap would merge them.)
        #[arg(value_name = "RAFT_ADDR")]
        raft_addr: String,
    },
    /// Make a learner a voter.
    Promote {
        /// Node id.
        id: u64,
    },
    /// Remove a node from the cluster.
    Remove {
        /// Node id.
        id: u64,
    },
    /// Make a voter a learner again (it keeps its data and receives the
    /// log): a recovery-site node stepping back after a fail back.
    Demote {
        /// Node id.
        id: u64,
    },
    /// Take a node out of service for maintenance: it answers new SMTP
    /// connections 421, reports not ready, hands leadership and its queue
    /// on; waits until it is safe to stop (exit 1 if not within --wait).
    Drain {
        /// Node id.
        id: u64,
        /// How long to wait for "safe to stop", in seconds (0: do not wait).
        #[arg(long, default_value_t = 120)]
        wait: u64,
        /// Who; kept in the log entry (default: $RELAYCTL_OPERATOR or $USER).
        #[arg(long, env = "RELAYCTL_OPERATOR")]
        by: Option<String>,
    },
    /// Put a drained node back in service.
    Undrain {
        /// Node id.
        id: u64,
        /// Who (default: $RELAYCTL_OPERATOR or $USER).
        #[arg(long, env = "RELAYCTL_OPERATOR")]
        by: Option<String>,
    },
    /// Where a node's drain stands; exit 0 only when it is safe to stop.
    DrainStatus {
        /// Node id.
        id: u64,
    },
}

#[derive(Debug, Args)]
pub struct FailoverArgs {
    /// The voter to make leader (default: the most up-to-date other voter).
    #[arg(long)]
    to: Option<u64>,
}

pub async fn run(admin: &mut Admin, command: MemberCommand, as_json: bool) -> Result<(), CliError> {
    let (action, id, addr) = match command {
        MemberCommand::List => return list(admin, as_json).await,
        MemberCommand::Add { id, raft_addr } => ("add", id, raft_addr),
        MemberCommand::Promote { id } => ("promote", id, String::new()),
        MemberCommand::Remove { id } => ("remove", id, String::new()),
        MemberCommand::Demote { id } => ("demote", id, String::new()),
        MemberCommand::Drain { id, wait, by } => {
            let by = crate::queue::operator(by);
            return crate::drain::drain(admin, id, by, Duration::from_secs(wait), as_json).await;
        }
        MemberCommand::Undrain { id, by } => {
            return crate::drain::undrain(admin, id, crate::queue::operator(by), as_json).await;
        }
        MemberCommand::DrainStatus { id } => {
            return crate::drain::drain_status(admin, id, as_json).await;
        }
    };
    let reply = admin
        .client
        .change_membership(MembershipRequest {
            action: action.to_string(),
            id,
            addr,
        })
        .await
        .map_err(|s| CliError::from_status(&admin.addr, s))?
        .into_inner();
    if as_json {
        output::json(&json!({"voters": reply.voters, "learners": reply.learners}));
    } else {
        outln!(
            "member {action} {id}: voters {:?}, learners {:?}",
            reply.voters,
            reply.learners
        );
    }
    Ok(())
}

async fn list(admin: &mut Admin, as_json: bool) -> Result<(), CliError> {
    let reply = admin
        .client
        .status(StatusRequest {})
        .await
        .map_err(|s| CliError::from_status(&admin.addr, s))?
        .into_inner();
    if as_json {
        output::json(&json!({
            "leader": reply.leader,
            "members": reply.nodes.iter().map(|n| json!({
                "id": n.id,
                "addr": n.addr,
                "voter": n.voter,
                "role": n.role,
                "reachable": n.reachable,
            })).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    let rows: Vec<[String; 5]> = reply
        .nodes
        .iter()
        .map(|n| {
            [
                n.id.to_string(),
                if n.voter { "voter" } else { "learner" }.to_string(),
                n.role.clone(),
                n.addr.clone(),
                output::yes_no(n.reachable),
            ]
        })
        .collect();
    output::table(
        &["ID", "MEMBERSHIP", "ROLE", "RAFT ADDRESS", "REACHABLE"],
        &rows,
    );
    Ok(())
}

pub async fn failover(
    admin: &mut Admin,
    args: FailoverArgs,
    as_json: bool,
) -> Result<(), CliError> {
    let reply = admin
        .client
        .failover(FailoverRequest { to: args.to })
        .await
        .map_err(|s| CliError::from_status(&admin.addr, s))?
        .into_inner();
    if as_json {
        output::json(&json!({
            "previous_leader": reply.previous_leader,
            "leader": reply.leader,
            "term": reply.term,
            "millis": reply.millis,
            "leaderless_millis": reply.leaderless_millis,
        }));
    } else {
        match reply.previous_leader {
            Some(p) if p == reply.leader => {
                outln!("node {} already leads (term {})", reply.leader, reply.term)
            }
            Some(p) => outln!(
                "leader moved from node {p} to node {} (term {}) in {} ms, {} ms without a leader",
                reply.leader,
                reply.term,
                reply.millis,
                reply.leaderless_millis
            ),
            None => outln!("node {} leads (term {})", reply.leader, reply.term),
        }
    }
    Ok(())
}

pub async fn snapshot(admin: &mut Admin, as_json: bool) -> Result<(), CliError> {
    let reply = admin
        .client
        .snapshot(SnapshotRequest {})
        .await
        .map_err(|s| CliError::from_status(&admin.addr, s))?
        .into_inner();
    if as_json {
        output::json(&json!({
            "node": reply.node,
            "index": reply.index,
            "previous_index": reply.previous_index,
        }));
    } else {
        outln!(
            "node {}: snapshot at index {} (was {})",
            reply.node,
            reply.index,
            reply.previous_index
        );
    }
    Ok(())
}
