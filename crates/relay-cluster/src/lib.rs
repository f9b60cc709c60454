//! relay-cluster
