//! `relayctl member list|add|promote|remove`, `relayctl failover` and
//! `relayctl snapshot`.

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
