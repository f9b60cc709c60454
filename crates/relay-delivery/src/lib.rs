//! relay-delivery
