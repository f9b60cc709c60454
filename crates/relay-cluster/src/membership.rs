//! Membership changes (`relayctl member add|promote|remove`) with openraft's
//! own joint-consensus changes, run on the leader; a follower forwards.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers};
use relay_proto::raft::MembershipChange;
use relay_types::NodeId;

use crate::cluster::Cluster;
use crate::error::AdminError;

/// A membership change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberChange {
    /// Add a learner at this Raft gRPC address; it receives the log (or a
    /// snapshot) but does not vote.
    Add {
        /// New node id.
        id: NodeId,
        /// Its Raft gRPC address.
        addr: String,
    },
    /// Make a learner a voter.
    Promote(NodeId),
    /// Remove a voter or learner entirely.
    Remove(NodeId),
    /// Make a voter a learner again (it keeps its data and the log): how a
    /// recovery-site node steps back after a fail back.
    Demote(NodeId),
}

impl MemberChange {
    /// Parses the wire form.
    pub fn from_wire(change: &MembershipChange) -> Result<Self, AdminError> {
        match change.action.as_str() {
            "add" if !change.addr.is_empty() => Ok(MemberChange::Add {
                id: change.id,
                addr: change.addr.clone(),
            }),
            "add" => Err(AdminError::Invalid("member add needs an address".into())),
            "promote" => Ok(MemberChange::Promote(change.id)),
            "remove" => Ok(MemberChange::Remove(change.id)),
            "demote" => Ok(MemberChange::Demote(change.id)),
            other => Err(AdminError::Invalid(format!(
                "unknown membership action {other:?}"
            ))),
        }
    }

    fn to_wire(&self) -> MembershipChange {
        match self {
            MemberChange::Add { id, addr } => MembershipChange {
                action: "add".into(),
                id: *id,
                addr: addr.clone(),
            },
            MemberChange::Promote(id) => MembershipChange {
                action: "promote".into(),
                id: *id,
                addr: String::new(),
            },
            MemberChange::Remove(id) => MembershipChange {
                action: "remove".into(),
                id: *id,
                addr: String::new(),
            },
            MemberChange::Demote(id) => MembershipChange {
                action: "demote".into(),
                id: *id,
                addr: String::new(),
            },
        }
    }
}

/// Voters and learners after a change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Members {
    /// Voting members.
    pub voters: Vec<NodeId>,
    /// Learners.
    pub learners: Vec<NodeId>,
}

impl Cluster {
    /// The current voters and learners, as this node knows them.
    pub fn members(&self) -> Members {
        let m = self.metrics();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        Members {
            voters: voters.iter().copied().collect(),
            learners: membership
                .nodes()
                .map(|(id, _)| *id)
                .filter(|id| !voters.contains(id))
                .collect(),
        }
    }

    /// Runs `change` on the leader (here, or forwarded) and returns the
    /// resulting membership.
    pub async fn change_membership(
        self: &Arc<Self>,
        change: MemberChange,
    ) -> Result<Members, AdminError> {
        let m = self.metrics();
        let leader = m
            .current_leader
            .ok_or_else(|| AdminError::Unavailable("no leader is known".into()))?;
        if leader == self.node_id() {
            return self.change_membership_here(change).await;
        }
        let addr = m
            .membership_config
            .nodes()
            .find(|(id, _)| **id == leader)
            .map(|(_, n)| n.addr.clone())
            .ok_or_else(|| AdminError::Unavailable(format!("leader {leader} has no address")))?;
        let mut client = self
            .peer_client(&addr)
            .map_err(|e| AdminError::Unavailable(e.message().to_string()))?;
        let mut request = tonic::Request::new(change.to_wire());
        request.set_timeout(Duration::from_secs(60));
        match client.change_membership(request).await {
            Ok(reply) => {
                let reply = reply.into_inner();
                Ok(Members {
                    voters: reply.voters,
                    learners: reply.learners,
                })
            }
            Err(status) => Err(match status.code() {
                tonic::Code::NotFound => AdminError::NotFound(status.message().into()),
                tonic::Code::InvalidArgument => AdminError::Invalid(status.message().into()),
                tonic::Code::Unavailable | tonic::Code::FailedPrecondition => {
                    AdminError::Unavailable(status.message().into())
                }
                _ => AdminError::Failed(status.message().into()),
            }),
        }
    }

    /// Runs `change` on this node, which must be the leader.
    pub async fn change_membership_here(
        &self,
        change: MemberChange,
    ) -> Result<Members, AdminError> {
        let before = self.members();
        let is_member = |id: NodeId| before.voters.contains(&id) || before.learners.contains(&id);
        let result = match &change {
            MemberChange::Add { id, addr } => {
                if is_member(*id) {
                    return Err(AdminError::Invalid(format!(
                        "node {id} is already a member"
                    )));
                }
                // Not blocking on catch-up: an unreachable or slow new node
                // must not hang the operator's command; `status` shows lag.
                self.raft()
                    .add_learner(*id, BasicNode::new(addr.clone()), false)
                    .await
            }
            MemberChange::Promote(id) => {
                if before.voters.contains(id) {
                    return Err(AdminError::Invalid(format!("node {id} is already a voter")));
                }
                if !is_member(*id) {
                    return Err(AdminError::NotFound(format!(
                        "node {id} is not a member; add it first"
                    )));
                }
                self.raft()
                    .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([*id])), true)
                    .await
            }
            MemberChange::Remove(id) => {
                if !is_member(*id) {
                    return Err(AdminError::NotFound(format!("node {id} is not a member")));
                }
                if before.voters.contains(id) {
                    if before.voters.len() <= 1 {
                        return Err(AdminError::Invalid("cannot remove the last voter".into()));
                    }
                    // retain = false: it leaves entirely, not as a learner.
                    self.raft()
                        .change_membership(
                            ChangeMembers::RemoveVoters(BTreeSet::from([*id])),
                            false,
                        )
                        .await
                } else {
                    self.raft()
                        .change_membership(
                            ChangeMembers::<NodeId, BasicNode>::RemoveNodes(BTreeSet::from([*id])),
                            false,
                        )
                        .await
                }
            }
            MemberChange::Demote(id) => {
                if !before.voters.contains(id) {
                    return Err(AdminError::Invalid(format!("node {id} is not a voter")));
                }
                if before.voters.len() <= 1 {
                    return Err(AdminError::Invalid("cannot demote the last voter".into()));
                }
                // retain = true: it stays as a learner.
                self.raft()
                    .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([*id])), true)
                    .await
            }
        };
        match result {
            Ok(_) => Ok(self.members()),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => Err(
                AdminError::Unavailable("leadership moved during the change; try again".into()),
            ),
            Err(RaftError::APIError(e)) => Err(AdminError::Invalid(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(AdminError::Failed(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_round_trip_and_bad_ones_are_refused() {
        for change in [
            MemberChange::Add {
                id: 4,
                addr: "10.0.0.4:7101".into(),
            },
            MemberChange::Promote(4),
            MemberChange::Remove(2),
            MemberChange::Demote(4),
        ] {
            assert_eq!(MemberChange::from_wire(&change.to_wire()).unwrap(), change);
        }
        let no_addr = MembershipChange {
            action: "add".into(),
            id: 4,
            addr: String::new(),
        };
        assert!(matches!(
            MemberChange::from_wire(&no_addr),
            Err(AdminError::Invalid(_))
        ));
        let unknown = MembershipChange {
            action: "abdicate".into(),
            ..no_addr
        };
        assert!(matches!(
            MemberChange::from_wire(&unknown),
            Err(AdminError::Invalid(_))
        ));
    }
}
