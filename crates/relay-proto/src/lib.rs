//! Code generated from `proto/`: the node-to-node Raft service and the admin
//! service.
//!
//! Owns: the generated prost messages and tonic clients/servers, nothing
//! else. Must never: hold business logic; conversions to domain types live in
//! the crates that own those types' meaning (`relay-cluster`, `relay-node`).
//!
//! # Layout
//! - [`raft`]: `RaftService` (AppendEntries, Vote, InstallSnapshot, Submit,
//!   NodeStatus).
//! - [`admin`]: `Admin` (Status, …) for `relayctl`.

#![allow(missing_docs, missing_debug_implementations, clippy::all)]

/// Node-to-node service (`proto/raft.proto`).
pub mod raft {
    tonic::include_proto!("quorum_relay.raft");
}

/// Operator service (`proto/admin.proto`).
pub mod admin {
    tonic::include_proto!("quorum_relay.admin");
}
