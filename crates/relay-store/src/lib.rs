//! relay-store
