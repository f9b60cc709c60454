//! relay-proto
