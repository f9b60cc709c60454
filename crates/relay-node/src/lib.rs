//! relay-node
